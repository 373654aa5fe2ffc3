"""Channel pruning with a real speedup, for functional Keras 3 models.

NNI's TensorFlow pruners only make masks and its ModelSpeedup is PyTorch-only, so
this is ours. `plan()` ranks the output channels (filters) of every Conv/Dense layer
that `config_list` selects, NNI's L1NormPruner / L2NormPruner / FPGMPruner criteria or,
measured on calibration samples (segmodel.activations), its ActivationAPoZRank /
ActivationMeanRank criteria, channels that never fire first (`dead_plan`: only those, an
exact rebuild), dependency-aware: it walks the functional graph through the model's public config,
following which channels of each tensor come from which producer, so that

- a consumer's input slice moves with each source's kept channels through
  Concatenate (the U-Net's skips) and channel-wise layers (BN, pooling, dropout,
  activations, upsampling, padding);
- producers joined by Add/Multiply/... are tied: they keep the same channels, ranked
  by the group's summed criterion, pruned at the smallest sparsity asked of any member
  (NNI's dependency-aware mode);
- channels that reach a model output are never removed (the head keeps its classes);
- a layer it does not understand on a pruned path is a ParamError naming it.

`rebuild()` then builds a physically thinner model from the edited config
(`filters`/`units`) and copies the kept filters and input slices over: fewer
parameters, fewer FLOPs, a smaller file, faster everywhere, no masks left.

    thin = rebuild(model, plan(model, [{"sparsity": 0.5, "op_types": ["default"]}], "l1"))

Before any fine-tuning `thin` computes what the masked model computes (channel_masks.py).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import keras
import numpy as np

from .errors import ParamError
from .params import ACTIVATION_CRITERIA, CRITERIA
from .pruning import entry_report, layer_choices

# Layers that make new channels from all input channels; (input axis, output axis) of the kernel.
PRODUCERS = {"Conv1D": (-2, -1), "Conv2D": (-2, -1), "Conv3D": (-2, -1), "Dense": (-2, -1),
             "Conv1DTranspose": (-1, -2), "Conv2DTranspose": (-1, -2), "Conv3DTranspose": (-1, -2)}
# Channel c of the output depends on channel c of the input only.
CHANNELWISE = {
    "InputLayer", "Identity", "BatchNormalization", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
    "SpatialDropout3D", "GaussianDropout", "GaussianNoise", "AlphaDropout", "ActivityRegularization",
    "ReLU", "LeakyReLU", "ELU", "Activation",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Cropping1D", "Cropping2D", "Cropping3D",
}
TIES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}  # element-wise merges
CHANNEL_MIXING_ACTIVATIONS = {"softmax", "log_softmax"}  # normalize across channels: nothing may go

Entry = tuple  # (producer name, channel index), or None: a channel no pruning can remove


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
    choices: dict = field(default_factory=dict)              # layer -> pruning.Choice
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


# ---- the graph --------------------------------------------------------------------------

def _tensor_refs(value) -> list[tuple[str, int]]:
    """(layer name, output index) of every Keras tensor in a serialized call argument."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            name, _, index = value["config"]["keras_history"]
            return [(name, index)]
        return [ref for v in value.values() for ref in _tensor_refs(v)]
    if isinstance(value, (list, tuple)):
        return [ref for v in value for ref in _tensor_refs(v)]
    return []


def _graph(model: keras.Model) -> tuple[list[dict], list[tuple[str, int]]]:
    """The config's layers in topological order, each with `inputs` = producer refs."""
    config = model.get_config() if isinstance(model, keras.Model) else {}
    if not config.get("layers") or "inbound_nodes" not in config["layers"][0]:
        raise ParamError(f"channel pruning needs a functional Keras model; {model.name!r} is a "
                         f"{type(model).__name__}")
    layers = {}
    for spec in config["layers"]:
        nodes = spec.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise ParamError(f"layer {spec['name']!r} ({spec['class_name']}) is called {len(nodes)} times; "
                             "channel pruning needs each layer called once")
        refs = _tensor_refs(nodes[0]) if nodes else []
        layers[spec["name"]] = {**spec, "inputs": refs}
    order, done = [], set()

    def visit(name):  # depth-first, producers first
        if name in done:
            return
        done.add(name)
        for src, _ in layers[name]["inputs"]:
            visit(src)
        order.append(layers[name])

    for name in layers:
        visit(name)
    outputs = config["output_layers"]
    outputs = [outputs] if outputs and isinstance(outputs[0], str) else outputs
    return order, [(name, index) for name, _, index in outputs]


def _channel_axis_is_last(axis, rank: int) -> bool:
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return len(axes) == 1 and axes[0] in (-1, rank - 1)


