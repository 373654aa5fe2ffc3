"""Experiment throughput (trials/hour) at several trial concurrencies, with real NNI.

    python -m benchmarks trials-per-hour --concurrency 1 2 --trials 4

For each concurrency: a real `nnictl create` experiment running config.yml's trial
command (the default experiment's settings), `--trials` trials, Random tuner, no
assessor, and no SEGMODEL_TRIAL_CONCURRENCY in the environment, so each trial finds the
concurrency itself (NNI REST API, segmodel/runtime.py) and sizes its thread pools to
cores // concurrency. Progress is read from the experiment's own database
(segmodel.experiment.records, as `report` does). Throughput = trials / (last trial end - first
trial start). A trial's CPU seconds are measured from outside it: NNI runs trialCommand
in bash, and this bench appends bash's `times` (user + system of the finished children,
i.e. the trial process) to its experiment's command; nothing in the trial runs for it.
Prints a JSON line per concurrency and a summary.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

import yaml  # installed with nni

from .nni_runs import absolute_paths, run_experiment

ROOT = Path(__file__).resolve().parents[1]
# bash's `times`: the shell's user/system line, then its children's ("0m52.310s 0m1.204s")
TIMES_LINE = re.compile(r"^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$", re.MULTILINE)
THREADS_LINE = re.compile(r"segmodel: (\d+) intra-op thread\(s\) \((.*?)\); precision")


def add_arguments(p) -> None:
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    p.add_argument("--trials", type=int, default=4, help="trials per experiment")
    p.add_argument("--config", default=str(ROOT / "config.yml"), help="NNI config whose trial command to run")
    p.add_argument("--stall", type=float, default=900, help="give up after this many seconds without a trial event")


def main(args) -> int:
    base = absolute_paths(yaml.safe_load(Path(args.config).read_text()), Path(args.config).resolve().parent)
    results = []
    for c in args.concurrency:
        print(f"[bench] concurrency {c}: {args.trials} trials of `{base['trialCommand']}`", file=sys.stderr, flush=True)
        results.append(measure(base, c, args.trials, args.stall))
        print(json.dumps(results[-1]), flush=True)
    first = results[0]["trials_per_hour"]
    print(json.dumps({"summary": {f"c{r['concurrency']}": r["trials_per_hour"] for r in results},
                      "ratio_to_first": {f"c{r['concurrency']}": round(r["trials_per_hour"] / first, 2)
                                         for r in results},
                      "best_concurrency": max(results, key=lambda r: r["trials_per_hour"])["concurrency"]}))
    return 0


def with_cpu_times(command: str) -> str:
    """The trial command, then bash's `times` on stderr, keeping the command's exit status."""
    return f"{command}; rc=$?; times >&2; exit $rc"


def trial_cpu_s(log: str) -> float | None:
    """User + system CPU seconds of the trial process, from the `times` lines in its stderr."""
    lines = TIMES_LINE.findall(log)
    if len(lines) < 2:
        return None
    um, us, sm, ss = lines[-1]  # the children's line comes second
    return round(60 * int(um) + float(us) + 60 * int(sm) + float(ss), 2)


def measure(base: dict, concurrency: int, trials: int, stall: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SEGMODEL_TRIAL_CONCURRENCY"}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix=f"tph-c{concurrency}-") as tmp:
        config = {**base, "trialCommand": with_cpu_times(base["trialCommand"]), "trialConcurrency": concurrency,
                  "maxTrialNumber": trials, "maxExperimentDuration": "2h", "maxTrialDuration": "30m",
                  # the tuner does not change what a trial costs; Random has no start-up phase
                  "tuner": {"name": "Random", "classArgs": {"seed": 0}}}
        config.pop("assessor", None)
        exp = run_experiment(config, Path(tmp) / "nni-experiments", trials=trials, stall=stall, env=env)
        ended = [t for t in exp.trials if t.end_ms]
        threads, cpu = [], []
        for t in ended:
            log = "\n".join(f.read_text(errors="replace") for f in (t.dir.iterdir() if t.dir else ())
                            if f.is_file() and f.name in ("trial.log", "trial.stderr", "stderr", "trial.stdout"))
            hit = THREADS_LINE.search(log)
            threads.append(f"{hit.group(1)} ({hit.group(2)})" if hit else "?")
            used = trial_cpu_s(log)
            if used is not None:
                cpu.append(used)
    span = (max(t.end_ms for t in ended) - min(t.start_ms for t in ended)) / 1e3
    return {"concurrency": concurrency, "trials": len(ended),
            "succeeded": sum(t.status == "SUCCEEDED" for t in ended),
            "span_s": round(span, 1), "trials_per_hour": round(len(ended) / span * 3600, 1),
            "trial_durations_s": sorted(t.duration_s for t in ended), "threads_chosen": sorted(set(threads)),
            "trial_cpu_s": sorted(cpu), "median_trial_cpu_s": statistics.median(cpu) if cpu else None,
            "load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2)}
