"""`python -m segmodel bench channels`: does channel pruning pay? Dense vs channel-pruned
25/50/75% vs weight-pruned 80%, same training budget, several seeds.

Each row is a real trial (`python -m segmodel train`, schedule oneshot: dense `--epochs`,
prune, fine-tune `--finetune_epochs`; init: all epochs on the thin model; dense trains the
same epochs unpruned) into OUT/seed<k>/<row>; a finished one is reused, so a run resumes.
Then, for the first seed's models: params, FLOPs, .keras and int8 TFLite sizes, and CPU
inference images/s of the Keras model and its float32 TFLite file (through LiteRT when
installed) at 64 and 256 px, batch 1 and 8, all variants interleaved in rounds in one
process so a shared CPU slows them alike: quote the ratios.

    python -m segmodel bench channels --out runs/channels --seeds 0 1 2
    python -m segmodel bench channels --out runs/channels-converged --epochs 12 --finetune_epochs 8 \
        --channel-sparsities 0.5 --weight-sparsity 0 --schedules oneshot init
    python -m segmodel bench channels --out /tmp/cb --quick --data_dir DIR   # checks every stage runs
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from ..errors import ParamError
from ..files import write_json_atomic, write_text_atomic
from ..params import CRITERIA
from .trials import run_trial_cell


def variants(schedules=("oneshot",), channel=(0.25, 0.5, 0.75), weight: float = 0.8) -> dict[str, dict]:
    """Row name -> trial flags: dense, channel-pruned at each sparsity with each schedule,
    weight-pruned (oneshot; weight 0 = no such row)."""
    rows = {"dense": {"sparsity": 0.0, "schedule": "oneshot"}}
    for schedule in schedules:
        for s in channel:
            rows[f"channel {s:.0%} {schedule}"] = {"prune_mode": "channel", "sparsity": s, "schedule": schedule}
    if weight:
        rows[f"weight {weight:.0%} oneshot"] = {"prune_mode": "weight", "sparsity": weight, "schedule": "oneshot"}
    return rows


def _folder(flags: dict) -> str:
    if not flags["sparsity"]:
        return "dense"
    name = f"{flags['prune_mode']}-{flags['sparsity'] * 100:.0f}"
    return name if flags["schedule"] == "oneshot" else f"{name}-{flags['schedule']}"

FULL = dict(patch_size=64, epochs=4, finetune_epochs=3, sizes=(64, 256), batches=(1, 8), rounds=9)
QUICK = dict(patch_size=32, epochs=1, finetune_epochs=1, sizes=(32, 64), batches=(1, 2), rounds=1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="trial folders, results.json and table.md go here")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument("--epochs", type=int, default=None, help="dense epochs (default 4)")
    p.add_argument("--finetune_epochs", type=int, default=None, help="fine-tuning epochs (default 3)")
    p.add_argument("--schedules", nargs="+", default=["oneshot"], choices=("oneshot", "init"),
                   help="schedules of the channel rows (default: oneshot)")
    p.add_argument("--channel-sparsities", type=float, nargs="+", default=[0.25, 0.5, 0.75], metavar="S",
                   help="channel rows (default: 0.25 0.5 0.75; the targets need 0.5)")
    p.add_argument("--weight-sparsity", type=float, default=0.8, metavar="S",
                   help="the weight-pruning row (default 0.8; 0 = none)")
    p.add_argument("--criterion", default="l1", choices=CRITERIA, help="channel_criterion (default l1)")
    p.add_argument("--kd", action="store_true", help="fine-tune the pruned models with distillation")
    p.add_argument("--data_dir", default="", help="dataset (default: the built-in synthetic set)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the bench runs, numbers meaningless")


def main(args) -> int:
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("epochs", "finetune_epochs"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    out = Path(args.out)
    rows = variants(args.schedules, args.channel_sparsities, args.weight_sparsity)
    if not any(name.startswith("channel 50%") for name in rows):
        raise ParamError("--channel-sparsities must include 0.5: the targets are set at 50% channels")
    result = run(out, args.seeds, sizes, rows, criterion=args.criterion, kd=args.kd, data_dir=args.data_dir)
    table = format_table(result)
    write_json_atomic(out / "results.json", result)
    write_text_atomic(out / "table.md", table + "\n")
    print(table)
    print(f"wrote {out / 'results.json'}, {out / 'table.md'}")
    return 0


def _log(msg: str) -> None:
    print(f"[bench channels] {msg}", file=sys.stderr, flush=True)


# ---- training: real trials ---------------------------------------------------------------------

def train_all(out: Path, seeds, sizes: dict, criterion: str, kd: bool, data_dir: str, rows: dict) -> dict:
    """row -> [metrics.json per seed, with its folder], training what is not there yet."""
    runs: dict[str, list[dict]] = {name: [] for name in rows}
    for seed in seeds:
        for name, flags in rows.items():
            cell = {"patch_size": sizes["patch_size"], "epochs": sizes["epochs"],
                    "finetune_epochs": sizes["finetune_epochs"], "seed": seed, "precision": "float32",
                    "channel_criterion": criterion, **flags,
                    **({"kd": "true"} if kd and name != "dense" and flags["schedule"] == "oneshot" else {}),
                    **({"data_dir": data_dir} if data_dir else {})}
            argv = [str(x) for key, value in cell.items() for x in (f"--{key}", value)]
            metrics = run_trial_cell(out / f"seed{seed}", _folder(flags), argv)
            runs[name].append({**metrics, "dir": str(out / f"seed{seed}" / _folder(flags))})
    return runs


# ---- sizes and speed ---------------------------------------------------------------------------

def at_size(model, side: int):
    """The same weights in a model built for side x side inputs."""
    import keras

    from ..channels import resized_config
    config = resized_config(model.get_config(), input_shape=(side, side, model.input_shape[-1]))
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def tflite_bytes(model, kind: str = "float32", splits=None, samples: int = 64) -> bytes:
    """The export command's conversion (SavedModel -> TFLite), quietly."""
    import tempfile

    from ..export import convert_tflite
    from .stages import _Quiet as QuietFds
    with tempfile.TemporaryDirectory() as tmp, QuietFds():
        model.export(tmp, format="tf_saved_model", verbose=False)
        return convert_tflite(Path(tmp), kind, splits, samples)


