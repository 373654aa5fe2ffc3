"""What every `python -m segmodel COMMAND` module shares: its parser, from its docstring.

A command module's docstring is its help: the first paragraph is the description,
the rest the epilog, shown as written."""
from __future__ import annotations

import argparse


def add_command(subparsers, name: str, doc: str, help: str) -> argparse.ArgumentParser:
    """Add subcommand `name`; --help shows `doc` (backquotes dropped from the first line)."""
    first, _, rest = doc.partition("\n\n")
    return subparsers.add_parser(name, help=help, description=first.replace("`", ""),
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=rest or None)
