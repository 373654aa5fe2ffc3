"""Datasets: one entry point, `load(params)`, whatever the source.

PLACEHOLDER CONTRACT (the data work replaces the internals, keeps `load` and `Splits`):
`load(params)` returns batched tf.data pipelines of (image float32 in [0, 1], HxWx3;
one-hot mask float32, HxWxC).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import CLASS_NAMES, PALETTE


@dataclass
class Splits:
    train: object          # tf.data.Dataset, batched, shuffled each epoch
    val: object            # tf.data.Dataset, batched, fixed order
    class_names: tuple
    palette: dict          # class name -> "#RRGGBB"
    n_train: int           # number of training patches
    n_val: int             # number of validation patches
    patch_size: int

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def load(params) -> Splits:
    import tensorflow as tf

    rng = np.random.default_rng(params.seed)
    p = params.patch_size
    n = 48
    labels = rng.integers(0, len(CLASS_NAMES), size=(n, p // 16, p // 16))
    labels = labels.repeat(16, 1).repeat(16, 2)
    colors = rng.random((len(CLASS_NAMES), 3)).astype("float32")
    images = colors[labels] + rng.normal(0, 0.05, (n, p, p, 3)).astype("float32")
    masks = np.eye(len(CLASS_NAMES), dtype="float32")[labels]
    n_val = n // 4
    train = tf.data.Dataset.from_tensor_slices((images[n_val:], masks[n_val:]))
    train = train.shuffle(n, seed=params.seed).batch(params.batch_size)
    val = tf.data.Dataset.from_tensor_slices((images[:n_val], masks[:n_val])).batch(params.batch_size)
    return Splits(train, val, CLASS_NAMES, dict(PALETTE), n - n_val, n_val, p)
