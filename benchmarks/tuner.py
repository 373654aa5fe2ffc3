"""Does the tuner stop re-proposing what the assessor stopped? Repeated real experiments, one table.

    python -m benchmarks tuner configs/tuner_baseline.yml config.yml --runs 3 --out runs/tuner_bench
    python -m benchmarks tuner --experiments [VARIANT=]ID_OR_FOLDER ...   # only the table, for finished runs

Each run is a real `nnictl create` of the config with tuner seed 0, 1, ... (classArgs.seed:
TPE and Random take one), waited on through NNI's REST API until NNI says DONE, then stopped.
Runs go one after another (side by side they would share the CPU and the time budget),
seed 0 of every variant first, then seed 1, and so on.
`--plain` also runs each config with the built-in tuner its InformedTuner wraps, which is
NNI's own behaviour (stopped and failed trials never reach the tuner). Per experiment: trials,
finished, stopped by the assessor, near-duplicate stopped trials (learning rate within x1.5
and dropout within 0.02 of an earlier stopped trial; in brackets, those after the tuner's
startup trials), best final `default` and the minute it was reached; then the median per variant.
Writes table.md and best_vs_time.png (every run's best-so-far curve, one colour per variant) under --out.
"""
from __future__ import annotations

import argparse
import copy
import re
import statistics
import sys
from pathlib import Path

import yaml  # installed with nni

from segmodel.experiment import records
from segmodel.experiment.records import Experiment, Trial
from segmodel.experiment.report import best_curve, best_so_far
from segmodel.files import write_text_atomic

from .nni_runs import absolute_paths, run_experiment

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


def plot_runs(runs: list[tuple[str, Experiment]], path: Path) -> None:
    """Best `default` so far against minutes, one step curve per run, one colour per variant:
    the side-by-side view of the table's last two columns."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    colours = dict(zip(dict.fromkeys(name for name, _ in runs), ["#8C8C8C", "#C44E52", "#4C72B0", "#55A868"] * 4))
    labelled = set()
    for name, exp in runs:
        xs, ys = best_curve(exp)
        if not xs:
            continue
        ax.step(xs, ys, where="post", color=colours[name], lw=1.6, alpha=0.85,
                label=None if name in labelled else name or "experiments")
        labelled.add(name)
    ax.set_xlabel("minutes since the experiment started")
    ax.set_ylabel("best default so far")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("best default so far, one line per run")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ---- running experiments ----------------------------------------------------------------

def variants(path: Path, plain: bool) -> list[tuple[str, dict]]:
    """(name, config) for a config file, relative paths made absolute; with `plain`, also the
    variant whose tuner is the built-in one segmodel's InformedTuner wraps."""
    config = absolute_paths(yaml.safe_load(path.read_text()), path.parent.resolve())
    found = [(path.stem, config)]
    args = dict(config["tuner"].get("classArgs") or {})
    if plain and config["tuner"].get("className", "").endswith("InformedTuner"):
        args.pop("worst", None)
        found.append((f"{path.stem} (plain {args.get('tuner', 'TPE')})",
                      {**config, "tuner": {"name": args.pop("tuner", "TPE"), "classArgs": args}}))
    return found


def with_seed(config: dict, seed: int) -> dict:
    config = copy.deepcopy(config)
    config["tuner"].setdefault("classArgs", {})["seed"] = seed
    return config


# ---- command line -----------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="*", type=Path, metavar="CONFIG", help="NNI config files to run")
    p.add_argument("--plain", action="store_true", help="also run each config with the plain built-in tuner")
    p.add_argument("--runs", type=int, default=3, help="experiments per variant, tuner seeds 0..N-1 (default 3)")
    p.add_argument("--out", type=Path, default=Path("runs/tuner_bench"),
                   help="experiments' working directory, table.md and best_vs_time.png")
    p.add_argument("--stall", type=float, default=900,
                   help="give up after this many seconds without a trial event (default 900)")
    p.add_argument("--experiments", nargs="*", default=[], metavar="EXP",
                   help="finished experiments (id or folder, VARIANT=... to name its variant) to tabulate")


def main(args: argparse.Namespace) -> int:
    runs = []  # (variant, seed, experiment)
    for given in args.experiments:
        name, _, exp = given.rpartition("=")
        exp = records.load(exp)
        runs.append((name, ((exp.config.get("tuner") or {}).get("classArgs") or {}).get("seed", ""), exp))
    todo = [v for path in args.configs for v in variants(path, args.plain)]
    for seed in range(args.runs if todo else 0):  # seed by seed, so drift in the machine's speed hits every variant alike
        for name, config in todo:
            print(f"[bench tuner] {name}, seed {seed}: running (up to {config.get('maxExperimentDuration')})",
                  file=sys.stderr, flush=True)
            workdir = args.out / re.sub(r"\W+", "_", name).strip("_") / f"seed{seed}"
            runs.append((name, seed, run_experiment(with_seed(config, seed), workdir, stall=args.stall)))
            print(format_table([_row(*runs[-1])]).splitlines()[-1], file=sys.stderr, flush=True)
    if not runs:
        print("error: give CONFIG files to run or --experiments to tabulate", file=sys.stderr)
        return 2
    table = format_table([_row(*r) for r in runs])
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "table.md", table + "\n")
    plot_runs([(name, exp) for name, _, exp in runs], args.out / "best_vs_time.png")
    print(f"{table}\n\nwritten: {args.out / 'table.md'}, {args.out / 'best_vs_time.png'}")
    return 0


def _row(variant: str, seed, exp: Experiment) -> dict:
    return {"variant": variant, "seed": seed, **summarize(exp)}
