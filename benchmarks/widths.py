"""`python -m benchmarks widths`: where the U-Net's time goes on this CPU. The default
U-Net (`--architecture bn`) built at other widths per level, converted as `export` converts
(fixed shape; int8 with a float32 head), timed as float32 and full-int8 TFLite through the
runner `predict` uses, every file of a batch size in the same interleaved rounds.

Widths only: the weights are untrained (speed does not depend on them), so this says which
thin shapes are worth training, not how accurate they are (docs/channels.md has both). A
level is an encoder block and its decoder block (level 1: down1_* and up4_*; 5: the
bottleneck), so a channel-pruned model with the same per-level widths runs the same ops.

    python -m benchmarks widths --out runs/widths                  # the built-in rows, 256 px, b1 and b8
    python -m benchmarks widths --out runs/w --widths 'half=8,16,32,64,128' 'mine=12,16,32,64,128'
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DENSE = (16, 32, 64, 128, 256)
ROWS = {  # name -> widths of levels 1..5
    "dense": DENSE,
    "uniform 30%": (12, 23, 45, 90, 180),   # what --sparsity 0.3 keeps (int(C * 0.3) removed)
    "uniform 40%": (10, 20, 39, 77, 154),
    "40%, multiples of 8": (8, 16, 40, 80, 152),   # the channels preset's w40 variants
    "uniform 50%": (8, 16, 32, 64, 128),
    **{f"level {i} halved": tuple(w // 2 if j == i else w for j, w in enumerate(DENSE, start=1)) for i in range(1, 6)},
    "levels 1-2 halved": (8, 16, 64, 128, 256),
    "levels 3-5 halved": (16, 32, 32, 64, 128),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="results.json and table.md go here")
    p.add_argument("--widths", nargs="+", default=None, metavar="NAME=W1,W2,W3,W4,W5",
                   help="time these per-level widths (with the dense row) instead of the built-in rows")
    p.add_argument("--side", type=int, default=256, help="input side of the timed files (default 256)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (default 7)")
    p.add_argument("--threads", type=int, default=0, help="TFLite threads (default: every core)")


def parse_widths(spec: str) -> tuple[str, tuple[int, ...]]:
    from segmodel.errors import ParamError
    name, eq, value = spec.partition("=")
    try:
        widths = tuple(int(w) for w in value.split(","))
    except ValueError:
        widths = ()
    if not eq or not name or len(widths) != len(DENSE) or min(widths) < 1:
        raise ParamError(f"--widths takes NAME=W1,W2,W3,W4,W5 (five positive ints, levels 1 to 5), got {spec!r}")
    return name, widths


def main(args) -> int:
    from segmodel.errors import ParamError

    from .table import publish
    if args.side % 16:
        raise ParamError(f"--side must be a multiple of 16, got {args.side}")
    rows = {"dense": DENSE, **dict(map(parse_widths, args.widths))} if args.widths else dict(ROWS)
    result = run(rows, args.side, args.batches, args.rounds, args.threads or None)
    publish(Path(args.out), result, format_table(result))
    return 0


def run(rows: dict, side: int, batches, rounds: int, threads) -> dict:
    import os

    import keras
    import numpy as np

    from segmodel.compress.flops import count_flops
    from segmodel.deploy import amx
    from segmodel.deploy.quantize import convert
    from segmodel.deploy.runners import TFLiteRunner
    from segmodel.deploy.speed import images_per_second
    from segmodel.model import multi_unet_model
    from segmodel.runtime import available_cores, cpu_name

    amx_state = amx.refuse()  # before the first interpreter (segmodel/amx.py)
    keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(0)
    calibration = [rng.random((64, 64, 3), dtype=np.float32) for _ in range(4)]
    models = {name: multi_unet_model(0.1, 6, 64, 64, 3, architecture="bn", filters=tuple(w)) for name, w in rows.items()}
    found = {name: {"widths": list(rows[name]), "mflops_64px": round(count_flops(m) / 1e6, 2), "params": m.count_params(),
                    "img_s": {}} for name, m in models.items()}
    for batch in batches:
        runners = {}
        for name, model in models.items():
            print(f"[bench widths] {name} {rows[name]}: converting at {side}px batch {batch}...", file=sys.stderr, flush=True)
            for kind, conv in convert(model, ("float32", "int8"), lambda: calibration, batch, side).items():
                runners[(name, kind)] = TFLiteRunner(conv.content, threads=threads)
        for (name, kind), ips in images_per_second(runners, batch, rounds).items():
            found[name]["img_s"][f"{kind} b{batch}"] = ips
            found[name].setdefault("runtime", {})[f"{kind} b{batch}"] = runners[(name, kind)].delegation["runtime"]
    return {"side": side, "batches": list(batches), "rounds": rounds, "rows": found,
            "machine": {"cpu": cpu_name(), "amx": amx_state, "cores": available_cores(), "tflite_threads": threads or available_cores(),
                        "load_avg_1m": round(os.getloadavg()[0], 2)}}


def format_table(r: dict) -> str:
    """One row per width set: MFLOPs and img/s, each as a ratio to the dense float32 file."""
    rows, dense = r["rows"], r["rows"]["dense"]
    cols = [(kind, b) for b in r["batches"] for kind in ("float32", "int8")]
    head = ["widths (levels 1-5)", "name", "MFLOPs (64 px)", "params"] + [f"{k} b{b} (× dense float32)" for k, b in cols]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|" + "---:|" * len(cols)]
    for name, row in rows.items():
        cells = ["/".join(map(str, row["widths"])), name, f"{row['mflops_64px']:.1f} (1/{dense['mflops_64px'] / row['mflops_64px']:.2f})",
                 f"{row['params'] / 1e6:.3f} M"]
        for kind, b in cols:
            key = f"{kind} b{b}"
            note = "" if row["runtime"][key] == "xnnpack" else f", {row['runtime'][key]}"
            cells.append(f"{row['img_s'][key]:.1f} ({row['img_s'][key] / dense['img_s'][f'float32 b{b}']:.2f}×{note})")
        lines.append("| " + " | ".join(cells) + " |")
    m = r["machine"]
    lines += ["", f"{r['side']} px, median of {r['rounds']} interleaved rounds, untrained weights; "
              f"{m['tflite_threads']} TFLite threads, {m['cores']} cores, {m['cpu']}, AMX: {m.get('amx', '?')}, "
              f"load {m['load_avg_1m']}."]
    return "\n".join(lines)
