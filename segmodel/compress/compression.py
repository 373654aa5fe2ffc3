"""A trial's compression, chosen once from its parameters and called at the trial's phases.

    compression = Compression.for_trial(params, model, splits)  # checks config_list on this model now
    model = compression.prune(model)                       # at the schedule's prune point
    fit(model, callbacks=compression.finetune_callbacks(steps_per_epoch))
    model, stats = compression.finish(model)               # plain Keras model + measured sparsity

`schedule` decides where the prune point is (`train.run_trial`): before any training for
`init`, after the dense phase for `oneshot` and `agp`. Weight pruning keeps the model and
masks its weights (`pruning.Pruner`); channel pruning returns a new, thinner model
(`channels.rebuild`), or with agp masks channels through fine-tuning and rebuilds in
`finish`; no pruning returns the model untouched.
"""
from __future__ import annotations

import sys

import keras

from ..deploy.latency_probe import LatencyProbe
from ..params import ACTIVATION_CRITERIA
from . import activation_stats, channels, cost_target
from .flops import count_flops
from .gradual import ChannelMasker
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

    def _agp(self, pruner, steps_per_epoch: int) -> list:
        """agp: the callback raising `pruner` to its target over agp_steps (default: the first
        half of fine-tuning; the rest recovers)."""
        if self.params.schedule != "agp":
            return []
        span = self.params.agp_steps or steps_per_epoch * max(1, self.params.finetune_epochs // 2)
        return [AGPCallback(pruner, span, self.params.agp_frequency)]


class WeightPruning(Compression):
    """Masks on the selected weights; AGP raises them over the first part of fine-tuning."""

    def __init__(self, params, model: keras.Model, splits=None):
        super().__init__(params, model, splits)
        self.pruner = Pruner(model, self.config_list, params.allocation)
        # masks attached now, all ones (w * 1 is w, bit for bit), before Keras traces the train
        # step: dense training and fine-tuning then share one traced step (train._Phases)
        self.pruner.prune(fraction=0.0)

    def prune(self, model: keras.Model) -> keras.Model:
        # agp: the masks stay all ones here; AGPCallback raises them through fine-tuning
        self.pruner.prune(fraction=0.0 if self.params.schedule == "agp" else 1.0)
        return model

    def finetune_callbacks(self, steps_per_epoch: int) -> list:
        return self._agp(self.pruner, steps_per_epoch)

    def finish(self, model: keras.Model) -> tuple[keras.Model, dict]:
        self.pruner.strip()  # config_sparsity: per config_list entry, asked vs measured (stderr says where less)
        return model, {**sparsity_stats(model, self.pruner.targets), "config_sparsity": self.pruner.achieved()}


class ChannelPruning(Compression):
    """Whole filters removed and the model rebuilt thinner: at the prune point (oneshot, init),
    or, with agp, masked gradually through fine-tuning (segmodel.compress.gradual) and rebuilt
    at its end. With a prune_target one global ranking removes channels until the FLOPs budget
    is met (segmodel.compress.cost_target), a latency budget being first turned into the FLOPs budget
    whose thin model measures within it; else each selected layer loses its sparsity."""

    def __init__(self, params, model: keras.Model, splits=None):
        super().__init__(params, model, splits)
        self.dense_flops = count_flops(model)
        self.flops_target = params.flops_target  # a latency target sets it at the prune point
        self.latency_search = None
        # What planning refuses (a bad config_list, a layer it cannot see through) depends on the
        # graph, not on the weights or activations: planning the untrained model by weight norm
        # now fails before training; so does a machine where latency cannot be timed.
        self._plan(model, "l1", None, target=0.5 if params.latency_target else None)
        self.probe = (LatencyProbe(model, splits, params.deploy_size, params.deploy_format)
                      if params.latency_target else None)
        self.plan = None  # the real one, ranked on the trained model at the prune point
        self.masker = None

    def _plan(self, model: keras.Model, criterion: str, calibration, fraction: float = 1.0, forced=None,
              target: float | None = None):
        """The plan at `fraction` of the way to the FLOPs target (agp; 1 = the target itself)."""
        target = target or self.flops_target
        if target:
            return cost_target.target_plan(model, self.config_list, criterion, 1 - (1 - target) * fraction,
                                            self.params.channel_floor, calibration, forced,
                                            self.params.channel_round)
        config_list = [{**e, **{k: e[k] * fraction for k in ("sparsity", "sparsity_per_layer") if k in e}}
                       for e in self.config_list]
        return channels.plan(model, config_list, criterion, calibration, forced=forced,
                             round_to=self.params.channel_round)

    def prune(self, model: keras.Model) -> keras.Model:
        criterion = self.params.channel_criterion
        calibration = None
        # with a target, the channels that never fire go first under every criterion
        if criterion in ACTIVATION_CRITERIA or (self.params.prune_target and self.params.calibration_patches):
            calibration = activation_stats.calibration_set(self.splits.train, self.params.calibration_patches)
        if self.probe:  # the latency budget -> the largest FLOPs budget whose thin model meets it
            self.latency_search = cost_target.search_latency(
                lambda f: self._plan(model, criterion, calibration, target=f),
                lambda plan: self.probe.ratio(channels.rebuild(model, plan)), self.params.latency_target)
            self.flops_target, self.probe = self.latency_search.flops_target, None  # its interpreters are not needed again
            print(f"prune_target {self.params.prune_target}: flops:{self.flops_target:.3f} measures "
                  f"{self.latency_search.ratio:.3f} of the dense latency ({len(self.latency_search.tried)} candidates timed)",
                  file=sys.stderr, flush=True)
        if self.params.schedule == "agp":  # masks attached (nothing removed) now, before Keras traces
            self.masker = ChannelMasker(model, lambda m, fraction, forced: self._plan(
                m, criterion, calibration, fraction, forced))
            self.masker.prune(0.0)
            return model
        self.plan = self._plan(model, criterion, calibration)
        self._say_if_short()
        self._say_if_unrounded()
        return channels.rebuild(model, self.plan)

    def finetune_callbacks(self, steps_per_epoch: int) -> list:
        return self._agp(self.masker, steps_per_epoch) if self.masker else []

    def _say_if_short(self) -> None:
        if self.latency_search:  # a latency target: what stops it is measured
            short = not self.latency_search.reached
            where = (f"{self.latency_search.ratio:.3f} of the dense latency ({self.params.deploy_format}, "
                     f"{self.params.deploy_size} px)")
        else:
            short = bool(self.params.flops_target) and not self.plan.reached
            where = f"{self.plan.flops_kept:.3f} of the dense FLOPs" if short else ""
        if short:
            print(f"warning: prune_target {self.params.prune_target} not reached: the floors (channel_floor "
                  f"{self.params.channel_floor:g}) and pinned channels stop at {where}", file=sys.stderr, flush=True)

    def _say_if_unrounded(self) -> None:
        """channel_round gives way to the floors (and to a layer left with fewer channels than
        it): the layers that keep another count are said, not silently changed."""
        n = self.params.channel_round
        odd = {name: len(kept) for name, kept in self.plan.keep.items()
               if name in self.plan.targets and len(kept) < self.plan.channels[name] and len(kept) % n}
        if n > 1 and odd:
            listed = ", ".join(f"{name} {count}" for name, count in list(odd.items())[:4])
            print(f"warning: channel_round {n} not met in {len(odd)} layer(s) ({listed}"
                  f"{f' and {len(odd) - 4} more' if len(odd) > 4 else ''}): the floors (channel_floor "
                  f"{self.params.channel_floor:g}) or fewer than {n} channels left keep these counts",
                  file=sys.stderr, flush=True)

    def finish(self, model: keras.Model) -> tuple[keras.Model, dict]:
        if self.masker:
            model, self.plan = self.masker.thin(), self.masker.plan
            if self.masker.fraction < 1:
                print(f"warning: schedule agp stopped {self.masker.fraction:.0%} of the way to its target (agp_steps "
                      "longer than fine-tuning): the model is pruned that far", file=sys.stderr, flush=True)
            else:
                self._say_if_short()
            self._say_if_unrounded()
        stats = sparsity_stats(model, [])
        # nothing is zero in a thin model: its sparsity is the share of the dense parameters gone
        stats.update(sparsity=1 - stats["params"] / self.dense_params, **self.plan.stats(),
                     flops_kept=count_flops(model) / self.dense_flops, config_sparsity=self.plan.achieved())
        if self.latency_search:  # met or not is the latency measured, not the FLOPs it became
            stats.update(self.latency_search.stats(), latency_search=[[round(f, 4), round(r, 4)] for f, r in self.latency_search.tried])
        return model, stats
