"""A trial's compression, chosen once from its parameters and called at the trial's phases.

    compression = Compression.for_trial(params, model, splits)  # checks config_list on this model now
    model = compression.prune(model)                       # at the schedule's prune point
    fit(model, callbacks=compression.finetune_callbacks(steps_per_epoch))
    model, stats = compression.finish(model)               # plain Keras model + measured sparsity

`schedule` decides where the prune point is (`train.run_trial`): before any training for
`init`, after the dense phase for `oneshot` and `agp`. Weight pruning keeps the model and
masks its weights (`pruning.Pruner`); channel pruning returns a new, thinner model
(`channels.prune`); no pruning returns the model untouched.
"""
from __future__ import annotations

import keras

from . import activations, channels
from .params import ACTIVATION_CRITERIA
from .pruning import AGPCallback, Pruner, sparsity_stats


class Compression:
    """No compression: every hook leaves the model as it is."""

    def __init__(self, params, model: keras.Model, splits=None):
        self.params, self.splits = params, splits
        self.config_list = params.config_list
        self.dense_params = model.count_params()

    @staticmethod
    def for_trial(params, model: keras.Model, splits=None) -> "Compression":
        """`splits`: the trial's data; channel criteria that rank by activations calibrate on it."""
        if not params.config_list:
            return Compression(params, model, splits)
        kind = {"weight": WeightPruning, "channel": ChannelPruning}[params.prune_mode]
        return kind(params, model, splits)

    def prune(self, model: keras.Model) -> keras.Model:
        return model

    def finetune_callbacks(self, steps_per_epoch: int) -> list:
        return []

    def finish(self, model: keras.Model) -> tuple[keras.Model, dict]:
        return model, sparsity_stats(model, [])


class WeightPruning(Compression):
    """Masks on the selected weights; AGP raises them over the first part of fine-tuning."""

    def __init__(self, params, model: keras.Model, splits=None):
        super().__init__(params, model, splits)
        self.pruner = Pruner(model, self.config_list, params.allocation)

    def prune(self, model: keras.Model) -> keras.Model:
        # agp: masks attached (all ones) now, before Keras traces the train step
        self.pruner.prune(fraction=0.0 if self.params.schedule == "agp" else 1.0)
        return model

    def finetune_callbacks(self, steps_per_epoch: int) -> list:
        if self.params.schedule != "agp":
            return []
        span = self.params.agp_steps or steps_per_epoch * max(1, self.params.finetune_epochs // 2)
        return [AGPCallback(self.pruner, span, self.params.agp_frequency)]

    def finish(self, model: keras.Model) -> tuple[keras.Model, dict]:
        self.pruner.strip()
        return model, sparsity_stats(model, self.pruner.targets)


class ChannelPruning(Compression):
    """Whole filters removed at the prune point: the model is rebuilt thinner."""

    def __init__(self, params, model: keras.Model, splits=None):
        super().__init__(params, model, splits)
        # What plan() refuses (a bad config_list, a layer it cannot see through) depends on the
        # graph, not on the weights or activations: planning the untrained model by weight norm
        # now fails before training.
        channels.plan(model, self.config_list)
        self.plan = None  # the real one, ranked on the trained model at the prune point

    def prune(self, model: keras.Model) -> keras.Model:
        calibration = None
        if self.params.channel_criterion in ACTIVATION_CRITERIA:
            calibration = activations.calibration_set(self.splits.train, self.params.calibration_patches)
        thin, self.plan = channels.prune(model, self.config_list, self.params.channel_criterion, calibration)
        return thin

    def finish(self, model: keras.Model) -> tuple[keras.Model, dict]:
        stats = sparsity_stats(model, [])
        # nothing is zero in a thin model: its sparsity is the share of the dense parameters gone
        stats.update(sparsity=1 - stats["params"] / self.dense_params, **self.plan.stats())
        return model, stats
