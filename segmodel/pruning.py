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

import re
import sys
from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from .errors import ParamError
from .layers import own_weights, walk_layers
from .params import ALLOCATIONS

# NNI's 'default' op type (nni.compression.tensorflow.default_layers.weighted_modules).
DEFAULT_OP_TYPES = ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
                    "Dense", "Embedding", "PReLU")
CONFIG_KEYS = ("sparsity", "sparsity_per_layer", "op_types", "op_names", "op_names_re", "exclude")


# ---- which weights: NNI's config_list ----------------------------------------------------

def prunable_weights(layer) -> list:
    """The layer's own trainable weight tensors except biases (NNI skips every weight whose
    name contains 'bias'; a normalization layer's `beta` is its bias too). Only what the
    optimizer trains: a frozen layer (`trainable = False`) is left as it is."""
    return [v for v in own_weights(layer) if v.trainable and "bias" not in v.name and v.name != "beta"]


def weighted_layers(model: keras.Model) -> list:
    """Every layer, nested ones included, that owns a prunable weight."""
    return [layer for layer in walk_layers(model) if prunable_weights(layer)]


class Choice(NamedTuple):
    """What config_list decides for one layer: the deciding entry, its sparsity (None:
    excluded) and whether that entry names the layer in op_names."""
    entry: int
    sparsity: float | None
    named: bool


def layer_choices(model: keras.Model, config_list: list[dict]) -> dict[str, Choice]:
    """Map layer name -> Choice, NNI's rule: for each layer the last entry that matches it
    decides; if that entry has `exclude: True` the layer is not pruned. An entry matches a
    layer when the layer's class is in `op_types` ('default' = the weighted layers) and its
    name is in `op_names` or starts with a match of one of `op_names_re` (NNI 3.0's
    `re.match`), whichever are given."""
    if not isinstance(config_list, (list, tuple)):
        raise ParamError(f"config_list must be a list of dicts, got {type(config_list).__name__}")
    layers = weighted_layers(model)
    choices: dict[str, Choice] = {}
    for i, entry in enumerate(config_list):
        sparsity, op_types, named, exclude = _check_entry(i, entry)
        matched = 0
        for layer in layers:
            if op_types is not None and type(layer).__name__ not in op_types:
                continue
            if named is not None and not named(layer.name):
                continue
            matched += 1
            choices[layer.name] = Choice(i, None if exclude else sparsity, named is not None)
        if matched == 0:
            kinds = sorted({type(layer).__name__ for layer in layers})
            raise ParamError(f"config_list[{i}] matches no layer with weights in model {model.name!r} "
                             f"(op_types={entry.get('op_types')}, op_names={entry.get('op_names')}"
                             + (f", op_names_re={entry['op_names_re']}" if "op_names_re" in entry else "") + "); "
                             f"its weighted layer types are {kinds}")
    names = [layer.name for layer in layers if layer.name in choices]
    pruned = [n for n in names if choices[n].sparsity is not None]
    if len(pruned) != len(set(pruned)):
        raise ParamError(f"model {model.name!r} has several weighted layers with the same name; "
                         "rename them to prune by config_list")
    return {name: choices[name] for name in names}


def layer_targets(model: keras.Model, config_list: list[dict]) -> dict[str, float]:
    """Map layer name -> target sparsity of every layer config_list prunes (layer_choices)."""
    return {n: c.sparsity for n, c in layer_choices(model, config_list).items() if c.sparsity is not None}


def entry_report(config_list: list[dict], choices: dict[str, Choice], measure, what: str) -> list[dict]:
    """Per config_list entry {asked, achieved}: its sparsity, and `measure(names)` =
    (removed, total, short) over the layers it decides, `short` naming any that kept
    more than asked, with why. An entry that decides no layer (all taken by later
    entries) achieved None. Where an entry got less than asked (beyond rounding), one
    line on stderr says so."""
    rows, lowered = [], []
    for i, entry in enumerate(config_list):
        names = [n for n, c in choices.items() if c.entry == i]
        asked = 0.0 if entry.get("exclude") else float(entry.get("sparsity", entry.get("sparsity_per_layer")))
        removed, total, short = measure(names) if names else (0, 0, "")
        achieved = removed / total if total else None
        rows.append({"asked": asked, "achieved": achieved})
        if short:
            lowered.append(f"config_list[{i}] asked {asked:.2f} of the {what}, achieved {achieved:.3f} ({short})")
    if lowered:
        print("warning: pruning got less than asked: " + "; ".join(lowered), file=sys.stderr, flush=True)
    return rows


def _check_entry(i: int, entry) -> tuple[float, set | None, Callable[[str], bool] | None, bool]:
    """Validate one config_list entry; returns (sparsity, op_types, whether a layer name
    is named by op_names/op_names_re or None when neither is given, exclude)."""
    where = f"config_list[{i}]"
    if not isinstance(entry, dict):
        raise ParamError(f"{where} must be a dict, got {entry!r}")
    unknown = sorted(set(entry) - set(CONFIG_KEYS))
    if unknown:
        raise ParamError(f"{where}: unknown keys {unknown}; known: {list(CONFIG_KEYS)}")
    exclude = entry.get("exclude", False)
    if not isinstance(exclude, bool):
        raise ParamError(f"{where}: exclude must be true or false, got {exclude!r}")
    if "sparsity" in entry and "sparsity_per_layer" in entry:
        raise ParamError(f"{where}: give sparsity or sparsity_per_layer, not both")
    sparsity = entry.get("sparsity", entry.get("sparsity_per_layer"))
    if not exclude and (not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool)
                        or not 0 <= sparsity < 1):
        raise ParamError(f"{where}: sparsity must be a number in [0, 1), got {sparsity!r}")
    op_types, op_names, op_names_re = (_strings(where, key, entry.get(key))
                                       for key in ("op_types", "op_names", "op_names_re"))
    if op_types is None and op_names is None and op_names_re is None:
        raise ParamError(f"{where}: needs op_types, op_names or op_names_re")
    if op_types is not None and "default" in op_types:
        op_types |= set(DEFAULT_OP_TYPES)
    named = None
    if op_names is not None or op_names_re is not None:
        try:
            patterns = [re.compile(p) for p in op_names_re or ()]
        except re.error as e:
            raise ParamError(f"{where}: op_names_re has a bad regular expression: {e}") from None
        names = op_names or set()
        named = lambda name: name in names or any(p.match(name) for p in patterns)  # noqa: E731
    return (0.0 if exclude else float(sparsity)), op_types, named, exclude


def _strings(where: str, key: str, value) -> set | None:
    if value is not None and (not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value)):
        raise ParamError(f"{where}: {key} must be a list of strings, got {value!r}")
    return None if value is None else set(value)


# ---- masks --------------------------------------------------------------------------------

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
