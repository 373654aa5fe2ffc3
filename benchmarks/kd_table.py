"""Does distillation help the pruned student? Fine-tuning with and without KD, side by side.

    python benchmarks/kd_table.py --seeds 0 1 2 --sparsities 0.8 0.9 [--kd_configs 4:1 1:0.1] [--jobs 3] \\
        --patch_size 64 --epochs 3 --finetune_epochs 2

For each seed the dense U-Net is trained once (`--epochs`, as trial.py's oneshot schedule
does); then for each sparsity, without KD and with each `--kd_configs` T:alpha, a copy of
those dense weights is pruned one-shot and fine-tuned `--finetune_epochs` with the same
data order and seed, and scored
on the validation set exactly as a trial scores it (val mean IoU from one confusion
matrix, after the masks are folded in). The teacher is the dense model. Each cell equals

    python trial.py --schedule oneshot --sparsity S --seed N --patch_size 64 --epochs 3 \\
        --finetune_epochs 2 --kd {false | true --kd_temperature T --kd_alpha A}

except that the dense phase is shared by all cells of a seed: the comparison is paired
and the grid costs one dense phase per seed instead of one per cell.
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


def run_seed(seed: int, sparsities, kd_configs, base_flags: dict) -> list[dict]:
    import keras

    from segmodel import data as datasets
    from segmodel import runtime
    from segmodel.model import multi_unet_model
    from segmodel.params import resolve
    from segmodel.metrics import confusion_matrix, scores_from_confusion
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
        pruned_iou = None  # before fine-tuning: the same for every variant
        for kd in [None, *kd_configs]:
            kd_flags = {"kd": False} if kd is None else {"kd": True, "kd_temperature": kd[0], "kd_alpha": kd[1]}
            cell = resolve({**base_flags, "seed": seed, "schedule": "oneshot", "sparsity": sparsity, **kd_flags})
            keras.utils.set_random_seed(seed)  # same dropout draws and data order for every variant
            splits = datasets.load(cell)
            student = build()
            student.set_weights(dense_weights)
            pruner = Pruner(student, cell.config_list)
            pruner.prune()
            if pruned_iou is None:
                pruned_iou = scores_from_confusion(confusion_matrix(student, splits.val, splits.n_classes),
                                                   splits.class_names)["iou"]
            started = time.time()
            _fit(student, cell, splits, cell.finetune_epochs, "finetune", History(), QuietReporter(),
                 teacher=teacher if cell.kd else None)
            pruner.strip()
            scores = evaluate(student, splits, cell)
            rows.append({
                "seed": seed, "sparsity": sparsity, "kd": int(cell.kd), "variant": _variant(cell),
                "val_iou": scores["iou"], "val_accuracy": scores["accuracy"], "pruned_val_iou": pruned_iou,
                "measured_sparsity": sparsity_stats(student, pruner.targets)["sparsity"],
                "dense_val_iou": dense_scores["iou"], "dense_val_accuracy": dense_scores["accuracy"],
                "finetune_s": round(time.time() - started, 1), "dense_s": round(dense_s, 1),
                "data_version": _data_version(splits.data_dir),
                "precision": precision, "data_dir": splits.data_dir,
                "n_train": splits.n_train, "n_val": splits.n_val,
                **{k: getattr(cell, k) for k in ("patch_size", "batch_size", "epochs", "finetune_epochs",
                                                 "kd_temperature", "kd_alpha", "learning_rate")},
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _map_seeds(seeds, jobs: int, *args):
    """run_seed for each seed: in this process, or in `jobs` fresh processes (TensorFlow
    fixes its thread pools once per process, so every seed gets its own)."""
    if jobs <= 1:
        for seed in seeds:
            yield run_seed(seed, *args)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        for future in as_completed([pool.submit(run_seed, seed, *args) for seed in seeds]):
            yield future.result()


def _variant(cell) -> str:
    return f"KD T={cell.kd_temperature:g} α={cell.kd_alpha:g}" if cell.kd else "no KD"


def _data_version(data_dir: str) -> str:
    """The built-in set's cache folder names its version and spec; a user folder is its path."""
    return Path(data_dir).name if data_dir else ""


