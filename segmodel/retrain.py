"""`python -m segmodel retrain EXPERIMENT [--trial ID] [--out DIR] [-- TRIAL_FLAGS...]`:
take the winner home at full quality.

An NNI experiment tunes at low fidelity (few epochs a trial), which is right for search
but ships a half-trained model. This reruns the chosen trial (default: the best) with its
own parameters (its params.json) as one ordinary trial into DIR (default
./retrain-<experiment>; of a confirm experiment: the best seed of the candidate with the best
mean): the pruning recipe is the trial's (Params defaults: global
ranking, cosine fine-tuning). Trial flags after `--` override the trial's parameters --
the budget above all. Then `python -m segmodel export DIR` ships it.

    python -m segmodel retrain abc123 --out winner -- --epochs 12 --finetune-epochs 8
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from .cli import add_command, default_out
from .errors import ParamError
from .experiment import nni_bridge, records
from .params import from_saved, parse_flags


def register(subparsers) -> None:
    p = add_command(subparsers, "retrain", __doc__, "rerun the best trial's parameters at a full budget")
    p.add_argument("experiment", help="NNI experiment id or folder (or one trial's output folder)")
    p.add_argument("--trial", default=None, metavar="ID", help="trial id (or sequence number); default: the best")
    p.add_argument("--metric", default="default",
                   help="final-result key that picks the best trial (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder for the retrained trial (default: ./retrain-<experiment>)")
    p.set_defaults(func=main, takes_trial_flags=True)  # after --: -- --epochs 12 --sparsity 0.9


def retrain_params(trial_params: dict, out: Path, flags: list[str]):
    """The trial's parameters, then the output folder, then the flags."""
    params = from_saved(trial_params, "the trial's params.json")
    params.update({"output_dir": str(out)}, "retrain")
    given = parse_flags(flags, prog="retrain --")
    if "output_dir" in given:
        raise ParamError("--output-dir: give retrain --out instead")
    return params.update(given, "command line").validate()


def main(args: argparse.Namespace) -> int:

    trial, exp = records.select_trial(args.experiment, args.trial, args.metric)
    if trial.diverged and not args.trial_flags:
        raise ParamError(f"trial {trial.id} diverged ({trial.diverged}): its parameters would diverge again; "
                         "change them with trial flags after -- (e.g. -- --learning-rate 1e-4)")
    args.out = args.out or default_out("retrain", exp.id if exp else args.experiment)
    params = retrain_params(json.loads(trial.file("params.json").read_text()), args.out, args.trial_flags)
    before = trial.metrics
    print(f"retrain: trial {trial.id} (val mean IoU {before.get('iou', float('nan')):.4f}) with "
          f"{params.epochs} + {params.finetune_epochs} epochs into {args.out}", file=sys.stderr, flush=True)
    # after the parameters are valid: importing TensorFlow takes seconds
    from .train import run_trial
    with contextlib.redirect_stdout(sys.stderr):  # Keras' epoch lines are progress: stderr
        metrics = run_trial(params, nni_bridge.Reporter(), args.out)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"retrain: val mean IoU {before.get('iou', float('nan')):.4f} -> {metrics.get('iou', float('nan')):.4f}"
          f" (sparsity {metrics.get('sparsity', 0):.4f}); ship it: python -m segmodel export {args.out}",
          file=sys.stderr)
    return 0
