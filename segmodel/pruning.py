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

from .errors import ParamError
from .layers import own_weights, walk_layers
from .params import ALLOCATIONS

# NNI's 'default' op type (nni.compression.tensorflow.default_layers.weighted_modules).
DEFAULT_OP_TYPES = ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
                    "Dense", "Embedding", "PReLU")
CONFIG_KEYS = ("sparsity", "sparsity_per_layer", "op_types", "op_names", "exclude")


# ---- which weights: NNI's config_list ----------------------------------------------------

def prunable_weights(layer) -> list:
    """The layer's own trainable weight tensors except biases (NNI skips every weight whose
    name contains 'bias'; a normalization layer's `beta` is its bias too). Only what the
    optimizer trains: a frozen layer (`trainable = False`) is left as it is."""
    return [v for v in own_weights(layer) if v.trainable and "bias" not in v.name and v.name != "beta"]


def weighted_layers(model: keras.Model) -> list:
    """Every layer, nested ones included, that owns a prunable weight."""
    return [layer for layer in walk_layers(model) if prunable_weights(layer)]


def layer_targets(model: keras.Model, config_list: list[dict]) -> dict[str, float]:
    """Map layer name -> target sparsity, NNI's rule: for each layer the last entry that
    matches it decides; if that entry has `exclude: True` the layer is not pruned.
    An entry matches a layer when the layer's class is in `op_types` ('default' = the
    weighted layers) and its name is in `op_names`, whichever of the two are given."""
    if not isinstance(config_list, (list, tuple)):
        raise ParamError(f"config_list must be a list of dicts, got {type(config_list).__name__}")
    layers = weighted_layers(model)
    targets: dict[str, float | None] = {}
    for i, entry in enumerate(config_list):
        sparsity, op_types, op_names, exclude = _check_entry(i, entry)
        matched = 0
        for layer in layers:
            if op_types is not None and type(layer).__name__ not in op_types:
                continue
            if op_names is not None and layer.name not in op_names:
                continue
            matched += 1
            targets[layer.name] = None if exclude else sparsity
        if matched == 0:
            kinds = sorted({type(layer).__name__ for layer in layers})
            raise ParamError(f"config_list[{i}] matches no layer with weights in model {model.name!r} "
                             f"(op_types={entry.get('op_types')}, op_names={entry.get('op_names')}); "
                             f"its weighted layer types are {kinds}")
    names = [layer.name for layer in layers if targets.get(layer.name) is not None]
    if len(names) != len(set(names)):
        raise ParamError(f"model {model.name!r} has several weighted layers with the same name; "
                         "rename them to prune by config_list")
    return {name: targets[name] for name in names}


def _check_entry(i: int, entry) -> tuple[float, set | None, set | None, bool]:
    """Validate one config_list entry; returns (sparsity, op_types, op_names, exclude)."""
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
    sets = []
    for key in ("op_types", "op_names"):
        value = entry.get(key)
        if value is not None and (not isinstance(value, (list, tuple))
                                  or not all(isinstance(v, str) for v in value)):
            raise ParamError(f"{where}: {key} must be a list of strings, got {value!r}")
        sets.append(None if value is None else set(value))
    op_types, op_names = sets
    if op_types is None and op_names is None:
        raise ParamError(f"{where}: needs op_types or op_names")
    if op_types is not None and "default" in op_types:
        op_types |= set(DEFAULT_OP_TYPES)
    return (0.0 if exclude else float(sparsity)), op_types, op_names, exclude


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


PROTECT_FRACTION = 0.01


def protected_layers(model: keras.Model, names) -> set[str]:
    """The stated rule of global allocation: the first and the last weighted layer stay
    dense when small, each at most PROTECT_FRACTION of the named layers' weights. In the
    U-Net the first conv reads the 3 image channels (432 weights) and the 1x1 head writes
    the classes (96): tiny layers every pixel's prediction goes through, where a pruned
    weight costs the most and saves the least. Together they are then at most 2%, so any
    target up to 98% is still reached exactly by the other layers."""
    by_name = {layer.name: layer for layer in weighted_layers(model)}
    size = {n: sum(int(np.prod(w.shape)) for w in prunable_weights(by_name[n])) for n in names}
    order = list(by_name)  # the model's ends, not those of the selection: excluding them protects no others
    ends = {order[0], order[-1]} & set(size) if order else set()
    return {n for n in ends if size[n] <= PROTECT_FRACTION * sum(size.values())}


class Pruner:
    """Applies `config_list` to `model`: prune(), then masks hold until strip().

    allocation "uniform" (NNI's LevelPruner, the seed's): every layer loses its own
    target fraction. "global" (NNI 2.x's `total_sparsity`): layers that share a target
    are ranked together by magnitude under one threshold, so each layer loses what its
    weights deserve and their overall sparsity is exactly the target; the protected
    layers (`protected_layers`) take part in the count but keep all their weights, so the
    others lose that much more.

    The class defaults to NNI's per-layer rule; a trial passes Params.allocation (global).
    Call prune() (any fraction, 0.0 included) before the model is compiled and fit:
    Keras reads each variable's constraint when it traces the train step."""

    def __init__(self, model: keras.Model, config_list: list[dict], allocation: str = "uniform"):
        if allocation not in ALLOCATIONS:
            raise ParamError(f"allocation must be one of {', '.join(ALLOCATIONS)}; got {allocation!r}")
        self.model, self.allocation = model, allocation
        self.targets = layer_targets(model, config_list)
        by_name = {layer.name: layer for layer in weighted_layers(model)}
        self.protected = protected_layers(model, self.targets) if allocation == "global" else set()
        # groups of (weights, target): one magnitude ranking each
        weights = [(w, s, name) for name, s in self.targets.items() for w in prunable_weights(by_name[name])]
        if allocation == "uniform":
            self._groups = [([w], s) for w, s, _ in weights]
        else:
            by_target: dict[float, list] = {}
            for w, s, _ in weights:
                by_target.setdefault(s, []).append(w)
            self._groups = [(ws, s) for s, ws in by_target.items()]
        self._protected = {id(w) for w, _, name in weights if name in self.protected}
        self.masks: dict[str, keras.Variable] = {}  # weight path -> mask variable
        self.fraction = 0.0

    @property
    def weights(self) -> list:
        """The weight variables under the masks, protected ones included."""
        return [w for group, _ in self._groups for w in group]

    @property
    def attached(self) -> bool:
        return bool(self.masks)

    def prune(self, fraction: float = 1.0) -> None:
        """Recompute masks from current magnitudes at `fraction` of each target sparsity.
        Weights already pruned have magnitude 0, so they stay pruned."""
        for group, target in self._groups:
            values = [w.numpy() for w in group]
            for w, v, mask in zip(group, values, self._group_masks(group, values, target * fraction)):
                if w.path not in self.masks:
                    self.masks[w.path] = keras.Variable(mask.astype(w.dtype), dtype=w.dtype, trainable=False,
                                                        name=f"{w.name}_prune_mask")
                    w.constraint = MaskConstraint(self.masks[w.path], w.constraint)
                else:
                    self.masks[w.path].assign(mask.astype(w.dtype))
                w.assign(v * mask)
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

    def strip(self) -> keras.Model:
        """Fold the masks into the weights and give back the original constraints:
        a plain Keras model, safe to save and to load without segmodel."""
        for w in self.weights:
            mask = self.masks.pop(w.path, None)
            if mask is not None:
                w.assign(w.numpy() * mask.numpy())
                w.constraint = w.constraint.inner if isinstance(w.constraint, MaskConstraint) else w.constraint
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
