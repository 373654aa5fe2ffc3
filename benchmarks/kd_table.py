"""Does distillation help the pruned student? Fine-tuning with and without KD, side by side.

    python benchmarks/kd_table.py --seeds 0 1 2 --sparsities 0.8 0.9 \\
        --patch_size 64 --epochs 3 --finetune_epochs 2

For each seed the dense U-Net is trained once (`--epochs`, as trial.py's oneshot schedule
does); then for each sparsity and for kd off / on, a copy of those dense weights is
pruned one-shot and fine-tuned `--finetune_epochs` with the same data order, and scored
on the validation set exactly as a trial scores it (val mean IoU from one confusion
matrix, after the masks are folded in). The teacher is the dense model. Each cell equals

    python trial.py --schedule oneshot --sparsity S --kd {false,true} --seed N \\
        --patch_size 64 --epochs 3 --finetune_epochs 2

except that the dense phase is shared by the four cells of a seed: the comparison is
paired and the grid costs one dense phase per seed instead of four.
Other trial flags (--kd_temperature, --kd_alpha, --learning_rate, --data_dir, ...) pass through.
Prints a Markdown table and writes rows.json + table.md under --out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


class QuietReporter:
    def intermediate(self, value):
        pass

    def final(self, value):
        pass


def run_seed(seed: int, sparsities, base_flags: dict) -> list[dict]:
    import keras

    from segmodel import data as datasets
    from segmodel import runtime
    from segmodel.model import multi_unet_model
    from segmodel.params import resolve
    from segmodel.pruning import Pruner, sparsity_stats
    from segmodel.train import History, _fit, _teacher, evaluate

    params = resolve({**base_flags, "seed": seed, "schedule": "oneshot", "kd": False})
    precision = runtime.configure(params)
    splits = datasets.load(params)
    build = lambda: multi_unet_model(params.dropout_rate, splits.n_classes, params.patch_size, params.patch_size, 3)  # noqa: E731

    started = time.time()
    dense = build()
    _fit(dense, params, splits, params.epochs, "dense", History(), QuietReporter())
    dense_scores = evaluate(dense, splits, params)
    dense_weights = dense.get_weights()
    teacher = _teacher(dense, params)
    dense_s = time.time() - started

    rows = []
    for sparsity in sparsities:
        for kd in (False, True):
            cell = resolve({**base_flags, "seed": seed, "schedule": "oneshot", "sparsity": sparsity, "kd": kd})
            keras.utils.set_random_seed(seed)  # same dropout draws and data order for kd off and on
            splits = datasets.load(cell)
            student = build()
            student.set_weights(dense_weights)
            pruner = Pruner(student, cell.config_list)
            pruner.prune()
            started = time.time()
            _fit(student, cell, splits, cell.finetune_epochs, "finetune", History(), QuietReporter(),
                 teacher=teacher if kd else None)
            pruner.strip()
            scores = evaluate(student, splits, cell)
            rows.append({
                "seed": seed, "sparsity": sparsity, "kd": int(kd),
                "val_iou": scores["iou"], "val_accuracy": scores["accuracy"],
                "measured_sparsity": sparsity_stats(student, pruner.targets)["sparsity"],
                "dense_val_iou": dense_scores["iou"], "dense_val_accuracy": dense_scores["accuracy"],
                "finetune_s": round(time.time() - started, 1), "dense_s": round(dense_s, 1),
                "precision": precision, "data_dir": splits.data_dir,
                "n_train": splits.n_train, "n_val": splits.n_val,
                **{k: getattr(cell, k) for k in ("patch_size", "batch_size", "epochs", "finetune_epochs",
                                                 "kd_temperature", "kd_alpha", "learning_rate")},
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _mean_sd(values) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def table(rows: list[dict]) -> str:
    """One line per sparsity: mean ± sample sd over seeds, and the paired kd - no-kd difference."""
    lines = ["| sparsity | seeds | dense teacher IoU | fine-tuned, no KD | fine-tuned, KD | KD − no KD (paired) | KD better in |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for s in sorted({r["sparsity"] for r in rows}):
        by = {(r["seed"], r["kd"]): r for r in rows if r["sparsity"] == s}
        seeds = sorted({seed for seed, _ in by if (seed, 0) in by and (seed, 1) in by})
        off = [by[(x, 0)]["val_iou"] for x in seeds]
        on = [by[(x, 1)]["val_iou"] for x in seeds]
        dense = [by[(x, 0)]["dense_val_iou"] for x in seeds]
        diff = [b - a for a, b in zip(off, on)]
        wins = sum(d > 0 for d in diff)
        lines.append(f"| {s:.0%} | {len(seeds)} | {_mean_sd(dense)} | {_mean_sd(off)} | {_mean_sd(on)} | "
                     f"{diff and f'{statistics.mean(diff):+.3f} ± {(statistics.stdev(diff) if len(diff) > 1 else 0):.3f}'} "
                     f"| {wins}/{len(seeds)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Unknown --flags are passed to the trial's parameters.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9])
    parser.add_argument("--out", default="runs/kd_table", help="folder for rows.json and table.md")
    args, rest = parser.parse_known_args(argv)
    from segmodel.params import parse_flags
    base_flags = parse_flags(rest, prog="kd_table.py")
    for fixed in ("seed", "sparsity", "schedule", "kd", "teacher"):
        if fixed in base_flags:
            parser.error(f"--{fixed} is set per cell by this script")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for seed in args.seeds:
        rows += run_seed(seed, args.sparsities, base_flags)
        (out / "rows.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = table(rows)
    command = "python benchmarks/kd_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "table.md").write_text(f"{text}\n\n`{command}`\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
