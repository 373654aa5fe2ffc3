"""Gradual channel pruning (`--prune-mode channel --schedule agp`): channels masked a few at a
time over the first part of fine-tuning on AGP's cubic schedule, then the thin rebuild.

A one-shot cut removes every channel at once and leaves fine-tuning to recover; AGP (Zhu &
Gupta 2017, NNI's AGPPruner) removes them gradually while the others learn to take over.
While it trains the model keeps its size: a channel plan's removed filters are held at exactly
zero by masks on the producers' kernels and biases and on the gamma/beta of the
BatchNormalizations that read them (`channel_masks`), through the weight Pruner's mechanism
(`pruning.hold`: a MaskConstraint Keras applies after every optimizer step). Each mask update
plans again at that point of the schedule on the present weights, the channels masked so far
going first, so a channel once masked stays masked. `thin()` at the end rebuilds the model at
the last plan: what the masked model computes, physically thinner.
"""
from __future__ import annotations

from typing import Callable

import keras
import numpy as np

from .channel_masks import channel_masks
from .channels import ChannelPlan, rebuild
from .pruning import hold, release


class ChannelMasker:
    """What AGPCallback drives for channels: `prune(fraction)` plans with `plan_at(model,
    fraction, forced)` (fraction 0..1 of the final target; `forced`: the channels masked so
    far) and masks what that plan removes."""

    def __init__(self, model: keras.Model, plan_at: Callable[..., ChannelPlan]):
        self.model, self.plan_at = model, plan_at
        self.plan: ChannelPlan | None = None
        self.masks: dict[str, keras.Variable] = {}
        self.fraction = 0.0
        self._held: list = []

    @property
    def attached(self) -> bool:
        return bool(self.masks)

    def removed(self) -> dict[str, np.ndarray] | None:
        """Per producer, the channels the present plan removes (boolean)."""
        if self.plan is None:
            return None
        return {name: ~np.isin(np.arange(self.plan.channels[name]), kept) for name, kept in self.plan.keep.items()}

    def prune(self, fraction: float = 1.0) -> None:
        self.plan = self.plan_at(self.model, fraction, self.removed())
        masks = channel_masks(self.model, self.plan)
        for w, mask in masks:
            hold(self.masks, w, mask)
        self._held = [w for w, _ in masks]
        self.fraction = fraction

    def thin(self) -> keras.Model:
        """The masks folded in and taken off, and the model rebuilt at the last plan."""
        release(self.masks, self._held)
        return rebuild(self.model, self.plan)
