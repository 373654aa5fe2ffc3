"""Per-trial artifacts and `export` on a tiny real trial folder (run_trial, patch 32)."""
import gzip

import numpy as np
import pytest

from artifact_helpers import read_json
from segmodel.__main__ import main


def test_trial_writes_plots_history_and_tensorboard(trial):
    for name in ("metrics.json", "params.json", "history.csv", "model.keras",
                 "iou_vs_epoch.png", "loss_vs_epoch.png", "pr_curves.png", "predictions.png"):
        path = trial / name
        assert path.is_file() and path.stat().st_size > 0, name
    assert (trial / "iou_vs_epoch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (trial / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,phase,") and "val_mean_iou" in lines[0] and "val_loss" in lines[0]
    assert [ln.split(",")[1] for ln in lines[1:]] == ["dense", "finetune"]
    for run in ("train", "validation"):
        assert list((trial / "tensorboard" / run).glob("events.out.tfevents.*")), run


def test_precision_recall_matches_sklearn():
    from sklearn.metrics import average_precision_score

    from segmodel.artifacts import precision_recall
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.3
    score = np.round(np.clip(y * 0.3 + rng.random(2000) * 0.7, 0, 1), 2)  # ties on purpose
    precision, recall, ap = precision_recall(y, score)
    assert ap == pytest.approx(average_precision_score(y, score), abs=1e-9)
    assert recall[-1] == pytest.approx(1.0) and np.all(np.diff(recall) >= 0)


def test_tensorboard_dir_links_where_nni_button_looks(tmp_path, monkeypatch):
    from segmodel import nni_bridge
    out = tmp_path / "exp42" / "environments" / "local-env" / "trials" / "AbCdE"
    out.mkdir(parents=True)
    monkeypatch.setenv("NNI_PLATFORM", "local")
    monkeypatch.setenv("NNI_OUTPUT_DIR", str(out))
    monkeypatch.setenv("NNI_TRIAL_JOB_ID", "AbCdE")
    monkeypatch.setenv("NNI_EXP_ID", "exp42")
    logs = nni_bridge.tensorboard_dir(out)
    button = tmp_path / "exp42" / "trials" / "AbCdE" / "output" / "tensorboard"
    assert button.resolve() == (out / "tensorboard").resolve() == type(button)(logs)


def test_export_writes_every_format_measured_by_running_it(trial, exported):
    result = read_json(exported / "export.json")
    formats = {e["format"]: e for e in result["formats"]}
    assert list(formats) == ["keras", "saved_model", "tflite_float32", "tflite_float16", "tflite_int8"]
    for e in formats.values():
        path = exported / e["file"]
        assert path.exists(), e
        assert 0 < e["gzip_bytes"] < e["bytes"] or e["format"] == "saved_model"
        assert 0 <= e["val_iou"] <= 1 and 0 <= e["val_accuracy"] <= 1
    data = (exported / "model_int8.tflite").read_bytes()
    assert formats["tflite_int8"]["bytes"] == len(data)
    assert formats["tflite_int8"]["gzip_bytes"] == len(gzip.compress(data, compresslevel=6))
    assert formats["tflite_int8"]["bytes"] < formats["tflite_float16"]["bytes"] < formats["tflite_float32"]["bytes"]
    # The Keras file reproduces the trial's own evaluation; float TFLite matches it.
    trial_iou = read_json(trial / "metrics.json")["iou"]
    assert formats["keras"]["val_iou"] == pytest.approx(trial_iou, abs=1e-6)
    assert formats["tflite_float32"]["val_iou"] == pytest.approx(trial_iou, abs=1e-3)
    assert formats["keras"]["iou_delta_points"] == 0
    assert result["class_names"] and result["palette"] and result["patch_size"] == 32


def test_int8_model_is_full_integer_and_runs_in_tflite_interpreter(exported):
    from segmodel.inference import tflite_interpreter_class
    interpreter = tflite_interpreter_class()(model_path=str(exported / "model_int8.tflite"))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    # Calibrated on images in [0, 1]: about one step per pixel level, zero point at -128.
    assert 0.5 / 255 < inp["quantization"][0] < 1.5 / 255 and inp["quantization"][1] == -128
    entry = [e for e in read_json(exported / "export.json")["formats"] if e["format"] == "tflite_int8"][0]
    assert entry["input_dtype"] == "int8" and entry["input_quantization"] == pytest.approx(list(inp["quantization"]))


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
    from segmodel import inference
    from segmodel.inference import TFLiteRunner

    path = exported / "model_float32.tflite"
    x = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    expected = TFLiteRunner(path, xnnpack=False).probabilities(x)
    capsys.readouterr()

    real, resolver = inference.tflite_api()  # LiteRT's, or tf.lite's where LiteRT is not installed

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
    monkeypatch.setattr(inference, "tflite_api", lambda: (BrokenDelegate, resolver))
    runner = TFLiteRunner(path)
    got = runner.probabilities(x)
    assert not runner.xnnpack
    np.testing.assert_allclose(got, expected, atol=1e-5)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "XNNPACK delegate failed" in err[0] and "running without it" in err[0], err
