"""Does mixed_bfloat16 cost accuracy? float32 vs mixed_bfloat16 trials, same seeds.

    python benchmarks/precision_iou.py --seeds 0 1 2 --parallel 2

Runs `python -m segmodel train` with config.yml's trial flags (the default experiment:
patch 64, 3 dense epochs, 80% one-shot pruning, 2 fine-tuning epochs) once per
(seed, precision), `--parallel` at a time with one thread each, and prints one JSON line
per run and a summary: validation mean IoU of the final (pruned) and of the dense model,
bf16 minus float32 per seed, and the spread between seeds (the noise floor to judge the
difference against).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("float32", "mixed_bfloat16")


def main() -> None:
    default = yaml.safe_load((ROOT / "config.yml").read_text())["trialCommand"].split("trial.py", 1)[1].split()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    out_root = Path(tempfile.mkdtemp(prefix="precision-iou-"))
    queue = [(seed, p) for seed in args.seeds for p in PRECISIONS]
    running, results = [], {}
    while queue or running:
        while queue and len(running) < args.parallel:
            seed, p = queue.pop(0)
            out = out_root / f"{p}-seed{seed}"
            cmd = [sys.executable, "-m", "segmodel", "train", *default, "--precision", p, "--seed", str(seed),
                   "--threads", "1", "--output_dir", str(out)]
            running.append(((seed, p), out, subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                                              stderr=subprocess.DEVNULL)))
        time.sleep(2)
        for item in list(running):
            key, out, proc = item
            if proc.poll() is not None:
                running.remove(item)
                m = json.loads((out / "metrics.json").read_text()) if proc.returncode == 0 else {}
                results[key] = {"seed": key[0], "precision": key[1], "rc": proc.returncode,
                                "iou": m.get("iou"), "dense_iou": m.get("dense_iou"),
                                "duration_s": m.get("duration_s")}
                print(json.dumps(results[key]), flush=True)
    diffs = {k: [100 * (results[(s, PRECISIONS[1])][k] - results[(s, PRECISIONS[0])][k]) for s in args.seeds]
             for k in ("iou", "dense_iou")}
    spread = {k: 100 * (max(results[(s, PRECISIONS[0])][k] for s in args.seeds)
                        - min(results[(s, PRECISIONS[0])][k] for s in args.seeds)) for k in ("iou", "dense_iou")}
    print(json.dumps({"bf16_minus_fp32_points": {k: [round(d, 2) for d in v] for k, v in diffs.items()},
                      "mean_points": {k: round(statistics.mean(v), 2) for k, v in diffs.items()},
                      "fp32_spread_between_seeds_points": {k: round(v, 2) for k, v in spread.items()}}))


if __name__ == "__main__":
    main()