def speed(models: dict, sides, batches, rounds: int) -> dict:
    """Images/s of each model's traced Keras forward pass and of its float32 TFLite file,
    per (side, batch), every variant timed in the same rounds."""
    import numpy as np
    import tensorflow as tf

    from ..inference import TFLiteRunner
    from .timing import timed_calls
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


def run(out: Path, seeds, sizes: dict, rows: dict, criterion: str = "l1", kd: bool = False,
        data_dir: str = "") -> dict:
    import keras

    from .. import data as datasets
    from ..inference import tflite_interpreter_class
    from .stages import _machine as stages_machine
    from ..params import resolve
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    runs = train_all(out, seeds, sizes, criterion, kd, data_dir, rows)
    keras.mixed_precision.set_global_policy("float32")
    splits = datasets.load(resolve({"patch_size": sizes["patch_size"], "data_dir": data_dir, "seed": seeds[0]}))
    # one model per architecture (the schedules of a channel sparsity share one): its first seed's
    shape = {name: name.rsplit(" ", 1)[0] for name in runs}  # "channel 50% init" -> "channel 50%"
    models = {}
    for name, ms in runs.items():
        if shape[name] not in models:
            models[shape[name]] = keras.models.load_model(Path(ms[0]["dir"]) / "model.keras", compile=False)
    _log("int8 TFLite of each architecture (calibrated on 64 training patches)...")
    int8 = {arch: len(tflite_bytes(m, "int8", splits)) for arch, m in models.items()}
    _log("inference speed...")
    ips = speed(models, sizes["sizes"], sizes["batches"], sizes["rounds"])
    dense_iou = [m["iou"] for m in runs["dense"]]
    table = {}
    for name, ms in runs.items():
        ious = [m["iou"] for m in ms]
        delta = [100 * (a - b) for a, b in zip(ious, dense_iou)]
        table[name] = {
            "iou_mean": statistics.mean(ious), "iou_sd": statistics.stdev(ious) if len(ious) > 1 else 0.0,
            "iou_per_seed": ious, "delta_points_mean": statistics.mean(delta),
            "delta_points_sd": statistics.stdev(delta) if len(delta) > 1 else 0.0,
            "params": ms[0]["params"], "flops": ms[0]["flops"], "keras_bytes": ms[0]["model_bytes"],
            "int8_tflite_bytes": int8[shape[name]], "img_s": ips[shape[name]],
            "train_s": statistics.mean(m["duration_s"] for m in ms),
        }
    return {"seeds": list(seeds), "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
            "criterion": criterion, "kd": kd, "tflite_runtime": tflite_interpreter_class().__module__,
            "machine": stages_machine(), "seconds": round(time.time() - started), "rows": table,
            "targets": targets(table, sizes)}


