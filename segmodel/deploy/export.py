"""`python -m segmodel export EXPERIMENT [--trial ID] --out DIR`: the best trial's
model as files to deploy, each one measured by running that very file. Of a confirm
experiment, the best trial is the best seed of the candidate with the best mean.

Writes model.keras, a TensorFlow SavedModel, and TFLite float32, float16 (weights),
dynamic-range int8 (weights) and full-integer int8 (int8 weights, activations, input
and output; calibrated on training patches). The TFLite files have a fixed input
shape (1 x patch x patch x 3) and int8 scales XNNPACK accepts, so LiteRT's XNNPACK
delegate runs each of them whole (deploy/quantize.py says why).

For each file: size raw and gzip-compressed, validation mean IoU and pixel accuracy
on the trial's own validation set (from its params.json); for TFLite files also the
runtime that ran it (XNNPACK or TFLite's built-in kernels, read from the interpreter)
and images/s at batch 1, at the patch size and at --speed-side px (the same weights
converted the same way at that size), all files timed in turn in the same rounds.
Results go to DIR/export.json and a printed table. Warnings: a quantized file that
loses more than 1 point of mean IoU against the Keras model, and a file that does not
run on XNNPACK whole (one line: which node, which tensor, why).
"""
from __future__ import annotations

# Heavy libraries (TensorFlow, Keras, PIL) are imported inside the functions that use them:
# `python -m segmodel --help` imports every command module, and should stay instant.
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .. import data as datasets
from ..cli import add_command, default_out
from ..errors import DataError, SegmodelError
from ..experiment import records
from ..files import gzip_size, raw_size, write_text_atomic
from ..params import from_saved
from ..runtime import cpu_name
from . import amx
from .quantize import (
    INT8_OUTPUTS,
    ConversionError,
    convert,
    float32_model,
    representative_images,
    short_name,
)
from .runners import Runner, TFLiteRunner, load_runner
from .speed import delegate_note, images_per_second, runtime_fields

WARN_POINTS = 1.0   # mean IoU points (percent) a quantized model may lose before we warn
FORMATS = ("keras", "saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic", "tflite_int8")
QUANTIZED = ("tflite_float16", "tflite_dynamic", "tflite_int8")
SPEED_ROUNDS = 7         # timing rounds of every TFLite file, interleaved
SPEED_CALIBRATION = 16   # calibration patches of the int8 twin that is only timed


class ExportError(SegmodelError):
    """A model could not be converted or run."""


