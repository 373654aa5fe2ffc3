"""Which channels fire: per output channel of every Conv/Dense layer, measured after its
activation over a dataset in one pass (a multi-output probe model, streaming sums).

- `apoz`: average percentage of zeros, NNI's ActivationAPoZRankFilterPruner (Hu et al.
  2016, "Network Trimming"): zeros / (patches x pixels);
- `mean`: mean activation, NNI's ActivationMeanRankFilterPruner (Molchanov et al. 2017);
- `never_fires`: the maximum over every pixel of every patch is <= 0 (for ReLU: all 0).

"After its activation" is the tensor the next layers see: a conv's own fused activation,
or the first activation reached from it through BatchNormalization (conv -> BN -> ReLU).
A layer with no activation (the U-Net's transposed convs, the logits) gets NNI's default
`relu` applied to its output for ranking, and is not counted as dead or alive.

A channel is `exactly_dead` when it never fires, its activation maps negatives to exactly
0 (ReLU), and only zero-preserving layers stand between that activation and the next
producers: removing it then changes nothing the model computes on the data measured
(`channels.dead_plan`).
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from ..errors import ParamError
from .graph import CHANNEL_MIXING_ACTIVATIONS, PRODUCERS, ChannelGraph, layer_order

ACTIVATION_LAYERS = {"Activation", "ReLU", "LeakyReLU", "ELU", "PReLU"}
PASS_THROUGH = {"BatchNormalization"}  # may sit between a conv and its activation
ZERO_FLOOR = {"relu", "relu6"}         # activations whose negative side is exactly 0


@dataclass
class Observed:
    """Where a producer's channels are read: `layer`'s output; `activation` its name
    (None: linear, NNI's relu applied); `chain`: the layers from the producer to it."""
    layer: str
    activation: str | None
    chain: tuple[str, ...]

    @property
    def rectified(self) -> bool:
        return self.activation in ZERO_FLOOR


@dataclass
class LayerStats:
    apoz: np.ndarray         # per channel, in [0, 1]
    mean: np.ndarray         # per channel
    never_fires: np.ndarray  # per channel, bool
    observed: Observed

    @property
    def exactly_dead(self) -> np.ndarray:
        return self.never_fires & self.observed.rectified


@dataclass
class ActivationStats:
    layers: dict[str, LayerStats]  # producer name -> its channels' statistics
    patches: int

    def dead_counts(self) -> dict[str, int]:
        """Channels that never fire, per layer with an activation."""
        return {name: int(s.never_fires.sum()) for name, s in self.layers.items() if s.observed.activation}

    def dead_fraction(self) -> float:
        counts = self.dead_counts()
        total = sum(len(self.layers[n].never_fires) for n in counts)
        return sum(counts.values()) / total if total else 0.0


def _activation_name(cls: str, cfg: dict) -> str | None:
    """The activation a layer applies, by name, or None for linear."""
    if cls == "ReLU":
        plain = not cfg.get("negative_slope") and not cfg.get("threshold") and cfg.get("max_value") is None
        return "relu" if plain else "relu_variant"
    if cls in ACTIVATION_LAYERS - {"Activation"}:
        return cls.lower()
    activation = cfg.get("activation")
    name = activation if isinstance(activation, str) else (activation or {}).get("config", {}).get("name")
    return None if name in (None, "linear") else str(name)


def observed_layers(model: keras.Model) -> dict[str, Observed]:
    """For each producer, the layer whose output is its channels after their activation."""
    order, _ = layer_order(model)
    consumers: dict[str, list[dict]] = {}
    for spec in order:
        for src, _ in spec["inputs"]:
            consumers.setdefault(src, []).append(spec)
    found = {}
    for spec in order:
        if spec["class_name"] not in PRODUCERS:
            continue
        name, chain = spec["name"], [spec["name"]]
        activation = _activation_name(spec["class_name"], spec["config"])
        current = spec
        while activation is None and len(consumers.get(current["name"], [])) == 1:
            nxt = consumers[current["name"]][0]
            if len(nxt["inputs"]) != 1 or nxt["class_name"] not in ACTIVATION_LAYERS | PASS_THROUGH:
                break
            chain.append(nxt["name"])
            activation = None if nxt["class_name"] in PASS_THROUGH else _activation_name(nxt["class_name"],
                                                                                           nxt["config"])
            current = nxt
        if activation in CHANNEL_MIXING_ACTIVATIONS or activation is None:
            found[name] = Observed(name, None, (name,))  # a softmax head or a linear layer: read raw
        else:
            found[name] = Observed(chain[-1], activation, tuple(chain))
    return found


def _batches(data, limit: int | None):
    """(x, n) per batch of a tf.data dataset / iterable of (x, y) or x / an array, up to `limit` samples."""
    if isinstance(data, np.ndarray):
        data = [data[i:i + 8] for i in range(0, len(data), 8)]
    seen = 0
    for batch in data:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        n = int(x.shape[0]) if limit is None else min(int(x.shape[0]), limit - seen)
        if n <= 0:
            return
        yield x[:n], n
        seen += n


def collect(model: keras.Model, data, limit: int | None = None) -> ActivationStats:
    """One pass over `data` (at most `limit` samples): every producer's channel statistics."""
    import tensorflow as tf

    observed = observed_layers(model)
    names = list(observed)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, [model.get_layer(observed[n].layer).output for n in names])
    linear = [observed[n].activation is None for n in names]

    @tf.function(reduce_retracing=True)
    def reduce(x):
        outs = probe(x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        result = []
        for out, relu in zip(outs, linear):
            out = tf.cast(tf.nn.relu(out) if relu else out, tf.float32)
            axes = list(range(len(out.shape) - 1))
            result.append((tf.reduce_sum(tf.cast(tf.equal(out, 0), tf.float32), axes),
                           tf.reduce_sum(out, axes), tf.reduce_max(out, axes),
                           tf.cast(tf.reduce_prod(tf.shape(out)[:-1]), tf.float32)))
        return result

    totals, patches = None, 0  # per output: [zeros, sums, peaks, positions per channel]
    for x, n in _batches(data, limit):
        parts = [[np.asarray(v, np.float64) for v in r] for r in reduce(tf.convert_to_tensor(x))]
        if totals is None:
            totals = parts
        else:
            for total, (z, s, m, c) in zip(totals, parts):
                total[0] += z
                total[1] += s
                total[2] = np.maximum(total[2], m)
                total[3] += c
        patches += n
    if not patches:
        raise ParamError("activation statistics need calibration data: got no samples")
    layers = {name: LayerStats(apoz=z / c, mean=s / c, never_fires=m <= 0, observed=observed[name])
              for name, (z, s, m, c) in zip(names, totals)}
    return ActivationStats(layers, patches)


def removable_dead(model: keras.Model, calibration, graph: ChannelGraph):
    """(stats, exact): `exact[producer]` marks the channels exactly dead on `calibration` (samples,
    or ActivationStats) whose removal is exact: no weighted channel-wise layer outside the
    producer's chain (a BN after the activation would turn the dead 0 into a constant) reads them."""
    stats = calibration if isinstance(calibration, ActivationStats) else collect(model, calibration)
    consumes, producers = graph.consumes, graph.producers
    exact = {}
    for name in producers:
        chain = stats.layers[name].observed.chain
        later = [layer for layer, entries in consumes.items() if layer not in producers and layer not in chain
                 and any(e is not None and e[0] == name for e in entries)]
        exact[name] = stats.layers[name].exactly_dead & (not later)
    return stats, exact


def calibration_set(dataset, patches: int):
    """The first `patches` samples of a batched tf.data dataset (training patches, here)."""
    return dataset.unbatch().take(patches).batch(16)


def dead_summary(model: keras.Model, dataset) -> dict:
    """What a trial reports: the fraction of activated channels that never fire on `dataset`
    (the validation set), and the count per layer."""
    stats = collect(model, dataset)
    return {"dead_channel_fraction": stats.dead_fraction(), "dead_channels": stats.dead_counts()}
