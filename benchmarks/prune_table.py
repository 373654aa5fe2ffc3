"""Dense vs pruned, every schedule, same total epochs: the table in docs/pruning.md.

    python benchmarks/prune_table.py --out /tmp/prune_table --seeds 0,1
    python benchmarks/prune_table.py --out /tmp/prune_table --print-only   # table from finished runs

Runs trial.py once per row and seed (one at a time: it is a shared CPU), each into its
own folder OUT/seed<k>/<row>; a run whose metrics.json exists is not run again. Prints a
markdown table, scores averaged over the seeds and listed per seed.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--patch_size", "64", "--epochs", "3", "--finetune_epochs", "2"]


# NNI's usual advice, measured as one extra row: leave the first conv (3 input channels)
# and the 1x1 head (16 -> 6) dense. Together they hold 528 of the 1.94M weights.
KEEP_ENDS = '[{"sparsity": 0.8, "op_types": ["default"]}, {"exclude": true, "op_names": ["down1_conv1", "logits"]}]'


def rows(sparsities, schedules):
    """(folder name, schedule label, target sparsity, trial.py flags)"""
    yield "dense", "dense", 0.0, ["--sparsity", "0", "--schedule", "oneshot"]
    for schedule in schedules:
        for s in sparsities:
            yield f"{schedule}-{s}", schedule, float(s), ["--sparsity", str(s), "--schedule", schedule]
    for schedule in schedules:
        yield f"{schedule}-0.8-ends", f"{schedule}, first conv + head dense", 0.8, \
            ["--prune_config", KEEP_ENDS, "--schedule", schedule]


def run(out: Path, name: str, flags: list[str], extra: list[str]) -> None:
    folder = out / name
    if not (folder / "metrics.json").is_file():
        cmd = [sys.executable, str(ROOT / "trial.py"), "--output-dir", str(folder), *COMMON, *flags, *extra]
        print("#", " ".join(cmd[1:]), file=sys.stderr, flush=True)
        started = time.time()
        with open(out / f"{name}.log", "w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True, cwd=ROOT)
        print(f"#   {time.time() - started:.0f}s", file=sys.stderr, flush=True)


def table(results: dict) -> str:
    """results: row name -> (label, target, [metrics per seed]); seeds averaged, each listed."""
    def mean(ms, key):
        return sum(m[key] for m in ms) / len(ms)

    if "dense" not in results:
        raise SystemExit("the table compares with the dense row: include 'dense' in --only")
    dense = results["dense"][2]
    lines = ["| schedule | target | measured sparsity | val mean IoU (per seed) | vs dense | pixel acc "
             "| IoU before pruning | trial time | model.keras | gzip | gzip vs dense |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, target, ms in results.values():
        seeds = ", ".join(f"{m['iou']:.3f}" for m in ms)
        before = f"{mean(ms, 'dense_iou'):.3f}" if all("dense_iou" in m for m in ms) and label != "dense" else ""
        lines.append(
            f"| {label} | {target:.0%} | {mean(ms, 'sparsity'):.4f} | {mean(ms, 'iou'):.3f} ({seeds}) "
            f"| {100 * (mean(ms, 'iou') - mean(dense, 'iou')):+.1f} pt | {mean(ms, 'accuracy'):.3f} | {before} "
            f"| {mean(ms, 'duration_s'):.0f} s | {mean(ms, 'model_bytes') / 2**20:.2f} MiB "
            f"| {mean(ms, 'model_gzip_bytes') / 2**20:.2f} MiB "
            f"| {mean(ms, 'model_gzip_bytes') / mean(dense, 'model_gzip_bytes'):.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/prune_table"))
    parser.add_argument("--sparsities", default="0.5,0.8,0.9")
    parser.add_argument("--schedules", default="init,oneshot,agp")
    parser.add_argument("--seeds", default="0,1", help="one run per seed (data split, init, shuffling); averaged")
    parser.add_argument("--only", default="", help="comma-separated row names to run/print (default: all)")
    parser.add_argument("--print-only", action="store_true", help="only tabulate the runs already finished")
    args, extra = parser.parse_known_args()  # anything else goes to every trial.py
    results = {}
    for seed in args.seeds.split(","):
        out = args.out / f"seed{seed}"
        out.mkdir(parents=True, exist_ok=True)
        for name, label, target, flags in rows(args.sparsities.split(","), args.schedules.split(",")):
            if args.only and name not in args.only.split(","):
                continue
            path = out / name / "metrics.json"
            if not args.print_only:
                run(out, name, [*flags, "--seed", seed], extra)
            if path.is_file():
                results.setdefault(name, (label, target, []))[2].append(json.loads(path.read_text()))
    print(table(results))


if __name__ == "__main__":
    main()
