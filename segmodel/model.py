"""The seed's U-Net (`multi_unet_model`), in Keras 3, and the variants that keep its units alive.

Two changes from the seed, both needed downstream: the 1x1 head is split into a
linear `logits` conv and a float32 `softmax` activation, so knowledge
distillation can read logits and mixed precision keeps a float32 output.

`architecture` picks how each 3x3 conv is activated (docs/units.md has the measurements;
trials default to `bn`, `multi_unet_model()` itself to the seed's):
  seed   conv(ReLU), the seed's exact model: under Adam at lr 2e-3..1e-2 whole decoder
         layers stop firing (every output 0 on every pixel) and never recover
  bn     conv (no bias) -> BatchNormalization -> ReLU: each channel is re-centred on its
         batch statistics, so a channel cannot drift to "always negative" unseen
  leaky  conv -> LeakyReLU(0.1): a negative channel still passes a gradient
The layer names of the convs (`down1_conv1` ...) are the same in all three.
"""
from __future__ import annotations

import keras
from keras import layers

from .params import ARCHITECTURES

FILTERS = (16, 32, 64, 128, 256)
LEAKY_SLOPE = 0.1


def _conv(x, filters: int, name: str, architecture: str):
    """One 3x3 he_normal conv and its activation."""
    if architecture == "seed":
        return layers.Conv2D(filters, 3, activation="relu", kernel_initializer="he_normal", padding="same",
                             name=name)(x)
    x = layers.Conv2D(filters, 3, kernel_initializer="he_normal", padding="same", use_bias=architecture != "bn",
                      name=name)(x)
    if architecture == "bn":
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.Activation("relu", name=f"{name}_relu")(x)
    return layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_leaky")(x)


def _conv_block(x, filters: int, dr: float, name: str, architecture: str):
    """conv3x3 -> dropout -> conv3x3, as in the seed."""
    x = _conv(x, filters, f"{name}_conv1", architecture)
    x = layers.Dropout(dr, name=f"{name}_drop")(x)
    return _conv(x, filters, f"{name}_conv2", architecture)


def multi_unet_model(dr: float = 0.1, n_classes: int = 6, IMG_HEIGHT: int = 256, IMG_WIDTH: int = 256,
                     IMG_CHANNELS: int = 3, architecture: str = "seed", filters=FILTERS) -> keras.Model:
    """16-32-64-128-256 filters down (max-pool), Conv2DTranspose up with skips, softmax head.
    `filters`: the five levels' widths (a level's decoder block has its encoder's)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}; got {architecture!r}")
    if len(filters) != len(FILTERS) or not all(isinstance(f, int) and f > 0 for f in filters):
        raise ValueError(f"filters must be {len(FILTERS)} positive ints, one per level; got {filters!r}")
    inputs = keras.Input((IMG_HEIGHT, IMG_WIDTH, IMG_CHANNELS), name="image")
    x, skips = inputs, []
    for i, f in enumerate(filters[:-1], start=1):
        x = _conv_block(x, f, dr, f"down{i}", architecture)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = _conv_block(x, filters[-1], dr, "bottleneck", architecture)
    for i, (f, skip) in enumerate(zip(reversed(filters[:-1]), reversed(skips)), start=1):
        x = layers.Conv2DTranspose(f, 2, strides=2, padding="same", name=f"up{i}_transpose")(x)
        x = layers.concatenate([x, skip], name=f"up{i}_concat")
        x = _conv_block(x, f, dr, f"up{i}", architecture)
    logits = layers.Conv2D(n_classes, 1, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(logits)
    return keras.Model(inputs, outputs, name="multi_unet")


def build_model(params, n_classes: int) -> keras.Model:
    """The trial's model: its architecture, dropout and patch size."""
    return multi_unet_model(params.dropout_rate, n_classes, params.patch_size, params.patch_size, 3,
                            architecture=params.architecture)
