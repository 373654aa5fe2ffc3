"""Does distillation help the pruned student? Fine-tuning with and without KD, paired by seed.

    python -m segmodel bench kd-table --seeds 0 1 2 --sparsities 0.8 0.9 --kd_configs 4:1 1:0.1 \\
        --jobs 3 --out runs/kd_table -- --patch_size 64 --epochs 3 --finetune_epochs 2

Every cell is one real trial, `python -m segmodel train --schedule oneshot --seed N
--sparsity S --kd {false | true --kd_temperature T --kd_alpha A}` plus the flags after
`--`, scored as any trial is (validation mean IoU from one confusion matrix). Per seed and
sparsity one more trial with `--finetune_epochs 0` gives the pruned model before
fine-tuning. The comparison is paired: a seed fixes the split, the initial weights and
the data order, and at a fixed thread count a trial is bit-for-bit reproducible on a CPU,
so all cells of a seed fine-tune the same dense model (checked: their dense IoU must
agree, else the table says so). Writes rows.json and table.md under --out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from ..errors import ParamError
from ..params import parse_flags, resolve
from ..runtime import default_threads
from .trials import mean_sd, run_trials


def _kd_config(text: str) -> tuple[float, float]:
    try:
        t, a = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected T:alpha, e.g. 4:1, got {text!r}") from None
    return t, a


def add_arguments(p) -> None:
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--kd_configs", type=_kd_config, nargs="+", default=None, metavar="T:ALPHA",
                   help="distillation settings to compare with no KD (default: the trial's kd_temperature:kd_alpha)")
    p.add_argument("--jobs", type=int, default=1, help="trials at once, threads split between them")
    p.add_argument("--out", type=Path, default=Path("runs/kd_table"), help="folder for the trials, rows.json, table.md")
    p.add_argument("trial_flags", nargs=argparse.REMAINDER, help="after --: flags for every trial")


FIXED = ("seed", "sparsity", "schedule", "kd", "kd_temperature", "kd_alpha", "teacher", "output_dir")


def cells(seeds, sparsities, kd_configs, base: list[str]) -> dict[str, list[str]]:
    """Cell name -> trial flags: for each seed and sparsity, the pruned model without
    fine-tuning, fine-tuning without KD, and fine-tuning with each KD setting."""
    out = {}
    for seed in seeds:
        for s in sparsities:
            common = [*base, "--schedule", "oneshot", "--seed", str(seed), "--sparsity", str(s)]
            out[f"s{seed}-{s}-pruned"] = [*common, "--finetune_epochs", "0", "--kd", "false"]
            out[f"s{seed}-{s}-nokd"] = [*common, "--kd", "false"]
            for t, a in kd_configs:
                out[f"s{seed}-{s}-kd{t:g}:{a:g}"] = [*common, "--kd", "true", "--kd_temperature", str(t),
                                                     "--kd_alpha", str(a)]
    return out


def main(args) -> int:
    base = [a for a in args.trial_flags if a != "--"]
    given = parse_flags(base, prog="kd-table trial flags")
    fixed = sorted(set(given) & set(FIXED))
    if fixed:
        raise ParamError(f"{', '.join('--' + f for f in fixed)}: set per cell by kd-table, not a trial flag here")
    defaults = resolve(given)
    kd_configs = args.kd_configs or [(defaults.kd_temperature, defaults.kd_alpha)]
    if "threads" not in given:  # the same thread count in every cell: part of what makes the cells paired
        base += ["--threads", str(max(1, default_threads() // max(1, args.jobs)))]
    started = time.time()
    grid = cells(args.seeds, args.sparsities, kd_configs, base)
    metrics = run_trials(args.out, grid, args.jobs)
    rows = []
    for seed in args.seeds:
        for s in args.sparsities:
            pruned = metrics[f"s{seed}-{s}-pruned"]
            for kd in [None, *kd_configs]:
                m = metrics[f"s{seed}-{s}-" + ("nokd" if kd is None else f"kd{kd[0]:g}:{kd[1]:g}")]
                rows.append({"seed": seed, "sparsity": s, "kd": int(kd is not None),
                             "variant": "no KD" if kd is None else f"KD T={kd[0]:g} α={kd[1]:g}",
                             "val_iou": m["iou"], "val_accuracy": m["accuracy"], "pruned_val_iou": pruned["iou"],
                             "dense_val_iou": m["dense_iou"], "measured_sparsity": m["sparsity"],
                             "precision": m["precision"], "duration_s": m["duration_s"],
                             "paired": m["dense_iou"] == pruned["dense_iou"]})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1) + "\n")
    unpaired = sum(not r["paired"] for r in rows)
    footer = (f"`python -m segmodel bench kd-table` with trial flags `{' '.join(base)}`; precision "
              f"{rows[0]['precision']}, wall {time.time() - started:.0f} s"
              + (f"\n\nWARNING: {unpaired} cells did not reproduce their seed's dense model: not paired" if unpaired
                 else "; every cell of a seed fine-tuned the same dense model"))
    text = table(rows)
    (args.out / "table.md").write_text(f"{text}\n\n{footer}\n")
    print(text + "\n\n" + footer)
    return 0


def table(rows: list[dict]) -> str:
    """One line per (sparsity, variant): val mean IoU mean ± sample sd over seeds; for KD
    variants also the paired difference to no KD (same seed, same dense weights)."""
    lines = ["| sparsity | fine-tuning | seeds | val mean IoU | Δ vs no KD (paired) | KD better in |",
             "|---:|---|---:|---:|---:|---:|"]
    for s in sorted({r["sparsity"] for r in rows}):
        cells_ = [r for r in rows if r["sparsity"] == s]
        base = {r["seed"]: r["val_iou"] for r in cells_ if not r["kd"]}
        seeds = sorted(base)
        lines.append(f"| {s:.0%} | dense teacher (before pruning) | {len(seeds)} | "
                     f"{mean_sd([r['dense_val_iou'] for r in cells_ if not r['kd']])} | | |")
        lines.append(f"| {s:.0%} | pruned, not fine-tuned | {len(seeds)} | "
                     f"{mean_sd([r['pruned_val_iou'] for r in cells_ if not r['kd']])} | | |")
        for variant in dict.fromkeys(r["variant"] for r in cells_):
            mine = {r["seed"]: r["val_iou"] for r in cells_ if r["variant"] == variant}
            line = f"| {s:.0%} | {variant} | {len(mine)} | {mean_sd(list(mine.values()))} |"
            paired = [mine[x] - base[x] for x in mine if x in base]
            if variant == "no KD" or not paired:
                lines.append(line + " | |")
                continue
            sd = statistics.stdev(paired) if len(paired) > 1 else 0.0
            wins = sum(d > 0 for d in paired)
            lines.append(line + f" {statistics.mean(paired):+.3f} ± {sd:.3f} | {wins}/{len(paired)} |")
    return "\n".join(lines)
