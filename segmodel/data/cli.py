"""`python -m segmodel data synth DIR` and `python -m segmodel data inspect DIR`.

Heavy libraries (TensorFlow, Keras, matplotlib, PIL) are imported inside the functions that
use them: `python -m segmodel --help` imports every command module, and should stay instant.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from ..errors import DataError
from .palette import DEFAULT_TOLERANCE as TOLERANCE
from .pipeline import DEFAULT_PATCH_SIZE


def register(subparsers) -> None:
    from .synthetic import SynthSpec

    d = SynthSpec()  # the built-in set's shape
    data = subparsers.add_parser("data", help="write a synthetic dataset, or inspect one")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    synth = sub.add_parser("synth", help="write procedural aerial scenes in the Dubai layout")
    synth.add_argument("dir", help="output folder (must not exist, or be empty)")
    synth.add_argument("--tiles", type=int, metavar="N", default=d.tiles, help=f"number of 'Tile N' folders (default {d.tiles})")
    synth.add_argument("--images-per-tile", type=int, metavar="K", default=d.images_per_tile,
                       help=f"images in each tile (default {d.images_per_tile})")
    synth.add_argument("--min-size", type=int, metavar="PX", default=d.min_size, help=f"smallest tile side in px (default {d.min_size})")
    synth.add_argument("--max-size", type=int, metavar="PX", default=d.max_size, help=f"largest tile side in px (default {d.max_size})")
    synth.add_argument("--seed", type=int, metavar="S", default=d.seed, help=f"random seed (default {d.seed})")
    synth.set_defaults(func=cmd_synth)

    inspect = sub.add_parser("inspect", help="count images, patches and class pixels; validate every file")
    inspect.add_argument("dir", help="dataset root (Dubai or flat layout)")
    inspect.add_argument("--patch-size", type=int, metavar="P", default=DEFAULT_PATCH_SIZE,
                         help=f"patch side (default {DEFAULT_PATCH_SIZE}, as a trial)")
    inspect.add_argument("--patch-stride", type=int, metavar="S", default=0, help="stride between patches (0 = patch size)")
    inspect.add_argument("--palette", default="", metavar="FILE", help="JSON file: class name -> hex colour")
    inspect.add_argument("--palette-tolerance", type=float, metavar="F", default=TOLERANCE,
                         help="fraction of a mask's pixels allowed outside the palette (default %(default)s)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(func=cmd_inspect)


def cmd_synth(args) -> int:
    from .synthetic import SynthSpec, write_dataset

    if args.tiles < 1 or args.images_per_tile < 1:
        raise DataError("--tiles and --images-per-tile must be >= 1")
    if not 16 <= args.min_size <= args.max_size:
        raise DataError("need 16 <= --min-size <= --max-size")
    out = Path(args.dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"output folder exists and is not empty: {out}")
    spec = SynthSpec(args.tiles, args.images_per_tile, args.min_size, args.max_size, args.seed)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        write_dataset(tmp, spec)
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)  # a killed run leaves only the hidden temp folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.tiles * args.images_per_tile} images in {args.tiles} tiles to {out}", file=sys.stderr)
    return 0


def inspect_dataset(root, patch: int, stride: int = 0, palette_path: str = "",
                    tolerance: float = TOLERANCE) -> dict:
    """What `data inspect --json` prints."""
    import numpy as np

    from . import scan_dataset
    from .palette import load_palette
    from .pipeline import n_patches

    if patch < 1 or stride < 0:
        raise DataError("--patch-size must be >= 1 and --patch-stride >= 0")
    palette = load_palette(palette_path)
    layout, sources = scan_dataset(root, palette, tolerance)
    counts = np.sum([s.class_counts for s in sources], axis=0)
    widths, heights = [s.width for s in sources], [s.height for s in sources]
    return {
        "root": str(root),
        "layout": layout,
        "images": len(sources),
        "width_range": [min(widths), max(widths)],
        "height_range": [min(heights), max(heights)],
        "patch_size": patch,
        "patch_stride": stride or patch,
        "patches": int(sum(n_patches(s, patch, stride or patch) for s in sources)),
        "pixels": int(counts.sum()),
        "class_fractions": {n: float(c / counts.sum()) for n, c in zip(palette.names, counts)},
        "out_of_palette_pixels": int(sum(s.unknown_pixels for s in sources)),
    }


def cmd_inspect(args) -> int:
    report = inspect_dataset(args.dir, args.patch_size, args.patch_stride, args.palette, args.palette_tolerance)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    r = report
    print(f"dataset   {r['root']} ({r['layout']} layout)")
    print(f"images    {r['images']}, width {r['width_range'][0]}-{r['width_range'][1]}, "
          f"height {r['height_range'][0]}-{r['height_range'][1]} px")
    print(f"patches   {r['patches']} of {r['patch_size']}x{r['patch_size']} (stride {r['patch_stride']})")
    print("classes   " + "  ".join(f"{n} {100 * f:.1f}%" for n, f in r["class_fractions"].items()))
    if r["out_of_palette_pixels"]:
        print(f"warning   {r['out_of_palette_pixels']} pixels outside the palette, counted as the fallback class")
    return 0
