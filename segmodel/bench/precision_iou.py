"""Does mixed_bfloat16 cost accuracy? float32 vs mixed_bfloat16 trials, same seeds.

    python -m segmodel bench precision-iou --seeds 0 1 2 --jobs 2

One trial per (seed, precision) with config.yml's trial flags (the default experiment),
one thread each, `--jobs` at a time. Prints one JSON line per trial and a summary:
validation mean IoU of the final (pruned) and of the dense model, bf16 minus float32 per
seed, and the spread between seeds (the noise floor to judge the difference against).
bfloat16 runs on any x86 CPU; without AVX512-BF16/AMX it is emulated and slow.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from .trials import config_trial_flags, run_trials

ROOT = Path(__file__).resolve().parents[2]
COMPARED = ("float32", "mixed_bfloat16")


def add_arguments(p) -> None:
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="trials at once (one thread each)")
    p.add_argument("--config", default=str(ROOT / "config.yml"), help="NNI config whose trial flags to use")
    p.add_argument("--out", type=Path, default=Path("runs/precision_iou"))


def main(args) -> int:
    flags = config_trial_flags(args.config)
    cells = {f"{p}-seed{seed}": [*flags, "--precision", p, "--seed", str(seed), "--threads", "1"]
             for seed in args.seeds for p in COMPARED}
    metrics = run_trials(args.out, cells, args.jobs)
    for name, m in metrics.items():
        print(json.dumps({"run": name, "iou": m.get("iou"), "dense_iou": m.get("dense_iou"),
                          "duration_s": m.get("duration_s")}))
    print(json.dumps(summary(metrics, args.seeds)))
    return 0


def summary(metrics: dict, seeds) -> dict:
    """bf16 minus float32, in points, per seed; float32's spread between seeds."""
    fp32, bf16 = ({s: metrics[f"{p}-seed{s}"] for s in seeds} for p in COMPARED)
    diffs = {k: [100 * (bf16[s][k] - fp32[s][k]) for s in seeds] for k in ("iou", "dense_iou")}
    spread = {k: 100 * (max(fp32[s][k] for s in seeds) - min(fp32[s][k] for s in seeds)) for k in ("iou", "dense_iou")}
    return {"bf16_minus_fp32_points": {k: [round(d, 2) for d in v] for k, v in diffs.items()},
            "mean_points": {k: round(statistics.mean(v), 2) for k, v in diffs.items()},
            "fp32_spread_between_seeds_points": {k: round(v, 2) for k, v in spread.items()}}
