"""`python -m segmodel COMMAND`: train | data | report | export | retrain | predict.

Each command lives in its own module exposing `register(subparsers)`, which adds a
subparser whose `func(args) -> int` does the work; `train` parses its own arguments
(a trial's flags are its parameters). Benchmarks are not a command: `python -m benchmarks`."""
from __future__ import annotations

import argparse
import importlib
import sys

from .cli import FLAG_STYLE, normalize_flags
from .errors import SegmodelError

COMMAND_MODULES = ("segmodel.data.cli", "segmodel.report", "segmodel.export", "segmodel.retrain", "segmodel.predict")


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
    if argv[:1] == ["train"]:  # imported here: the trial parses its own flags (TensorFlow loads only after)
        from .cli_trial import main as trial_main
        return trial_main(argv[1:], prog="python -m segmodel train")
    argv = normalize_flags(argv)
    try:
        args = build_parser().parse_args(argv)
        return args.func(args) or 0
    except SegmodelError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