def register(subparsers) -> None:
    p = add_command(subparsers, "export", __doc__, "best trial -> .keras, SavedModel, TFLite fp32/fp16/int8, each measured")
    p.add_argument("experiment", metavar="EXPERIMENT",
                   help="NNI experiment id or folder (or one trial's output folder)")
    p.add_argument("--trial", default=None, metavar="ID", help="trial id (or sequence number); default: the best")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: ./export-<experiment>)")
    p.add_argument("--metric", default="default", help="final-result key that picks the best trial (default: %(default)s)")
    p.add_argument("--calibration-samples", type=int, default=128, metavar="N",
                   help="training patches used to calibrate int8 (default: %(default)s)")
    p.add_argument("--formats", default=",".join(FORMATS),
                   help=f"comma-separated subset of {','.join(FORMATS)} (default: all)")
    p.add_argument("--int8-output", default="float", choices=INT8_OUTPUTS,
                   help="model_int8.tflite's softmax and output: float (XNNPACK runs the whole graph; XNNPACK has "
                        "no int8 softmax) or int8 (integer-only accelerators) (default: %(default)s)")
    p.add_argument("--speed-side", type=int, default=256, metavar="PX",
                   help="also time each TFLite file's twin at this input side (default: %(default)s; 0 = patch size only)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ExportError(f"unknown format {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    if args.speed_side < 0 or args.speed_side % 16:
        raise ExportError(f"--speed-side must be 0 or a multiple of 16 (the U-Net pools 4 times), got {args.speed_side}")
    trial, exp = records.select_trial(args.experiment, args.trial, args.metric)
    amx.refuse()  # before the first interpreter: XNNPACK's int8 kernels are faster without AMX (segmodel/amx.py)
    if trial.diverged:
        raise ExportError(f"trial {trial.id} diverged ({trial.diverged}) and saved no model: nothing to export")
    out = Path(args.out) if args.out else default_out("export", exp.id if exp else args.experiment)
    result = export_trial(trial, out, formats, args.calibration_samples,
                          experiment_id=exp.id if exp else None, speed_side=args.speed_side,
                          int8_output=args.int8_output)
    print(format_table(result))
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {out / 'export.json'}", file=sys.stderr)
    return 0


def _step(msg: str) -> float:
    print(msg, file=sys.stderr, flush=True)
    return time.time()


def load_params(trial) -> "object":
    """The trial's Params from its params.json (unknown keys from other versions are ignored)."""
    return from_saved(json.loads(trial.file("params.json").read_text()), "params.json").validate()


def export_trial(trial, out: Path, formats=FORMATS, calibration_samples: int = 128, experiment_id=None,
                 speed_side: int = 256, int8_output: str = "float") -> dict:
    """The trial's model in every format of `formats`, each file measured by running it: loaded,
    converted, written, evaluated, timed; export.json says it all."""
    if calibration_samples < 1 and "tflite_int8" in formats:
        raise ExportError("--calibration-samples must be >= 1 for int8")
    out.mkdir(parents=True, exist_ok=True)
    model, splits = _load(trial)
    converted = _convert(model, formats, splits, calibration_samples, int8_output)
    entries, runners = [], {}
    for i, fmt in enumerate(formats, start=1):
        entry, runner = _write_and_evaluate(model, fmt, out, splits, converted, f"[{i}/{len(formats)}]")
        entries.append(entry)
        if runner is not None:
            runners[fmt] = runner
    speed = measure_speed(model, runners, splits, speed_side, int8_output) if runners else None
    for e in entries:
        if speed and e["format"] in speed["img_s"]:
            e["img_s"] = speed["img_s"][e["format"]]
    result = _summary(trial, experiment_id, splits, entries, speed, formats, int8_output, calibration_samples)
    write_text_atomic(out / "export.json", json.dumps(result, indent=2) + "\n")
    return result


def _load(trial):
    """The trial's model under a float32 policy, and its validation data."""
    import keras

    params = load_params(trial)
    keras.mixed_precision.set_global_policy("float32")
    t = _step(f"trial {trial.id}: loading its validation data ({params.data_dir or 'built-in synthetic set'})...")
    splits = datasets.load(params)
    print(f"  {splits.n_val} validation patches of {splits.patch_size}px ({time.time() - t:.1f}s)", file=sys.stderr)
    return float32_model(keras.models.load_model(trial.file("model.keras"), compile=False)), splits


def _convert(model, formats, splits, calibration_samples: int, int8_output: str) -> dict:
    """format -> quantize.Converted of every TFLite format asked, from one fixed-shape SavedModel."""
    kinds = [f.split("_", 1)[1] for f in formats if f.startswith("tflite_")]
    if not kinds:
        return {}
    t = _step(f"converting to TFLite {', '.join(kinds)} (input fixed at 1x{splits.patch_size}x{splits.patch_size}"
              + (f"; int8 calibrated on {calibration_samples} training patches" if "int8" in kinds else "")
              + ")...")
    calibration = lambda: representative_images(splits, calibration_samples)  # noqa: E731
    try:
        converted = {f"tflite_{k}": c for k, c in convert(model, kinds, calibration, int8_output=int8_output).items()}
    except ConversionError as e:
        raise ExportError(str(e)) from None
    print(f"  ({time.time() - t:.0f}s)", file=sys.stderr, flush=True)
    return converted


def _write_and_evaluate(model, fmt: str, out: Path, splits, converted: dict, counter: str) -> tuple[dict, object]:
    """Write one format's file and score it by running it: (its export.json entry, its TFLite
    runner for the speed table, or None)."""
    t = _step(f"{counter} {fmt}: writing...")
    if fmt == "keras":
        path = out / "model.keras"
        model.save(path)
    elif fmt == "saved_model":
        path = out / "saved_model"
        if path.exists():
            shutil.rmtree(path)
        model.export(str(path), format="tf_saved_model", verbose=False)
    else:
        path = out / f"model_{fmt.split('_', 1)[1]}.tflite"
        path.write_bytes(converted[fmt].content)
        if converted[fmt].floored:
            print(f"  int8: floored the calibrated range of {len(converted[fmt].floored)} tensor(s) "
                  f"that never fire on the calibration patches, so XNNPACK accepts their convs: "
                  f"{', '.join(map(short_name, converted[fmt].floored))}", file=sys.stderr, flush=True)
    written = time.time() - t
    print(f"  measuring validation IoU by running {path.name}...", file=sys.stderr, flush=True)
    scores = evaluate_file(path, splits)
    raw, gz = raw_size(path), gzip_size(path)
    entry = {"format": fmt, "file": path.name, "bytes": raw, "gzip_bytes": gz,
             "val_iou": scores["iou"], "val_accuracy": scores["accuracy"],
             "class_iou": scores["class_iou"], "seconds_to_write": round(written, 1),
             "seconds_to_evaluate": round(scores["seconds"], 1), **io_details(path)}
    runner = None
    if fmt in converted:
        runner = scores["runner"]
        entry.update(runtime_fields(runner, converted[fmt].problems), input_shape=list(converted[fmt].shape))
        if fmt == "tflite_int8":
            entry["int8_floored_tensors"] = converted[fmt].floored
    runtime = f", {entry['runtime']}" if "runtime" in entry else ""
    print(f"  {fmt}: {raw / 1e6:.2f} MB ({gz / 1e6:.2f} MB gzip), mean IoU {scores['iou']:.4f}{runtime} "
          f"({time.time() - t:.0f}s)", file=sys.stderr, flush=True)
    return entry, runner


def _summary(trial, experiment_id, splits, entries: list, speed, formats, int8_output: str,
             calibration_samples: int) -> dict:
    """export.json: what was exported from where, how to feed each file, and every file's figures."""
    trial_metrics = trial.metrics
    return {
        "experiment": experiment_id,
        "trial": trial.id,
        "trial_dir": str(trial.dir),
        "trial_val_iou": trial_metrics.get("iou"),
        "sparsity": trial_metrics.get("sparsity"),
        **{k: trial_metrics.get(k) for k in ("prune_mode", "params", "flops")},
        "patch_size": splits.patch_size,
        "class_names": list(splits.class_names),
        "palette": dict(splits.palette),
        "input": "float32 RGB in [0, 1], NHWC; TFLite files: a fixed shape [1, patch, patch, 3] (feed one "
                 "patch per call); tflite_int8: int8 = round(x / scale + zero_point), "
                 "with its formats[].input_quantization [scale, zero_point]",
        "output": "per-pixel class probabilities (softmax), float32" + (
            "; tflite_int8: int8, p = (q - zero_point) * scale, argmax of q gives the class" if int8_output == "int8"
            else " (tflite_int8 too: its softmax head runs in float after the int8 body)"),
        "int8_output": int8_output if "tflite_int8" in formats else None,
        "calibration_samples": calibration_samples if "tflite_int8" in formats else None,
        "validation_patches": splits.n_val,
        "speed": None if speed is None else {k: v for k, v in speed.items() if k != "img_s"},
        "cpu": cpu_name(),
        "amx": amx.state(),
        "formats": entries,
        "warnings": check(entries, trial_metrics),
    }


def check(entries: list[dict], trial_metrics: dict) -> list[str]:
    """Each entry's `iou_delta_points`, and the warnings: quantization loss, a TFLite file
    not run whole by XNNPACK, a Keras score that differs from the trial's own."""

    # Quantization loss is measured against the float model (or the trial's own score if none was exported).
    reference = next((e["val_iou"] for e in entries if e["format"] in ("keras", "saved_model", "tflite_float32")),
                     trial_metrics.get("iou"))
    warnings = []
    for e in entries:
        e["iou_delta_points"] = None if reference is None else round(100 * (e["val_iou"] - reference), 3)
        if e["format"] in QUANTIZED and e["iou_delta_points"] is not None \
                and e["iou_delta_points"] < -WARN_POINTS:
            warnings.append(f"{e['file']} loses {-e['iou_delta_points']:.2f} points of mean IoU "
                            f"({e['val_iou']:.4f} vs {reference:.4f})")
        if "runtime" in e:
            note = delegate_note(e["file"], e, e["xnnpack_problems"])
            if note:
                warnings.append(note)
    keras_iou = next((e["val_iou"] for e in entries if e["format"] == "keras"), None)
    if keras_iou is not None and isinstance(trial_metrics.get("iou"), float) \
            and abs(keras_iou - trial_metrics["iou"]) > 0.005:
        warnings.append(f"model.keras scores {keras_iou:.4f} here but {trial_metrics['iou']:.4f} in the trial: "
                        "the validation set built from params.json differs (data or data code changed?)")
    return warnings


def measure_speed(model, runners: dict, splits, side: int, int8_output: str = "float") -> dict:
    """Images/s at batch 1 of every TFLite file at the patch size (the written file) and at
    `side` px (the same weights converted the same way for that size: int8 calibrated on
    the calibration patches tiled up to it), all timed in the same rounds."""
    timed = {(fmt, f"{splits.patch_size}px"): r for fmt, r in runners.items()}
    if side and side != splits.patch_size:
        t = _step(f"converting each TFLite format at {side}px to time it...")
        twins = convert(model, [fmt.split("_", 1)[1] for fmt in runners],
                        lambda: representative_images(splits, SPEED_CALIBRATION), side=side, int8_output=int8_output)
        for kind, twin in twins.items():
            timed[(f"tflite_{kind}", f"{side}px")] = TFLiteRunner(twin.content)
        print(f"  ({time.time() - t:.0f}s)", file=sys.stderr, flush=True)
    t = _step(f"timing {len(timed)} TFLite files, batch 1, {SPEED_ROUNDS} rounds...")
    ips = images_per_second(timed, 1, SPEED_ROUNDS)
    img_s: dict = {}
    for (fmt, size), value in ips.items():
        img_s.setdefault(fmt, {})[size] = value
        runtime = timed[(fmt, size)].delegation["runtime"]
        if runtime != "xnnpack":
            img_s[fmt][f"{size}_runtime"] = runtime
    print(f"  ({time.time() - t:.0f}s)", file=sys.stderr, flush=True)
    return {"batch": 1, "rounds": SPEED_ROUNDS, "threads": next(iter(runners.values())).threads,
            "sizes": sorted({size for _, size in timed}, key=lambda s: int(s[:-2])), "img_s": img_s}


def io_details(path: Path) -> dict:
    """A TFLite file's input/output dtype and [scale, zero_point] (what a deployment must feed)."""
    if path.suffix != ".tflite":
        return {}
    r = TFLiteRunner(path, threads=1)
    quant = lambda d: list(d["quantization"]) if d["quantization"][0] else None  # noqa: E731 - (0, 0) = float
    return {"input_dtype": np.dtype(r.input["dtype"]).name, "input_quantization": quant(r.input),
            "output_dtype": np.dtype(r.output["dtype"]).name, "output_quantization": quant(r.output)}


def evaluate_file(path, splits) -> dict:
    """Accuracy and mean IoU of the file's (or runner's) predictions over the validation
    set, from one confusion matrix (as training's evaluation); and the runner that ran."""
    from ..metrics import scores_from_confusion

    started = time.time()
    run = path if isinstance(path, Runner) else load_runner(path)
    n = splits.n_classes
    cm = np.zeros((n, n), np.int64)
    done, next_report = 0, 0.25
    for x, y in splits.val:
        pred = np.asarray(run(np.asarray(x, np.float32))).reshape(-1)
        true = np.asarray(y).argmax(-1).reshape(-1)
        cm += np.bincount(true * n + pred, minlength=n * n).reshape(n, n)
        done += len(x)
        if splits.n_val >= 200 and done / splits.n_val >= next_report and done < splits.n_val:
            print(f"    {done}/{splits.n_val} patches ({time.time() - started:.0f}s)", file=sys.stderr, flush=True)
            next_report += 0.25
    if cm.sum() == 0:
        raise DataError("the validation set is empty: nothing to measure")
    return {**scores_from_confusion(cm, splits.class_names), "seconds": time.time() - started, "runner": run}


def format_table(result: dict) -> str:
    """The printed table: sizes, quality, and for TFLite files the runtime and images/s per side."""
    head = f"trial {result['trial']}" + (f" of experiment {result['experiment']}" if result["experiment"] else "")
    sizes = (result.get("speed") or {}).get("sizes", [])
    lines = [head, f"{'format':<16}{'file':<24}{'MB':>8}{'gzip MB':>9}{'val IoU':>9}{'Δ points':>10}"
                   f"{'pixel acc':>11}  {'runtime':<16}" + "".join(f"{'img/s ' + s:>14}" for s in sizes)]
    for e in result["formats"]:
        delta = "" if e["iou_delta_points"] is None else f"{e['iou_delta_points']:+.2f}"
        speed = "".join(f"{e['img_s'][s]:>14.1f}" if s in e.get("img_s", {}) else f"{'':>14}" for s in sizes)
        lines.append(f"{e['format']:<16}{e['file']:<24}{e['bytes'] / 1e6:>8.2f}{e['gzip_bytes'] / 1e6:>9.2f}"
                     f"{e['val_iou']:>9.4f}{delta:>10}{e['val_accuracy']:>11.4f}  {e.get('runtime', ''):<16}{speed}")
    if sizes:
        sp = result["speed"]
        lines.append(f"img/s: batch {sp['batch']}, {sp['threads']} threads, median of {sp['rounds']} interleaved "
                     f"rounds, {result['cpu']}" + (", AMX refused (int8 on AVX512-VNNI)"
                                                   if result.get("amx") == "refused" else ""))
    return "\n".join(lines)
