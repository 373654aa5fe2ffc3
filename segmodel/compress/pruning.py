"""Magnitude pruning for Keras 3 models, driven by NNI's `config_list` format.

NNI 3.0 prunes PyTorch only, and NNI 2.x's TensorFlow pruner wraps layers in a way
a functional Keras graph never calls, so this is our own. Masks live in
non-trainable variables outside the model and are applied through each weight
variable's `constraint`, which Keras runs after every optimizer step inside the
traced (graph-mode) train step: pruned weights stay exactly zero, and after
`strip()` the model carries no pruning machinery at all.

    pruner = Pruner(model, [{"sparsity": 0.8, "op_types": ["default"]}], allocation="global")
    pruner.prune()            # before compile/fit: the constraint must be there when
    model.compile(...)        # Keras traces the train step
    model.fit(...)
    pruner.strip()            # fold masks in; model.save() gives a plain Keras model
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..errors import ParamError
from ..params import ALLOCATIONS
from .config_list import entry_report, layer_choices, prunable_weights, weighted_layers


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """Boolean keep-mask zeroing the int(n * sparsity) smallest-magnitude entries.

    Exactly that many, whatever the ties: among weights tied at the threshold the first
    ones in flat (C) order are pruned. (NNI 2.x keeps every weight tied with its
    threshold, so it can prune fewer.) O(n): a partition, not a sort."""
    return prune_smallest(weights, int(np.size(weights) * sparsity))


def prune_smallest(weights: np.ndarray, k: int) -> np.ndarray:
    """Boolean keep-mask zeroing exactly the k smallest-magnitude entries (ties: C order)."""
    flat = np.abs(np.asarray(weights)).reshape(-1)
    k = min(k, flat.size)
    if k <= 0:
        return np.ones(np.shape(weights), dtype=bool)
    threshold = np.partition(flat, k - 1)[k - 1]
    pruned = flat < threshold
    pruned[np.flatnonzero(flat == threshold)[:k - np.count_nonzero(pruned)]] = True
    return ~pruned.reshape(np.shape(weights))


class MaskConstraint(keras.constraints.Constraint):
    """Multiplies the variable by its mask after every optimizer step (after any
    constraint the variable had before, which `strip()` gives back)."""

    def __init__(self, mask: keras.Variable, inner=None):
        self.mask, self.inner = mask, inner

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        return w * ops.cast(self.mask, w.dtype)


def hold(masks: dict, w, mask: np.ndarray, value=None) -> None:
    """Zero `w` (its `value`) where `mask` is 0 and keep it so through training: the mask variable
    in `masks[w.path]` is made and put under a MaskConstraint on first call, updated after."""
    if w.path not in masks:
        masks[w.path] = keras.Variable(mask.astype(w.dtype), dtype=w.dtype, trainable=False,
                                       name=f"{w.name}_prune_mask")
        w.constraint = MaskConstraint(masks[w.path], w.constraint)
    else:
        masks[w.path].assign(mask.astype(w.dtype))
    w.assign((w.numpy() if value is None else value) * mask)


def release(masks: dict, weights) -> None:
    """Fold each weight's mask in and give back the constraint it had before `hold`."""
    for w in weights:
        mask = masks.pop(w.path, None)
        if mask is not None:
            w.assign(w.numpy() * mask.numpy())
            w.constraint = w.constraint.inner if isinstance(w.constraint, MaskConstraint) else w.constraint


PROTECT_FRACTION = 0.01


def protected_layers(model: keras.Model, names) -> set[str]:
    """The stated rule of global allocation, for the layers one config_list entry selects
    by op_types: the first and the last weighted layer stay dense when small, each at most
    PROTECT_FRACTION of those layers' weights. In the U-Net the first conv reads the 3
    image channels (432 weights) and the 1x1 head writes the classes (96): tiny layers
    every pixel's prediction goes through, where a pruned weight costs the most and saves
    the least. Together they are then at most 2%, so any target up to 98% is still reached
    exactly by the other layers. A layer named in op_names is never protected (Pruner)."""
    by_name = {layer.name: layer for layer in weighted_layers(model)}
    size = {n: sum(int(np.prod(w.shape)) for w in prunable_weights(by_name[n])) for n in names}
    order = list(by_name)  # the model's ends, not those of the selection: excluding them protects no others
    ends = {order[0], order[-1]} & set(size) if order else set()
    return {n for n in ends if size[n] <= PROTECT_FRACTION * sum(size.values())}


