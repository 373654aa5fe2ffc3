"""Keras 3 model surgery that every part shares: walking a model's layers, its config with
new widths or input size, and a copy of it in a fresh graph."""
from __future__ import annotations

import copy


def walk_layers(layer) -> list:
    """Every layer nested in `layer`, depth first, each once (public Keras API: a Model,
    Sequential included, lists its layers in `.layers`; a plain layer has none)."""
    import keras

    found, seen = [], set()

    def visit(parent):
        for sub in parent.layers if isinstance(parent, keras.Model) else ():
            if id(sub) not in seen:
                seen.add(id(sub))
                found.append(sub)
                visit(sub)

    visit(layer)
    return found


def own_weights(layer) -> list:
    """The layer's own variables: those of the layers nested in it (a Model's) excluded."""
    nested = {id(v) for sub in walk_layers(layer) for v in sub.weights}
    return [v for v in layer.weights if id(v) not in nested]


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


def fresh_copy(model, config: dict | None = None):
    """The same weights in a new model built from `model`'s config (or `config`, e.g. a
    resized one), without its compile state. Not keras.models.clone_model: that copies the
    compile state, and segmentation_models' summed loss does not deserialize; a .keras
    file saved with the optimizer's state would double in size."""
    twin = type(model).from_config(config if config is not None else model.get_config())
    twin.set_weights(model.get_weights())
    return twin
