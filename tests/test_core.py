"""The seed's model, loss and metrics, and one whole trial end to end."""
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import segmodel  # noqa: F401  (sets SM_FRAMEWORK)
from segmodel.compress.distill import logits_view
from segmodel.data.palette import CLASS_NAMES
from segmodel.metrics import jacard_coef, scores_from_confusion
from segmodel.model import multi_unet_model

ROOT = Path(__file__).resolve().parents[1]


def test_unet_matches_the_seed_architecture():
    model = multi_unet_model(dr=0.3, n_classes=6, IMG_HEIGHT=32, IMG_WIDTH=32, IMG_CHANNELS=3)
    convs = [l for l in model.layers if type(l).__name__ == "Conv2D" and l.name != "logits"]
    assert [l.filters for l in convs] == [16, 16, 32, 32, 64, 64, 128, 128, 256, 256,
                                         128, 128, 64, 64, 32, 32, 16, 16]
    assert all(l.kernel_size == (3, 3) and l.activation.__name__ == "relu" for l in convs)
    assert all(type(l.kernel_initializer).__name__ == "HeNormal" for l in convs)
    assert [l.rate for l in model.layers if type(l).__name__ == "Dropout"] == [0.3] * 9
    assert sum(type(l).__name__ == "Conv2DTranspose" for l in model.layers) == 4
    assert sum(type(l).__name__ == "MaxPooling2D" for l in model.layers) == 4
    out = model(np.zeros((2, 32, 32, 3), "float32"))
    assert out.shape == (2, 32, 32, 6)
    np.testing.assert_allclose(np.sum(out, -1), 1.0, atol=1e-5)
    logits = logits_view(model, "test")(np.zeros((1, 32, 32, 3), "float32"))
    np.testing.assert_allclose(keras.ops.softmax(logits), model(np.zeros((1, 32, 32, 3), "float32")), atol=1e-5)


def test_jacard_coef_is_the_seeds_formula():
    rng = np.random.default_rng(0)
    y = np.eye(6, dtype="float32")[rng.integers(0, 6, (2, 8, 8))]
    p = rng.random((2, 8, 8, 6)).astype("float32")
    inter = np.sum(y * p)
    expected = (inter + 1) / (y.sum() + p.sum() - inter + 1)
    assert float(jacard_coef(y, p)) == pytest.approx(expected, rel=1e-5)


def test_scores_from_confusion_matrix():
    cm = np.array([[5, 1, 0], [2, 2, 0], [0, 0, 0]])  # class 2 absent from truth and prediction
    s = scores_from_confusion(cm, ["a", "b", "c"])
    assert s["accuracy"] == pytest.approx(7 / 10)
    assert s["class_iou"]["a"] == pytest.approx(5 / 8)
    assert s["class_iou"]["b"] == pytest.approx(2 / 5)
    assert s["class_iou"]["c"] is None
    assert s["iou"] == pytest.approx((5 / 8 + 2 / 5) / 2)


def test_keras_mean_iou_accumulates_over_batches_not_averages_them():
    from segmodel.metrics import mean_iou_metric
    m = mean_iou_metric(2)
    onehot = np.eye(2, dtype="float32")
    # batch 1: 4 pixels, all correct class 0; batch 2: 1 pixel of class 1 predicted as 0.
    m.update_state(onehot[[0, 0, 0, 0]], onehot[[0, 0, 0, 0]])
    m.update_state(onehot[[1]], onehot[[0]])
    cm = np.array([[4, 0], [1, 0]])
    assert float(m.result()) == pytest.approx(scores_from_confusion(cm, "ab")["iou"])


def test_task_loss_sees_the_class_weights_normalized():
    """Only the weights' ratios matter: the trial's loss for (2, 2, 0, ...) is the loss for
    (1, 1, 0, ...), and not the loss sm's DiceLoss would give the raw (2, 2, 0, ...)."""
    from segmodel.losses import task_loss
    from segmodel.params import Params
    zeros = dict(weight3=0, weight4=0, weight5=0, weight6=0)
    doubled, single = Params(weight1=2, weight2=2, **zeros), Params(weight1=1, weight2=1, **zeros)
    assert doubled.class_weights == single.class_weights == [0.5, 0.5, 0, 0, 0, 0]
    rng = np.random.default_rng(0)
    truth = np.eye(6, dtype=np.float32)[rng.integers(0, 6, (2, 8, 8))]
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(rng.normal(size=(2, 8, 8, 6)).astype(np.float32)))
    loss = float(task_loss(doubled.class_weights)(truth, probs))
    assert loss == pytest.approx(float(task_loss(single.class_weights)(truth, probs)))
    assert loss != pytest.approx(float(task_loss([2, 2, 0, 0, 0, 0])(truth, probs)))


def test_trial_writes_metrics_and_a_pruned_model(tmp_path):
    out = tmp_path / "trial"
    cmd = [sys.executable, str(ROOT / "trial.py"), "--output-dir", str(out), "--patch_size", "32",
           "--patch_stride", "160", "--val_fraction", "0.1",
           "--epochs", "1", "--finetune_epochs", "1", "--sparsity", "0.5"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(run.stdout)  # stdout is the final metrics alone; progress went to stderr
    assert "val_mean_iou" in run.stderr and "val_mean_iou" not in run.stdout
    assert 0 <= metrics["default"] <= 1 and metrics["default"] == metrics["accuracy"]
    assert set(f"iou_{c}" for c in CLASS_NAMES) <= set(metrics)
    # The shipped model is plain Keras and its kernels carry the configured zeros: 50% over all
    # kernels (global ranking), the first conv and the head dense.
    check = ("import keras, numpy as np, sys; m = keras.models.load_model(sys.argv[1], compile=False);"
             "print([[int(np.sum(l.kernel.numpy() == 0)), int(l.kernel.numpy().size)] for l in m.layers "
             "if hasattr(l, 'kernel')])")
    loaded = subprocess.run([sys.executable, "-c", check, str(out / "model.keras")],
                            capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    counts = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert len(counts) == 23  # 18 convs, 4 transposed convs, the logits conv
    assert counts[0][0] == counts[-1][0] == 0, counts
    zeros, size = map(sum, zip(*counts))
    assert zeros == int(size * 0.5) and metrics["sparsity"] == pytest.approx(zeros / size)
