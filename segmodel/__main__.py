"""`python -m segmodel COMMAND`: train | data | report | confirm | export | retrain | predict.

Each command lives in its own module exposing `register(subparsers)`, which adds a
subparser whose `func(args) -> int` does the work; `train` parses its own arguments
(a trial's flags are its parameters). Benchmarks are not a command: `python -m benchmarks`."""
from __future__ import annotations

import argparse
import importlib
import sys

from . import cli_trial
from .cli import FLAG_STYLE, normalize_flags
from .errors import ParamError, SegmodelError

COMMAND_MODULES = ("segmodel.data.cli", "segmodel.experiment.report", "segmodel.experiment.confirm",
                   "segmodel.deploy.export", "segmodel.retrain", "segmodel.deploy.predict")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segmodel", description=__doc__.splitlines()[0],
                                     epilog=FLAG_STYLE.replace("`", ""))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="run one trial outside NNI (same flags as trial.py)", add_help=False)
    train.set_defaults(func=None)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # the trial parses its own flags (TensorFlow loads only after)
        return cli_trial.main(argv[1:], prog="python -m segmodel train")
    argv = normalize_flags(argv)
    try:
        head, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
        args = build_parser().parse_args(head)
        if rest and not getattr(args, "takes_trial_flags", False):
            raise ParamError(f"{args.command} takes no trial flags after --: {' '.join(rest)}")
        args.trial_flags = rest  # a trial's flags, passed through (retrain)
        return args.func(args) or 0
    except SegmodelError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
