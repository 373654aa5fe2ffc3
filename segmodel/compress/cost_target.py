"""Channel pruning to a FLOPs budget (`--prune_target flops:F`): one global ranking across layers.

A uniform ratio cuts every layer alike, but the U-Net's FLOPs sit in its shallow, full-
resolution 16/32/64-filter levels and its parameters in the deep 128/256 ones. `target_plan`
removes channels one at a time (one per tied group), greedily, lowest first by

    importance / FLOPs its removal saves now

until the thin model's FLOPs are <= F x the dense model's. Importance is the criterion's score,
normalized within its layer so layers compare: l1/l2/fpgm divided by the layer's mean; apoz
(1 - APoZ) and mean_activation as they are, averaged over a tied group. The saving is exact:
a Conv/Dense layer's MACs are k * c_in * c_out (k = its dense MACs / (c_in * c_out): pixels x
kernel size), so removing a channel saves k * c_in of its producer plus k * c_out of every
layer reading it, at the widths of that moment; these change as other channels go, and are
recomputed after every removal.

Channels that never fire on the calibration data (ReLU output 0 everywhere, removable
exactly) go first whatever the criterion, and may go below the floor: otherwise every pruned
layer keeps at least `floor` of its channels, and at least 1. Pinned channels (outputs,
ties with unprunable channels) stay, and config_list only selects the layers, as in
`channels.plan`. If the floors and pins stop it above the target, the plan says so
(`reached`) with the FLOPs it got to.

A latency target (`--prune_target latency:L`) is this ranking at the largest F whose thin
model measures at most L of the dense model's latency (`search_latency`: bisection on F, every
candidate timed against the dense model; the ranking is the same, only its depth is measured).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import keras
import numpy as np

from ..errors import ParamError
from ..params import ACTIVATION_CRITERIA, CRITERIA, selection_only
from .activation_stats import removable_dead
from .channels import ChannelPlan, assemble, rounded_count
from .config_list import layer_choices
from .flops import count_flops, layer_macs
from .graph import ChannelGraph
from .importance import group_score


@dataclass
class TargetPlan(ChannelPlan):
    """A ChannelPlan with what it was asked and what it got: `flops` is the thin model's count."""
    flops_target: float = 1.0
    dense_flops: int = 0
    flops: int = 0

    @property
    def reached(self) -> bool:
        return self.flops <= self.flops_target * self.dense_flops

    @property
    def flops_kept(self) -> float:
        return self.flops / self.dense_flops

    def stats(self) -> dict:
        return {**super().stats(), "flops_target": self.flops_target, "prune_target_met": int(self.reached)}

    def achieved(self) -> list[dict]:
        """Per config_list entry: nothing asked (the target decides), the fraction of its layers'
        output channels removed."""
        rows = []
        for i in range(len(self.config_list)):
            names = [n for n, c in self.choices.items() if c.entry == i and n in self.channels]
            total = sum(self.channels[n] for n in names)
            rows.append({"asked": None, "achieved": sum(self.removed[n] for n in names) / total if total else None})
        return rows


def selected(model: keras.Model, config_list: list[dict]) -> dict:
    """Layer -> config_list.Choice for the layers config_list lets go channels (op_types / op_names /
    exclude, NNI's last match): an excluded one's sparsity is None."""
    selection_only(config_list)
    return layer_choices(model, [{**e, "sparsity": 0.0} if isinstance(e, dict) and not e.get("exclude")
                                 else e for e in config_list])


