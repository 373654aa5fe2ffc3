"""The channel dependency graph of a functional Keras 3 model (Torch-Pruning's
DependencyGraph): which producer channel each channel of each tensor is.

It walks the functional graph through the model's public config, following which channels
of each tensor come from which producer (Conv/Dense), so that

- a consumer's input slice moves with each source's kept channels through
  Concatenate (the U-Net's skips) and channel-wise layers (BN, pooling, dropout,
  activations, upsampling, padding);
- producers joined by Add/Multiply/... are tied: they keep the same channels
  (NNI's dependency-aware mode);
- channels that reach a model output or a softmax are pinned: never removed;
- a layer it does not understand is a blocker: pruning a channel it reads is a ParamError
  naming it.

    graph = ChannelGraph.of(model)
    graph.groups()               # producers that keep the same channels
    graph.kept_inputs(keep)      # each consumer's input slice once `keep[producer]` stays

Ranking (importance.py) and choosing (channels.py, cost_target.py) are apart from it.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from ..errors import ParamError

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


def layer_order(model: keras.Model) -> tuple[list[dict], list[tuple[str, int]]]:
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


class UnionFind:
    """Producers tied by element-wise merges: they keep the same channels."""

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


@dataclass
class ChannelGraph:
    """`maps[(layer, output)]`: per channel of that tensor, the (producer, index) it is, or
    None (a channel nothing can remove); `consumes[layer]`: the map of the input of every
    producer and weighted channel-wise layer (for slicing kernels and BN vectors);
    `producers[name]`: its output channels; `ties`: producers that keep the same channels;
    `pinned`: {(producer, index)} kept whatever happens; `blockers`: (name, class, input
    entries) of the layers it cannot see through."""
    maps: dict
    ties: UnionFind
    pinned: set
    consumes: dict
    blockers: list
    producers: dict

    @classmethod
    def of(cls, model: keras.Model) -> "ChannelGraph":
        """Trace `model` once (ParamError for a model that is not functional, or calls a layer twice)."""
        order, outputs = layer_order(model)
        maps: dict[tuple[str, int], list[Entry | None]] = {}
        ties, pinned = UnionFind(), set()
        consumes: dict[str, list] = {}
        blockers: list[tuple[str, str, list]] = []
        producers: dict[str, int] = {}

        def fixed(n: int) -> list:
            return [None] * n

        def tie(name, kind, sources: list[list]):
            columns = list(zip(*sources))
            if len({len(s) for s in sources}) != 1 \
                    or any(len({e[1] for e in column if e is not None}) > 1 for column in columns):
                # e.g. Add(concat(a, b), c): channel i of one input is not channel i of the other's producer
                blockers.append((name, f"{kind} of channels that do not line up", [e for s in sources for e in s]))
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
            name, kind, cfg = spec["name"], spec["class_name"], spec["config"]
            layer = model.get_layer(name)
            sources = [maps[ref] for ref in spec["inputs"]]
            out_shapes = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
            out_channels = [int(t.shape[-1]) if len(t.shape) > 1 else 1 for t in out_shapes]
            rank = len(out_shapes[0].shape)
            if kind == "InputLayer":
                out = fixed(out_channels[0])
            elif cfg.get("data_format") == "channels_first":  # every rule here reads channels on the last axis
                out = None
                kind = f"{kind} with data_format channels_first"
            elif kind in PRODUCERS and len(sources) == 1 and cfg.get("groups", 1) == 1:
                consumes[name] = sources[0]
                producers[name] = out_channels[0]
                out = [(name, i) for i in range(out_channels[0])]
            elif kind == "Concatenate" and _channel_axis_is_last(cfg.get("axis", -1), rank):
                out = [e for s in sources for e in s]
            elif kind == "Concatenate" or kind in TIES:
                out = tie(name, kind, sources)
            elif kind in CHANNELWISE and len(sources) == 1 \
                    and (kind != "BatchNormalization" or _channel_axis_is_last(cfg.get("axis", -1), rank)):
                out = sources[0]
                if layer.weights:
                    consumes[name] = sources[0]
                if kind == "Activation" and str(cfg.get("activation")) in CHANNEL_MIXING_ACTIVATIONS:
                    pinned.update(e for e in out if e is not None)
            elif kind == "Softmax" and _channel_axis_is_last(cfg.get("axis", -1), rank) and len(sources) == 1:
                out = sources[0]
                pinned.update(e for e in out if e is not None)
            else:
                out = None
            if out is None:  # a layer we cannot see through: its outputs are new, unprunable channels
                blockers.append((name, kind, [e for s in sources for e in s]))
                maps.update({(name, i): fixed(n) for i, n in enumerate(out_channels)})
            else:
                maps[(name, 0)] = out
        for ref in outputs:
            pinned.update(e for e in maps[ref] if e is not None)
        return cls(maps, ties, pinned, consumes, blockers, producers)

    def groups(self) -> list[list[str]]:
        """The producers that keep the same channels, one list per group (most of width 1)."""
        groups: dict[str, list[str]] = {}
        for name in self.producers:
            groups.setdefault(self.ties.find(name), []).append(name)
        for members in groups.values():
            if any(self.producers[m] != self.producers[members[0]] for m in members):
                raise ParamError(f"layers {', '.join(members)} are tied (added or multiplied) but have "
                                 "different widths; exclude them in config_list")
        return list(groups.values())

    def locked(self, members) -> set[int]:
        """The channel indices of a tied group that are pinned."""
        return {idx for p, idx in self.pinned if p in members}

    def check_blockers(self, removed) -> None:
        """ParamError naming the first layer we cannot see through that reads a `removed(entry)` channel."""
        for name, kind, entries in self.blockers:
            cut = sorted({e[0] for e in entries if e is not None and removed(e)})
            if cut:
                raise ParamError(f"channel pruning cannot see through layer {name!r} ({kind}), which uses channels "
                                 f"of pruned layer{'s' * (len(cut) > 1)} {', '.join(cut)}; exclude "
                                 f"{'them' if len(cut) > 1 else 'it'} in config_list")

    def kept_inputs(self, keep: dict) -> dict[str, np.ndarray]:
        """Each consumer's kept input positions once `keep[producer]` (sorted channel indices) stay."""
        keep_sets = {p: set(k.tolist()) for p, k in keep.items()}

        def alive(entry) -> bool:
            return entry is None or entry[1] in keep_sets[entry[0]]

        self.check_blockers(lambda e: not alive(e))
        return {name: np.array([i for i, e in enumerate(entries) if alive(e)], int)
                for name, entries in self.consumes.items()}
