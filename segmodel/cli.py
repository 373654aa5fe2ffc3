"""What every `python -m segmodel COMMAND` module shares: its parser, from its docstring.

A command module's docstring is its help: the first paragraph is the description,
the rest the epilog, shown as written."""
from __future__ import annotations

import argparse
from pathlib import Path

FLAG_STYLE = """Every option is spelled with hyphens (`--patch-size`); the underscore spelling
(`--patch_size`, as NNI's parameter names) is accepted as the same option."""


def normalize_flags(argv: list[str]) -> list[str]:
    """`--patch_size 64` -> `--patch-size 64`: one spelling for every option. Only option
    names change (not values after `=`), and nothing after a bare `--`, which passes
    flags through to a trial that normalizes them itself."""
    out = list(argv)
    for i, token in enumerate(out):
        if token == "--":
            break
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            out[i] = name.replace("_", "-") + eq + value
    return out



def default_out(command: str, source) -> Path:
    """Where a command writes when --out is not given: ./<command>-<what it read>
    (`report-abc123`, `export-abc123`); the ignore files cover these names."""
    return Path(f"{command}-{Path(str(source)).name}")


def add_command(subparsers, name: str, doc: str, help: str) -> argparse.ArgumentParser:
    """Add subcommand `name`; --help shows `doc` (backquotes dropped from the first line)."""
    first, _, rest = doc.partition("\n\n")
    return subparsers.add_parser(name, help=help, description=first.replace("`", ""),
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=rest or None)
