"""`python -m segmodel predict MODEL IMAGE... --out DIR`: colour masks and overlays
for images of any size.

The model sees what it was trained on: patches of its input size. Each image is
padded (mirrored) to a whole number of patches, cut into tiles, predicted in
batches and stitched back, then cropped to the original size. Works with .keras,
.tflite (float or int8) and SavedModel folders.

For each IMAGE it writes DIR/<name>_mask.png (a palette PNG: each pixel's value
is the class index, its colour the class colour) and DIR/<name>_overlay.png.
"""
from __future__ import annotations

# Heavy libraries (TensorFlow, Keras, PIL) are imported inside the functions that use them:
# `python -m segmodel --help` imports every command module, and should stay instant.
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..cli import add_command, default_out
from ..data.palette import Palette, from_mapping, load_palette
from ..errors import SegmodelError
from . import amx
from .runners import load_runner
from .speed import delegate_note


class PredictError(SegmodelError):
    """An image or palette can't be used."""


def register(subparsers) -> None:
    p = add_command(subparsers, "predict", __doc__, "colour masks + overlays for images of any size (.keras/.tflite)")
    p.add_argument("model", metavar="MODEL", help="model.keras, model_*.tflite or a SavedModel folder")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (JPEG, PNG, ...), any size")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: ./predict-<model>)")
    p.add_argument("--patch-size", type=int, default=None, metavar="N",
                   help="tile side when the model accepts any size (default: the model's input size)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="tiles per model call (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.45, help="mask opacity in the overlay (default: %(default)s)")
    p.add_argument("--palette", default=None, metavar="JSON",
                   help="JSON file {class name: '#RRGGBB'} in class order (default: export.json beside the "
                        "model, else the Dubai palette)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:

    amx.refuse()  # before the first interpreter: XNNPACK's int8 kernels are faster without AMX (segmodel/amx.py)

    images = [Path(i) for i in args.images]
    missing = [str(i) for i in images if not i.is_file()]
    if missing:
        raise PredictError(f"no such image: {', '.join(missing)}")
    runner = load_runner(args.model)
    patch = args.patch_size or runner.patch_size
    if not patch:
        raise PredictError(f"{args.model} accepts any input size: give --patch-size")
    if runner.patch_size and patch != runner.patch_size:
        raise PredictError(f"{args.model} takes {runner.patch_size}px tiles only: drop --patch-size {patch}")
    palette = class_palette(Path(args.model), args.palette)
    names, lut = palette.names, palette.colors
    if runner.n_classes and runner.n_classes != len(names):
        raise PredictError(f"{args.model} predicts {runner.n_classes} classes but the palette has {len(names)} "
                           f"({', '.join(names)}): give --palette")
    out = Path(args.out) if args.out else default_out("predict", Path(args.model).stem)
    out.mkdir(parents=True, exist_ok=True)
    for n, path in enumerate(images, start=1):
        started = time.time()
        image = read_image(path)
        labels = predict_image(runner, image, patch, args.batch_size)
        mask_path, overlay_path = out / f"{path.stem}_mask.png", out / f"{path.stem}_overlay.png"
        save_mask(labels, lut, mask_path)
        save_overlay(image, labels, lut, args.alpha, overlay_path)
        counts = np.bincount(labels.ravel(), minlength=len(names)) / labels.size
        top = ", ".join(f"{names[c]} {counts[c]:.0%}" for c in np.argsort(-counts)[:3] if counts[c] > 0)
        h, w = labels.shape
        tiles = -(-h // patch) * -(-w // patch)
        print(f"[{n}/{len(images)}] {path.name}: {w}x{h}, {tiles} tiles of {patch}px, "
              f"{time.time() - started:.1f}s -> {mask_path.name} ({top})", flush=True)
        if n == 1:
            say_runtime(runner, Path(args.model).name)
    print(f"wrote {2 * len(images)} files to {out}", file=sys.stderr)
    return 0


def say_runtime(runner, name: str) -> None:
    """One stderr line after the first image: which runtime ran a TFLite file (it can
    only be known once the delegate was prepared and run)."""
    if not hasattr(runner, "delegation"):
        return
    d = runner.delegation
    note = delegate_note(name, d)
    print(f"warning: {note}" if note else f"{name}: XNNPACK runs all {d['ops']} ops", file=sys.stderr, flush=True)


def class_palette(model_path: Path, palette_file: str | None) -> Palette:
    """Class names and colours: --palette, else export.json beside the model, else the default."""
    if palette_file:
        return load_palette(palette_file)
    meta = model_path.parent / "export.json"  # beside a .keras/.tflite file or a saved_model/ folder
    if meta.is_file():
        try:
            info = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            info = {}  # not ours, or half a file: fall back to the default palette
        if info.get("class_names") and info.get("palette"):
            return from_mapping({n: info["palette"][n] for n in info["class_names"]}, f"{meta}: palette")
    return load_palette()


def read_image(path: Path) -> np.ndarray:
    """RGB float32 in [0, 1], as training saw images."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise PredictError(f"cannot read image {path}: {e}") from None


def tile(image: np.ndarray, patch: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad HxWxC to multiples of `patch` (mirrored edges) and cut row-major tiles."""
    h, w = image.shape[:2]
    ph, pw = -h % patch, -w % patch
    mode = "reflect" if ph < h and pw < w else "edge"
    padded = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)
    rows, cols = padded.shape[0] // patch, padded.shape[1] // patch
    tiles = padded.reshape(rows, patch, cols, patch, -1).swapaxes(1, 2).reshape(rows * cols, patch, patch, -1)
    return tiles, (rows, cols)


def stitch(tiles: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Inverse of `tile` for per-pixel maps (N x p x p), cropped to `size`."""
    rows, cols = grid
    p = tiles.shape[1]
    full = tiles.reshape(rows, cols, p, p).swapaxes(1, 2).reshape(rows * p, cols * p)
    return full[:size[0], :size[1]]


def predict_image(runner, image: np.ndarray, patch: int, batch_size: int = 8) -> np.ndarray:
    """Class index per pixel (HxW uint8) for an image of any size."""
    tiles, grid = tile(image, patch)
    labels = np.concatenate([runner(tiles[i:i + batch_size]).astype(np.uint8)
                             for i in range(0, len(tiles), max(1, batch_size))])
    return stitch(labels, grid, image.shape[:2])


def save_mask(labels: np.ndarray, lut: np.ndarray, path: Path) -> None:
    from PIL import Image
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(lut.reshape(-1).tolist())
    im.save(path)


def save_overlay(image: np.ndarray, labels: np.ndarray, lut: np.ndarray, alpha: float, path: Path) -> None:
    from PIL import Image
    blend = (1 - alpha) * image * 255 + alpha * lut[labels].astype(np.float32)
    Image.fromarray(np.clip(blend, 0, 255).astype(np.uint8)).save(path)
