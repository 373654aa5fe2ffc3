"""Deploying a trained model: the files a device runs, and how fast and how well each runs.

    python -m segmodel export EXPERIMENT   # export.py: .keras, SavedModel, TFLite f32/f16/int8, each measured
    python -m segmodel predict MODEL IMG   # predict.py: colour masks with any exported file

    convert(model, ["float32", "int8"], images)  # quantize.py: TFLite files XNNPACK runs whole
    load_runner(path)                            # runners.py: one runner per model format
    images_per_second(runners, batch, rounds)    # speed.py: the one interleaved timer
    LatencyProbe(dense, splits, side)            # latency_probe.py: what a trial times
    amx.refuse()                                 # amx.py: int8 without AMX tiles

Names resolve on first use: importing this face loads neither TensorFlow nor LiteRT.
"""
from importlib import import_module

_HOMES = {"convert": "quantize", "float32_model": "quantize", "representative_images": "quantize",
          "load_runner": "runners", "TFLiteRunner": "runners", "images_per_second": "speed",
          "speeds_apart": "speed", "timed_calls": "speed", "LatencyProbe": "latency_probe", "amx": "amx"}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = import_module(f"{__name__}.{_HOMES[name]}")
    return module if name == _HOMES[name] else getattr(module, name)
