"""Datasets: one entry point, `load(params)`, whatever the source.

`load(params)` finds the dataset (params.data_dir, else $SEGMODEL_DATA_DIR, else the
built-in synthetic set), validates every image/mask pair eagerly (clear DataError
naming the file), splits by source image with params.seed, and returns batched
tf.data pipelines of (image float32 in [0, 1], HxWx3; one-hot mask float32, HxWxC).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .palette import DEFAULT_TOLERANCE, Palette, load_palette
from .pipeline import build, fits_cache, n_patches
from .readers import Source, find_pairs, scan


@dataclass
class Splits:
    train: object          # tf.data.Dataset, batched, shuffled each epoch
    val: object            # tf.data.Dataset, batched, fixed order
    class_names: tuple
    palette: dict          # class name -> "#RRGGBB"
    n_train: int           # number of training patches
    n_val: int             # number of validation patches
    patch_size: int
    data_dir: str = ""     # where the images came from
    train_images: tuple = field(default_factory=tuple)  # source image paths in each split
    val_images: tuple = field(default_factory=tuple)
    cached: bool = False   # decoded patches kept in memory after the first epoch (small datasets)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def resolve_data_dir(data_dir: str = "", builtin_tiles: int = 0) -> Path:
    """data_dir, else $SEGMODEL_DATA_DIR, else the built-in synthetic set (built on first use;
    `builtin_tiles` > 0 resizes it, 2 images a tile, each size cached once)."""
    chosen = data_dir or os.environ.get("SEGMODEL_DATA_DIR", "")
    if chosen:
        return Path(chosen).expanduser()
    from .builtin import BUILTIN, cache_root, ensure
    try:
        return ensure(dataclasses.replace(BUILTIN, tiles=builtin_tiles or BUILTIN.tiles))[0]
    except OSError as e:
        raise DataError(f"cannot write the built-in dataset under {cache_root()}: {e.strerror or e}; "
                        "set SEGMODEL_CACHE to a writable folder, or give --data_dir") from None


def scan_dataset(root, palette: Palette, tolerance: float = DEFAULT_TOLERANCE) -> tuple[str, list[Source]]:
    """Find and validate all pairs: (layout, sources)."""
    layout, pairs = find_pairs(root)
    return layout, scan(pairs, palette, tolerance)


def split_sources(sources: list[Source], val_fraction: float, seed: int, patch: int, stride: int):
    """Deterministic split by source image: no image has patches on both sides."""
    usable = [s for s in sources if n_patches(s, patch, stride) > 0]
    if len(usable) < 2:
        raise DataError(f"need at least 2 images with a full {patch}x{patch} patch to split train/validation, "
                        f"found {len(usable)} (of {len(sources)}); lower patch_size or add images")
    order = np.random.default_rng(seed).permutation(len(usable))
    n_val = int(np.clip(round(val_fraction * len(usable)), 1, len(usable) - 1))
    val = [usable[i] for i in sorted(order[:n_val])]
    train = [usable[i] for i in sorted(order[n_val:])]
    return train, val


def load(params) -> Splits:
    palette = load_palette(params.palette)
    n_weights = len(params.class_weights)
    if palette.n_classes != n_weights:
        raise DataError(f"palette has {palette.n_classes} classes but the loss has {n_weights} class weights "
                        f"(weight1..weight{n_weights}); give a palette with {n_weights} classes")
    root = resolve_data_dir(params.data_dir, params.builtin_tiles)
    _, sources = scan_dataset(root, palette, params.palette_tolerance)
    p = params.patch_size
    stride = params.patch_stride or p
    train_src, val_src = split_sources(sources, params.val_fraction, params.seed, p, stride)
    total = sum(n_patches(s, p, stride) for s in train_src) + sum(n_patches(s, p, p) for s in val_src)
    common = dict(patch=p, batch_size=params.batch_size, n_classes=palette.n_classes, seed=params.seed,
                  cache=fits_cache(total, p))
    train, n_train, cached = build(train_src, palette, stride=stride, training=True, augment=params.augment, **common)
    # Validation patches never overlap, so every pixel is scored once.
    val, n_val, _ = build(val_src, palette, stride=p, training=False, **common)
    return Splits(train, val, palette.names, palette.as_hex(), n_train, n_val, p, str(root),
                  tuple(s.image for s in train_src), tuple(s.image for s in val_src), cached)
