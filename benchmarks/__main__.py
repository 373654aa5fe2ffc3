"""`python -m benchmarks [NAME] [options]`: find NAME in BENCHES, build its parser, run it.

Only the bench that runs is imported (stages times TensorFlow's import itself); the list
in --help reads each module's docstring without importing it.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import importlib.util
import shlex
import sys
from functools import partial
from pathlib import Path

from segmodel.cli import normalize_flags
from segmodel.errors import SegmodelError

from . import BENCHES, DEFAULT
from .presets import Preset

PROG = "python -m benchmarks"


def doc_of(name: str) -> str:
    """A bench's docstring: its preset's, or its module's read from the source."""
    target = BENCHES[name]
    if isinstance(target, Preset):
        return target.doc
    return ast.get_docstring(ast.parse(Path(importlib.util.find_spec(target).origin).read_text())) or ""


def listing() -> str:
    width = max(map(len, BENCHES)) + 2
    return "\n".join(f"  {n:<{width}}{doc_of(n).splitlines()[0] if doc_of(n) else ''}" for n in BENCHES)


def build_parser(name: str) -> argparse.ArgumentParser:
    """NAME's parser; its func(args) runs it."""
    target = BENCHES[name]
    first, _, rest = doc_of(name).partition("\n\n")
    parser = argparse.ArgumentParser(prog=f"{PROG} {name}", description=first.replace("`", ""), epilog=rest,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if isinstance(target, Preset):
        from . import grid
        grid.add_arguments(parser, target)
        parser.epilog = "\n\n".join(filter(None, [rest, grid.epilog(target)]))
        parser.set_defaults(func=partial(grid.main, preset=target, name=name))
    else:
        module = importlib.import_module(target)
        module.add_arguments(parser)
        parser.set_defaults(func=module.main)
    return parser


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        about = sys.modules[__package__].__doc__.partition("\n\n")[2]
        print(f"usage: {PROG} [NAME] [options]   (no NAME: {DEFAULT})\n\n{about}\n"
              f"benchmarks ({PROG} NAME --help for each):\n{listing()}")
        return 0
    if argv and not argv[0].startswith("-") and argv[0] not in BENCHES:
        close = difflib.get_close_matches(argv[0], BENCHES, n=1)
        print(f"error: no benchmark {argv[0]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
              + f"; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    name, rest = (argv[0], argv[1:]) if argv and argv[0] in BENCHES else (DEFAULT, argv)
    args = build_parser(name).parse_args(normalize_flags(rest))  # --a_b is --a-b, as in segmodel's commands
    args.command_line = " ".join([PROG, *map(shlex.quote, argv)])  # for a table's footer
    try:
        return args.func(args) or 0
    except SegmodelError as e:  # a failed trial, a bad flag: one line (Ctrl-C: Python's own exit)
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
