"""A channel plan as masks on a same-size model: the removed filters zeroed in place.

Zeroing a producer's kernel slice and bias for a removed channel, and the gamma and beta
of every BatchNormalization that reads it, makes that channel exactly 0 wherever it is
read, whatever the BN's moving statistics: the reference a thin rebuild must match
(`masked_copy`), and what gradual channel pruning holds through training
(`segmodel.compress.gradual`) before the rebuild at its end.

The thin model (`channels.rebuild`) computes what the masked one does wherever the
activations after a pruned conv map 0 to 0 (ReLU, linear, tanh...); after a sigmoid the
removed channel's constant 0.5 is dropped rather than carried into the next layer's bias.
"""
from __future__ import annotations

import keras
import numpy as np

from ..surgery import fresh_copy
from .channels import PRODUCERS, ChannelPlan


def channel_masks(model: keras.Model, channel_plan: ChannelPlan) -> list[tuple[keras.Variable, np.ndarray]]:
    """(variable, 0/1 mask of its shape) for every weight of `model` a removed channel touches."""
    masks = []
    for name, kept in channel_plan.keep.items():
        layer = model.get_layer(name)
        out_axis = PRODUCERS[type(layer).__name__][1]
        removed = np.setdiff1d(np.arange(channel_plan.channels[name]), kept)
        for w, axis in ((layer.kernel, out_axis), (layer.bias, 0)):
            if w is not None:
                masks.append((w, _zeroed(w.shape, axis, removed)))
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization" and layer.name in channel_plan.inputs:
            for w in (layer.gamma, layer.beta):
                if w is not None:
                    removed = np.setdiff1d(np.arange(w.shape[-1]), channel_plan.inputs[layer.name])
                    masks.append((w, _zeroed(w.shape, -1, removed)))
    return masks


def _zeroed(shape, axis: int, removed: np.ndarray) -> np.ndarray:
    mask = np.ones(tuple(shape), np.float32)
    index = [slice(None)] * mask.ndim
    index[axis] = removed
    mask[tuple(index)] = 0
    return mask


def masked_copy(model: keras.Model, channel_plan: ChannelPlan) -> keras.Model:
    """A same-size copy with every removed filter zeroed (kernel slice and bias) and the
    BatchNormalization that reads it made to output exactly 0 there (gamma = beta = 0):
    the reference the thin model must match."""
    masked = fresh_copy(model)
    for w, mask in channel_masks(masked, channel_plan):
        w.assign(np.where(mask > 0, w.numpy(), 0).astype(w.dtype))
    return masked
