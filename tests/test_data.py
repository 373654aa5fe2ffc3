"""Reading a Dubai-layout dataset exactly: classes, patch counts, split, inspect, augmentation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segmodel.data import load, scan_dataset
from segmodel.data.cli import inspect_dataset
from segmodel.data.palette import load_palette
from segmodel.data.pipeline import cut
from segmodel.params import Params

PALETTE = load_palette("")
# Tile -> (height, width, images); none of the sizes is a multiple of 32.
TILES = {1: (45, 70, 2), 2: (67, 100, 1), 3: (33, 50, 1)}


def class_map(h: int, w: int, seed: int) -> np.ndarray:
    """Blocks of random classes (8 px), so every patch holds several classes."""
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 6, (h // 8 + 1, w // 8 + 1)), np.ones((8, 8), int))[:h, :w].astype(np.uint8)


def write_dubai(root: Path) -> dict[str, np.ndarray]:
    """JPEG images (lossy, like the real set) and palette-coloured PNG masks (RGB, and one
    palette-mode PNG); returns image path -> class map."""
    truth = {}
    for tile, (h, w, n) in TILES.items():
        for k in range(1, n + 1):
            index = class_map(h, w, tile * 10 + k)
            for sub in ("images", "masks"):
                (root / f"Tile {tile}" / sub).mkdir(parents=True, exist_ok=True)
            stem = f"image_part_{k:03d}"
            img = PALETTE.encode(index).astype(np.int16) + np.random.default_rng(k).integers(-9, 9, (h, w, 3))
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / f"Tile {tile}/images/{stem}.jpg")
            if tile == 3:  # a palette-mode PNG: 8-bit indices plus a colour table, decoded via the colours
                mask = Image.fromarray((5 - index).astype(np.uint8), "P")  # table order != class order
                mask.putpalette(PALETTE.colors[::-1].ravel().tolist())
                mask.save(root / f"Tile {tile}/masks/{stem}.png")
            else:
                Image.fromarray(PALETTE.encode(index)).save(root / f"Tile {tile}/masks/{stem}.png")
            truth[str(root / f"Tile {tile}/images/{stem}.jpg")] = index
    (root / "classes.json").write_text("{}")  # as in the real dataset; ignored
    return truth


@pytest.fixture(scope="module")
def dubai(tmp_path_factory):
    root = tmp_path_factory.mktemp("dubai")
    return root, write_dubai(root)


def params(root, **kw) -> Params:
    return Params(data_dir=str(root), patch_size=32, batch_size=3, val_fraction=0.25, **kw).validate()


def patches_of(dataset) -> tuple[list[bytes], list[np.ndarray]]:
    keys, images = [], []
    for x, y in dataset:
        assert x.dtype.name == "float32" and y.dtype.name == "float32"
        assert float(x.numpy().min()) >= 0.0 and float(x.numpy().max()) <= 1.0
        np.testing.assert_array_equal(y.numpy().sum(-1), 1.0)  # one-hot
        for m, img in zip(y.numpy().argmax(-1).astype(np.uint8), x.numpy()):
            keys.append(m.tobytes())
            images.append(img)
    return keys, images


def expected(truth, images, patch=32, stride=32) -> list[bytes]:
    return [p.tobytes() for path in images for p in cut(truth[path], patch, stride)]


def test_dubai_layout_classes_and_patch_counts(dubai):
    root, truth = dubai
    splits = load(params(root))
    # 2 + 2 (Tile 1: 1x2 each) + 6 (Tile 2: 2x3) + 1 (Tile 3) = 11 patches of 32 px.
    assert splits.n_train + splits.n_val == 11
    assert len(splits.train_images) == 3 and len(splits.val_images) == 1
    assert not set(splits.train_images) & set(splits.val_images)  # split by source image
    assert splits.class_names == ("Building", "Land", "Road", "Vegetation", "Water", "Unlabeled")
    for dataset, images, n in ((splits.val, splits.val_images, splits.n_val),
                               (splits.train, splits.train_images, splits.n_train)):
        keys, _ = patches_of(dataset)
        assert len(keys) == n
        assert sorted(keys) == sorted(expected(truth, images))  # exact classes, every pixel


def test_pixels_scaled_and_aligned_with_masks(dubai):
    root, truth = dubai
    splits = load(params(root))
    _, images = patches_of(splits.val)
    path = splits.val_images[0]
    jpeg = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
    np.testing.assert_allclose(images[0], jpeg[:32, :32], atol=1e-6)  # top-left patch first


def test_stride_and_split_are_deterministic(dubai):
    root, truth = dubai
    a = load(params(root, patch_stride=16, seed=3))
    b = load(params(root, patch_stride=16, seed=3))
    assert a.train_images == b.train_images and a.val_images == b.val_images
    # Tile 1 (45x70): 1x3 windows; Tile 2 (67x100): 3x5; Tile 3 (33x50): 1x2; validation never overlaps.
    per_image = {1: 3, 2: 15, 3: 2}
    tile = lambda p: int(Path(p).parts[-3].split()[-1])  # noqa: E731
    assert a.n_train == sum(per_image[tile(p)] for p in a.train_images)
    assert a.n_val == sum(len(cut(truth[p], 32, 32)) for p in a.val_images)
    first = [k for k, _ in zip(patches_of(a.train)[0], range(5))]
    assert first == [k for k, _ in zip(patches_of(b.train)[0], range(5))]  # same shuffle for one seed
    splits = {load(params(root, seed=s)).val_images for s in range(6)}
    assert len(splits) > 1  # the seed moves the split


def test_streaming_without_cache_gives_same_patches(dubai, monkeypatch):
    root, truth = dubai
    monkeypatch.setenv("SEGMODEL_DATA_CACHE_MB", "0")
    splits = load(params(root))
    keys, _ = patches_of(splits.train)
    assert sorted(keys) == sorted(expected(truth, splits.train_images))


def test_inspect_json_agrees_with_pixels(dubai, capsys):
    from segmodel.__main__ import main

    root, truth = dubai
    assert main(["data", "inspect", str(root), "--patch-size", "32", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    counts = np.bincount(np.concatenate([t.ravel() for t in truth.values()]), minlength=6)
    assert report["images"] == 4
    assert report["patches"] == 11
    assert report["width_range"] == [50, 100] and report["height_range"] == [33, 67]
    for name, n in zip(PALETTE.names, counts):
        assert report["class_fractions"][name] == pytest.approx(n / counts.sum(), abs=1e-12)
    assert main(["data", "inspect", str(root), "--patch-size", "16"]) == 0
    assert "patches   " in capsys.readouterr().out


def test_flat_layout_index_masks_and_augmentation_keeps_alignment(tmp_path):
    """PNG images whose colour encodes the class: after flips/rotations the mask must still match."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(3):
        index = class_map(40 + 9 * k, 37 + 5 * k, k)
        Image.fromarray(PALETTE.encode(index)).save(tmp_path / f"images/a{k}.png")
        Image.fromarray(index, "L").save(tmp_path / f"masks/a{k}.png")  # class-index PNG
    splits = load(Params(data_dir=str(tmp_path), patch_size=16, batch_size=4, augment=True,
                         val_fraction=0.3).validate())
    layout, sources = scan_dataset(tmp_path, PALETTE)
    assert layout == "flat" and len(sources) == 3
    n = 0
    for x, y in splits.train:
        colours = (x.numpy() * 255).round().astype(np.uint8)
        decoded, unknown = PALETTE.decode(colours)
        assert not unknown.any()
        np.testing.assert_array_equal(decoded, y.numpy().argmax(-1))
        n += len(x)
    assert n == splits.n_train


def test_custom_palette_json(tmp_path):
    colours = {"Building": "#FF0000", "Land": "#00FF00", "Road": "#0000FF",
               "Vegetation": "#FFFF00", "Water": "#00FFFF", "Unlabeled": "#000000"}
    pal_file = tmp_path / "palette.json"
    pal_file.write_text(json.dumps(colours))
    palette = load_palette(str(pal_file))
    index = class_map(48, 48, 1)
    for sub in ("images", "masks"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    for k in range(2):
        Image.fromarray(palette.encode(index)).save(tmp_path / f"d/images/{k}.png")
        Image.fromarray(palette.encode(index)).save(tmp_path / f"d/masks/{k}.png")
    report = inspect_dataset(tmp_path / "d", 16, palette_path=str(pal_file))
    counts = np.bincount(index.ravel(), minlength=6)
    assert report["class_fractions"]["Road"] == pytest.approx(counts[2] / counts.sum())
    assert report["out_of_palette_pixels"] == 0
