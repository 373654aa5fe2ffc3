"""Run real trials for a quality table: `python -m segmodel train FLAGS`, one folder each.

The quality tables compare whole trials, so each cell is exactly what a user's
`python -m segmodel train` (or an NNI trial) with those flags gives: no private path.
A cell whose metrics.json exists is not run again, so a long table can be resumed.
"""
from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml  # installed with nni

from ..errors import SegmodelError


def run_trial_cell(out: Path, name: str, flags: list[str]) -> dict:
    """One trial into out/name (log in out/name.log); its metrics.json."""
    folder = out / name
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        cmd = [sys.executable, "-m", "segmodel", "train", "--output_dir", str(folder), *flags]
        print(f"[bench] {name}: segmodel train {' '.join(flags)}", file=sys.stderr, flush=True)
        started = time.time()
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{name}.log", "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "SEGMODEL_NO_REEXEC": "1"}).returncode
        if rc != 0 or not metrics.is_file():
            raise SegmodelError(f"trial {name} failed (exit {rc}): see {out / f'{name}.log'}")
        print(f"[bench] {name}: {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    return json.loads(metrics.read_text())


def run_trials(out: Path, cells: dict[str, list[str]], jobs: int = 1) -> dict[str, dict]:
    """Every cell (name -> trial flags), `jobs` trials at a time; name -> metrics.json.
    With jobs > 1 give each cell `--threads` (cores / jobs), or they oversubscribe the CPU."""
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = {name: pool.submit(run_trial_cell, Path(out), name, flags) for name, flags in cells.items()}
        return {name: f.result() for name, f in futures.items()}


def config_trial_flags(config: str | os.PathLike) -> list[str]:
    """The flags of an NNI config's `trialCommand: python3 trial.py FLAGS` (the experiment's settings)."""
    command = yaml.safe_load(Path(config).read_text())["trialCommand"]
    argv = shlex.split(command)
    return argv[argv.index("trial.py") + 1:] if "trial.py" in argv else []


def mean_sd(values) -> str:
    """'mean ± sample sd' to 3 decimals ('-' for none, sd 0 for one value)."""
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU a figure was measured on (`lscpu`'s Model name), for the table's footer."""
    try:
        for line in open(cpuinfo):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"
