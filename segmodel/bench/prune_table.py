"""Dense vs pruned, every schedule, same total epochs: the pruning table (docs/pruning.md).

    python -m segmodel bench prune-table --out runs/prune_table --seeds 0 1
    python -m segmodel bench prune-table --out runs/prune_table --print-only   # from finished runs

One trial per row and seed (`python -m segmodel train`, one at a time: it is a shared
CPU), each into OUT/seed<k>/<row>; a finished one is not run again. Prints a Markdown
table, scores averaged over the seeds and listed per seed. Flags after `--` go to
every trial (e.g. `-- --data_dir /data/dubai`).
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from ..errors import SegmodelError
from .trials import run_trial_cell

# What the README's table was measured with; the default experiment runs config.yml's flags.
TRIAL_FLAGS = "--patch_size 64 --epochs 3 --finetune_epochs 2"
# NNI's usual advice, measured as one extra row: leave the first conv (3 input channels)
# and the 1x1 head (16 -> 6) dense. Together they hold 528 of the 1.94M weights.
KEEP_ENDS = '[{"sparsity": 0.8, "op_types": ["default"]}, {"exclude": true, "op_names": ["down1_conv1", "logits"]}]'


def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/prune_table"))
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    p.add_argument("--schedules", nargs="+", default=["init", "oneshot", "agp"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one run per seed, averaged")
    p.add_argument("--only", nargs="+", default=None, help="row names to run/print (default: all)")
    p.add_argument("--print-only", action="store_true", help="only tabulate the runs already finished")
    p.add_argument("--trial_flags", default=TRIAL_FLAGS, help="flags of every trial (default: %(default)s)")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more flags for every trial")


def rows(sparsities, schedules):
    """(row name, schedule label, target sparsity, trial flags)"""
    yield "dense", "dense", 0.0, ["--sparsity", "0", "--schedule", "oneshot"]
    for schedule in schedules:
        for s in sparsities:
            yield f"{schedule}-{s}", schedule, float(s), ["--sparsity", str(s), "--schedule", schedule]
    for schedule in schedules:
        yield f"{schedule}-0.8-ends", f"{schedule}, first conv + head dense", 0.8, \
            ["--prune_config", KEEP_ENDS, "--schedule", schedule]


def main(args) -> int:
    common = shlex.split(args.trial_flags) + [a for a in args.extra if a != "--"]
    results = {}
    for seed in args.seeds:
        out = args.out / f"seed{seed}"
        for name, label, target, flags in rows(args.sparsities, args.schedules):
            if args.only and name not in args.only:
                continue
            path = out / name / "metrics.json"
            if not args.print_only:
                run_trial_cell(out, name, [*common, *flags, "--seed", str(seed)])
            if path.is_file():
                results.setdefault(name, (label, target, []))[2].append(json.loads(path.read_text()))
    print(table(results))
    return 0


def table(results: dict) -> str:
    """results: row name -> (label, target, [metrics per seed]); seeds averaged, each listed."""
    def mean(ms, key):
        return sum(m[key] for m in ms) / len(ms)

    if "dense" not in results:
        raise SegmodelError("the table compares with the dense row: include 'dense' in --only")
    dense = results["dense"][2]
    lines = ["| schedule | target | measured sparsity | val mean IoU (per seed) | vs dense | pixel acc "
             "| IoU before pruning | trial time | model.keras | gzip | gzip vs dense |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, target, ms in results.values():
        seeds = ", ".join(f"{m['iou']:.3f}" for m in ms)
        before = f"{mean(ms, 'dense_iou'):.3f}" if all("dense_iou" in m for m in ms) and label != "dense" else ""
        lines.append(
            f"| {label} | {target:.0%} | {mean(ms, 'sparsity'):.4f} | {mean(ms, 'iou'):.3f} ({seeds}) "
            f"| {100 * (mean(ms, 'iou') - mean(dense, 'iou')):+.1f} pt | {mean(ms, 'accuracy'):.3f} | {before} "
            f"| {mean(ms, 'duration_s'):.0f} s | {mean(ms, 'model_bytes') / 2**20:.2f} MiB "
            f"| {mean(ms, 'model_gzip_bytes') / 2**20:.2f} MiB "
            f"| {mean(ms, 'model_gzip_bytes') / mean(dense, 'model_gzip_bytes'):.2f} |")
    return "\n".join(lines)
