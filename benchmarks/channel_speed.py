"""Does channel pruning pay? Sizes and CPU inference speed of a finished `channels` grid's models.

    python -m benchmarks channels --out runs/channels --only 'channel-*' weight-80   # train (the grid)
    python -m benchmarks channel-speed --out runs/channels                           # then this
    python -m benchmarks channel-speed --out /tmp/cb --quick                         # checks every stage runs

For one seed's models (the lowest with a dense cell, or --seed), one per architecture
(channel-50, channel-50-init and channel-50-kd share one): int8 TFLite size (the export
command's conversion, calibrated on 64 training patches), and images/s of the Keras
model and of its float32 TFLite file (through LiteRT when installed) at two sides and
two batch sizes, every variant interleaved in rounds in one process so a shared CPU
slows them alike: quote the ratios. Then issue #15's targets at 50 % channels, the IoU
ones paired by seed over every finished seed. Writes speed.json and speed.md under --out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from segmodel.errors import SegmodelError
from segmodel.files import write_json_atomic, write_text_atomic

from .grid import folder, scan
from .machine import QuietFds, machine
from .presets import CHANNELS
from .table import deltas
from .timing import timed_calls

FULL = dict(sizes=(64, 256), batches=(1, 8), rounds=9)
QUICK = dict(sizes=(32, 64), batches=(1, 2), rounds=1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the channels grid's folder")
    p.add_argument("--seed", type=int, default=None, help="whose models to time (default: the lowest finished)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the bench runs, numbers meaningless")


def arch(variant: str) -> str:
    """The architecture a variant trains: 'channel-50-init' -> 'channel-50'."""
    return "-".join(variant.split("-")[:2])


def main(args) -> int:
    sizes = QUICK if args.quick else FULL
    started = time.time()
    cells = scan(args.out, CHANNELS.variants)
    if not any(v == "dense" for _, v in cells):
        raise SegmodelError(f"no finished dense cell under {args.out}: run `python -m benchmarks channels` first")
    seed = min(s for s, v in cells if v == "dense") if args.seed is None else args.seed
    result = measure(args.out, seed, cells, sizes)
    result["seconds"] = round(time.time() - started)
    text = format_table(result)
    write_json_atomic(args.out / "speed.json", result)
    write_text_atomic(args.out / "speed.md", text + "\n")
    print(text)
    return 0


def _log(msg: str) -> None:
    print(f"[channel-speed] {msg}", file=sys.stderr, flush=True)


def at_size(model, side: int):
    """The same weights in a model built for side x side inputs."""
    import keras

    from segmodel.channels import resized_config
    config = resized_config(model.get_config(), input_shape=(side, side, model.input_shape[-1]))
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def tflite_bytes(model, kind: str = "float32", splits=None, samples: int = 64) -> bytes:
    """The export command's conversion (SavedModel -> TFLite), quietly."""
    import tempfile

    from segmodel.export import convert_tflite
    with tempfile.TemporaryDirectory() as tmp, QuietFds():
        model.export(tmp, format="tf_saved_model", verbose=False)
        return convert_tflite(Path(tmp), kind, splits, samples)


def speed(models: dict, sides, batches, rounds: int) -> dict:
    """Images/s of each model's traced Keras forward pass and of its float32 TFLite file,
    per (side, batch), every variant timed in the same rounds."""
    import numpy as np
    import tensorflow as tf

    from segmodel.inference import TFLiteRunner
    tf.get_logger().setLevel("ERROR")  # one tf.function per model and size is what we mean ("retracing")
    result = {}
    for side in sides:
        runners = {}
        for name, model in models.items():
            sized = at_size(model, side)
            runners[name] = (tf.function(lambda b, m=sized: m(b, training=False)), TFLiteRunner(tflite_bytes(sized)))
        for batch in batches:
            x = np.random.default_rng(0).random((batch, side, side, 3), dtype=np.float32)
            calls = {}
            for name, (fn, tflite) in runners.items():
                calls[(name, "keras")] = lambda fn=fn: fn(x).numpy()
                calls[(name, "tflite")] = lambda tflite=tflite: tflite.probabilities(x)
            _log(f"timing {side}px batch {batch}: {rounds} rounds of {len(calls)} runners")
            for (name, runtime), t in timed_calls(calls, rounds).items():
                result.setdefault(name, {})[f"{runtime} {side}px b{batch}"] = round(batch / t, 2)
    return result


