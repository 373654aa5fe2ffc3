"""`predict` tiles images of any size through .keras and int8 .tflite models."""
import numpy as np
import pytest
from PIL import Image

from segmodel.__main__ import main
from segmodel.deploy.predict import stitch, tile


@pytest.mark.parametrize("h,w", [(32, 32), (70, 45), (5, 100)])
def test_tile_and_stitch_round_trip(h, w):
    image = np.random.default_rng(0).random((h, w, 3)).astype(np.float32)
    tiles, grid = tile(image, 32)
    assert tiles.shape[1:] == (32, 32, 3) and len(tiles) == grid[0] * grid[1]
    np.testing.assert_array_equal(stitch(tiles[..., 0], grid, (h, w)), image[..., 0])


def test_predict_colours_any_size_image_with_keras_and_tflite(exported, tmp_path, capsys):
    rng = np.random.default_rng(1)
    img = tmp_path / "scene.png"
    Image.fromarray((rng.random((75, 101, 3)) * 255).astype(np.uint8)).save(img)
    masks = {}
    for model in ("model.keras", "model_int8.tflite"):
        out = tmp_path / model
        assert main(["predict", str(exported / model), str(img), "--out", str(out)]) == 0
        assert "tiles of 32px" in capsys.readouterr().out
        mask = Image.open(out / "scene_mask.png")
        assert mask.mode == "P" and mask.size == (101, 75)
        overlay = Image.open(out / "scene_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == (101, 75)
        masks[model] = np.asarray(mask)
        assert masks[model].max() < 6
        palette = mask.getpalette()[:6 * 3]
        assert palette[:3] == [0x3C, 0x10, 0x98]  # Building, from export.json's palette
    agreement = (masks["model.keras"] == masks["model_int8.tflite"]).mean()
    assert agreement > 0.8, agreement


def test_predict_errors_are_one_line(exported, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.keras"), str(tmp_path / "x.png"), "--out", str(tmp_path)]) == 2
    assert "no such image" in capsys.readouterr().err
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(img)
    assert main(["predict", str(tmp_path / "missing.keras"), str(img), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: no such model file: {tmp_path / 'missing.keras'}"
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    assert main(["predict", str(bad), str(img), "--out", str(tmp_path)]) == 2
    assert "not a TFLite model" in capsys.readouterr().err
