"""A trial measures what it ships on the machine it runs on (`--deploy-size`): its model as
float32 and full-int8 TFLite, converted as `export` converts them, at deploy_size px and
batch 1, through the runner `predict` uses (LiteRT + XNNPACK), timed in the same rounds as
the dense model of the same architecture converted the same way. `speedup` is therefore a
ratio measured side by side in one process, the figure to compare between trials; the
milliseconds are this machine's.

With `--min-speedup S` the trial's `default` becomes its objective scaled by how far the
measured speedup falls short of S: `objective * min(1, speedup / S)` (MnasNet's soft
constraint with exponent -1 below the target, 0 above it), so a single-objective NNI tuner
maximizes accuracy under a speed budget.
"""
from __future__ import annotations

CALIBRATION_PATCHES = 64  # training patches int8 calibrates on (tiled up to deploy_size)
ROUNDS = 15


def measure(model, dense, splits, side: int, deploy_format: str = "float32", rounds: int = ROUNDS) -> dict:
    """Latency and speedup of `model` (float32 and int8 TFLite) against `dense` (float32)."""
    from .export import float32_model, representative_images
    from .inference import TFLiteRunner
    from .quantize import convert
    from .tflite_speed import images_per_second

    images = lambda: representative_images(splits, CALIBRATION_PATCHES)  # noqa: E731
    shipped = convert(float32_model(_uncompiled(model)), ["float32", "int8"], images, side=side)
    reference = convert(float32_model(_uncompiled(dense)), ["float32"], side=side)
    runners = {"float32": TFLiteRunner(shipped["float32"].content),
               "int8": TFLiteRunner(shipped["int8"].content),
               "dense": TFLiteRunner(reference["float32"].content)}
    ms = {k: 1000.0 / v for k, v in images_per_second(runners, 1, rounds).items()}
    result = {"deploy_size": side, "dense_latency_ms": round(ms["dense"], 3)}
    for form in ("float32", "int8"):
        result[f"{form}_latency_ms"] = round(ms[form], 3)
        result[f"{form}_speedup"] = round(ms["dense"] / ms[form], 3)
        result[f"{form}_xnnpack"] = int(runners[form].delegation["runtime"] == "xnnpack")
    result["latency_ms"] = result[f"{deploy_format}_latency_ms"]
    result["speedup"] = result[f"{deploy_format}_speedup"]
    return result


def _uncompiled(model):
    """A copy without the training phase's compile state (which clone_model cannot copy:
    segmentation_models' summed loss does not deserialize)."""
    import keras
    copy = keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def constrained(objective: float, speedup: float, min_speedup: float) -> float:
    """The objective under a speed budget: scaled by speedup / min_speedup below it."""
    return objective * min(1.0, speedup / min_speedup)
