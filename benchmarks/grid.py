"""The one grid runner: these trial variants x these seeds -> a table paired by seed.

Every cell is one real trial, `python -m segmodel train FLAGS --seed N --output-dir
OUT/s<N>-<variant>`, exactly what a user's trial with those flags gives: no private path.
A seed fixes the split, the initial weights and the data order, so a variant's score
minus its reference variant's score of the same seed is paired; the table gives the
mean ± sample sd of those differences over seeds. A cell whose metrics.json exists is
not run again (a long grid resumes); --print-only tabulates what has finished. Writes
rows.json (every cell's metrics) and table.md under --out.

A preset (presets.py) is a dict of variants plus default seeds and trial flags; the
command line picks variants (--only), adds some (--variant), and appends trial flags
after `--` (variant flags come last and win).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml  # installed with nni

from segmodel.errors import ParamError, SegmodelError
from segmodel.files import write_json_atomic, write_text_atomic
from segmodel.params import command_flags, parse_flags, resolve
from segmodel.runtime import available_cores, cpu_name

from . import table
from .presets import Preset

ROOT = Path(__file__).resolve().parents[1]
PER_CELL = ("seed", "output_dir")  # set by the grid for each cell


def add_arguments(p: argparse.ArgumentParser, preset: Preset) -> None:
    p.add_argument("--seeds", type=int, nargs="+", default=list(preset.seeds),
                   help="one trial per variant and seed (default: %(default)s)")
    p.add_argument("--only", nargs="+", default=list(preset.default), metavar="PATTERN",
                   help="variants to run (shell patterns; default: %s); their references always run"
                        % (" ".join(preset.default) or "all"))
    p.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                   help="one more variant for this run, e.g. --variant 'lr1e-3=--learning-rate 1e-3'")
    p.add_argument("--reference", default="", help="pair every variant with this one instead")
    p.add_argument("--jobs", type=int, default=preset.jobs, help="trials at once, threads split between them")
    p.add_argument("--out", type=Path, default=None, help="folder for the trials, rows.json, table.md "
                                                          "(default: runs/NAME)")
    p.add_argument("--config", default=preset.config, help="take the trial flags of this NNI config's "
                                                           f"trialCommand first (default: {preset.config or 'none'})")
    p.add_argument("--print-only", action="store_true",
                   help="only tabulate the cells already finished")
    p.add_argument("trial_flags", nargs=argparse.REMAINDER, help="after --: more flags for every trial")


def epilog(preset: Preset) -> str:
    """The preset's variants, for --help."""
    lines = [f"  {n:<18} {preset.flags(n)}" + ("" if preset.reference_of(n) == preset.reference
                                                else f"   (vs {preset.reference_of(n)})")
             for n in preset.variants]
    return (f"trial flags: {preset.trial_flags or '(none)'}"
            + (f", after {preset.config}'s trialCommand flags" if preset.config else "")
            + f"\nvariants (paired with {preset.reference or 'the first --variant'} unless noted):\n"
            + "\n".join(lines))


def select(preset: Preset, only, added, reference: str = "") -> dict[str, tuple[list[str], str]]:
    """name -> (trial flags, reference name) of the variants to run, references included."""
    default_ref = reference or preset.reference or (added[0].partition("=")[0] if added else "")
    known = {n: (shlex.split(preset.flags(n)), reference or preset.reference_of(n)) for n in preset.variants}
    new = []
    for text in added:
        name, sep, flags = text.partition("=")
        if not sep or not re.fullmatch(r"[\w.:+-]+", name):
            raise ParamError(f"--variant {text!r}: expected NAME=FLAGS, NAME of letters, digits and ._:+-")
        known[name] = (shlex.split(flags), default_ref)
        new.append(name)
    missing = [pat for pat in only if not any(fnmatch.fnmatchcase(n, pat) for n in known)]
    if missing:
        raise ParamError(f"--only {' '.join(missing)}: no such variant; known: {', '.join(known)}")
    wanted = [n for n in known if n in new or not only or any(fnmatch.fnmatchcase(n, pat) for pat in only)]
    if not wanted:
        raise ParamError(f"no variants to run; known: {', '.join(known) or 'none (add some with --variant)'}")
    chosen = set()
    for name in wanted:
        ref = known[name][1]
        if ref not in known:
            raise ParamError(f"reference {ref!r}: no such variant; known: {', '.join(known)}")
        chosen |= {name, ref}
    return {n: known[n] for n in known if n in chosen}  # the preset's order