class _UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def _trace(model: keras.Model):
    """Which producer channel each channel of each tensor is, plus the ties, the
    channels pinned (kept whatever happens) and the unsupported layers' inputs."""
    order, outputs = _graph(model)
    maps: dict[tuple[str, int], list[Entry | None]] = {}
    ties, pinned = _UnionFind(), set()  # pinned: {(producer, index)}
    consumes: dict[str, list] = {}      # layer -> its input map (producers and weighted channel-wise layers)
    blockers: list[tuple[str, str, list]] = []  # (name, class, input entries) of layers we can't see through
    producers: dict[str, int] = {}

    def fixed(n: int) -> list:
        return [None] * n

    def tie(name, cls, sources: list[list]):
        columns = list(zip(*sources))
        if len({len(s) for s in sources}) != 1 \
                or any(len({e[1] for e in column if e is not None}) > 1 for column in columns):
            # e.g. Add(concat(a, b), c): channel i of one input is not channel i of the other's producer
            blockers.append((name, f"{cls} of channels that do not line up", [e for s in sources for e in s]))
            return fixed(len(sources[0]))
        out = []
        for column in columns:
            real = [e for e in column if e is not None]
            if not real:
                out.append(None)
                continue
            for producer, _ in real[1:]:
                ties.union(producer, real[0][0])
            if len(real) < len(column):  # tied to a channel nothing can remove
                pinned.update(real)
            out.append(real[0])
        return out

    for spec in order:
        name, cls, cfg = spec["name"], spec["class_name"], spec["config"]
        layer = model.get_layer(name)
        sources = [maps[ref] for ref in spec["inputs"]]
        out_shapes = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        out_channels = [int(t.shape[-1]) if len(t.shape) > 1 else 1 for t in out_shapes]
        rank = len(out_shapes[0].shape)
        if cls == "InputLayer":
            out = fixed(out_channels[0])
        elif cfg.get("data_format") == "channels_first":  # every rule here reads channels on the last axis
            out = None
            cls = f"{cls} with data_format channels_first"
        elif cls in PRODUCERS and len(sources) == 1 and cfg.get("groups", 1) == 1:
            consumes[name] = sources[0]
            producers[name] = out_channels[0]
            out = [(name, i) for i in range(out_channels[0])]
        elif cls == "Concatenate" and _channel_axis_is_last(cfg.get("axis", -1), rank):
            out = [e for s in sources for e in s]
        elif cls == "Concatenate" or cls in TIES:
            out = tie(name, cls, sources)
        elif cls in CHANNELWISE and len(sources) == 1 \
                and (cls != "BatchNormalization" or _channel_axis_is_last(cfg.get("axis", -1), rank)):
            out = sources[0]
            if layer.weights:
                consumes[name] = sources[0]
            if cls == "Activation" and str(cfg.get("activation")) in CHANNEL_MIXING_ACTIVATIONS:
                pinned.update(e for e in out if e is not None)
        elif cls == "Softmax" and _channel_axis_is_last(cfg.get("axis", -1), rank) and len(sources) == 1:
            out = sources[0]
            pinned.update(e for e in out if e is not None)
        else:
            out = None
        if out is None:  # a layer we cannot see through: its outputs are new, unprunable channels
            blockers.append((name, cls, [e for s in sources for e in s]))
            maps.update({(name, i): fixed(n) for i, n in enumerate(out_channels)})
        else:
            maps[(name, 0)] = out
    for ref in outputs:
        pinned.update(e for e in maps[ref] if e is not None)
    return maps, ties, pinned, consumes, blockers, producers


# ---- ranking ----------------------------------------------------------------------------------

def filters_of(layer) -> np.ndarray:
    """The layer's kernel as (output channels, everything else)."""
    kernel = np.asarray(layer.kernel.numpy(), np.float64)
    out_axis = PRODUCERS[type(layer).__name__][1]
    return np.moveaxis(kernel, out_axis, 0).reshape(kernel.shape[out_axis], -1)


def importance(filters: np.ndarray, criterion: str) -> np.ndarray:
    """Per-filter score, low = pruned first: L1 or L2 norm, or for FPGM the summed
    Euclidean distance to all other filters (filters near the geometric median are
    the most replaceable; He et al. 2019, NNI's FPGMPruner)."""
    if criterion == "l1":
        return np.abs(filters).sum(1)
    if criterion == "l2":
        return np.sqrt((filters ** 2).sum(1))
    if criterion == "fpgm":
        sq = (filters ** 2).sum(1)  # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: C x C memory, not C x C x k
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * filters @ filters.T, 0)
        np.fill_diagonal(d2, 0)  # exactly: rounding would leave sqrt(1e-16)-sized self-distances
        return np.sqrt(d2).sum(1)
    raise ParamError(f"channel_criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")


