"""Run a real NNI experiment to its end for a bench: `nnictl create`, wait, `nnictl stop`.

Waits follow events, not a clock: the run ends when NNI says DONE (or `trials` trials have
ended) and fails only after `stall` seconds in which no trial changed state (a hang, not a
slow machine). Progress comes from the experiment's own database, as `report` reads it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml  # installed with nni

from segmodel.errors import SegmodelError
from segmodel.experiment import manager, records

NNICTL = str(Path(sys.executable).parent / "nnictl")


def absolute_paths(config: dict, folder: Path) -> dict:
    """NNI resolves a config's relative paths from the config file's folder; a config
    written elsewhere needs them absolute."""
    config = dict(config)
    for key in ("searchSpaceFile", "trialCodeDirectory"):
        if key in config:
            config[key] = str(folder / config[key])
    for algo in ("tuner", "assessor"):
        if (config.get(algo) or {}).get("codeDirectory"):
            config[algo] = {**config[algo], "codeDirectory": str(folder / config[algo]["codeDirectory"])}
    return config


def run_experiment(config: dict, workdir: Path, trials: int | None = None, stall: float = 900,
                   env: dict | None = None) -> records.Experiment:
    """Run `config` in `workdir` until NNI says DONE (or `trials` trials ended); always stopped."""
    workdir = workdir.resolve()  # nnictl runs inside it, so a relative path would not resolve
    workdir.mkdir(parents=True, exist_ok=True)
    config = {**config, "experimentWorkingDirectory": str(workdir)}
    path = workdir / "config.yml"
    path.write_text(yaml.safe_dump(config))
    env = {**(env if env is not None else os.environ)}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # nnictl and the trials' python3
    port = manager.free_port()
    created = subprocess.run([NNICTL, "create", "--config", str(path), "--port", str(port)],
                             env=env, capture_output=True, text=True, timeout=300, cwd=workdir)
    if created.returncode != 0:
        raise SegmodelError(f"nnictl create failed: {(created.stdout + created.stderr).strip()[-300:]}")
    exp_id = _get(port, "/experiment")["id"]
    try:
        return _wait(port, workdir / exp_id, trials, stall)
    finally:
        subprocess.run([NNICTL, "stop", exp_id], env=env, capture_output=True, timeout=120)


def _wait(port: int, folder: Path, trials: int | None, stall: float) -> records.Experiment:
    last, changed = None, time.time()
    while time.time() - changed < stall:
        status = _get(port, "/check-status")["status"]
        if status == "ERROR":
            raise SegmodelError(f"experiment ended in ERROR; its logs are under {folder}")
        try:
            exp = records.load(folder)
        except records.ExperimentError:  # the database appears once the manager runs
            exp = None
        if exp is not None:
            if status == "DONE" or (trials and sum(t.end_ms is not None for t in exp.trials) >= trials):
                return exp
            state = [(t.id, t.status) for t in exp.trials]
            if state != last:
                last, changed = state, time.time()
        time.sleep(2)
    raise SegmodelError(f"no trial changed state for {stall:.0f} s; the NNI manager log is under {folder}")


def _get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni{path}", timeout=30) as r:
        return json.loads(r.read() or b"null")
