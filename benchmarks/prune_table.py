"""Dense vs pruned, every schedule, same total epochs: the table in docs/pruning.md.

    python benchmarks/prune_table.py --out /tmp/prune_table
    python benchmarks/prune_table.py --out /tmp/prune_table --print-only   # table from finished runs

Runs trial.py once per row (one at a time: it is a shared CPU), each into its own
folder; a row whose metrics.json exists is not run again. Prints a markdown table.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--patch_size", "64", "--epochs", "3", "--finetune_epochs", "2"]


def rows(sparsities, schedules):
    yield "dense", ["--sparsity", "0", "--schedule", "oneshot"]
    for schedule in schedules:
        for s in sparsities:
            yield f"{schedule}-{s}", ["--sparsity", str(s), "--schedule", schedule]


def run(out: Path, name: str, flags: list[str], extra: list[str]) -> dict:
    folder = out / name
    if not (folder / "metrics.json").is_file():
        cmd = [sys.executable, str(ROOT / "trial.py"), "--output-dir", str(folder), *COMMON, *flags, *extra]
        print("#", " ".join(cmd[1:]), file=sys.stderr, flush=True)
        started = time.time()
        with open(out / f"{name}.log", "w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True, cwd=ROOT)
        print(f"#   {time.time() - started:.0f}s", file=sys.stderr, flush=True)
    return json.loads((folder / "metrics.json").read_text())


def table(results: dict) -> str:
    dense = results["dense"]
    lines = ["| schedule | target | measured sparsity | val mean IoU | vs dense | pixel acc | IoU before pruning "
             "| train time | model.keras raw | gzip | gzip vs dense |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        schedule, _, target = name.partition("-")
        before = f"{m['dense_iou']:.3f}" if "dense_iou" in m and name != "dense" else ""
        lines.append(
            f"| {schedule} | {float(target or 0):.0%} | {m['sparsity']:.4f} | {m['iou']:.3f} "
            f"| {100 * (m['iou'] - dense['iou']):+.1f} pt | {m['accuracy']:.3f} | {before} | {m['duration_s']:.0f} s "
            f"| {m['model_bytes'] / 2**20:.2f} MiB | {m['model_gzip_bytes'] / 2**20:.2f} MiB "
            f"| {m['model_gzip_bytes'] / dense['model_gzip_bytes']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/prune_table"))
    parser.add_argument("--sparsities", default="0.5,0.8,0.9")
    parser.add_argument("--schedules", default="init,oneshot,agp")
    parser.add_argument("--print-only", action="store_true", help="only tabulate the runs already finished")
    args, extra = parser.parse_known_args()  # anything else goes to every trial.py
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, flags in rows(args.sparsities.split(","), args.schedules.split(",")):
        if args.print_only:
            path = args.out / name / "metrics.json"
            if path.is_file():
                results[name] = json.loads(path.read_text())
        else:
            results[name] = run(args.out, name, flags, extra)
    print(table(results))


if __name__ == "__main__":
    main()