class Pruner:
    """Applies `config_list` to `model`: prune(), then masks hold until strip().

    allocation "global" (NNI 2.x's `total_sparsity`; what trials use, Params.allocation):
    the layers one entry selects by op_types are ranked together by magnitude under one
    threshold, so each layer loses what its weights deserve and together they lose exactly
    the entry's sparsity; the protected layers among them (`protected_layers`) take part in
    the count but keep all their weights, so the others lose that much more. A layer named
    in an entry's op_names gets exactly that entry's sparsity, ranked alone, and is never
    protected. "uniform" (NNI's LevelPruner, the seed's): every weight loses its own
    target fraction. `achieved()` gives each entry's sparsity as measured.

    Call prune() (any fraction, 0.0 included) before the model is compiled and fit:
    Keras reads each variable's constraint when it traces the train step."""

    def __init__(self, model: keras.Model, config_list: list[dict], allocation: str = "global"):
        if allocation not in ALLOCATIONS:
            raise ParamError(f"allocation must be one of {', '.join(ALLOCATIONS)}; got {allocation!r}")
        self.model, self.allocation, self.config_list = model, allocation, list(config_list)
        self.choices = layer_choices(model, config_list)
        self.targets = {n: c.sparsity for n, c in self.choices.items() if c.sparsity is not None}
        by_name = {layer.name: layer for layer in weighted_layers(model)}
        # pools of layers ranked together: (names, target, entry)
        if allocation == "uniform":
            pools = [([n], s, self.choices[n].entry) for n, s in self.targets.items()]
        else:
            shared: dict[int, list[str]] = {}
            for n in self.targets:
                if not self.choices[n].named:
                    shared.setdefault(self.choices[n].entry, []).append(n)
            pools = [(names, self.targets[names[0]], i) for i, names in shared.items()]
            pools += [([n], s, self.choices[n].entry) for n, s in self.targets.items() if self.choices[n].named]
        self.protected = set() if allocation == "uniform" else \
            set().union(*(protected_layers(model, names) for names, _, _ in pools if len(names) > 1))
        self._groups = []  # (weights, target, entry): one magnitude ranking each
        for names, target, entry in pools:
            weights = [w for n in names for w in prunable_weights(by_name[n])]
            if allocation == "uniform":
                self._groups += [([w], target, entry) for w in weights]
            else:
                self._groups.append((weights, target, entry))
        self._protected = {id(w) for n in self.protected for w in prunable_weights(by_name[n])}
        self.masks: dict[str, keras.Variable] = {}  # weight path -> mask variable
        self.fraction = 0.0

    @property
    def weights(self) -> list:
        """The weight variables under the masks, protected ones included."""
        return [w for group, _, _ in self._groups for w in group]

    @property
    def attached(self) -> bool:
        return bool(self.masks)

    def prune(self, fraction: float = 1.0) -> None:
        """Recompute masks from current magnitudes at `fraction` of each target sparsity.
        Weights already pruned have magnitude 0, so they stay pruned."""
        for group, target, _ in self._groups:
            values = [w.numpy() for w in group]
            for w, v, mask in zip(group, values, self._group_masks(group, values, target * fraction)):
                hold(self.masks, w, mask, v)
        self.fraction = fraction

    def _group_masks(self, group, values, sparsity: float) -> list[np.ndarray]:
        """One keep-mask per weight: int(n * sparsity) of the group's n weights pruned, the
        smallest magnitudes first, none of them in a protected layer."""
        free = [v for w, v in zip(group, values) if id(w) not in self._protected]
        n = sum(v.size for v in values)
        k = int(n * sparsity)
        if not free or k == 0:
            return [np.ones(v.shape, dtype=bool) for v in values]
        flat = np.concatenate([v.reshape(-1) for v in free])
        keep = iter(np.split(prune_smallest(flat, k), np.cumsum([v.size for v in free])[:-1]))
        return [np.ones(v.shape, dtype=bool) if id(w) in self._protected else next(keep).reshape(v.shape)
                for w, v in zip(group, values)]

    def achieved(self) -> list[dict]:
        """Per config_list entry {asked, achieved}: achieved = the fraction of zeros its
        layers' weights hold now, measured. Says on stderr (one line) where an entry got
        less than asked: protected layers left too few weights to reach it, or an AGP
        schedule ended short of its target."""
        by_name = {layer.name: layer for layer in weighted_layers(self.model)}

        def measure(names):
            values = [w.numpy() for n in names for w in prunable_weights(by_name[n])]
            zeros, total = sum(int(np.count_nonzero(v == 0)) for v in values), sum(v.size for v in values)
            entry = self.choices[names[0]].entry
            expected = sum(int(sum(int(np.prod(w.shape)) for w in g) * t) for g, t, e in self._groups if e == entry)
            kept = sorted(set(names) & self.protected)
            if zeros >= expected:
                short = ""
            elif self.fraction < 1:
                short = f"its schedule reached {self.fraction:.2f} of the target"
            else:
                short = (f"{', '.join(kept) or 'protected layers'} kept dense: global allocation protects the "
                         "model's first and last layer unless op_names names them")
            return zeros, total, short

        return entry_report(self.config_list, self.choices, measure, "weights")

    def strip(self) -> keras.Model:
        """Fold the masks into the weights and give back the original constraints:
        a plain Keras model, safe to save and to load without segmodel."""
        release(self.masks, self.weights)
        return self.model


