"""`python -m segmodel retrain EXPERIMENT [--trial ID] --epochs N --finetune_epochs M --out DIR [--flags "..."]`:
take the winner home at full quality.

An NNI experiment tunes at low fidelity (few epochs a trial), which is right for search
but ships a half-trained model. This reruns the chosen trial (default: the best) with its
own parameters (its params.json) at the budget you give, as one ordinary trial into DIR:
the pruning recipe is the trial's (Params defaults: global ranking, cosine fine-tuning),
`--flags` (trial flags, one string) override anything else (e.g. `--flags "--sparsity 0.9"`). Then
`python -m segmodel export DIR --out ship/` ships it.

    python -m segmodel retrain ~/nni-experiments/abc123 --epochs 12 --finetune_epochs 8 --out runs/winner
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .cli import add_command
from .errors import ParamError


def register(subparsers) -> None:
    p = add_command(subparsers, "retrain", __doc__, "rerun the best trial's parameters at a full budget")
    p.add_argument("experiment", help="NNI experiment id or folder (or one trial's output folder)")
    p.add_argument("--trial", default=None, metavar="ID", help="trial id (or sequence number); default: the best")
    p.add_argument("--metric", default="default",
                   help="final-result key that picks the best trial (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help="dense epochs (default: the trial's)")
    p.add_argument("--finetune_epochs", type=int, default=None, help="fine-tuning epochs (default: the trial's)")
    p.add_argument("--out", type=Path, required=True, help="folder for the retrained trial")
    p.add_argument("--flags", default="",
                   help='trial flags that override the trial\'s, one string: --flags="--sparsity 0.9"')
    p.set_defaults(func=main)


def retrain_params(trial_params: dict, epochs: int | None, finetune_epochs: int | None, out: Path,
                   flags: list[str]):
    """The trial's parameters, then the new budget and output folder, then the flags."""
    from .params import from_saved, parse_flags
    params = from_saved(trial_params, "the trial's params.json")
    budget = {k: v for k, v in (("epochs", epochs), ("finetune_epochs", finetune_epochs)) if v is not None}
    params.update({**budget, "output_dir": str(out)}, "retrain")
    given = parse_flags(flags, prog="retrain --flags")
    if "output_dir" in given:
        raise ParamError("--output_dir: give retrain --out instead")
    return params.update(given, "command line").validate()


def main(args: argparse.Namespace) -> int:
    from . import experiments, nni_bridge

    trial, _ = experiments.select_trial(args.experiment, args.trial, args.metric)
    if trial.diverged and not args.flags:
        raise ParamError(f"trial {trial.id} diverged ({trial.diverged}): its parameters would diverge again; "
                         'change them with --flags (e.g. --flags "--learning_rate 1e-4")')
    params = retrain_params(json.loads(trial.file("params.json").read_text()), args.epochs,
                            args.finetune_epochs, args.out, shlex.split(args.flags))
    before = trial.metrics
    print(f"retrain: trial {trial.id} (val mean IoU {before.get('iou', float('nan')):.4f}) with "
          f"{params.epochs} + {params.finetune_epochs} epochs into {args.out}", file=sys.stderr, flush=True)
    from .train import run_trial  # after the parameters are valid: importing TensorFlow takes seconds
    metrics = run_trial(params, nni_bridge.Reporter(), args.out)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"retrain: val mean IoU {before.get('iou', float('nan')):.4f} -> {metrics.get('iou', float('nan')):.4f}"
          f" (sparsity {metrics.get('sparsity', 0):.4f}); ship it: python -m segmodel export {args.out} --out DIR",
          file=sys.stderr)
    return 0
