"""A trial measures what it ships on the machine it runs on (`--deploy-size`): its model as
float32 and full-int8 TFLite, converted as `export` converts them, at deploy_size px and
batch 1, through the runner `predict` uses (LiteRT + XNNPACK), timed in the same rounds as
the dense model of the same architecture converted the same way, in a child process that
refuses AMX as `predict` does (deploy/amx.py). `speedup` is therefore a
ratio measured side by side in one process, the figure to compare between trials; the
milliseconds are this machine's.

With `--min-speedup S` the trial's `default` becomes its objective scaled by how far the
measured speedup falls short of S: `objective * min(1, speedup / S)` (MnasNet's soft
constraint with exponent -1 below the target, 0 above it), so a single-objective NNI tuner
maximizes accuracy under a speed budget.

`--prune-target latency:L` prunes to a measured budget: `LatencyProbe` times candidate thin
models (their speed does not depend on their weights) against the dense one the same way,
and `cost_target.search_latency` picks the largest FLOPs target whose model meets L.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParamError
from ..surgery import fresh_copy
from .quantize import convert, float32_model, representative_images
from .runners import TFLiteRunner
from .speed import speeds_apart

CALIBRATION_PATCHES = 64  # training patches int8 calibrates on (tiled up to deploy_size)
ROUNDS = 15
PROBE_ROUNDS = 7  # per candidate of a latency target's search


def _converted(model, kinds, splits, side: int) -> dict:
    """`model` as `export` converts it: TFLite of each kind at side px, batch 1."""
    images = lambda: representative_images(splits, CALIBRATION_PATCHES)  # noqa: E731
    return convert(float32_model(fresh_copy(model)), kinds, images if "int8" in kinds else None, side=side)


class LatencyProbe:
    """Times models against the dense one, side by side, as the trial's final measurement does:
    `ratio(model)` = its deploy_format file's latency / the dense float32 file's, both timed
    in the same rounds. Built before training (the dense file's speed is its architecture's),
    so a machine where the runner cannot time a file fails there, in one line."""

    def __init__(self, dense, splits, side: int, deploy_format: str = "float32", rounds: int = PROBE_ROUNDS):
        self.splits, self.side, self.format, self.rounds = splits, side, deploy_format, rounds
        try:
            self.dense = _converted(dense, ["float32"], splits, side)["float32"].content
            TFLiteRunner(self.dense).probabilities(np.zeros((1, side, side, 3), np.float32))
        except Exception as e:  # noqa: BLE001 - any failure to convert or run means: cannot measure here
            raise ParamError(f"prune_target latency: cannot time a TFLite model on this machine "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None

    def ratio(self, model) -> float:
        content = _converted(model, [self.format], self.splits, self.side)[self.format].content
        speed = speeds_apart({"model": content, "dense": self.dense}, 1, self.rounds)
        return speed["dense"]["img_s"] / speed["model"]["img_s"]


def measure(model, dense, splits, side: int, deploy_format: str = "float32", rounds: int = ROUNDS) -> dict:
    """Latency and speedup of `model` (float32 and int8 TFLite) against `dense` (float32)."""

    shipped = _converted(model, ["float32", "int8"], splits, side)
    reference = _converted(dense, ["float32"], splits, side)
    speed = speeds_apart({"float32": shipped["float32"].content, "int8": shipped["int8"].content,
                          "dense": reference["float32"].content}, 1, rounds)
    ms = {k: 1000.0 / v["img_s"] for k, v in speed.items()}
    result = {"deploy_size": side, "dense_latency_ms": round(ms["dense"], 3)}
    for form in ("float32", "int8"):
        result[f"{form}_latency_ms"] = round(ms[form], 3)
        result[f"{form}_speedup"] = round(ms["dense"] / ms[form], 3)
        result[f"{form}_xnnpack"] = int(speed[form]["runtime"] == "xnnpack")
    result["latency_ms"] = result[f"{deploy_format}_latency_ms"]
    result["speedup"] = result[f"{deploy_format}_speedup"]
    return result


def constrained(objective: float, speedup: float, min_speedup: float) -> float:
    """The objective under a speed budget: scaled by speedup / min_speedup below it."""
    return objective * min(1.0, speedup / min_speedup)