# ---- AGP: Zhu & Gupta (2017), as NNI's AGPPruner -------------------------------------------

def agp_sparsity(step: int, total_steps: int, final: float, initial: float = 0.0) -> float:
    """Cubic schedule: s_t = s_f + (s_i - s_f)(1 - t/n)^3, t clipped to [0, n]."""
    if total_steps <= 0:
        return final
    t = min(max(step, 0), total_steps) / total_steps
    return final + (initial - final) * (1.0 - t) ** 3


class AGPCallback(keras.callbacks.Callback):
    """Raise sparsity from 0 to the target along the cubic schedule over `total_steps`
    optimizer steps, recomputing masks every `frequency` steps; masks are frozen once
    the target is reached (as in the paper). Steps count across fit() calls."""

    def __init__(self, pruner: Pruner, total_steps: int, frequency: int = 10):
        super().__init__()
        if total_steps < 1 or frequency < 1:
            raise ParamError(f"AGP needs total_steps >= 1 and frequency >= 1, got {total_steps}, {frequency}")
        self.pruner, self.total_steps, self.frequency = pruner, total_steps, frequency
        self.step = 0

    def on_train_begin(self, logs=None):
        if not self.pruner.attached:  # too late for an already traced train step: retrace it
            self.pruner.prune(agp_sparsity(self.step, self.total_steps, 1.0))
            self.model.make_train_function(force=True)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step > self.total_steps:
            return
        if self.step % self.frequency == 0 or self.step == self.total_steps:
            self.pruner.prune(agp_sparsity(self.step, self.total_steps, 1.0))


# ---- measured, not claimed ----------------------------------------------------------------

def sparsity_stats(model: keras.Model, layer_names) -> dict:
    """Measured from the weights: the fraction of zeros over the named layers' prunable
    weights, and whole-model parameter counts."""
    by_name = {layer.name: layer for layer in weighted_layers(model)}
    zeros = size = 0
    for name in layer_names:
        for w in prunable_weights(by_name[name]):
            v = w.numpy()
            zeros += int(np.count_nonzero(v == 0))
            size += v.size
    params = sum(int(np.prod(v.shape)) for v in model.weights)
    nonzero = sum(int(np.count_nonzero(v.numpy())) for v in model.weights)
    return {"sparsity": zeros / size if size else 0.0, "params": params, "nonzero_params": nonzero}