def base_flags(preset: Preset, config: str, extra: list[str], variants: dict, jobs: int) -> list[str]:
    """Flags of every cell: the config's, the preset's, then the command line's, the last
    of a repeated flag winning (checked here, before any trial starts), with one --threads
    for every cell (part of the pairing)."""
    extra = [a for a in extra if a != "--"]
    base = (config_trial_flags(ROOT / config) if config else []) + shlex.split(preset.trial_flags) + extra
    given = parse_flags(base, prog="trial flags")
    per_variant = [set(parse_flags(flags, prog=f"variant {name}")) for name, (flags, _) in variants.items()]
    clash = sorted(set(parse_flags(extra, prog="trial flags")) & (set(PER_CELL) | set.intersection(*per_variant)))
    if clash:
        raise ParamError(f"{', '.join('--' + f for f in clash)}: set per cell by the grid, not a trial flag here")
    if "threads" not in given:
        given["threads"] = str(max(1, available_cores() // max(1, jobs)))
    return [x for name, value in given.items() for x in ("--" + name.replace("_", "-"), value)]  # last one wins


def cells(seeds, variants: dict, base: list[str]) -> dict[tuple[int, str], list[str]]:
    """(seed, variant) -> trial flags, seed by seed (a partial run still pairs whole seeds)."""
    return {(seed, name): [*base, *flags, "--seed", str(seed)]
            for seed in seeds for name, (flags, _) in variants.items()}


def folder(out: Path, seed: int, variant: str) -> Path:
    return out / f"s{seed}-{variant}"


def changed(path: Path, flags: list[str]) -> list[str]:
    """Parameters of a finished cell that its flags now set otherwise (another budget,
    another --jobs and so thread count): reusing it would pair unlike trials."""
    saved = json.loads((path / "params.json").read_text()) if (path / "params.json").is_file() else {}
    now = resolve(parse_flags([*flags, "--output-dir", str(path)])).to_dict()
    return sorted(k for k in now if k in saved and saved[k] != now[k])


def run_cell(out: Path, seed: int, variant: str, flags: list[str]) -> dict:
    """One trial into OUT/s<seed>-<variant> (its log beside it); its metrics.json."""
    path = folder(out, seed, variant)
    metrics = path / "metrics.json"
    if metrics.is_file() and changed(path, flags):
        print(f"[grid] warning: {path.name} finished with other {', '.join(changed(path, flags))}; reused "
              f"(delete it to rerun)", file=sys.stderr, flush=True)
    if not metrics.is_file():
        cmd = [sys.executable, "-m", "segmodel", "train", *flags, "--output-dir", str(path)]
        print(f"[grid] {path.name}: segmodel train {shlex.join(flags)}", file=sys.stderr, flush=True)
        started = time.time()
        out.mkdir(parents=True, exist_ok=True)
        log = path.with_name(path.name + ".log")
        with open(log, "w") as f:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "SEGMODEL_NO_REEXEC": "1"}).returncode
        if rc != 0 or not metrics.is_file():
            raise SegmodelError(f"trial {path.name} failed (exit {rc}): see {log}")
        print(f"[grid] {path.name}: {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    return json.loads(metrics.read_text())


def run_cells(out: Path, grid: dict, jobs: int = 1) -> dict:
    """Every cell, `jobs` trials at a time; (seed, variant) -> metrics.json."""
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = {key: pool.submit(run_cell, out, *key, flags) for key, flags in grid.items()}
        return {key: f.result() for key, f in futures.items()}


def finished(out: Path, keys) -> dict:
    """(seed, variant) -> metrics.json of the cells that have one."""
    found = {}
    for seed, variant in keys:
        path = folder(out, seed, variant) / "metrics.json"
        if path.is_file():
            found[(seed, variant)] = json.loads(path.read_text())
    return found


def scan(out: Path, variants) -> dict:
    """(seed, variant) -> metrics.json of every finished cell under `out`, any seed."""
    found = {}
    for path in sorted(Path(out).glob("s*-*/metrics.json")):
        seed, _, variant = path.parent.name[1:].partition("-")
        if seed.isdigit() and variant in variants:
            found[(int(seed), variant)] = json.loads(path.read_text())
    return found


def config_trial_flags(config: str | os.PathLike) -> list[str]:
    """The flags of an NNI config's `trialCommand: python3 trial.py FLAGS` (the experiment's settings)."""
    return command_flags(yaml.safe_load(Path(config).read_text())["trialCommand"])


def main(args: argparse.Namespace, preset: Preset, name: str) -> int:
    started = time.time()
    out = args.out or Path("runs") / name
    variants = select(preset, args.only, args.variant, args.reference)
    base = base_flags(preset, args.config, args.trial_flags, variants, args.jobs)
    grid = cells(args.seeds, variants, base)
    metrics = finished(out, grid) if args.print_only else run_cells(out, grid, args.jobs)
    if not metrics:
        raise SegmodelError(f"no finished trials under {out}")
    rows = [{"seed": seed, "variant": v, "flags": shlex.join(variants[v][0]), **m}
            for (seed, v), m in metrics.items()]
    refs = {v: ref for v, (_, ref) in variants.items()}
    text = "\n\n".join([
        table.paired_table(rows, refs, preset.columns),
        table.reference_curves(out, rows, refs),
        table.legend(variants),
        table.footer(rows, args.command_line, shlex.join(base), cpu_name(),
                     time.time() - started)])
    write_json_atomic(out / "rows.json", rows)
    write_text_atomic(out / "table.md", text + "\n")
    print(text)
    return 0
