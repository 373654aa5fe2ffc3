"""The seed's way of training a pruned model, rebuilt as the baseline `bench` compares with.

NNI 2.x's TensorFlow pruners wrapped each layer and re-applied the masks eagerly before
every forward pass; NNI 3.0 no longer has them, so this reproduces what they did.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..losses import task_loss
from ..metrics import jacard_coef
from ..model import multi_unet_model
from ..pruning import magnitude_mask, prunable_weights, weighted_layers


def nni2_style_pruned(params, n_classes: int, sparsity: float = 0.8):
    """The seed's training setup, faithfully: float32, NNI 2.x's TensorFlow LevelPruner
    wrappers, which before every forward pass multiply each pruned layer's weights by
    its mask and write them back with `layer.set_weights([w.numpy() ...])` — only
    possible eagerly, so the model is compiled with run_eagerly=True (NNI 2.x: "the
    compressed model can only execute in eager mode")."""
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(params.seed)
    inner = multi_unet_model(params.dropout_rate, n_classes, params.patch_size, params.patch_size, 3)
    wrapped = []  # (layer, [mask or None per weight]) as PrunerLayerWrapper.masks
    for layer in weighted_layers(inner):
        keep = {id(w) for w in prunable_weights(layer)}
        masks = [magnitude_mask(ops.convert_to_numpy(w), sparsity).astype("float32") if id(w) in keep else None
                 for w in layer.weights]
        wrapped.append((layer, masks))

    class NNI2PrunedUNet(keras.Model):
        def __init__(self):
            super().__init__(name="nni2_pruned_unet")
            self.inner = inner

        def call(self, x, training=False):
            for layer, masks in wrapped:  # PrunerLayerWrapper._update_weights
                new = [w if m is None else w * m for w, m in zip(layer.weights, masks)]
                layer.set_weights([np.asarray(ops.convert_to_numpy(w)) for w in new])
            return self.inner(x, training=training)

    model = NNI2PrunedUNet()
    model.compile(optimizer=keras.optimizers.Adam(params.learning_rate), loss=task_loss(params.class_weights),
                  metrics=["accuracy", jacard_coef], run_eagerly=True)
    return model
