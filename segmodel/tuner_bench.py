"""Does the tuner stop re-proposing what the assessor stopped? Repeated real experiments, one table.

    python -m segmodel.tuner_bench config.yml --plain --runs 3 --out runs/tuner_bench
    python -m segmodel.tuner_bench --experiments ID_OR_FOLDER ...   # only the table, for finished runs

Each run is a real `nnictl create` of the config with tuner seed 0, 1, ... (classArgs.seed:
TPE and Random take one), waited on through NNI's REST API until NNI says DONE, then stopped.
Runs go one after another: side by side they would share the CPU and the time budget.
`--plain` also runs each config with the built-in tuner its InformedTuner wraps, which is
NNI's own behaviour (stopped and failed trials never reach the tuner). Per experiment: trials,
finished, stopped by the assessor, near-duplicate stopped trials (learning rate within x1.5
and dropout within 0.02 of an earlier stopped trial; in brackets, those after the tuner's
startup trials), best final `default` and the minute it was reached; then the median per variant.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from . import experiments
from .experiments import Experiment, Trial
from .report import best_so_far

LR_RATIO, DROPOUT_DELTA = 1.5, 0.02


def near_duplicates(trials: list[Trial], after: int = 0) -> list[Trial]:
    """Stopped trials (sequence >= `after`) whose learning rate is within x1.5 and dropout
    within 0.02 of an earlier stopped trial's."""
    stopped = sorted((t for t in trials if t.status == "EARLY_STOPPED"), key=lambda t: t.sequence)
    dups = []
    for i, t in enumerate(stopped):
        lr, dr = t.parameters.get("learning_rate"), t.parameters.get("dropout_rate")
        if t.sequence < after or lr is None or dr is None:
            continue
        if any(max(lr, e["learning_rate"]) / min(lr, e["learning_rate"]) <= LR_RATIO
               and abs(dr - e["dropout_rate"]) <= DROPOUT_DELTA for e in (s.parameters for s in stopped[:i])):
            dups.append(t)
    return dups


def startup_trials(config: dict) -> int:
    """How many trials the tuner proposes at random before it models (TPE: tpe_args.n_startup_jobs, 20)."""
    args = (config.get("tuner") or {}).get("classArgs") or {}
    return int((args.get("tpe_args") or {}).get("n_startup_jobs", 20))


def summarize(exp: Experiment) -> dict:
    """One row of the table."""
    points = best_so_far(exp)
    best = points[-1][1] if points else None
    return {"experiment": exp.id, "trials": len(exp.trials),
            "finished": sum(t.status == "SUCCEEDED" and bool(t.final) for t in exp.trials),
            "stopped": sum(t.status == "EARLY_STOPPED" for t in exp.trials),
            "near_dup_stopped": len(near_duplicates(exp.trials)),
            "near_dup_after_startup": len(near_duplicates(exp.trials, after=startup_trials(exp.config))),
            "best": best, "best_minute": next((round(m, 1) for m, v, _ in points if v == best), None)}


def format_table(rows: list[dict]) -> str:
    """Markdown: one row per run, then the median of each variant's runs."""
    head = ["variant", "seed", "experiment", "trials", "finished", "stopped", "near-dup stopped (after startup)",
            "best default", "at minute"]

    def line(r):
        cells = [r.get("variant", ""), r.get("seed", ""), r["experiment"], r["trials"], r["finished"], r["stopped"],
                 f"{r['near_dup_stopped']} ({r['near_dup_after_startup']})",
                 "-" if r["best"] is None else f"{r['best']:.4f}", "-" if r["best_minute"] is None else r["best_minute"]]
        return "| " + " | ".join(str(c) for c in cells) + " |"

    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [line(r) for r in rows]
    for variant in dict.fromkeys(r.get("variant", "") for r in rows):
        runs = [r for r in rows if r.get("variant", "") == variant]
        if len(runs) < 2:
            continue
        med = {k: _median([r[k] for r in runs]) for k in
               ("trials", "finished", "stopped", "near_dup_stopped", "near_dup_after_startup", "best", "best_minute")}
        out.append(line({**med, "variant": f"**{variant}**", "seed": "median", "experiment": f"{len(runs)} runs"}))
    return "\n".join(out)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ---- running experiments ----------------------------------------------------------------

