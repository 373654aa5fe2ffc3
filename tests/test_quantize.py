"""TFLite files XNNPACK runs whole (segmodel/deploy/quantize.py), checked from the runner's
view of the interpreter's graph: static shapes, and a dead layer's degenerate scale."""
import keras
import numpy as np
import pytest

from segmodel.deploy.quantize import (
    convert,
    int8,
    requant_scales,
    short_name,
    static_saved_model,
)
from segmodel.deploy.runners import TFLiteRunner
from segmodel.deploy.speed import delegate_note
from segmodel.model import multi_unet_model

SIDE = 32
DEAD = "up2_conv2"


def _images(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return lambda: (rng.random((SIDE, SIDE, 3), dtype=np.float32) for _ in range(n))


@pytest.fixture(scope="module")
def dead_model():
    """The U-Net with one dead layer: its bias so negative that its ReLU is 0 on every input
    in [0, 1] (a trained model's dead layer, made by hand)."""
    keras.utils.set_random_seed(0)
    model = multi_unet_model(n_classes=6, IMG_HEIGHT=SIDE, IMG_WIDTH=SIDE)
    layer = model.get_layer(DEAD)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias - 100.0])
    dead = keras.Model(model.input, layer.output)(np.random.default_rng(1).random((4, SIDE, SIDE, 3)))
    assert float(np.max(dead)) == 0.0
    return model


@pytest.fixture(scope="module")
def saved(dead_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dead") / "saved"
    return folder, static_saved_model(dead_model, folder)


def test_a_dead_layer_makes_xnnpack_refuse_the_plain_int8_file_and_is_named(saved, capsys):
    """Without the floor (the converter's own calibration): XNNPACK refuses the dead conv,
    the runner falls back to TFLite's kernels, and the one line names node and tensor."""
    folder, shape = saved
    plain = int8(folder, _images(), shape, floor=False)
    scales = requant_scales(plain.content)
    assert [DEAD in short_name(r.output) for r in scales] == [True] and scales[0].scale >= 256
    runner = TFLiteRunner(plain.content)
    runner.probabilities(np.zeros((1, SIDE, SIDE, 3), np.float32))
    d = runner.delegation
    assert d["runtime"] == "builtin" and "XNNPACK" in d["delegate_error"]
    note = delegate_note("model_int8.tflite", d, plain.problems)
    assert "\n" not in note and "built-in kernels" in note and DEAD in note and "requantization scale" in note
    assert "XNNPACK delegate failed" in capsys.readouterr().err


def test_a_dead_layer_is_exported_delegate_clean_and_still_outputs_exactly_zero(saved):
    folder, shape = saved
    fixed = int8(folder, _images(), shape)
    assert [DEAD in short_name(t) for t in fixed.floored] == [True] and fixed.problems == []
    assert requant_scales(fixed.content, over=64.01) == []
    runner = TFLiteRunner(fixed.content)
    x = np.stack(list(_images()()))
    fast = runner.probabilities(x)
    d = runner.delegation
    assert d["runtime"] == "xnnpack" and d["delegated_ops"] == d["ops"] and d["delegate_error"] is None
    assert delegate_note("model_int8.tflite", d) is None
    # On the calibration images the floored layer's int8 output is its zero point: exactly 0.0, as in float.
    from segmodel.deploy.runners import tflite_api
    Interpreter, resolver = tflite_api()
    interp = Interpreter(model_content=fixed.content, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    dead = next(t for t in interp.get_tensor_details() if t["name"] == fixed.floored[0])
    for img in x:
        scale, zero = inp["quantization"]
        interp.set_tensor(inp["index"], np.clip(np.round(img[None] / scale + zero), -128, 127).astype(np.int8))
        interp.invoke()
        assert np.all(interp.get_tensor(dead["index"]) == dead["quantization"][1])
    plain = TFLiteRunner(fixed.content, xnnpack=False).probabilities(x)
    assert np.abs(fast - plain).max() < 0.02  # XNNPACK's and TFLite's int8 kernels round differently


def test_static_shapes_let_xnnpack_take_the_transpose_convs(dead_model, tmp_path):
    """Fixed input shape: no SHAPE ops, every node delegated. The same model converted with a
    free batch computes the transpose convs' output shapes at run time, and the runner says
    which nodes XNNPACK left out."""
    import tensorflow as tf
    keras.utils.set_random_seed(0)
    model = multi_unet_model(n_classes=6, IMG_HEIGHT=SIDE, IMG_WIDTH=SIDE)
    fixed = convert(model, ["float32"])["float32"]
    assert fixed.shape == (1, SIDE, SIDE, 3)
    runner = TFLiteRunner(fixed.content)
    assert list(runner.input["shape_signature"]) == [1, SIDE, SIDE, 3]
    ops = [op["op_name"] for op in runner.interpreter._get_ops_details()]
    assert "SHAPE" not in ops and ops.count("TRANSPOSE_CONV") == 4
    runner.probabilities(np.zeros((2, SIDE, SIDE, 3), np.float32))
    assert runner.delegation["runtime"] == "xnnpack"

    model.export(str(tmp_path / "free"), format="tf_saved_model", verbose=False)
    free = TFLiteRunner(tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "free")).convert())
    free.probabilities(np.zeros((2, SIDE, SIDE, 3), np.float32))
    d = free.delegation
    assert d["runtime"] == "xnnpack partial" and 0 < d["delegated_ops"] < d["ops"]
    left = {name.split()[0] for name in d["not_delegated"]}
    assert {"SHAPE", "TRANSPOSE_CONV"} <= left
    note = delegate_note("m.tflite", d)
    assert "\n" not in note and "TRANSPOSE_CONV" in note and f"{d['delegated_ops']} of {d['ops']}" in note
