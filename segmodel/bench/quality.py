"""Does a pruned model keep its accuracy? Dense vs pruned at the same total epochs, paired by seed.

    python -m segmodel bench quality                          # the default table (~70 min on 2 cores)
    python -m segmodel bench quality --seeds 0 --sparsities 0.8 --methods recipe   # one cell a seed
    python -m segmodel bench quality --print-only --methods recipe seed agp kd  # tabulate what finished

Every cell is one real trial (`python -m segmodel train`), `--seed N --sparsity S` plus
the method's flags plus the trial flags (default TRIAL_FLAGS: a budget where the dense
model has converged, on a built-in set 4x the usual validation images; the dense
validation curve is printed so the budget can be judged). The dense row is the same
trial with `--sparsity 0`: same epochs and learning-rate schedule, no pruning. A seed
fixes split, initial weights and data order, so Δ is paired: each pruned trial minus its
own seed's dense trial, then mean ± sd over seeds. Finished cells are not rerun. Writes
rows.json and table.md under --out.
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import time
from pathlib import Path

from ..errors import ParamError, SegmodelError
from ..files import write_json_atomic, write_text_atomic
from ..params import parse_flags
from ..runtime import default_threads
from .trials import cpu_name, mean_sd, run_trials

# 64 px, 12 dense + 8 fine-tuning epochs at lr 2e-3 (dense has converged: see the curve),
# 48 built-in images, half of them validation (24 images, ~1000 patches of 64 px): the
# dense model's seed-to-seed spread is 0.6 pt here, 1.3 pt with half as many.
TRIAL_FLAGS = ("--patch_size 64 --learning_rate 2e-3 --epochs 12 --finetune_epochs 8 "
               "--builtin_tiles 24 --val_fraction 0.5")
# method -> (label, flags); "recipe" is what a trial does by default
METHODS = {
    "recipe": ("oneshot, global ranking, cosine fine-tuning (defaults)", []),
    "seed": ("oneshot, uniform per layer, constant lr (the seed's)", ["--allocation", "uniform",
                                                                      "--finetune_lr", "constant"]),
    "uniform": ("oneshot, uniform per layer, cosine fine-tuning", ["--allocation", "uniform"]),
    "constant": ("oneshot, global ranking, constant lr", ["--finetune_lr", "constant"]),
    "agp": ("AGP, global ranking, cosine fine-tuning", ["--schedule", "agp"]),
    "kd": ("recipe + distillation (kd_temperature, kd_alpha defaults)", ["--kd", "true"]),
}
FIXED = ("seed", "sparsity", "output_dir")


def add_arguments(p) -> None:
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    p.add_argument("--methods", nargs="+", default=["recipe", "seed"], choices=list(METHODS),
                   help="pruning methods compared with dense (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=1, help="trials at once, threads split between them")
    p.add_argument("--out", type=Path, default=Path("runs/quality"), help="folder for the trials, rows.json, table.md")
    p.add_argument("--trial_flags", default=TRIAL_FLAGS, help="flags of every trial (default: %(default)s)")
    p.add_argument("--print-only", action="store_true", help="only tabulate the cells already finished")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more flags for every trial")


def cells(seeds, sparsities, methods, base: list[str]) -> dict[str, list[str]]:
    """Cell name -> trial flags, seed by seed (a partial run still pairs complete seeds)."""
    out = {}
    for seed in seeds:
        out[f"s{seed}-dense"] = [*base, "--seed", str(seed), "--sparsity", "0"]
        for s in sparsities:
            for m in methods:
                out[f"s{seed}-{m}-{s}"] = [*base, *METHODS[m][1], "--seed", str(seed), "--sparsity", str(s)]
    return out


def main(args) -> int:
    base = shlex.split(args.trial_flags) + [a for a in args.extra if a != "--"]
    given = parse_flags(base, prog="quality trial flags")
    fixed = sorted(set(given) & set(FIXED))
    if fixed:
        raise ParamError(f"{', '.join('--' + f for f in fixed)}: set per cell by bench quality, not a trial flag")
    if "threads" not in given:  # the same thread count in every cell
        base += ["--threads", str(max(1, default_threads() // max(1, args.jobs)))]
    started = time.time()
    grid = cells(args.seeds, args.sparsities, args.methods, base)
    if args.print_only:
        metrics = {n: json.loads((args.out / n / "metrics.json").read_text()) for n in grid
                   if (args.out / n / "metrics.json").is_file()}
    else:
        metrics = run_trials(args.out, grid, args.jobs)
    seeds = [seed for seed in args.seeds if f"s{seed}-dense" in metrics]  # Δ needs the seed's dense trial
    rows = [{"seed": seed, "method": "dense", "sparsity": 0.0, **_row(metrics[f"s{seed}-dense"])} for seed in seeds]
    rows += [{"seed": seed, "method": m, "sparsity": s, **_row(metrics[f"s{seed}-{m}-{s}"])}
             for s in args.sparsities for m in args.methods for seed in seeds if f"s{seed}-{m}-{s}" in metrics]
    if not rows:
        raise SegmodelError(f"no finished trials under {args.out}")
    curve = dense_curve(args.out, seeds)
    footer = (f"`python -m segmodel bench quality{' --print-only' * args.print_only} "
              f"--seeds {' '.join(map(str, args.seeds))} --sparsities "
              f"{' '.join(f'{s:g}' for s in args.sparsities)} --methods {' '.join(args.methods)}`, trial flags "
              f"`{' '.join(base)}`; {cpu_name()}, precision {rows[0]['precision']}; wall {time.time() - started:.0f} s "
              f"(cells already finished are not rerun: sum of trial times {sum(r['duration_s'] for r in rows):.0f} s)")
    text = f"{table(rows)}\n\nDense validation mean IoU by epoch (mean over seeds):\n{curve}\n\n{footer}"
    write_json_atomic(args.out / "rows.json", rows)
    write_text_atomic(args.out / "table.md", text + "\n")
    print(text)
    return 0


def _row(m: dict) -> dict:
    return {"val_iou": m["iou"], "val_accuracy": m["accuracy"], "measured_sparsity": m["sparsity"],
            "precision": m["precision"], "duration_s": m["duration_s"], "model_gzip_bytes": m["model_gzip_bytes"]}


def dense_curve(out: Path, seeds) -> str:
    """The dense trials' validation mean IoU after each epoch, averaged over seeds."""
    per_epoch: dict[int, list[float]] = {}
    for seed in seeds:
        with open(out / f"s{seed}-dense" / "history.csv") as f:
            for row in csv.DictReader(f):
                per_epoch.setdefault(int(row["epoch"]), []).append(float(row["val_mean_iou"]))
    return " ".join(f"{e}:{statistics.mean(v):.3f}" for e, v in sorted(per_epoch.items()))


