"""Walking a Keras 3 model's layers: what pruning, channel pruning and FLOP counting share."""
from __future__ import annotations

import keras


def walk_layers(layer) -> list:
    """Every layer nested in `layer`, depth first, each once (public Keras API: a Model,
    Sequential included, lists its layers in `.layers`; a plain layer has none)."""
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
