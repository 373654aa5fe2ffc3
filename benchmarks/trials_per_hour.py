"""Experiment throughput (trials/hour) at several trial concurrencies, with real NNI.

    python benchmarks/trials_per_hour.py --concurrency 1 2 --trials 4

For each concurrency: a real `nnictl` experiment of config.yml's trial command
(unchanged: the default experiment's settings), `--trials` trials, no assessor, no
SEGMODEL_TRIAL_CONCURRENCY in the environment, so each trial finds the concurrency
itself (NNI REST API; segmodel/runtime.py) and sizes its thread pools to
cores // concurrency. Throughput = trials / (last trial end - first trial start).
Each trial's stderr line "segmodel: N intra-op thread(s) (...)" is collected to show
what it chose. Prints a JSON line per concurrency and a summary.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from nni_helpers import NNIExperiment, base_config  # noqa: E402

USAGE_LINE = re.compile(r"segmodel: process used cpu ([\d.]+) s")
THREADS_LINE = re.compile(r"segmodel: (\d+) intra-op thread\(s\) \((.*?)\); precision")


def _wait_first_trial(exp, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = exp.get("/check-status")
        if status["status"] == "ERROR":
            raise RuntimeError(f"experiment ERROR: {status.get('errors')}")
        if exp.trials():
            return
        time.sleep(2)
    raise RuntimeError("no trial started")


def measure(concurrency: int, trials: int, trial_command: str, timeout: float) -> dict:
    config = base_config(trialCommand=trial_command, trialConcurrency=concurrency, maxTrialNumber=trials,
                         maxExperimentDuration="2h", maxTrialDuration="30m",
                         # Random, not config.yml's TPE: the tuner does not change what a trial costs, and
                         # NNI 3.0's TPE dispatcher can die mid-run (KeyError in _running_params.pop)
                         tuner={"name": "Random", "classArgs": {"seed": 0}})
    env = {k: v for k, v in os.environ.items() if k != "SEGMODEL_TRIAL_CONCURRENCY"}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix=f"tph-c{concurrency}-") as tmp:
        # On a busy machine NNI can fail to start: nnictl waits ~3 s for the manager and the
        # manager 10 s for the tuner process (which imports nni, pandas and scipy). Retry.
        for attempt in range(4):
            exp = NNIExperiment(config, Path(tmp) / str(attempt))
            exp.workdir.mkdir()
            exp.env = env | {"PATH": exp.env["PATH"]}
            try:
                exp.start()
                _wait_first_trial(exp)
                break
            except RuntimeError as e:
                exp.stop()
                print(f"[tph] experiment failed to start (attempt {attempt + 1}): {str(e)[-300:]}",
                      file=sys.stderr)
        else:
            raise RuntimeError("the experiment failed to start 4 times")
        try:
            jobs = exp.wait_done(timeout=timeout, n_trials=trials)
            threads, cpu = [], []
            for job in jobs:
                folder = exp.trial_dir(job["trialJobId"])
                log = "\n".join(f.read_text(errors="replace") for f in folder.iterdir()
                                if f.is_file() and f.name in ("trial.log", "trial.stderr", "stderr", "trial.stdout"))
                hit = THREADS_LINE.search(log)
                threads.append(f"{hit.group(1)} ({hit.group(2)})" if hit else "?")
                used = USAGE_LINE.search(log)
                if used:
                    cpu.append(float(used.group(1)))
        finally:
            exp.stop()
    starts = [j["startTime"] / 1e3 for j in jobs if j.get("startTime")]
    ends = [j["endTime"] / 1e3 for j in jobs if j.get("endTime")]
    span = max(ends) - min(starts)
    durations = sorted(round((j["endTime"] - j["startTime"]) / 1e3, 1) for j in jobs if j.get("endTime"))
    return {"concurrency": concurrency, "trials": len(jobs),
            "succeeded": sum(j["status"] == "SUCCEEDED" for j in jobs),
            "span_s": round(span, 1), "trials_per_hour": round(len(jobs) / span * 3600, 1),
            "trial_durations_s": durations, "threads_chosen": sorted(set(threads)),
            "trial_cpu_s": sorted(cpu),
            "median_trial_cpu_s": statistics.median(cpu) if cpu else None,
            "load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    import yaml

    default_command = yaml.safe_load((ROOT / "config.yml").read_text())["trialCommand"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--trials", type=int, default=4, help="trials per experiment")
    parser.add_argument("--trial_args", default=default_command.split("trial.py", 1)[1].strip(),
                        help="trial.py flags (default: config.yml's)")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    command = f"{sys.executable} trial.py {args.trial_args}"
    results = []
    for c in args.concurrency:
        print(f"[tph] concurrency {c}: {args.trials} trials of `{command}`", file=sys.stderr, flush=True)
        t = time.time()
        results.append(measure(c, args.trials, command, args.timeout))
        print(json.dumps(results[-1]), flush=True)
        print(f"[tph] done in {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    best = max(results, key=lambda r: r["trials_per_hour"])
    base = results[0]["trials_per_hour"]
    print(json.dumps({"summary": {f"c{r['concurrency']}": r["trials_per_hour"] for r in results},
                      "ratio_to_first": {f"c{r['concurrency']}": round(r["trials_per_hour"] / base, 2)
                                         for r in results},
                      "best_concurrency": best["concurrency"]}), flush=True)


if __name__ == "__main__":
    main()
