"""How fast a model file runs, and on what: the one timer, and the figures export records,
trials measure and the quantization bench tabulates, measured the same way everywhere.

The one call timer (`timed_calls`): every call once untimed, then all of them in turn,
round after round. A shared, noisy CPU slows whatever runs while it is busy; interleaving
spreads that noise over all the calls alike, so the ratios between them are the figures
to quote.

Speed is images/s of `TFLiteRunner.probabilities` (what `predict` calls), every file
timed in turn in the same rounds (`timed_calls`), so a busy CPU slows them alike:
compare files by their ratios. Which runtime ran a file comes from the interpreter's
graph after the run (`TFLiteRunner.delegation`), never from timing.

A trial times its files in a child process (`speeds_apart`, `python -m
segmodel.deploy.speed`) that refuses AMX as `export` and `predict` do (deploy/amx.py):
the trial's own process trained with AMX, which makes XNNPACK's int8 kernels the slow ones.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import SegmodelError
from . import amx
from .runners import TFLiteRunner


def timed_calls(calls: dict, rounds: int) -> dict:
    """Median seconds of each zero-argument call: every call runs once untimed (trace,
    allocate, warm caches), then all of them in turn, `rounds` times."""
    for call in calls.values():
        call()
    times: dict = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            t = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - t)
    return {key: statistics.median(t) for key, t in times.items()}


def delegate_note(name: str, delegation: dict, problems=()) -> str | None:
    """One line when a file does not run on XNNPACK whole, saying which node and why
    (the converter's own diagnosis when it has one, else what the interpreter shows)."""
    runtime = delegation["runtime"]
    if runtime == "xnnpack":
        return None
    if problems:
        why = problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
    elif delegation.get("not_delegated"):
        left = delegation["not_delegated"]
        why = "not delegated: " + ", ".join(left[:4]) + (f" and {len(left) - 4} more" if len(left) > 4 else "")
    else:
        why = delegation.get("delegate_error") or "the XNNPACK delegate was not applied"
    where = ("runs on TFLite's built-in kernels, not XNNPACK" if runtime == "builtin" else
             f"runs {delegation['delegated_ops']} of {delegation['ops']} ops on XNNPACK")
    return f"{name} {where}: {why}"


def images_per_second(runners: dict, batch: int, rounds: int, seed: int = 0) -> dict:
    """key -> images/s of runner.probabilities on `batch` random images of its own input
    size, every runner timed in the same rounds (one untimed call each first)."""
    rng = np.random.default_rng(seed)
    calls = {}
    for key, runner in runners.items():
        x = rng.random((batch, runner.patch_size, runner.patch_size, 3), dtype=np.float32)
        calls[key] = lambda runner=runner, x=x: runner.probabilities(x)
    return {key: round(batch / t, 2) for key, t in timed_calls(calls, rounds).items()}


def speeds_apart(contents: dict[str, bytes], batch: int, rounds: int) -> dict:
    """key -> {"img_s", "runtime"} of each TFLite file (bytes), timed as images_per_second
    does, in a fresh process that refuses AMX before its first interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        for key, content in contents.items():
            (Path(tmp) / f"{key}.tflite").write_bytes(content)
        cmd = [sys.executable, "-m", "segmodel.deploy.speed", tmp, str(batch), str(rounds), *contents]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SegmodelError(f"timing TFLite files in a child process failed (exit {done.returncode}): {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _time_folder(folder: str, batch: str, rounds: str, *keys: str) -> None:
    """The child of speeds_apart: one JSON line on stdout."""
    amx.refuse()
    runners = {key: TFLiteRunner(Path(folder) / f"{key}.tflite") for key in keys}
    ips = images_per_second(runners, int(batch), int(rounds))
    print(json.dumps({key: {"img_s": ips[key], "runtime": runners[key].delegation["runtime"]} for key in keys}))


def runtime_fields(runner, problems=()) -> dict:
    """export.json's runtime fields of one file, after it ran."""
    d = runner.delegation
    return {"runtime": d["runtime"], "delegated_ops": d["delegated_ops"], "ops": d["ops"],
            "not_delegated": d["not_delegated"], "delegate_error": d["delegate_error"],
            "xnnpack_problems": list(problems)}


if __name__ == "__main__":
    _time_folder(*sys.argv[1:])
