"""`python -m segmodel bench [NAME] [options]`: every figure segmodel quotes, one command each.

    python -m segmodel bench                    # = bench stages: where a trial's time goes
    python -m segmodel bench NAME --help        # what NAME measures and its options

Each figure (a README table) is one entry of BENCHES, a module of this package with
`add_arguments(parser)` and `main(args) -> int`. Speed comparisons run their variants
side by side in one process (`timing.timed_rounds`): quote the ratios. Quality tables
run real trials through the public trial command (`trials.run_trials`), so each cell
is exactly what `python -m segmodel train FLAGS` gives. Always name the CPU next to a
figure: `lscpu | grep 'Model name'`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, what it measures); the first is what `bench` runs without a name
BENCHES = {
    "stages": ("stages", "every stage of a trial side by side: fixed cost, data, training dense/pruned "
                         "in two precisions, FLOPs, the seed's way, inference, memory (README: Speed)"),
    "prune-overhead": ("prune_overhead", "training-step time of pruning masks: dense vs constraint vs callback"),
    "quality": ("quality", "does pruning keep accuracy? dense vs pruned, same epochs, converged budget, "
                           "paired by seed (docs/pruning.md)"),
    "prune-table": ("prune_table", "dense vs 50/80/90% sparsity for each schedule, same epochs (README: Pruning)"),
    "kd-table": ("kd_table", "fine-tuning with and without distillation, paired by seed (README: Distillation)"),
    "precision-iou": ("precision_iou", "validation IoU of float32 vs mixed_bfloat16 trials, same seeds"),
    "memory": ("memory", "peak RSS vs dataset size: streaming keeps memory flat (README: Data)"),
    "trials-per-hour": ("trials_per_hour", "experiment throughput at several trialConcurrency values, real NNI"),
    "tuner": ("tuner", "repeated real experiments: does the tuner re-propose what the assessor stopped? "
                       "(README: The experiment)"),
    "tuner-db": ("tuner_db", "what the tuner adapter's trial_end costs as the experiment grows: full re-read "
                             "vs incremental, at 100..500 trials (docs/tuning.md)"),
    "channels": ("channels", "dense vs channel-pruned 25/50/75% vs weight-pruned 80%: IoU, params, FLOPs, "
                             "file sizes, Keras/TFLite img/s (README: Compression)"),
}
DEFAULT = "stages"


def register(subparsers) -> None:
    """`bench` in `python -m segmodel --help`; its arguments are parsed by `main`, which
    imports only the bench it runs (the stages bench times TensorFlow's import itself)."""
    subparsers.add_parser("bench", add_help=False, help="measure: `bench` = where a trial's time goes; "
                                                        "`bench NAME` = one README table (bench --help lists them)")


def build_parser(name: str) -> argparse.ArgumentParser:
    module = importlib.import_module(f"{__name__}.{BENCHES[name][0]}")
    prog = "python -m segmodel bench" + ("" if name == DEFAULT else f" {name}")
    first, _, rest = (module.__doc__ or "").partition("\n\n")
    epilog = rest
    if name == DEFAULT:
        epilog += "\nOther benches (python -m segmodel bench NAME --help):\n" + "\n".join(
            f"  {n:<16} {what}" for n, (_, what) in BENCHES.items() if n != DEFAULT)
    parser = argparse.ArgumentParser(prog=prog, description=first.replace("`", ""), epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    parser.set_defaults(func=module.main)
    return parser


def main(argv: list[str]) -> int:
    name = argv[0] if argv and argv[0] in BENCHES else DEFAULT
    rest = argv[1:] if argv and argv[0] == name else argv
    args = build_parser(name).parse_args(rest)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
