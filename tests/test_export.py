"""`export` on a tiny real trial folder (run_trial, patch 32): every format, measured by running it."""
import gzip

import numpy as np
import pytest
from artifact_helpers import read_json

from segmodel.__main__ import main


def test_export_writes_every_format_measured_by_running_it(trial, exported):
    result = read_json(exported / "export.json")
    formats = {e["format"]: e for e in result["formats"]}
    assert list(formats) == ["keras", "saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic",
                             "tflite_int8"]
    for e in formats.values():
        path = exported / e["file"]
        assert path.exists(), e
        assert 0 < e["gzip_bytes"] < e["bytes"] or e["format"] == "saved_model"
        assert 0 <= e["val_iou"] <= 1 and 0 <= e["val_accuracy"] <= 1
    data = (exported / "model_int8.tflite").read_bytes()
    assert formats["tflite_int8"]["bytes"] == len(data)
    assert formats["tflite_int8"]["gzip_bytes"] == len(gzip.compress(data, compresslevel=6))
    assert formats["tflite_int8"]["bytes"] < formats["tflite_float16"]["bytes"] < formats["tflite_float32"]["bytes"]
    assert formats["tflite_dynamic"]["bytes"] < formats["tflite_float16"]["bytes"]
    # The Keras file reproduces the trial's own evaluation; float TFLite matches it.
    trial_iou = read_json(trial / "metrics.json")["iou"]
    assert formats["keras"]["val_iou"] == pytest.approx(trial_iou, abs=1e-6)
    assert formats["tflite_float32"]["val_iou"] == pytest.approx(trial_iou, abs=1e-3)
    assert formats["keras"]["iou_delta_points"] == 0
    assert result["class_names"] and result["palette"] and result["patch_size"] == 32


def test_every_tflite_file_ran_whole_on_xnnpack_and_was_timed(exported):
    """What the runner saw while export measured each file: every node delegated, no
    fallback, so export warned about none; and images/s at both sides it timed."""
    result = read_json(exported / "export.json")
    tflite = [e for e in result["formats"] if e["format"].startswith("tflite_")]
    assert [e["format"] for e in tflite] == ["tflite_float32", "tflite_float16", "tflite_dynamic", "tflite_int8"]
    for e in tflite:
        assert e["runtime"] == "xnnpack" and e["delegated_ops"] == e["ops"] > 0, e
        assert e["delegate_error"] is None and e["not_delegated"] == [] and e["xnnpack_problems"] == []
        assert e["input_shape"] == [1, 32, 32, 3]
        assert set(e["img_s"]) == {"32px", "64px"} and all(v > 0 for v in e["img_s"].values()), e["img_s"]
    assert not [w for w in result["warnings"] if "XNNPACK" in w], result["warnings"]
    assert result["speed"]["sizes"] == ["32px", "64px"] and result["speed"]["batch"] == 1 and result["cpu"]


def test_int8_model_has_int8_input_and_float_softmax_head(exported):
    from segmodel.deploy.runners import tflite_interpreter_class
    interpreter = tflite_interpreter_class()(model_path=str(exported / "model_int8.tflite"))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.float32
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert ops[-2:] == ["DEQUANTIZE", "SOFTMAX"] and ops.count("DEQUANTIZE") == 1  # only the head is float
    # Calibrated on images in [0, 1]: about one step per pixel level, zero point at -128.
    assert 0.5 / 255 < inp["quantization"][0] < 1.5 / 255 and inp["quantization"][1] == -128
    entry = [e for e in read_json(exported / "export.json")["formats"] if e["format"] == "tflite_int8"][0]
    assert entry["input_dtype"] == "int8" and entry["input_quantization"] == pytest.approx(list(inp["quantization"]))
    assert entry["output_dtype"] == "float32" and entry["output_quantization"] is None


def test_fixed_batch_file_answers_any_batch_and_xnnpack_agrees_with_builtin(exported):
    """A batch-1 file is fed in chunks: 3 images at once give what 3 single calls give; and
    XNNPACK's int8 kernels agree with TFLite's own kernels."""
    from segmodel.deploy.runners import TFLiteRunner
    path = exported / "model_int8.tflite"
    x = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    fast, plain = TFLiteRunner(path), TFLiteRunner(path, xnnpack=False)
    assert fast.fixed_batch == 1
    together = fast.probabilities(x)
    np.testing.assert_array_equal(together, np.concatenate([fast.probabilities(x[i:i + 1]) for i in range(3)]))
    assert fast.delegation["runtime"] == "xnnpack" and plain.delegation["runtime"] == "builtin"
    # The two kernels round int8 differently by a step or so: probabilities agree within 0.02,
    # and a class differs only where the reference's two best classes are that close.
    p_fast, p_plain = fast.probabilities(x), plain.probabilities(x)
    assert np.abs(p_fast - p_plain).max() < 0.02
    top2 = np.sort(p_plain, -1)[..., -2:]
    differ = p_fast.argmax(-1) != p_plain.argmax(-1)
    assert differ.mean() < 0.05 and (top2[..., 1] - top2[..., 0])[differ].max(initial=0) < 0.04


