"""Every kind of bad input: one line naming the file, exit status 2, no traceback."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segmodel.__main__ import main
from segmodel.data import load
from segmodel.data.palette import load_palette
from segmodel.errors import DataError
from segmodel.params import Params

PALETTE = load_palette("")
REPO = Path(__file__).resolve().parents[1]


def write_pair(root: Path, stem: str, h: int = 40, w: int = 36, mask_hw=None, index=None) -> tuple[Path, Path]:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    index = np.ones((h, w), np.uint8) if index is None else index
    h, w = index.shape
    mh, mw = mask_hw or (h, w)
    image, mask = root / "images" / f"{stem}.jpg", root / "masks" / f"{stem}.png"
    Image.fromarray(PALETTE.encode(index)).save(image)
    Image.fromarray(PALETTE.encode(np.resize(index, (mh, mw)))).save(mask)
    return image, mask


def inspect_error(root, capsys, *extra) -> str:
    """Run `data inspect` in-process: exit status 2 and exactly one stderr line, returned."""
    assert main(["data", "inspect", str(root), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_missing_folder(tmp_path, capsys):
    assert f"data folder not found: {tmp_path / 'nope'}" in inspect_error(tmp_path / "nope", capsys)


def test_no_pairs(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    assert f"no image/mask pairs in {tmp_path}" in inspect_error(tmp_path, capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no images/ and masks/ folders" in inspect_error(empty, capsys)
    (tmp_path / "images").rmdir()
    assert f"missing folder {tmp_path / 'images'}" in inspect_error(tmp_path, capsys)
    unzipped = tmp_path / "download"
    write_pair(unzipped / "Semantic segmentation dataset" / "Tile 1", "a")  # pointed one folder too high
    assert f"found them one level down, in {unzipped / 'Semantic segmentation dataset'}" in inspect_error(unzipped, capsys)


def test_image_without_mask_and_mask_without_image(tmp_path, capsys):
    write_pair(tmp_path, "a")
    image, mask = write_pair(tmp_path, "b")
    mask.unlink()
    assert f"image without mask: {image}" in inspect_error(tmp_path, capsys)
    image.unlink()
    _, orphan = write_pair(tmp_path, "c")
    (tmp_path / "images" / "c.jpg").unlink()
    assert f"mask without image: {orphan}" in inspect_error(tmp_path, capsys)


def test_unreadable_and_truncated_files(tmp_path, capsys):
    write_pair(tmp_path, "a")
    image, mask = write_pair(tmp_path, "b", 120, 120)
    image.write_bytes(b"this is not a jpeg")
    assert f"unreadable image {image}" in inspect_error(tmp_path, capsys)
    write_pair(tmp_path, "b", 120, 120)
    mask.write_bytes(mask.read_bytes()[: mask.stat().st_size // 2])  # truncated PNG
    assert f"unreadable mask {mask}" in inspect_error(tmp_path, capsys)
    write_pair(tmp_path, "b", 120, 120)
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])  # truncated JPEG
    assert f"unreadable image {image}" in inspect_error(tmp_path, capsys)


def test_size_mismatch(tmp_path, capsys):
    image, mask = write_pair(tmp_path, "a", 40, 36, mask_hw=(40, 35))
    err = inspect_error(tmp_path, capsys)
    assert f"size mismatch: image {image} is 36x40 but mask {mask} is 35x40" in err


def test_out_of_palette_above_tolerance_fails_with_counts_and_colours(tmp_path, capsys):
    index = np.ones((50, 40), np.uint8)
    _, mask = write_pair(tmp_path, "a", index=index)
    rgb = PALETTE.encode(index)
    rgb[:2, :3] = (255, 0, 0)   # 6 px
    rgb[10, 10] = (1, 2, 3)     # 1 px: 7 of 2000 = 0.35% > 0.1%
    Image.fromarray(rgb).save(mask)
    err = inspect_error(tmp_path, capsys)
    assert f"mask {mask}: 7 of 2000 pixels (0.35%) are outside the palette" in err
    assert "#FF0000 x6, #010203 x1" in err
    # A higher tolerance accepts it, counting the stray pixels as Unlabeled.
    assert main(["data", "inspect", str(tmp_path), "--patch-size", "16", "--json",
                 "--palette-tolerance", "0.01"]) == 0


def test_out_of_palette_below_tolerance_maps_to_unlabeled_with_warning(tmp_path, caplog):
    index = np.ones((100, 40), np.uint8)
    for stem in ("a", "b"):
        _, mask = write_pair(tmp_path, stem, index=index)
    rgb = PALETTE.encode(index)
    rgb[5, 5] = (255, 0, 0)  # 1 of 4000 px = 0.025%
    Image.fromarray(rgb).save(mask)
    with caplog.at_level(logging.WARNING, logger="segmodel.data"):
        splits = load(Params(data_dir=str(tmp_path), patch_size=16, batch_size=64).validate())
    assert "1 pixels in 1 mask(s) have colours outside the palette and were mapped to Unlabeled" in caplog.text
    assert str(mask) in caplog.text
    labels = np.concatenate([y.numpy().argmax(-1).ravel() for ds in (splits.train, splits.val) for _, y in ds])
    assert (labels == 5).sum() == 1 and (labels == 1).sum() == labels.size - 1


def test_index_mask_values_out_of_range(tmp_path, capsys):
    write_pair(tmp_path, "a")
    index = np.full((40, 36), 2, np.uint8)
    index[0, :10] = 9
    Image.fromarray(index, "L").save(tmp_path / "masks" / "a.png")
    assert "are outside the palette (class index 9 x10)" in inspect_error(tmp_path, capsys)


def test_bad_palette_file(tmp_path, capsys):
    write_pair(tmp_path, "a")
    bad = tmp_path / "palette.json"
    bad.write_text('{"Building": "#12345"}')
    assert f"palette {bad}: class 'Building': '#12345' is not a hex colour" in inspect_error(tmp_path, capsys,
                                                                                          "--palette", str(bad))
    bad.write_text("{oops")
    assert f"palette: {bad} is not valid JSON" in inspect_error(tmp_path, capsys, "--palette", str(bad))


def test_too_few_images_to_split(tmp_path):
    write_pair(tmp_path, "a", 40, 40)
    write_pair(tmp_path, "b", 20, 40)  # smaller than one patch
    with pytest.raises(DataError, match="need at least 2 images with a full 32x32 patch"):
        load(Params(data_dir=str(tmp_path), patch_size=32).validate())


def _run(*args, env=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "SEGMODEL_NO_REEXEC": "1", **(env or {})})


def test_cli_subprocess_exit_status(tmp_path):
    r = _run("-m", "segmodel", "data", "inspect", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.strip() == f"error: data folder not found: {tmp_path / 'missing'}"
    image, _ = write_pair(tmp_path, "a", 40, 36, mask_hw=(41, 36))
    r = _run("-m", "segmodel", "data", "inspect", str(tmp_path), "--json")
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: size mismatch: image {image}")


def test_trial_with_bad_data_dir_fails_with_status_2(tmp_path):
    """What NNI sees: the trial process exits 2 (FAILED) with the message, it does not hang."""
    r = _run("trial.py", "--output_dir", str(tmp_path / "out"), "--epochs", "1",
             env={"SEGMODEL_DATA_DIR": str(tmp_path / "nowhere")})
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"error: data folder not found: {tmp_path / 'nowhere'}" in r.stderr.splitlines()
    assert "Traceback" not in r.stderr