class _Group:
    """One tied group's channels and what removing each would change."""

    def __init__(self, members, channels, locked, dead, score, floor, affected, forced):
        self.members, self.channels = members, channels
        self.kept = np.ones(channels, bool)
        self.frozen = np.zeros(channels, bool)
        self.frozen[list(locked)] = True
        self.dead, self.score, self.forced = dead, score, forced & ~self.frozen
        self.floor = max(1, math.ceil(floor * channels - 1e-9))
        self.affected = affected  # layer -> (inputs it loses per channel removed, 1 if it loses an output)

    def savings(self, widths) -> np.ndarray:
        """Per channel, the MACs its removal saves at the present widths."""
        k, c_in, c_out = widths.k, widths.c_in, widths.c_out
        return sum(k[layer] * (n * c_out[layer] + o * c_in[layer] - n * o) for layer, (n, o) in self.affected.items())

    def candidate(self, widths):
        """(ratio, -saving, channel) of the next channel to go, or None."""
        saving = self.savings(widths)
        count = int(self.kept.sum())
        ok = self.kept & ~self.frozen & (saving > 0) & (count > 1) & (self.dead | (count > self.floor))
        if not ok.any():
            return None
        index = np.flatnonzero(ok)
        ratio = self.score[index] / saving[index]
        best = np.lexsort((index, -saving[index], ratio))[0]
        return ratio[best], -saving[index[best]], int(index[best])


class _Widths:
    """The producers' present widths, the FLOPs they make, and each group's next candidate."""

    def __init__(self, k, c_in, c_out, groups, flops):
        self.k, self.c_in, self.c_out, self.flops = k, c_in, c_out, float(flops)
        self.readers = {}  # layer -> the groups whose savings depend on its widths
        for group in groups:
            for layer in group.affected:
                self.readers.setdefault(layer, []).append(group)
        self.next = {id(g): (g, g.candidate(self)) for g in groups}

    def best(self):
        options = [(c, g) for g, c in self.next.values() if c is not None]
        return None if not options else min(options, key=lambda option: option[0])[::-1]

    def remove(self, group: _Group, channel: int) -> None:
        self.flops -= group.savings(self)[channel]
        group.kept[channel] = False
        for layer, (n, o) in group.affected.items():
            self.c_in[layer] -= int(n[channel])
            self.c_out[layer] -= o
        for other in {id(g): g for layer in group.affected for g in self.readers[layer]}.values():
            self.next[id(other)] = (other, other.candidate(self))


