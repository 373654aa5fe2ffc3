"""FLOPs of one forward pass, counted from the layers (not timed, not estimated):
multiply-adds of every Conv, transposed Conv and Dense for one input at the model's
built input size, as NNI's `count_flops_params` counts them. Bias adds, activations,
normalization and pooling are left out (under 1% of a U-Net's)."""
from __future__ import annotations

import math

import keras

from ..errors import ParamError
from ..surgery import walk_layers
from .graph import PRODUCERS  # the layers that make channels: Conv*, Conv*Transpose, Dense


def _macs(layer, in_shape, out_shape) -> int:
    kind = type(layer).__name__
    if kind.startswith("Conv") and kind.endswith("Transpose"):   # every input pixel scatters a kernel
        *_, c_out, c_in = layer.kernel.shape
        return math.prod(in_shape[1:-1]) * math.prod(layer.kernel_size) * c_in * c_out
    if kind in ("Conv1D", "Conv2D", "Conv3D"):                    # every output pixel gathers one
        *_, c_in_per_group, c_out = layer.kernel.shape
        return math.prod(out_shape[1:-1]) * math.prod(layer.kernel_size) * c_in_per_group * c_out
    if kind == "Dense":
        c_in, c_out = layer.kernel.shape
        return math.prod(in_shape[1:-1]) * c_in * c_out


def layer_macs(layer) -> int:
    """Multiply-adds of one Conv/Conv-transpose/Dense layer for one sample at its built size."""
    in_shape, out_shape = layer.input.shape, layer.output.shape
    if None in (*in_shape[1:], *out_shape[1:]):
        raise ParamError(f"FLOPs need a fixed input size; layer {layer.name!r} sees {tuple(in_shape)}")
    return int(_macs(layer, in_shape, out_shape))


def count_flops(model: keras.Model) -> int:
    """Multiply-adds of one forward pass of one sample (nested models included; a layer
    called more than once is counted at its first call)."""
    return sum(layer_macs(layer) for layer in walk_layers(model) if type(layer).__name__ in PRODUCERS)