def test_predict_runs_the_int8_file_on_xnnpack(exported, tmp_path, capsys):
    from PIL import Image
    img = tmp_path / "scene.png"
    Image.fromarray((np.random.default_rng(1).random((40, 50, 3)) * 255).astype(np.uint8)).save(img)
    assert main(["predict", str(exported / "model_int8.tflite"), str(img), "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    assert "model_int8.tflite: XNNPACK runs all" in err and "warning" not in err, err
    assert main(["predict", str(exported / "model_int8.tflite"), str(img), "--patch-size", "64",
                 "--out", str(tmp_path / "q")]) == 2
    assert "takes 32px tiles only" in capsys.readouterr().err


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no NNI experiment") and "\n" not in err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not an NNI experiment folder" in capsys.readouterr().err


@pytest.mark.parametrize("fails_at", ["allocate_tensors", "invoke"])
def test_tflite_runner_goes_on_without_xnnpack_when_the_delegate_fails(exported, monkeypatch, capsys, fails_at):
    """The XNNPACK delegate sometimes cannot be created ("failed to create XNNPACK runtime");
    here it always fails, at creation or at the first run, and the runner must still answer,
    with the same numbers as TFLite's own kernels and one line on stderr saying so."""
    from segmodel.deploy import runners
    from segmodel.deploy.runners import TFLiteRunner

    path = exported / "model_float32.tflite"
    x = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    expected = TFLiteRunner(path, xnnpack=False).probabilities(x)
    capsys.readouterr()

    real, resolver = runners.tflite_api()  # LiteRT's, or tf.lite's where LiteRT is not installed

    class BrokenDelegate(real):
        def __init__(self, *args, experimental_op_resolver_type=resolver.AUTO, **kwargs):
            super().__init__(*args, experimental_op_resolver_type=experimental_op_resolver_type, **kwargs)
            self.broken = experimental_op_resolver_type == resolver.AUTO  # AUTO = with XNNPACK

    def failing(name):
        def method(self, *args, **kwargs):
            if self.broken:
                raise RuntimeError("failed to create XNNPACK runtime\nNode number 46 (TfLiteXNNPackDelegate) failed")
            return getattr(real, name)(self, *args, **kwargs)
        return method

    monkeypatch.setattr(BrokenDelegate, fails_at, failing(fails_at))
    monkeypatch.setattr(runners, "tflite_api", lambda: (BrokenDelegate, resolver))
    runner = TFLiteRunner(path)
    got = runner.probabilities(x)
    assert not runner.xnnpack
    assert runner.delegation["runtime"] == "builtin"
    assert runner.delegation["delegate_error"].startswith("failed to create XNNPACK runtime")
    np.testing.assert_allclose(got, expected, atol=1e-5)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "XNNPACK delegate failed" in err[0] and "running without it" in err[0], err


def test_export_of_a_model_with_a_dead_layer_is_delegate_clean(trial, tmp_path):
    """The trial's model with one layer killed by hand (bias so negative that its ReLU never
    fires): export floors that layer's calibrated range, says so, and the int8 file still
    runs whole on XNNPACK, with no warning."""
    import shutil

    import keras
    dead_trial = tmp_path / "dead-trial"
    shutil.copytree(trial, dead_trial, ignore=shutil.ignore_patterns("tensorboard"))
    model = keras.models.load_model(dead_trial / "model.keras", compile=False)
    layer = model.get_layer("up2_conv2")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias - 100.0])
    model.save(dead_trial / "model.keras")
    out = tmp_path / "export"
    assert main(["export", str(dead_trial), "--out", str(out), "--formats", "tflite_int8",
                 "--calibration-samples", "8", "--speed-side", "0"]) == 0
    result = read_json(out / "export.json")
    entry = result["formats"][0]
    assert [t for t in entry["int8_floored_tensors"] if "up2_conv2" in t], entry["int8_floored_tensors"]
    assert entry["runtime"] == "xnnpack" and entry["delegated_ops"] == entry["ops"], entry
    assert entry["xnnpack_problems"] == [] and result["warnings"] == []
    assert set(entry["img_s"]) == {"32px"}