def table(rows: list[dict]) -> str:
    """One line per (method, sparsity): measured sparsity, val mean IoU mean ± sd over
    seeds, and Δ = pruned - dense of the same seed, mean ± sd and the worst seed."""
    dense = {r["seed"]: r["val_iou"] for r in rows if r["method"] == "dense"}
    lines = ["| method | target | measured sparsity | seeds | val mean IoU | Δ vs dense (paired) | worst seed Δ "
             "| gzip vs dense |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    gz = statistics.mean(r["model_gzip_bytes"] for r in rows if r["method"] == "dense")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["sparsity"]), []).append(r)
    for (method, s), rs in groups.items():
        label = "dense (same epochs, no pruning)" if method == "dense" else METHODS[method][0]
        deltas = [100 * (r["val_iou"] - dense[r["seed"]]) for r in rs]
        delta = "" if method == "dense" else f"{statistics.mean(deltas):+.1f} ± " \
            f"{statistics.stdev(deltas) if len(deltas) > 1 else 0:.1f} pt"
        worst = "" if method == "dense" else f"{min(deltas):+.1f} pt"
        lines.append(f"| {label} | {s:.0%} | {statistics.mean(r['measured_sparsity'] for r in rs):.4f} | {len(rs)} "
                     f"| {mean_sd([r['val_iou'] for r in rs])} | {delta} | {worst} "
                     f"| {statistics.mean(r['model_gzip_bytes'] for r in rs) / gz:.2f} |")
    return "\n".join(lines)
