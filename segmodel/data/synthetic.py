"""Procedural aerial scenes, written in the Dubai layout so one reader serves both.

Each scene: textured sandy land; sometimes a coast or lake with an irregular shore;
a rotated street grid with dashed centre markings; rows of buildings as rotated
rectangles along the streets, with roof colours (some close to sand or asphalt) and
cast shadows; parks and street trees with leaf texture; a few unlabeled blobs
(construction sites). Class frequencies are imbalanced as in real imagery (land
dominates, unlabeled is rare), colours overlap between classes, and every scene has
its own light and colour cast, so the model has to use texture and shape and
class weights matter. numpy + Pillow only; deterministic by seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .palette import load_palette

BUILDING, LAND, ROAD, VEGETATION, WATER, UNLABELED = range(6)

ROOFS = np.array([(236, 234, 228), (205, 190, 160), (178, 92, 64), (150, 150, 155), (120, 130, 150),
                  (222, 206, 176), (96, 96, 100), (190, 170, 120)], dtype=np.float32)


@dataclass(frozen=True)
class SynthSpec:
    """How big a synthetic dataset is. Sizes are per tile (as in the Dubai set, where all
    images of one tile share a size) and deliberately not multiples of any patch size."""
    tiles: int = 6
    images_per_tile: int = 2
    min_size: int = 380
    max_size: int = 520
    seed: int = 0

    @property
    def name(self) -> str:
        return f"t{self.tiles}x{self.images_per_tile}-s{self.min_size}-{self.max_size}-seed{self.seed}"


def _noise(rng, h, w, scale, octaves=3) -> np.ndarray:
    """Fractal value noise in [0, 1]: random grids upsampled bicubically, halving the scale per octave."""
    total = np.zeros((h, w), np.float32)
    amp, norm = 1.0, 0.0
    for _ in range(octaves):
        s = max(1, int(scale))
        grid = rng.random((h // s + 3, w // s + 3)).astype(np.float32)
        up = Image.fromarray(grid, "F").resize(((w // s + 3) * s, (h // s + 3) * s), Image.BICUBIC)
        total += amp * np.asarray(up)[s:s + h, s:s + w]
        norm += amp
        amp, scale = amp * 0.5, scale / 2
    total /= norm
    lo, hi = total.min(), total.max()
    return (total - lo) / (hi - lo + 1e-6)


def _rect(cx, cy, w, h, angle) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + c * x - s * y, cy + s * x + c * y) for x, y in ((-w / 2, -h / 2), (w / 2, -h / 2),
                                                                  (w / 2, h / 2), (-w / 2, h / 2))]


def scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One aerial-looking image (H, W, 3) uint8 and its class-index map (H, W) uint8."""
    label = np.full((h, w), LAND, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # Water: a coast along a random direction, or a lake; the shore is a noisy level set.
    if rng.random() < 0.75:
        a = rng.uniform(0, 2 * math.pi)
        ramp = (xx * math.cos(a) + yy * math.sin(a)) / max(h, w)
        ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min() + 1e-6)
        field = ramp + 0.45 * _noise(rng, h, w, 90)
        label[field > np.quantile(field, 1 - rng.uniform(0.08, 0.3))] = WATER
    # Unlabeled: one or two irregular blobs (construction sites, haze).
    for _ in range(rng.integers(1, 3)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.11) * min(h, w)
        blob = np.hypot(yy - cy, xx - cx) / r + 0.8 * _noise(rng, h, w, 25, 2)
        label[(blob < 1.2) & (label == LAND)] = UNLABELED
    # Parks: noise patches on land.
    parks = _noise(rng, h, w, 60)
    label[(parks > np.quantile(parks, 1 - rng.uniform(0.04, 0.1))) & (label == LAND)] = VEGETATION

    # Streets: a rotated grid of main roads plus short side streets.
    theta = rng.uniform(0, math.pi / 2)
    d, n = np.array([math.cos(theta), math.sin(theta)]), np.array([-math.sin(theta), math.cos(theta)])
    roads = Image.new("L", (w, h), 0)
    marks = Image.new("L", (w, h), 0)
    draw_r, draw_m = ImageDraw.Draw(roads), ImageDraw.Draw(marks)
    segments = []  # (p0, p1, width, direction, normal)
    centre, far = np.array([w / 2, h / 2]), 2 * max(h, w)
    for axis_d, axis_n in ((d, n), (n, d)):
        spacing = rng.uniform(0.28, 0.45) * max(h, w)
        for k in np.arange(-3, 4) * spacing + rng.uniform(0, spacing):
            p = centre + axis_n * k
            width = int(rng.integers(9, 18))
            segments.append((p - axis_d * far, p + axis_d * far, width, axis_d, axis_n))
    for _ in range(int(rng.integers(3, 7))):  # side streets
        p = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        axis_d, axis_n = (d, n) if rng.random() < 0.5 else (n, d)
        length = rng.uniform(0.15, 0.4) * max(h, w)
        segments.append((p, p + axis_d * length, int(rng.integers(5, 9)), axis_d, axis_n))
    for p0, p1, width, axis_d, _ in segments:
        draw_r.line([tuple(p0), tuple(p1)], fill=255, width=width)
        if width >= 9:  # dashed centre line on main roads
            length = np.linalg.norm(p1 - p0)
            for t in np.arange(0, length, 22):
                a, b = p0 + axis_d * t, p0 + axis_d * min(t + 11, length)
                draw_m.line([tuple(a), tuple(b)], fill=255, width=2)
    road = np.asarray(roads) > 0
    label[road & (label != WATER)] = ROAD

    # Buildings: rows along the streets, aligned with them, plus some scattered ones.
    lab_img = Image.fromarray(label)
    draw_l = ImageDraw.Draw(lab_img)
    shadows = Image.new("L", (w, h), 0)
    draw_s = ImageDraw.Draw(shadows)
    sun = rng.uniform(0, 2 * math.pi)
    roof_layer = Image.new("RGB", (w, h), (0, 0, 0))
    draw_roof = ImageDraw.Draw(roof_layer)
    target = rng.uniform(0.12, 0.22) * h * w
    built, tries = 0.0, 0
    while built < target and tries < 1500:
        tries += 1
        bw, bh = rng.uniform(12, 46), rng.uniform(12, 40)
        p0, p1, width, axis_d, axis_n = segments[rng.integers(len(segments))]
        t = rng.uniform(0, 1)
        side = 1 if rng.random() < 0.5 else -1
        gap = width / 2 + rng.uniform(3, 10) + bh / 2
        c = p0 + (p1 - p0) * t + axis_n * side * gap
        if rng.random() < 0.15:
            c = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        ang = math.atan2(axis_d[1], axis_d[0]) + rng.normal(0, 0.05)
        poly = _rect(c[0], c[1], bw, bh, ang)
        pts = poly + [tuple(c)]
        if not all(0 <= x < w and 0 <= y < h for x, y in pts):
            continue
        if any(label[int(y), int(x)] != LAND for x, y in pts):
            continue
        shade = rng.uniform(4, 10)
        draw_s.polygon([(x + shade * math.cos(sun), y + shade * math.sin(sun)) for x, y in poly], fill=255)
        roof = ROOFS[rng.integers(len(ROOFS))] * rng.uniform(0.85, 1.1)
        draw_roof.polygon(poly, fill=tuple(int(v) for v in roof.clip(0, 255)))
        draw_l.polygon(poly, fill=BUILDING)
        if rng.random() < 0.4:  # roof ridge
            a, b = _rect(c[0], c[1], bw * 0.8, 0, ang)[:2]
            draw_roof.line([a, b], fill=tuple(int(v) for v in (roof * 0.75).clip(0, 255)), width=2)
        label = np.asarray(lab_img)  # keep the overlap test current
        built += bw * bh
    label = np.array(lab_img)
    # Street trees: small crowns on land beside roads.
    trees = Image.new("L", (w, h), 0)
    draw_t = ImageDraw.Draw(trees)
    for p0, p1, width, axis_d, axis_n in segments:
        length = np.linalg.norm(p1 - p0)
        for t in np.arange(rng.uniform(0, 30), length, rng.uniform(18, 40)):
            r = rng.uniform(3, 7)
            c = p0 + axis_d * t + axis_n * (width / 2 + r + 1) * (1 if rng.random() < 0.5 else -1)
            if 0 <= c[0] < w and 0 <= c[1] < h and label[int(c[1]), int(c[0])] == LAND:
                draw_t.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=255)
    label[(np.asarray(trees) > 0) & (label == LAND)] = VEGETATION

    image = _render(rng, label, road, np.asarray(marks) > 0, np.asarray(shadows) > 0,
                    np.asarray(roof_layer, dtype=np.float32), h, w)
    return image, label


