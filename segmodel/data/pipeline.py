"""tf.data pipelines that read, decode and patch validated sources from disk.

Files are decoded by the same Pillow code that validated them (inside
`tf.numpy_function`), one source image at a time, so memory holds a few images and a
bounded shuffle buffer (SEGMODEL_SHUFFLE_MB, default 16), never the dataset. A dataset
whose decoded patches, train and validation together, fit SEGMODEL_DATA_CACHE_MB
(default 32) is cached in memory after the first epoch, where re-decoding would be the
only work; anything larger streams from disk every epoch.
"""
from __future__ import annotations

import os

import numpy as np

from .palette import Palette
from .readers import Source, read_image, read_mask

DEFAULT_PATCH_SIZE = 128  # square patch side in px: a trial's, and data inspect's



def grid(length: int, patch: int, stride: int) -> int:
    """Patches along one axis: the image is cut from its top-left corner, the remainder
    (less than a stride) is dropped, as the seed cropped to a multiple of 256."""
    return 0 if length < patch else (length - patch) // stride + 1


def n_patches(source: Source, patch: int, stride: int) -> int:
    return grid(source.height, patch, stride) * grid(source.width, patch, stride)


def cut(array: np.ndarray, patch: int, stride: int) -> np.ndarray:
    """(H, W, ...) -> (N, patch, patch, ...), row-major over the patch grid."""
    rows, cols = grid(array.shape[0], patch, stride), grid(array.shape[1], patch, stride)
    if stride == patch:  # the common case: a reshape, no copying loop
        a = array[:rows * patch, :cols * patch]
        a = a.reshape(rows, patch, cols, patch, *array.shape[2:]).swapaxes(1, 2)
        return np.ascontiguousarray(a.reshape(rows * cols, patch, patch, *array.shape[2:]))
    out = [array[r * stride:r * stride + patch, c * stride:c * stride + patch]
           for r in range(rows) for c in range(cols)]
    return np.stack(out) if out else np.zeros((0, patch, patch, *array.shape[2:]), array.dtype)


def source_patches(source: Source, palette: Palette, patch: int, stride: int):
    """Decode one source and cut it: (N, p, p, 3) uint8 image patches, (N, p, p) uint8 class indices."""
    image = read_image(source.image)
    index, _, _ = read_mask(source.mask, palette)
    return cut(image, patch, stride), cut(index, patch, stride)


def shuffle_budget_bytes() -> int:
    return int(float(os.environ.get("SEGMODEL_SHUFFLE_MB", "16")) * 2**20)


def cache_budget_bytes() -> int:
    return int(float(os.environ.get("SEGMODEL_DATA_CACHE_MB", "32")) * 2**20)


def fits_cache(n_patches_total: int, patch: int) -> bool:
    """Decoded uint8 patches (3 image + 1 class byte per pixel) fit the in-memory cache budget."""
    return n_patches_total * patch * patch * 4 <= cache_budget_bytes()


def build(sources: list[Source], palette: Palette, *, patch: int, stride: int, batch_size: int,
          n_classes: int, seed: int, training: bool, augment: bool = False, cache: bool | None = None):
    """Batched (image float32 [0, 1] (p, p, 3), one-hot mask float32 (p, p, C)) pipeline."""
    import tensorflow as tf

    total = sum(n_patches(s, patch, stride) for s in sources)
    patch_bytes = patch * patch * 4
    cached = fits_cache(total, patch) if cache is None else cache

    def load(i):
        return source_patches(sources[int(i)], palette, patch, stride)

    def decode(i):
        img, msk = tf.numpy_function(load, [i], [tf.uint8, tf.uint8], stateful=False)
        img.set_shape([None, patch, patch, 3])
        msk.set_shape([None, patch, patch])
        # Pack image + class into one (p, p, 4) tensor per patch. The concat also copies
        # each patch out of its image's buffer: slices would share it, and a shuffle
        # buffer of slices would keep every image it has touched alive.
        return tf.data.Dataset.from_tensor_slices((img, msk)).map(lambda a, b: tf.concat([a, b[..., None]], -1))

    files = tf.data.Dataset.from_tensor_slices(np.arange(len(sources), dtype=np.int64))
    if training and not cached:
        files = files.shuffle(len(sources), seed=seed, reshuffle_each_iteration=True)
    ds = files.interleave(decode, cycle_length=1 if cached or not training else min(4, len(sources)),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cached:
        ds = ds.cache()
    if training:
        buffer = total if cached else max(1, min(total, shuffle_budget_bytes() // patch_bytes))
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if training and augment:
        coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, coins)).map(_augment, num_parallel_calls=tf.data.AUTOTUNE)

    def to_float(packed):
        return (tf.cast(packed[..., :3], tf.float32) / 255.0,
                tf.one_hot(tf.cast(packed[..., 3], tf.int32), n_classes, dtype=tf.float32))

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    # The patch count is known exactly from the headers: tell Keras, so epochs have a length.
    ds = ds.apply(tf.data.experimental.assert_cardinality(total))
    return ds.batch(batch_size).prefetch(2), total, cached


def _augment(packed, coin):
    """One of the 8 flips/rotations, the same for image and mask (packed in one tensor)."""
    import tensorflow as tf

    packed = tf.image.rot90(packed, k=tf.cast(coin % 4, tf.int32))
    return tf.cond((coin // 4) % 2 == 1, lambda: tf.image.flip_left_right(packed), lambda: packed)