def _scores(model, members: list[str], criterion: str, stats, dead: np.ndarray) -> np.ndarray:
    """The tied group's summed importance; channels dead in every member (`dead`) score -inf."""
    if criterion not in ACTIVATION_CRITERIA:
        return sum(importance(filters_of(model.get_layer(m)), criterion) for m in members)
    score = sum(1 - stats.layers[m].apoz if criterion == "apoz" else stats.layers[m].mean for m in members)
    return np.where(dead, -np.inf, score)


def rounded_count(count: int, round_to: int) -> int:
    """`count` rounded down to a multiple of `round_to` (Torch-Pruning's round_to: XNNPACK's
    kernels run fastest at multiples of 8), never below min(count, round_to)."""
    return max(round_to * (count // round_to), min(count, round_to))


def plan(model: keras.Model, config_list: list[dict], criterion: str = "l1", calibration=None,
         dead_only: bool = False, forced: dict | None = None, round_to: int = 1) -> ChannelPlan:
    """Rank and choose the channels to keep. `config_list` is NNI's (see pruning.layer_targets);
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
    maps, ties, pinned, consumes, blockers, producers = _trace(model)
    stats, exact = None, {}
    if criterion in ACTIVATION_CRITERIA or dead_only:
        from .activations import removable_dead
        stats, exact = removable_dead(model, calibration, consumes, producers)
    keep: dict[str, np.ndarray] = {}
    short: dict[str, str] = {}
    for members in tied_groups(producers, ties):
        channels = producers[members[0]]
        locked = {idx for p, idx in pinned if p in members}
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
                score = _scores(model, members, criterion, stats, dead)
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
    return assemble(keep, consumes, blockers, producers, criterion, [n for n in producers if chosen.get(n)],
                    config_list=list(config_list or []), choices=choices, short=short)


def tied_groups(producers: dict[str, int], ties: _UnionFind) -> list[list[str]]:
    """The producers that keep the same channels, one list per group (most of width 1)."""
    groups: dict[str, list[str]] = {}
    for name in producers:
        groups.setdefault(ties.find(name), []).append(name)
    for members in groups.values():
        if any(producers[m] != producers[members[0]] for m in members):
            raise ParamError(f"layers {', '.join(members)} are tied (added or multiplied) but have "
                             "different widths; exclude them in config_list")
    return list(groups.values())


def check_blockers(blockers: list, removed) -> None:
    """ParamError naming the first layer we cannot see through that reads a `removed(entry)` channel."""
    for name, cls, entries in blockers:
        cut = sorted({e[0] for e in entries if e is not None and removed(e)})
        if cut:
            raise ParamError(f"channel pruning cannot see through layer {name!r} ({cls}), which uses channels "
                             f"of pruned layer{'s' * (len(cut) > 1)} {', '.join(cut)}; exclude "
                             f"{'them' if len(cut) > 1 else 'it'} in config_list")


def assemble(keep: dict, consumes: dict, blockers: list, producers: dict, criterion: str, targets,
             **fields) -> ChannelPlan:
    """The plan keeping `keep[producer]`: every consumer's input slice follows (`fields`: ChannelPlan's others)."""
    keep_sets = {p: set(k.tolist()) for p, k in keep.items()}

    def alive(entry) -> bool:
        return entry is None or entry[1] in keep_sets[entry[0]]

    check_blockers(blockers, lambda e: not alive(e))
    inputs = {name: np.array([i for i, e in enumerate(entries) if alive(e)], int)
              for name, entries in consumes.items()}
    return ChannelPlan(keep=keep, inputs=inputs, criterion=criterion, channels=dict(producers),
                       targets=tuple(targets), **fields)


def dead_plan(model: keras.Model, calibration) -> ChannelPlan:
    """The plan removing exactly the channels that never fire on `calibration` (at least one
    kept per layer): its rebuild computes what `model` computes on those samples."""
    return plan(model, [], "apoz", calibration, dead_only=True)


# ---- speedup ------------------------------------------------------------------------------

def resized_config(config: dict, channels: dict[str, int] | None = None, input_shape=None) -> dict:
    """A copy of a functional model's config with new producer widths and/or input
    side; build configs are dropped so every layer builds for its new inputs."""
    config = copy.deepcopy(config)
    for spec in config["layers"]:
        spec.pop("build_config", None)
        cfg = spec["config"]
        if channels and spec["name"] in channels:
            cfg["units" if spec["class_name"] == "Dense" else "filters"] = int(channels[spec["name"]])
        if input_shape is not None and spec["class_name"] == "InputLayer":
            cfg["batch_shape"] = [cfg["batch_shape"][0], *input_shape]
    return config


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