def _render(rng, label, road, marks, shadow, roofs, h, w) -> np.ndarray:
    """Paint each class with its own texture, then shadows, light, blur and sensor noise."""
    img = np.zeros((h, w, 3), np.float32)
    low, mid, fine = _noise(rng, h, w, 120), _noise(rng, h, w, 12, 2), rng.random((h, w)).astype(np.float32)
    sand = np.array([204, 178, 136]) * rng.uniform(0.85, 1.08, 3)
    img[:] = sand * (0.82 + 0.25 * low[..., None]) + 14 * (mid[..., None] - 0.5) + 10 * (fine[..., None] - 0.5)
    water = label == WATER
    sea = np.array([38, 92, 118]) * rng.uniform(0.8, 1.25, 3)
    ripple = _noise(rng, h, w, 6, 2)
    img[water] = (sea * (0.85 + 0.3 * low[..., None]) + 12 * (ripple[..., None] - 0.5))[water]
    asphalt = np.array([92, 92, 98]) * rng.uniform(0.85, 1.25)
    on_road = label == ROAD
    img[on_road] = (asphalt + 18 * (fine[..., None] - 0.5) + 10 * (mid[..., None] - 0.5))[on_road]
    img[on_road & marks] = (235, 232, 220)
    veg = label == VEGETATION
    leaf = _noise(rng, h, w, 4, 2)
    green = np.array([64, 112, 52]) * rng.uniform(0.75, 1.2, 3)
    img[veg] = (green * (0.65 + 0.6 * leaf[..., None]) + 8 * (fine[..., None] - 0.5))[veg]
    unl = label == UNLABELED
    site = _noise(rng, h, w, 5, 2)
    img[unl] = (np.array([150, 146, 138]) * (0.7 + 0.55 * site[..., None]) + 25 * (fine[..., None] - 0.5))[unl]
    bld = label == BUILDING
    img[bld] = (roofs + 10 * (fine[..., None] - 0.5))[bld]
    img[shadow & ~bld] *= 0.55
    img = img * rng.uniform(0.85, 1.12) * rng.uniform(0.94, 1.06, 3)
    out = Image.fromarray(img.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7))
    noisy = np.asarray(out, np.float32) + rng.normal(0, 3, (h, w, 3))
    return noisy.clip(0, 255).astype(np.uint8)


def write_dataset(root: str | Path, spec: SynthSpec = SynthSpec()) -> Path:
    """Write spec.tiles x spec.images_per_tile scenes as <root>/Tile N/{images/*.jpg, masks/*.png}."""
    root = Path(root)
    palette = load_palette("")
    for tile in range(1, spec.tiles + 1):
        size_rng = np.random.default_rng([spec.seed, tile])
        h, w = (int(v) for v in size_rng.integers(spec.min_size, spec.max_size + 1, 2))
        for k in range(1, spec.images_per_tile + 1):
            image, label = scene(np.random.default_rng([spec.seed, tile, k]), h, w)
            for sub in ("images", "masks"):
                (root / f"Tile {tile}" / sub).mkdir(parents=True, exist_ok=True)
            stem = f"image_part_{k:03d}"
            Image.fromarray(image).save(root / f"Tile {tile}" / "images" / f"{stem}.jpg", quality=90)
            Image.fromarray(palette.encode(label)).save(root / f"Tile {tile}" / "masks" / f"{stem}.png")
    return root
