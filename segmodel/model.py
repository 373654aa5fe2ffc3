"""The seed's U-Net (`multi_unet_model`), in Keras 3.

Two changes from the seed, both needed downstream: the 1x1 head is split into a
linear `logits` conv and a float32 `softmax` activation, so knowledge
distillation can read logits and mixed precision keeps a float32 output.
"""
from __future__ import annotations

import keras
from keras import layers

FILTERS = (16, 32, 64, 128, 256)


def _conv_block(x, filters: int, dr: float, name: str):
    """conv3x3 -> dropout -> conv3x3, he_normal ReLU, as in the seed."""
    x = layers.Conv2D(filters, 3, activation="relu", kernel_initializer="he_normal", padding="same",
                      name=f"{name}_conv1")(x)
    x = layers.Dropout(dr, name=f"{name}_drop")(x)
    return layers.Conv2D(filters, 3, activation="relu", kernel_initializer="he_normal", padding="same",
                         name=f"{name}_conv2")(x)


def multi_unet_model(dr: float = 0.1, n_classes: int = 6, IMG_HEIGHT: int = 256, IMG_WIDTH: int = 256,
                     IMG_CHANNELS: int = 3) -> keras.Model:
    """16-32-64-128-256 filters down (max-pool), Conv2DTranspose up with skips, softmax head."""
    inputs = keras.Input((IMG_HEIGHT, IMG_WIDTH, IMG_CHANNELS), name="image")
    x, skips = inputs, []
    for i, f in enumerate(FILTERS[:-1], start=1):
        x = _conv_block(x, f, dr, f"down{i}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = _conv_block(x, FILTERS[-1], dr, "bottleneck")
    for i, (f, skip) in enumerate(zip(reversed(FILTERS[:-1]), reversed(skips)), start=1):
        x = layers.Conv2DTranspose(f, 2, strides=2, padding="same", name=f"up{i}_transpose")(x)
        x = layers.concatenate([x, skip], name=f"up{i}_concat")
        x = _conv_block(x, f, dr, f"up{i}")
    logits = layers.Conv2D(n_classes, 1, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(logits)
    return keras.Model(inputs, outputs, name="multi_unet")