def variants(path: Path, plain: bool) -> list[tuple[str, dict]]:
    """(name, config) for a config file, relative paths made absolute; with `plain`, also the
    variant whose tuner is the built-in one segmodel's InformedTuner wraps."""
    import yaml

    config = yaml.safe_load(path.read_text())
    base = path.parent.resolve()
    for key in ("searchSpaceFile", "trialCodeDirectory"):
        if key in config:
            config[key] = str(base / config[key])
    for algo in ("tuner", "assessor"):
        if (config.get(algo) or {}).get("codeDirectory"):
            config[algo]["codeDirectory"] = str(base / config[algo]["codeDirectory"])
    found = [(path.stem, config)]
    args = dict(config["tuner"].get("classArgs") or {})
    if plain and config["tuner"].get("className", "").endswith("InformedTuner"):
        args.pop("worst", None)
        found.append((f"{path.stem} (plain {args.get('tuner', 'TPE')})",
                      {**config, "tuner": {"name": args.pop("tuner", "TPE"), "classArgs": args}}))
    return found


def free_port() -> int:
    """A free port whose successor is free too (the NNI manager uses both)."""
    while True:
        with socket.socket() as s, socket.socket() as s2:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            try:
                s2.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


def run_experiment(config: dict, seed: int, workdir: Path, timeout_s: float) -> Path:
    """Run one experiment to its end (NNI status DONE); returns its folder."""
    import yaml

    config = copy.deepcopy(config)
    config["tuner"].setdefault("classArgs", {})["seed"] = seed
    config["experimentWorkingDirectory"] = str(workdir.resolve())
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"config-seed{seed}.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    nnictl = str(Path(sys.executable).parent / "nnictl")
    made = subprocess.run([nnictl, "create", "--config", str(path), "--port", str(port)],
                          capture_output=True, text=True, timeout=300)
    if made.returncode != 0:
        raise RuntimeError(f"nnictl create failed: {made.stdout[-1000:]} {made.stderr[-1000:]}")
    api = f"http://127.0.0.1:{port}/api/v1/nni"
    exp_id = _get(f"{api}/experiment")["id"]
    try:
        deadline = time.time() + timeout_s
        while (status := _get(f"{api}/check-status")["status"]) not in ("DONE", "ERROR"):
            if time.time() > deadline:
                raise TimeoutError(f"experiment {exp_id} not done after {timeout_s:.0f} s ({status})")
            time.sleep(5)
        if status == "ERROR":
            raise RuntimeError(f"experiment {exp_id} ended in ERROR: {_get(f'{api}/check-status')}")
    finally:
        subprocess.run([nnictl, "stop", exp_id], capture_output=True, timeout=120)
    return workdir / exp_id


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


# ---- command line -----------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="*", type=Path, metavar="CONFIG", help="NNI config files to run")
    p.add_argument("--plain", action="store_true", help="also run each config with the plain built-in tuner")
    p.add_argument("--runs", type=int, default=3, help="experiments per variant, tuner seeds 0..N-1 (default 3)")
    p.add_argument("--out", type=Path, default=Path("runs/tuner_bench"), help="experiments' working directory")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for one experiment (default 3600)")
    p.add_argument("--experiments", nargs="*", default=[], metavar="EXP",
                   help="finished experiments (id or folder) to tabulate instead of running any")


def run(args: argparse.Namespace) -> int:
    rows = [{"variant": "", "seed": "", **summarize(experiments.load(e))} for e in args.experiments]
    for path in args.configs:
        for name, config in variants(path, args.plain):
            for seed in range(args.runs):
                print(f"[tuner_bench] {name}, seed {seed}: running (up to {config.get('maxExperimentDuration')})",
                      file=sys.stderr, flush=True)
                folder = run_experiment(config, seed, args.out / re.sub(r"\W+", "_", name).strip("_"), args.timeout)
                rows.append({"variant": name, "seed": seed, **summarize(experiments.load(folder))})
                print(format_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    if not rows:
        print("error: give CONFIG files to run or --experiments to tabulate", file=sys.stderr)
        return 2
    print(format_table(rows))
    return 0


def register(subparsers, name: str = "tuner") -> None:
    """For a `bench` command group: `python -m segmodel bench tuner ...`."""
    p = subparsers.add_parser(name, help="repeated real experiments: does the tuner re-propose stopped trials?",
                              description=__doc__.splitlines()[0])
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segmodel.tuner_bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except experiments.ExperimentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