def measure(out: Path, seed: int, cells: dict, sizes: dict) -> dict:
    import keras

    from segmodel import data as datasets
    from segmodel.inference import tflite_interpreter_class
    from segmodel.params import from_saved
    keras.mixed_precision.set_global_policy("float32")
    variants = [v for v in CHANNELS.variants if (seed, v) in cells]
    models = {}
    for v in variants:
        models.setdefault(arch(v), keras.models.load_model(folder(out, seed, v) / "model.keras", compile=False))
    params = from_saved(json.loads((folder(out, seed, "dense") / "params.json").read_text()), "the dense cell")
    params.validate()
    splits = datasets.load(params)
    _log("int8 TFLite of each architecture (calibrated on 64 training patches)...")
    int8 = {a: len(tflite_bytes(m, "int8", splits)) for a, m in models.items()}
    _log("inference speed...")
    ips = speed(models, sizes["sizes"], sizes["batches"], sizes["rounds"])
    of = {v: [{**m, "seed": s} for (s, name), m in cells.items() if name == v] for v in variants}
    rows = {}
    for v in variants:
        d = deltas(of[v], of["dense"])
        first = cells[(seed, v)]
        rows[v] = {"seeds": len(of[v]), "delta_points_mean": statistics.mean(d) if d else None,
                   "params": first["params"], "flops": first["flops"], "keras_bytes": first["model_bytes"],
                   "int8_tflite_bytes": int8[arch(v)], "img_s": ips[arch(v)]}
    return {"seed": seed, "dense_seeds": len(of["dense"]), "sizes": dict(sizes),
            "tflite_runtime": tflite_interpreter_class().__module__, "machine": machine(), "rows": rows,
            "targets": targets(rows, sizes)}


def targets(rows: dict, sizes: dict) -> list[dict]:
    """Issue #15's targets at 50% channels (one IoU line per channel-50 variant)."""
    dense = rows["dense"]
    halves = {name: row for name, row in rows.items() if arch(name) == "channel-50"}
    if not halves:
        return []
    half = next(iter(halves.values()))  # sizes and speed do not depend on the schedule
    big = max(sizes["sizes"])
    speedups = {b: half["img_s"][f"tflite {big}px b{b}"] / dense["img_s"][f"tflite {big}px b{b}"]
                for b in sizes["batches"]}
    return [
        {"target": "FLOPs, dense / channel 50%", "value": round(dense["flops"] / half["flops"], 2), "goal": ">= 3",
         "met": dense["flops"] / half["flops"] >= 3},
        {"target": f"TFLite CPU speed-up at {big}px, batch " + "/".join(map(str, speedups)),
         "value": " / ".join(f"{s:.2f}" for s in speedups.values()), "goal": ">= 2",
         "met": min(speedups.values()) >= 2},
        *({"target": f"mean IoU, {name} - dense (points, paired)", "value": round(row["delta_points_mean"], 2),
           "goal": ">= -1.5", "met": row["delta_points_mean"] >= -1.5}
          for name, row in halves.items() if row["delta_points_mean"] is not None),
        {"target": "int8 TFLite of channel 50% / dense model.keras", "value":
         f"1/{dense['keras_bytes'] / half['int8_tflite_bytes']:.1f}", "goal": "<= 1/12",
         "met": half["int8_tflite_bytes"] * 12 <= dense["keras_bytes"]},
    ]


def format_table(r: dict) -> str:
    """Sizes per architecture, img/s per architecture (× dense), then the targets."""
    rows = {}
    for name, row in r["rows"].items():
        rows.setdefault(arch(name), row)
    dense = rows["dense"]
    lines = ["| architecture | params | MFLOPs | .keras MB | int8 TFLite MB |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {a} | {row['params'] / 1e6:.3f} M | {row['flops'] / 1e6:.0f} | {row['keras_bytes'] / 1e6:.2f} | "
              f"{row['int8_tflite_bytes'] / 1e6:.2f} |" for a, row in rows.items()]
    keys = list(dense["img_s"])
    lines += ["", "| img/s (× dense) | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for a, row in rows.items():
        cells = [f"{row['img_s'][k]:.1f}" + ("" if a == "dense" else f" ({row['img_s'][k] / dense['img_s'][k]:.2f}×)")
                 for k in keys]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    m = r["machine"]
    lines += ["", f"models of seed {r['seed']}; IoU over {r['dense_seeds']} seeds; TFLite float32 via "
              f"{r['tflite_runtime']}; {m.get('cores', '?')} cores, {m.get('cpu', '?')}; {r['seconds']} s", "",
              "| target | measured | goal | met |", "|---|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {t['goal']} | {'✔' if t['met'] else '✘'} |" for t in r["targets"]]
    return "\n".join(lines)
