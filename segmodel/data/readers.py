"""Find image/mask pairs on disk, read them with Pillow, and validate them once, eagerly.

Layouts:
  Dubai  <root>/<Tile N>/images/*.jpg  +  <root>/<Tile N>/masks/*.png
  flat   <root>/images/*               +  <root>/masks/*
Pairs match by file stem. Masks are RGB(A) or palette-mode images coloured with the
palette, or single-channel PNGs holding class indices.

Every problem becomes a one-line DataError naming the file, before TensorFlow sees
anything, so a bad dataset fails in seconds with a message instead of deep in tf.data.
"""
from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .palette import Palette, describe_unknown

log = logging.getLogger("segmodel.data")

EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
INDEX_MODES = {"L", "I", "I;16", "I;16B", "I;16L", "1", "LA"}


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path


@dataclass(frozen=True)
class Source:
    """A validated pair: its size and how many pixels of each class its mask holds."""
    image: str
    mask: str
    height: int
    width: int
    class_counts: tuple      # pixels per class index (out-of-palette ones counted as Unlabeled)
    unknown_pixels: int      # pixels whose colour/index is outside the palette


def _natural(path: Path):
    """'Tile 10' after 'Tile 9'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _files(folder: Path) -> dict[str, Path]:
    by_stem: dict[str, Path] = {}
    for f in sorted(folder.iterdir(), key=_natural):
        if f.name.startswith(".") or not f.is_file() or f.suffix.lower() not in EXTENSIONS:
            continue
        if f.stem in by_stem:
            raise DataError(f"two files with stem {f.stem!r} in {folder}: {by_stem[f.stem].name} and {f.name}")
        by_stem[f.stem] = f
    return by_stem


def _pair_folder(group: Path) -> list[Pair]:
    images_dir, masks_dir = group / "images", group / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise DataError(f"missing folder {d} (each of images/ and masks/ is needed)")
    images, masks = _files(images_dir), _files(masks_dir)
    for stem, img in images.items():
        if stem not in masks:
            raise DataError(f"image without mask: {img} (expected {masks_dir}/{stem}.png)")
    for stem, m in masks.items():
        if stem not in images:
            raise DataError(f"mask without image: {m} (expected {images_dir}/{stem}.jpg)")
    return [Pair(images[s], masks[s]) for s in images]


def _has_layout(d: Path) -> bool:
    """Either layout starts at d (used for a hint when the user points one folder too high)."""
    if (d / "images").is_dir():
        return True
    try:
        return any((g / "images").is_dir() for g in d.iterdir() if g.is_dir())
    except OSError:
        return False


def find_pairs(root: str | Path) -> tuple[str, list[Pair]]:
    """Return ("dubai" | "flat", pairs in a stable order)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"data folder is not a folder: {root}")
    if (root / "images").exists() or (root / "masks").exists():
        layout, pairs = "flat", _pair_folder(root)
    else:
        groups = [d for d in sorted(root.iterdir(), key=_natural)
                  if d.is_dir() and ((d / "images").is_dir() or (d / "masks").is_dir())]
        if not groups:
            hint = next((f"; found them one level down, in {d}" for d in sorted(root.iterdir(), key=_natural)
                         if d.is_dir() and _has_layout(d)), "")
            raise DataError(f"no images/ and masks/ folders in {root} "
                            f"(expected <root>/images + <root>/masks, or <root>/Tile N/images + masks){hint}")
        layout, pairs = "dubai", [p for g in groups for p in _pair_folder(g)]
    if not pairs:
        raise DataError(f"no image/mask pairs in {root}")
    return layout, pairs


# ---- reading --------------------------------------------------------------------------

def _open(path, what: str) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()  # decode fully: a truncated file fails here, not in the middle of training
        return im
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"unreadable {what} {path}: {e}") from None


def read_image(path) -> np.ndarray:
    """(H, W, 3) uint8."""
    im = _open(path, "image")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def read_mask(path, palette: Palette) -> tuple[np.ndarray, np.ndarray, str]:
    """(class index (H, W) uint8, unknown-pixel map, description of the unknown values)."""
    im = _open(path, "mask")
    if im.mode in INDEX_MODES:
        values = np.asarray(im.getchannel(0) if im.mode == "LA" else im).astype(np.int64)
        unknown = (values < 0) | (values >= palette.n_classes)
        index = np.where(unknown, palette.unlabeled, values).astype(np.uint8)
        if unknown.any():
            v, c = np.unique(values[unknown], return_counts=True)
            top = np.argsort(-c)[:5]
            return index, unknown, "class index " + ", ".join(f"{int(v[i])} x{int(c[i])}" for i in top)
        return index, unknown, ""
    rgb = np.asarray(im.convert("RGB") if im.mode != "RGB" else im)
    index, unknown = palette.decode(rgb)
    return index, unknown, describe_unknown(rgb, unknown) if unknown.any() else ""


# ---- validation -------------------------------------------------------------------------

def check_pair(pair: Pair, palette: Palette, tolerance: float) -> Source:
    """Read both files fully once: readable, same size, mask colours in the palette."""
    image = _open(pair.image, "image")
    w, h = image.size
    image.close()
    index, unknown, what = read_mask(pair.mask, palette)
    if index.shape != (h, w):
        raise DataError(f"size mismatch: image {pair.image} is {w}x{h} but mask {pair.mask} is "
                        f"{index.shape[1]}x{index.shape[0]}")
    n_unknown = int(unknown.sum())
    if n_unknown and n_unknown > tolerance * index.size:
        raise DataError(f"mask {pair.mask}: {n_unknown} of {index.size} pixels "
                        f"({100 * n_unknown / index.size:.2f}%) are outside the palette ({what}); "
                        f"over palette_tolerance {100 * tolerance:g}% (give --palette FILE.json with this dataset's colours)")
    counts = np.bincount(index.ravel(), minlength=palette.n_classes)
    return Source(str(pair.image), str(pair.mask), h, w, tuple(int(c) for c in counts), n_unknown)


def scan(pairs: list[Pair], palette: Palette, tolerance: float, threads: int = 2) -> list[Source]:
    """Validate every pair (Pillow decodes outside the GIL, so a few threads help);
    the first bad file, in dataset order, is the error reported."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        sources = list(pool.map(lambda p: check_pair(p, palette, tolerance), pairs))
    flagged = [s for s in sources if s.unknown_pixels]
    if flagged:
        worst = max(flagged, key=lambda s: s.unknown_pixels / (s.height * s.width))
        log.warning("warning: %d pixels in %d mask(s) have colours outside the palette and were mapped to %s "
                    "(worst: %s, %.3f%%)", sum(s.unknown_pixels for s in flagged), len(flagged),
                    palette.names[palette.unlabeled], worst.mask,
                    100 * worst.unknown_pixels / (worst.height * worst.width))
    return sources