def target_plan(model: keras.Model, config_list: list[dict], criterion: str, flops_target: float,
                floor: float = 0.1, calibration=None, forced: dict | None = None, round_to: int = 1) -> TargetPlan:
    """Keep at most `flops_target` of `model`'s FLOPs, removing channels of the layers
    `config_list` selects in one global ranking (module docstring). `calibration`: samples
    or ActivationStats; needed by the activation criteria, and with it the channels that
    never fire go first under any criterion. `forced[producer]`: channels removed before
    anything else, whatever the target (gradual pruning: what an earlier plan removed).
    `round_to`: then every pruned group keeps a multiple of it, its least important channels
    going (rounded down, so the target stays met; not below its floor)."""
    if criterion not in CRITERIA:
        raise ParamError(f"channel_criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")
    if criterion in ACTIVATION_CRITERIA and calibration is None:
        raise ParamError(f"channel_criterion {criterion} ranks by activations and needs calibration data")
    if not 0 < flops_target <= 1 or not 0 <= floor <= 1:
        raise ParamError(f"need 0 < flops target <= 1 and 0 <= floor <= 1; got {flops_target}, {floor}")
    choices = selected(model, config_list)
    chosen = {n for n, c in choices.items() if c.sparsity is not None}
    graph = ChannelGraph.of(model)
    consumes, producers = graph.consumes, graph.producers
    stats, exact = None, {}
    if calibration is not None:
        stats, exact = removable_dead(model, calibration, graph)
    c_in = {name: len(consumes[name]) for name in producers}
    k = {name: layer_macs(model.get_layer(name)) // (c_in[name] * producers[name]) for name in producers}

    groups, owner = [], {}
    for members in graph.groups():
        if not all(m in chosen for m in members):
            continue  # a member not selected keeps the group whole
        channels = producers[members[0]]
        dead = np.logical_and.reduce([exact[m] for m in members]) if stats else np.zeros(channels, bool)
        score = np.asarray(group_score(model, members, criterion, stats, dead), np.float64)
        if criterion in ACTIVATION_CRITERIA:
            score = score / len(members)
        elif score.mean() > 0:
            score = score / score.mean()
        score = np.where(dead, -np.inf, score)
        affected = {m: [np.zeros(channels), 1] for m in members}
        for layer, entries in consumes.items():
            for e in entries:
                if layer in producers and e is not None and e[0] in members:
                    affected.setdefault(layer, [np.zeros(channels), 0])[0][e[1]] += 1
        locked = graph.locked(members)
        first = np.logical_or.reduce([(forced or {}).get(m, np.zeros(channels, bool)) for m in members])
        group = _Group(members, channels, locked, dead, score, floor, affected, first)
        owner.update({m: group for m in members})
        groups.append(group)
    graph.check_blockers(lambda e: e[0] in owner and not owner[e[0]].frozen[e[1]])

    dense = count_flops(model)
    widths = _Widths(k, c_in, dict(producers), groups, dense)
    for group in groups:
        for channel in np.flatnonzero(group.forced):
            widths.remove(group, channel)
    while widths.flops > flops_target * dense and (choice := widths.best()) is not None:
        widths.remove(choice[0], choice[1][2])
    for group in groups if round_to > 1 else []:
        count = int(group.kept.sum())
        if count < group.channels:
            kept = max(rounded_count(count, round_to), min(count, group.floor))
            order = [i for i in np.lexsort((np.arange(group.channels), group.score))
                     if group.kept[i] and not group.frozen[i]]
            for channel in order[:count - kept]:
                widths.remove(group, channel)

    keep = {name: np.flatnonzero(owner[name].kept) if name in owner else np.arange(producers[name])
            for name in producers}
    plan = assemble(graph, keep, criterion, [n for n in producers if n in chosen],
                    config_list=list(config_list), choices=choices)
    return TargetPlan(**vars(plan), flops_target=flops_target, dense_flops=dense, flops=int(round(widths.flops)))


@dataclass
class LatencySearch:
    """What a latency target's search found: the FLOPs target it prunes to and that plan's
    measured latency / the dense model's; `tried`: (F, ratio) of every candidate timed."""
    latency_target: float
    flops_target: float
    ratio: float
    tried: list = field(default_factory=list)

    @property
    def reached(self) -> bool:
        return self.ratio <= self.latency_target

    def stats(self) -> dict:
        return {"latency_target": self.latency_target, "latency_kept": round(self.ratio, 4),
                "prune_target_met": int(self.reached)}


def search_latency(plan_at: Callable[[float], TargetPlan], ratio_of: Callable[[TargetPlan], float],
                   latency_target: float, steps: int = 6) -> LatencySearch:
    """The largest FLOPs target F whose plan's measured latency ratio is <= latency_target.

    `plan_at(F)` is `target_plan` at F; `ratio_of(plan)` its thin model's latency / the dense
    model's. The deepest plan the floors allow is timed first: if even it is too slow the
    target is out of reach and that plan is the answer (`reached` False). Otherwise F is
    bisected between its FLOPs and the dense model's, `steps` times (1/64 of that span by
    default), keeping the largest F measured to meet the target."""
    deepest = plan_at(1e-9)
    search = LatencySearch(latency_target, deepest.flops_kept, ratio_of(deepest))
    search.tried.append((search.flops_target, search.ratio))
    if not search.reached:
        return search
    low, high = search.flops_target, 1.0
    for _ in range(steps):
        middle = (low + high) / 2
        ratio = ratio_of(plan_at(middle))
        search.tried.append((middle, ratio))
        if ratio <= latency_target:
            low, search.flops_target, search.ratio = middle, middle, ratio
        else:
            high = middle
    return search
