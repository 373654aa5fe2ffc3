"""Magnitude pruning for Keras 3 models, driven by NNI's `config_list` format.

NNI 3.0 prunes PyTorch only, so this is our own. Masks live in non-trainable
variables outside the model and are applied through each kernel variable's
`constraint`, which Keras runs after every optimizer step in graph mode: pruned
weights stay exactly zero, and the saved model carries no pruning machinery.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .errors import ParamError

# NNI's 'default' op type: the layers that have weights worth pruning.
DEFAULT_OP_TYPES = ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
                    "Dense", "Embedding", "PReLU")


def layer_targets(model: keras.Model, config_list: list[dict]) -> dict[str, float]:
    """Map layer name -> target sparsity; for each layer the last matching entry wins (NNI)."""
    targets: dict[str, float | None] = {}
    for i, entry in enumerate(config_list):
        if not isinstance(entry, dict):
            raise ParamError(f"config_list[{i}] must be a dict, got {entry!r}")
        unknown = set(entry) - {"sparsity", "sparsity_per_layer", "op_types", "op_names", "exclude"}
        if unknown:
            raise ParamError(f"config_list[{i}]: unknown keys {sorted(unknown)}")
        exclude = bool(entry.get("exclude", False))
        sparsity = entry.get("sparsity", entry.get("sparsity_per_layer"))
        if not exclude:
            if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool) or not 0 <= sparsity < 1:
                raise ParamError(f"config_list[{i}]: sparsity must be a number in [0, 1), got {sparsity!r}")
        op_types = entry.get("op_types")
        op_names = entry.get("op_names")
        if op_types is None and op_names is None:
            raise ParamError(f"config_list[{i}]: needs op_types or op_names")
        types = set(op_types or ())
        if "default" in types:
            types |= set(DEFAULT_OP_TYPES)
        matched = 0
        for layer in _weighted_layers(model):
            if op_types is not None and type(layer).__name__ not in types:
                continue
            if op_names is not None and layer.name not in op_names:
                continue
            matched += 1
            targets[layer.name] = None if exclude else float(sparsity)
        if matched == 0:
            raise ParamError(f"config_list[{i}] matches no layer of model {model.name!r} "
                             f"(op_types={op_types}, op_names={op_names})")
    return {name: s for name, s in targets.items() if s is not None}


def _weighted_layers(model: keras.Model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if _prunable_weight(layer) is not None:
            yield layer


def _prunable_weight(layer):
    """The layer's main weight tensor (never the bias)."""
    for attr in ("kernel", "embeddings", "alpha"):
        w = getattr(layer, attr, None)
        if isinstance(w, keras.Variable):
            return w
    return None


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """Zero the int(n * sparsity) smallest-magnitude entries (ties broken by position)."""
    flat = np.abs(np.asarray(weights)).reshape(-1)
    k = int(flat.size * sparsity)
    mask = np.ones(flat.size, dtype=bool)
    if k > 0:
        mask[np.argsort(flat, kind="stable")[:k]] = False
    return mask.reshape(np.shape(weights))


class MaskConstraint(keras.constraints.Constraint):
    """Multiplies the variable by its mask after every optimizer step."""

    def __init__(self, mask: keras.Variable):
        self.mask = mask

    def __call__(self, w):
        return w * ops.cast(self.mask, w.dtype)


def agp_sparsity(step: int, total_steps: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta (2017) cubic schedule: s_t = s_f + (s_i - s_f)(1 - t/n)^3, t clipped to [0, n]."""
    if total_steps <= 0:
        return final
    t = min(max(step, 0), total_steps) / total_steps
    return final + (initial - final) * (1.0 - t) ** 3


class Pruner:
    """Applies `config_list` to `model`: prune(), then masks hold until strip()."""

    def __init__(self, model: keras.Model, config_list: list[dict]):
        self.model = model
        self.targets = layer_targets(model, config_list)
        self.masks: dict[str, keras.Variable] = {}

    def prune(self, fraction: float = 1.0) -> None:
        """Recompute masks from current magnitudes at `fraction` of each layer's target sparsity."""
        for name, target in self.targets.items():
            w = _prunable_weight(self.model.get_layer(name))
            mask = magnitude_mask(ops.convert_to_numpy(w), target * fraction)
            if name not in self.masks:
                self.masks[name] = keras.Variable(mask.astype("float32"), trainable=False,
                                                  name=f"{name}_prune_mask")
                w.constraint = MaskConstraint(self.masks[name])
            else:
                self.masks[name].assign(mask.astype("float32"))
            w.assign(ops.convert_to_numpy(w) * mask)

    def strip(self) -> keras.Model:
        """Fold the masks into the weights and remove the constraints: a plain Keras model."""
        for name, mask in self.masks.items():
            w = _prunable_weight(self.model.get_layer(name))
            w.assign(ops.convert_to_numpy(w) * ops.convert_to_numpy(mask))
            w.constraint = None
        self.masks.clear()
        return self.model

    def stats(self) -> dict:
        return sparsity_stats(self.model, self.targets)


class AGPCallback(keras.callbacks.Callback):
    """Raise sparsity along the cubic schedule, recomputing masks every `frequency` steps."""

    def __init__(self, pruner: Pruner, total_steps: int, frequency: int = 10):
        super().__init__()
        self.pruner, self.total_steps, self.frequency = pruner, total_steps, frequency
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.frequency == 0 or self.step == self.total_steps:
            self.pruner.prune(agp_sparsity(self.step, self.total_steps, 1.0))


def sparsity_stats(model: keras.Model, layer_names) -> dict:
    """Measured from the weights: zeros over the pruned layers' kernels, and whole-model counts."""
    zeros = size = 0
    for name in layer_names:
        w = ops.convert_to_numpy(_prunable_weight(model.get_layer(name)))
        zeros += int(np.count_nonzero(w == 0))
        size += w.size
    params = sum(int(np.prod(v.shape)) for v in model.weights)
    nonzero = sum(int(np.count_nonzero(ops.convert_to_numpy(v))) for v in model.weights)
    return {"sparsity": zeros / size if size else 0.0, "params": params, "nonzero_params": nonzero}