def _mean_sd(values) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def table(rows: list[dict]) -> str:
    """One line per (sparsity, variant): val mean IoU mean ± sample sd over seeds; for KD
    variants also the paired difference to no KD (same seed, same dense weights)."""
    lines = ["| sparsity | fine-tuning | seeds | val mean IoU | Δ vs no KD (paired) | KD better in |",
             "|---:|---|---:|---:|---:|---:|"]
    for s in sorted({r["sparsity"] for r in rows}):
        cells = [r for r in rows if r["sparsity"] == s]
        base = {r["seed"]: r["val_iou"] for r in cells if not r["kd"]}
        seeds = sorted(base)
        lines.append(f"| {s:.0%} | dense teacher (before pruning) | {len(seeds)} | "
                     f"{_mean_sd([r['dense_val_iou'] for r in cells if not r['kd']])} | | |")
        lines.append(f"| {s:.0%} | pruned, not fine-tuned | {len(seeds)} | "
                     f"{_mean_sd([r['pruned_val_iou'] for r in cells if not r['kd']])} | | |")
        for variant in dict.fromkeys(r["variant"] for r in cells):
            mine = {r["seed"]: r["val_iou"] for r in cells if r["variant"] == variant}
            line = f"| {s:.0%} | {variant} | {len(mine)} | {_mean_sd(list(mine.values()))} |"
            paired = [mine[x] - base[x] for x in mine if x in base]
            if variant == "no KD" or not paired:
                lines.append(line + " | |")
                continue
            sd = statistics.stdev(paired) if len(paired) > 1 else 0.0
            wins = sum(d > 0 for d in paired)
            lines.append(line + f" {statistics.mean(paired):+.3f} ± {sd:.3f} | {wins}/{len(paired)} |")
    return "\n".join(lines)


def _kd_config(text: str) -> tuple[float, float]:
    try:
        t, a = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected T:alpha, e.g. 4:1, got {text!r}") from None
    return t, a


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Unknown --flags are passed to the trial's parameters.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9])
    parser.add_argument("--kd_configs", type=_kd_config, nargs="+", default=None, metavar="T:ALPHA",
                        help="distillation settings to compare with no KD (default: the trial's "
                             "kd_temperature:kd_alpha)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="seeds run in this many processes at once, threads split between them")
    parser.add_argument("--out", default="runs/kd_table", help="folder for rows.json and table.md")
    args, rest = parser.parse_known_args(argv)
    from segmodel.params import parse_flags, resolve
    base_flags = parse_flags(rest, prog="kd_table.py")
    for fixed in ("seed", "sparsity", "schedule", "kd", "teacher"):
        if fixed in base_flags:
            parser.error(f"--{fixed} is set per cell by this script")
    defaults = resolve(base_flags)
    kd_configs = args.kd_configs or [(defaults.kd_temperature, defaults.kd_alpha)]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    started = time.time()
    if args.jobs > 1 and "threads" not in base_flags:
        from segmodel.runtime import default_threads
        base_flags["threads"] = str(max(1, default_threads() // args.jobs))
    for seed_rows in _map_seeds(args.seeds, args.jobs, args.sparsities, kd_configs, base_flags):
        rows += seed_rows
        rows.sort(key=lambda r: (r["seed"], r["sparsity"]))
        (out / "rows.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = table(rows)
    command = "python benchmarks/kd_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
    footer = (f"`{command}`\n\ndata: {rows[0]['data_dir']} ({rows[0]['n_train']} train / {rows[0]['n_val']} val "
              f"patches), precision {rows[0]['precision']}, wall {time.time() - started:.0f} s")
    (out / "table.md").write_text(f"{text}\n\n{footer}\n")
    print(text + "\n\n" + footer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