def targets(rows: dict, sizes: dict) -> list[dict]:
    """Issue #15's targets at 50% channels (one IoU line per schedule)."""
    dense = rows["dense"]
    halves = {name: row for name, row in rows.items() if name.startswith("channel 50%")}
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
           "goal": ">= -1.5", "met": row["delta_points_mean"] >= -1.5} for name, row in halves.items()),
        {"target": "int8 TFLite of channel 50% / dense model.keras", "value":
         f"1/{dense['keras_bytes'] / half['int8_tflite_bytes']:.1f}", "goal": "<= 1/12",
         "met": half["int8_tflite_bytes"] * 12 <= dense["keras_bytes"]},
    ]


def format_table(r: dict) -> str:
    """Two Markdown tables (quality and size per row; speed per architecture), then the targets."""
    rows, dense = r["rows"], r["rows"]["dense"]
    lines = ["| variant | val mean IoU (mean ± sd) | Δ vs dense, paired (pt) | params | MFLOPs | .keras MB "
             "| int8 TFLite MB |", "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        delta = "—" if name == "dense" else f"{row['delta_points_mean']:+.1f} ± {row['delta_points_sd']:.1f}"
        lines.append(f"| {name} | {row['iou_mean']:.3f} ± {row['iou_sd']:.3f} | {delta} | "
                     f"{row['params'] / 1e6:.3f} M | {row['flops'] / 1e6:.0f} | {row['keras_bytes'] / 1e6:.2f} | "
                     f"{row['int8_tflite_bytes'] / 1e6:.2f} |")
    speed_keys = list(dense["img_s"])
    lines += ["", "| img/s (× dense) | " + " | ".join(speed_keys) + " |", "|---|" + "---|" * len(speed_keys)]
    shown = set()
    for name, row in rows.items():
        arch = name.rsplit(" ", 1)[0]
        if arch in shown:
            continue
        shown.add(arch)
        cells = [f"{row['img_s'][k]:.1f}" + ("" if name == "dense" else f" ({row['img_s'][k] / dense['img_s'][k]:.2f}×)")
                 for k in speed_keys]
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    m = r["machine"]
    lines += ["", f"seeds {r['seeds']}, patch {r['sizes']['patch_size']}, {r['sizes']['epochs']} + "
              f"{r['sizes']['finetune_epochs']} epochs (init: all epochs on the thin model), criterion "
              f"{r['criterion']}, kd {r['kd']}, TFLite float32 via {r['tflite_runtime']}, "
              f"{m.get('cores', '?')} cores, {m.get('cpu', '?')}, {r['seconds']} s", "",
              "| target | measured | goal | met |", "|---|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {t['goal']} | {'✔' if t['met'] else '✘'} |" for t in r["targets"]]
    return "\n".join(lines)
