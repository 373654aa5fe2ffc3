"""Mask colours <-> class indices.

A palette is an ordered mapping class name -> "#RRGGBB"; the order is the class index.
The Dubai palette is the default. A JSON file `{"Building": "#3C1098", ...}` replaces it
for datasets drawn with other colours (the Dubai dataset's own classes.json lists
colours that do not occur in its masks, so it is never read automatically).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..files import read_json

# The Dubai aerial imagery classes, in class-index order, with their mask colours.
DUBAI_PALETTE = {
    "Building": "#3C1098",
    "Land": "#8429F6",
    "Road": "#6EC1E4",
    "Vegetation": "#FEDD3A",
    "Water": "#E2A929",
    "Unlabeled": "#9B9B9B",
}
CLASS_NAMES = tuple(DUBAI_PALETTE)
# Masks are JPEG-free PNGs, but a few pixels off the palette (antialiased edges) are tolerated
# and mapped to Unlabeled: this fraction of a mask, at most.
DEFAULT_TOLERANCE = 0.001

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


@dataclass(frozen=True)
class Palette:
    names: tuple            # class names in index order
    colors: np.ndarray      # (C, 3) uint8 RGB, row i = class i

    @property
    def n_classes(self) -> int:
        return len(self.names)

    @property
    def unlabeled(self) -> int:
        """Index that out-of-palette pixels fall back to: "Unlabeled" if present, else the last class."""
        lowered = [n.lower() for n in self.names]
        return lowered.index("unlabeled") if "unlabeled" in lowered else self.n_classes - 1

    def as_hex(self) -> dict:
        return {n: "#%02X%02X%02X" % tuple(int(v) for v in c) for n, c in zip(self.names, self.colors)}

    def encode(self, index: np.ndarray) -> np.ndarray:
        """Class-index map (H, W) -> RGB mask (H, W, 3), as the dataset draws it."""
        return self.colors[index]

    def decode(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB mask (H, W, 3) uint8 -> (class index (H, W) uint8, boolean map of unknown colours).

        Unknown pixels get the Unlabeled index; the caller decides whether that is acceptable.
        """
        key = _key(rgb)
        table = _key(self.colors)
        order = np.argsort(table)
        sorted_keys = table[order]
        pos = np.searchsorted(sorted_keys, key).clip(0, len(sorted_keys) - 1)
        known = sorted_keys[pos] == key
        index = np.where(known, order[pos], self.unlabeled).astype(np.uint8)
        return index, ~known


def _key(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def parse_hex(text: str, where: str) -> tuple[int, int, int]:
    m = _HEX.match(str(text).strip())
    if not m:
        raise DataError(f"{where}: {text!r} is not a hex colour like #3C1098")
    v = int(m.group(1), 16)
    return (v >> 16) & 255, (v >> 8) & 255, v & 255


def from_mapping(mapping: dict, where: str) -> Palette:
    if not isinstance(mapping, dict) or not mapping:
        raise DataError(f"{where}: must be a JSON object mapping class name to hex colour")
    colors = [parse_hex(c, f"{where}: class {name!r}") for name, c in mapping.items()]
    if len(set(colors)) != len(colors):
        raise DataError(f"{where}: two classes share one colour")
    if len(colors) > 255:
        raise DataError(f"{where}: at most 255 classes")
    return Palette(tuple(str(n) for n in mapping), np.array(colors, dtype=np.uint8))


def load_palette(path: str = "") -> Palette:
    """The Dubai palette, or the one in a JSON file (class name -> hex colour, in class order)."""
    if not path:
        return from_mapping(DUBAI_PALETTE, "default palette")
    return from_mapping(read_json(path, "palette", DataError), f"palette {path}")


def describe_unknown(rgb: np.ndarray, unknown: np.ndarray, limit: int = 5) -> str:
    """The most frequent out-of-palette colours, e.g. "#FF0000 x120, #000000 x3"."""
    keys, counts = np.unique(_key(rgb[unknown]), return_counts=True)
    top = np.argsort(-counts)[:limit]
    parts = [f"#{int(keys[i]):06X} x{int(counts[i])}" for i in top]
    if len(keys) > limit:
        parts.append(f"... {len(keys) - limit} more")
    return ", ".join(parts)
