"""Channel pruning with a real speedup, for functional Keras 3 models.

NNI's TensorFlow pruners only make masks and its ModelSpeedup is PyTorch-only, so this is
ours. `plan()` chooses the output channels (filters) to keep in every Conv/Dense layer that
`config_list` selects, ranked by a criterion (importance.py: NNI's L1Norm / L2Norm / FPGM
pruners, or its ActivationAPoZRank / ActivationMeanRank measured on calibration samples),
channels that never fire first (`dead_plan`: only those, an exact rebuild). It is
dependency-aware through the channel graph (graph.ChannelGraph): a consumer's input slice
follows its sources through skips and channel-wise layers; producers tied by Add/Multiply
keep the same channels, ranked by the group's summed criterion and pruned at the smallest
sparsity asked of any member (NNI's dependency-aware mode); channels that reach an output
stay; a layer the graph cannot see through on a pruned path is a ParamError naming it.

`rebuild()` then builds a physically thinner model from the edited config
(`filters`/`units`) and copies the kept filters and input slices over: fewer
parameters, fewer FLOPs, a smaller file, faster everywhere, no masks left.

    thin = rebuild(model, plan(model, [{"sparsity": 0.5, "op_types": ["default"]}], "l1"))

Before any fine-tuning `thin` computes what the masked model computes (channel_masks.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from ..errors import ParamError
from ..params import ACTIVATION_CRITERIA, CRITERIA
from ..surgery import resized_config
from .activation_stats import removable_dead
from .config_list import entry_report, layer_choices
from .graph import PRODUCERS, ChannelGraph
from .importance import group_score


@dataclass
class ChannelPlan:
    """What to keep: `keep[producer]` = kept output channels (sorted); `inputs[layer]` =
    kept positions of that layer's input tensor (for slicing kernels and BN vectors)."""
    keep: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray]
    criterion: str
    channels: dict[str, int] = field(default_factory=dict)  # producer -> channels before pruning
    targets: tuple = ()                                      # the producers config_list selects
    config_list: list = field(default_factory=list)
    choices: dict = field(default_factory=dict)              # layer -> config_list.Choice
    short: dict = field(default_factory=dict)                # producer -> why it kept more than asked

    @property
    def removed(self) -> dict[str, int]:
        return {name: self.channels[name] - len(k) for name, k in self.keep.items()}

    def stats(self) -> dict:
        """Measured: the fraction of the selected layers' output channels that were removed."""
        total = sum(self.channels[n] for n in self.targets)
        return {"channel_sparsity": sum(self.removed[n] for n in self.targets) / total if total else 0.0}

    def achieved(self) -> list[dict]:
        """Per config_list entry {asked, achieved}: the fraction of its layers' output
        channels removed. Says on stderr (one line) where the dependency graph kept more
        than an entry asked (ties, channels that reach an output)."""
        def measure(names):
            names = [n for n in names if n in self.channels]
            short = "; ".join(self.short[n] for n in names if n in self.short)
            return sum(self.removed[n] for n in names), sum(self.channels[n] for n in names), short

        return entry_report(self.config_list, self.choices, measure, "channels")


# ---- choosing -------------------------------------------------------------------------

