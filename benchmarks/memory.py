"""Peak memory vs dataset size: streaming keeps a trial's memory flat.

    python -m benchmarks memory --scales 1 10 --batch-sizes 8 --epochs 2 --trial

Writes synthetic datasets of 1x and Nx the built-in size, then, in a fresh process
each, streams every patch through the training and validation pipelines for a few
epochs (optionally: runs a whole trial) and reports the peak RSS. Streaming works if
the peak tracks the batch size and stays flat as the dataset grows. Each measurement
runs in a fresh process (this command again, with --child), so none sees another's peak.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from segmodel.data.builtin import BUILTIN
from segmodel.data.synthetic import write_dataset
from segmodel.params import Params

ROOT = Path(__file__).resolve().parents[1]


def child(args) -> None:
    """Iterate the pipelines; print counts and this process's peak RSS."""
    import tensorflow as tf  # noqa: F401  (here, not at the top: only the child's baseline includes it)

    from segmodel.data import load

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = Params(data_dir=args.child, patch_size=args.patch_size, batch_size=args.batch_size).validate()
    started = time.time()
    splits = load(params)
    seen, epoch_s = 0, []
    for _ in range(args.epochs):
        t = time.time()
        for x, _y in splits.train:
            seen += int(x.shape[0])
        for x, _y in splits.val:
            seen += int(x.shape[0])
        epoch_s.append(round(time.time() - t, 2))
    print(json.dumps({"n_train": splits.n_train, "n_val": splits.n_val, "seen": seen, "cached": splits.cached,
                      "epoch_s": epoch_s,
                      "baseline_mb": round(base), "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "seconds": round(time.time() - started, 1)}))


def run_measured(cmd: list[str], env: dict) -> tuple[str, float]:
    """Run a command; return its stdout and its own peak RSS in MB (wait4, not the children total)."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return text, usage.ru_maxrss / 1024


def add_arguments(ap) -> None:
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 10], help="dataset sizes, in built-in sets")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--patch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--trial", action="store_true", help="also run trial.py for 1 epoch on each scale")
    ap.add_argument("--workdir", default="", help="where to write the datasets (default: a temp folder)")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=8, help=argparse.SUPPRESS)


def main(args) -> int:
    if args.child:
        child(args)
        return 0

    work = Path(args.workdir or tempfile.mkdtemp(prefix="segmodel-memcheck-")).resolve()
    # the child is this command again: `benchmarks` is importable from the repository root
    env = {**os.environ, "SEGMODEL_NO_REEXEC": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    print(f"| dataset | images | train/val patches ({args.patch_size} px) | in-memory cache | batch | "
          "peak RSS (MB) | RSS after imports (MB) |")
    print("|---|---|---|---|---|---|---|")
    trial_rows = []
    for scale in args.scales:
        spec = dataclasses.replace(BUILTIN, tiles=BUILTIN.tiles * scale)
        root = work / f"x{scale}"
        if not root.exists():
            write_dataset(root, spec)
        n_images = spec.tiles * spec.images_per_tile
        for batch in args.batch_sizes:
            text, _ = run_measured([sys.executable, "-m", "benchmarks", "memory", "--child", str(root),
                                    "--batch-size", str(batch), "--patch-size", str(args.patch_size),
                                    "--epochs", str(args.epochs)], env)
            r = json.loads(text.strip().splitlines()[-1])
            print(f"| {scale}x built-in | {n_images} | {r['n_train']}/{r['n_val']} | "
                  f"{'yes' if r['cached'] else 'no (streams)'} | {batch} | {r['peak_mb']} | {r['baseline_mb']} |",
                  flush=True)
        if args.trial:
            _, peak = run_measured([sys.executable, "-m", "segmodel", "train", "--data-dir", str(root), "--output-dir",
                                    str(work / f"trial-x{scale}"), "--patch-size", str(args.patch_size),
                                    "--batch-size", str(args.batch_sizes[0]), "--epochs", "1",
                                    "--finetune-epochs", "0", "--sparsity", "0"], env)
            trial_rows.append(f"| {scale}x built-in | {n_images} | {args.batch_sizes[0]} | {round(peak)} |")
    if trial_rows:
        print("\n| trial (1 epoch) | images | batch | peak RSS (MB) |\n|---|---|---|---|")
        print("\n".join(trial_rows))
    return 0

