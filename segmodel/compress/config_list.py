"""Which layers and weights NNI's `config_list` selects, and at what sparsity: NNI's rules
(op_types with 'default', op_names, op_names_re, exclude, the last matching entry decides),
shared by weight pruning, channel pruning and the cost targets.

    layer_choices(model, [{"sparsity": 0.8, "op_types": ["default"]}])  # layer -> Choice
"""
from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import NamedTuple

import keras

from ..errors import ParamError
from ..surgery import own_weights, walk_layers

# NNI's 'default' op type (nni.compression.tensorflow.default_layers.weighted_modules).
DEFAULT_OP_TYPES = ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
                    "Dense", "Embedding", "PReLU")
CONFIG_KEYS = ("sparsity", "sparsity_per_layer", "op_types", "op_names", "op_names_re", "exclude")


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