def rounded_count(count: int, round_to: int) -> int:
    """`count` rounded down to a multiple of `round_to` (Torch-Pruning's round_to: XNNPACK's
    kernels run fastest at multiples of 8), never below min(count, round_to)."""
    return max(round_to * (count // round_to), min(count, round_to))


def plan(model: keras.Model, config_list: list[dict], criterion: str = "l1", calibration=None,
         dead_only: bool = False, forced: dict | None = None, round_to: int = 1) -> ChannelPlan:
    """Rank and choose the channels to keep. `config_list` is NNI's (see config_list.layer_targets);
    sparsity = fraction of a layer's output channels removed, int(C * s), at least one kept.
    The activation criteria (apoz: most zeros go first; mean_activation: smallest mean) rank on
    `calibration` (samples, or ActivationStats). `dead_only`: remove exactly the channels that
    never fire on `calibration`, in every layer, whatever config_list says. `forced[producer]`:
    channels that go before any other (gradual pruning: those an earlier, smaller plan removed).
    `round_to`: a pruned layer keeps a multiple of it (rounded down: it removes at least its sparsity)."""
    if criterion not in CRITERIA:
        raise ParamError(f"channel_criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")
    if (criterion in ACTIVATION_CRITERIA or dead_only) and calibration is None:
        raise ParamError(f"channel_criterion {criterion} ranks by activations and needs calibration data")
    choices = layer_choices(model, config_list) if config_list else {}
    targets = {n: c.sparsity for n, c in choices.items() if c.sparsity is not None}
    graph = ChannelGraph.of(model)
    producers = graph.producers
    stats, exact = None, {}
    if criterion in ACTIVATION_CRITERIA or dead_only:
        stats, exact = removable_dead(model, calibration, graph)
    keep: dict[str, np.ndarray] = {}
    short: dict[str, str] = {}
    for members in graph.groups():
        channels = producers[members[0]]
        locked = graph.locked(members)
        kept = np.ones(channels, bool)
        dead = np.logical_and.reduce([exact[m] for m in members]) if stats else None
        if dead_only:
            dead[list(locked)] = False
            kept[np.flatnonzero(dead)[:channels - 1]] = False
        else:
            sparsity = min(targets.get(m, 0.0) for m in members)  # a member not selected keeps the group whole
            n_remove = min(int(channels * sparsity), channels - 1)
            if n_remove > 0:
                n_remove = channels - rounded_count(channels - n_remove, round_to)
                score = group_score(model, members, criterion, stats, dead)
                first = np.logical_or.reduce([(forced or {}).get(m, np.zeros(channels, bool)) for m in members])
                candidates = [i for i in np.lexsort((score, ~first)) if i not in locked]
                kept[candidates[:n_remove]] = False
        for m in members:
            keep[m] = np.flatnonzero(kept)
            asked = int(channels * targets.get(m, 0.0))
            head = m in choices and not choices[m].named and len(locked) == channels  # the output head, by type
            if channels - len(keep[m]) < asked and not head:  # kept whole unless named: documented, not news
                why = (f"tied by Add/Multiply to {', '.join(x for x in members if x != m)}, pruned at "
                       f"{sparsity:.2f}" if sparsity < targets[m] else "the others are pinned: they reach a model "
                       "output or a softmax, or are tied to channels nothing removes")
                short[m] = f"{m} removed {channels - len(keep[m])} of {channels} channels, not {asked}: {why}"

    chosen = producers if dead_only else targets
    return assemble(graph, keep, criterion, [n for n in producers if chosen.get(n)],
                    config_list=list(config_list or []), choices=choices, short=short)


def assemble(graph: ChannelGraph, keep: dict, criterion: str, targets, **fields) -> ChannelPlan:
    """The plan keeping `keep[producer]`: every consumer's input slice follows (`fields`: ChannelPlan's others)."""
    return ChannelPlan(keep=keep, inputs=graph.kept_inputs(keep), criterion=criterion,
                       channels=dict(graph.producers), targets=tuple(targets), **fields)


def dead_plan(model: keras.Model, calibration) -> ChannelPlan:
    """The plan removing exactly the channels that never fire on `calibration` (at least one
    kept per layer): its rebuild computes what `model` computes on those samples."""
    return plan(model, [], "apoz", calibration, dead_only=True)


# ---- speedup ------------------------------------------------------------------------------

def rebuild(model: keras.Model, channel_plan: ChannelPlan) -> keras.Model:
    """The physically thinner model: same graph and names, kept filters and input slices."""
    widths = {name: len(k) for name, k in channel_plan.keep.items()}
    thin = keras.Model.from_config(resized_config(model.get_config(), widths))
    for layer in thin.layers:
        old = model.get_layer(layer.name)
        if not old.weights:
            continue
        kind = type(old).__name__
        if kind in PRODUCERS and layer.name in channel_plan.keep:
            in_axis, out_axis = PRODUCERS[kind]
            kernel = np.take(old.kernel.numpy(), channel_plan.inputs[layer.name], axis=in_axis)
            layer.kernel.assign(np.take(kernel, channel_plan.keep[layer.name], axis=out_axis))
            if old.bias is not None:
                layer.bias.assign(old.bias.numpy()[channel_plan.keep[layer.name]])
        elif layer.name in channel_plan.inputs:  # a weighted channel-wise layer: BN's vectors
            for new, w in zip(layer.weights, old.weights):
                new.assign(np.take(w.numpy(), channel_plan.inputs[layer.name], axis=-1))
        else:
            layer.set_weights(old.get_weights())
    return thin
