"""`python -m segmodel export EXPERIMENT [--trial ID] --out DIR`: the best trial's
model as files to deploy, each one measured by running that very file.

Writes model.keras, a TensorFlow SavedModel, and TFLite float32, float16 and
full-integer int8 (int8 weights, activations, input and output; calibrated on
training patches). For each: size raw and gzip-compressed, and validation mean IoU
and pixel accuracy on the trial's own validation set (from its params.json).
Results go to DIR/export.json and a printed table; a quantized file that loses
more than 1 point of mean IoU against the Keras model gets a warning.
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

from . import experiments
from .cli import add_command, default_out
from .errors import DataError, SegmodelError
from .files import gzip_size, raw_size
from .inference import load_runner

WARN_POINTS = 1.0   # mean IoU points (percent) a quantized model may lose before we warn
FORMATS = ("keras", "saved_model", "tflite_float32", "tflite_float16", "tflite_int8")


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
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ExportError(f"unknown format {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    trial, exp = experiments.select_trial(args.experiment, args.trial, args.metric)
    out = Path(args.out) if args.out else default_out("export", exp.id if exp else args.experiment)
    result = export_trial(trial, out, formats, args.calibration_samples,
                          experiment_id=exp.id if exp else None)
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
    from .params import from_saved
    return from_saved(json.loads(trial.file("params.json").read_text()), "params.json").validate()


def export_trial(trial, out: Path, formats=FORMATS, calibration_samples: int = 128, experiment_id=None) -> dict:
    import keras

    out.mkdir(parents=True, exist_ok=True)
    params = load_params(trial)
    model_path = trial.file("model.keras")
    keras.mixed_precision.set_global_policy("float32")
    t = _step(f"trial {trial.id}: loading its validation data ({params.data_dir or 'built-in synthetic set'})...")
    from . import data as datasets
    splits = datasets.load(params)
    print(f"  {splits.n_val} validation patches of {splits.patch_size}px ({time.time() - t:.1f}s)", file=sys.stderr)
    model = float32_model(keras.models.load_model(model_path, compile=False))

    entries = []
    keras_path, saved_dir = out / "model.keras", out / "saved_model"
    if any(f == "saved_model" or f.startswith("tflite") for f in formats):
        t = _step("writing the TensorFlow SavedModel (the TFLite converter's input)...")
        if saved_dir.exists():
            shutil.rmtree(saved_dir)
        model.export(str(saved_dir), format="tf_saved_model", verbose=False)
    for i, fmt in enumerate(formats, start=1):
        t = _step(f"[{i}/{len(formats)}] {fmt}: writing...")
        if fmt == "keras":
            path = keras_path
            model.save(path)
        elif fmt == "saved_model":
            path = saved_dir
        else:
            kind = fmt.split("_", 1)[1]
            path = out / f"model_{kind}.tflite"
            if kind == "int8":
                print(f"  calibrating on {calibration_samples} training patches...", file=sys.stderr, flush=True)
            path.write_bytes(convert_tflite(saved_dir, kind, splits, calibration_samples))
        written = time.time() - t
        print(f"  measuring validation IoU by running {path.name}...", file=sys.stderr, flush=True)
        scores = evaluate_file(path, splits)
        raw, gz = raw_size(path), gzip_size(path)
        entries.append({"format": fmt, "file": path.name, "bytes": raw, "gzip_bytes": gz,
                        "val_iou": scores["iou"], "val_accuracy": scores["accuracy"],
                        "class_iou": scores["class_iou"], "seconds_to_write": round(written, 1),
                        "seconds_to_evaluate": round(scores["seconds"], 1), **io_details(path)})
        print(f"  {fmt}: {raw / 1e6:.2f} MB ({gz / 1e6:.2f} MB gzip), mean IoU {scores['iou']:.4f} "
              f"({time.time() - t:.0f}s)", file=sys.stderr, flush=True)
    if "saved_model" not in formats and saved_dir.exists():
        shutil.rmtree(saved_dir)

    # Quantization loss is measured against the float model (or the trial's own score if none was exported).
    reference = next((e["val_iou"] for e in entries if e["format"] in ("keras", "saved_model", "tflite_float32")),
                     trial.metrics.get("iou"))
    warnings = []
    for e in entries:
        e["iou_delta_points"] = None if reference is None else round(100 * (e["val_iou"] - reference), 3)
        if e["format"] in ("tflite_float16", "tflite_int8") and e["iou_delta_points"] is not None \
                and e["iou_delta_points"] < -WARN_POINTS:
            warnings.append(f"{e['file']} loses {-e['iou_delta_points']:.2f} points of mean IoU "
                            f"({e['val_iou']:.4f} vs {reference:.4f})")
    trial_metrics = trial.metrics
    keras_iou = next((e["val_iou"] for e in entries if e["format"] == "keras"), None)
    if keras_iou is not None and isinstance(trial_metrics.get("iou"), float) \
            and abs(keras_iou - trial_metrics["iou"]) > 0.005:
        warnings.append(f"model.keras scores {keras_iou:.4f} here but {trial_metrics['iou']:.4f} in the trial: "
                        "the validation set built from params.json differs (data or data code changed?)")
    result = {
        "experiment": experiment_id,
        "trial": trial.id,
        "trial_dir": str(trial.dir),
        "trial_val_iou": trial_metrics.get("iou"),
        "sparsity": trial_metrics.get("sparsity"),
        **{k: trial_metrics.get(k) for k in ("prune_mode", "params", "flops")},
        "patch_size": splits.patch_size,
        "class_names": list(splits.class_names),
        "palette": dict(splits.palette),
        "input": "float32 RGB in [0, 1], NHWC; tflite_int8: int8 = round(x / scale + zero_point), "
                 "with its formats[].input_quantization [scale, zero_point]",
        "output": "per-pixel class probabilities (softmax); tflite_int8: int8, "
                  "p = (q - zero_point) * scale, argmax of q gives the class",
        "calibration_samples": calibration_samples if "tflite_int8" in formats else None,
        "validation_patches": splits.n_val,
        "formats": entries,
        "warnings": warnings,
    }
    (out / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def float32_model(model):
    """The same weights under a float32 policy: mixed-precision layers (bf16/fp16
    compute) would otherwise put casts in the SavedModel and TFLite graphs."""
    import keras
    if all(getattr(layer.dtype_policy, "name", "float32") == "float32" for layer in model.layers):
        return model

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


# ---- conversion ------------------------------------------------------------------

def representative_images(splits, n: int):
    """Up to n training patches, one at a time, as the int8 calibrator wants them."""
    count = 0
    for x, _ in splits.train:
        for img in np.asarray(x):
            if count >= n:
                return
            count += 1
            yield [img[None].astype(np.float32)]


def convert_tflite(saved_dir: Path, kind: str, splits, calibration_samples: int) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_dir))
    if kind == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif kind == "int8":
        if calibration_samples < 1:
            raise ExportError("--calibration-samples must be >= 1 for int8")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: representative_images(splits, calibration_samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as e:  # noqa: BLE001 - converter errors are long; keep the first line
        raise ExportError(f"TFLite {kind} conversion failed: {str(e).strip().splitlines()[0][:300]}") from None


# ---- measuring ----------------------------------------------------------------------

def io_details(path: Path) -> dict:
    """A TFLite file's input/output dtype and [scale, zero_point] (what a deployment must feed)."""
    if path.suffix != ".tflite":
        return {}
    from .inference import TFLiteRunner
    r = TFLiteRunner(path, threads=1)
    quant = lambda d: list(d["quantization"]) if d["quantization"][0] else None  # noqa: E731 - (0, 0) = float
    return {"input_dtype": np.dtype(r.input["dtype"]).name, "input_quantization": quant(r.input),
            "output_dtype": np.dtype(r.output["dtype"]).name, "output_quantization": quant(r.output)}


def evaluate_file(path: Path, splits) -> dict:
    """Accuracy and mean IoU of the file's predictions over the validation set,
    from one confusion matrix (as training's evaluation)."""
    from .metrics import scores_from_confusion

    started = time.time()
    run = load_runner(path)
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
    return {**scores_from_confusion(cm, splits.class_names), "seconds": time.time() - started}


def format_table(result: dict) -> str:
    head = f"trial {result['trial']}" + (f" of experiment {result['experiment']}" if result["experiment"] else "")
    lines = [head, f"{'format':<16}{'file':<24}{'MB':>8}{'gzip MB':>9}{'val IoU':>9}{'Δ points':>10}{'pixel acc':>11}"]
    for e in result["formats"]:
        delta = "" if e["iou_delta_points"] is None else f"{e['iou_delta_points']:+.2f}"
        lines.append(f"{e['format']:<16}{e['file']:<24}{e['bytes'] / 1e6:>8.2f}{e['gzip_bytes'] / 1e6:>9.2f}"
                     f"{e['val_iou']:>9.4f}{delta:>10}{e['val_accuracy']:>11.4f}")
    return "\n".join(lines)
