"""Knowledge distillation: the loss against a numpy reference, the Distiller's training
contract (frozen teacher, masks hold, bf16), and trial.py --kd end to end."""
import json
import re

import keras
import numpy as np
import pytest

from segmodel.compress.distill import Distiller, kd_loss, logits_view
from segmodel.errors import ParamError
from segmodel.surgery import fresh_copy

TEMPERATURES = [0.5, 1.0, 2.0, 4.0, 10.0]


def _log_softmax(z, t):
    z = z.astype(np.float64) / t
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _reference_kl(zs, zt, t):
    """KL(softmax(zt/T) || softmax(zs/T)) per pixel, in float64."""
    lps, lpt = _log_softmax(zs, t), _log_softmax(zt, t)
    return np.sum(np.exp(lpt) * (lpt - lps), axis=-1)


def reference_kd(zs, zt, t):
    """T^2 * mean over pixels of KL(softmax(zt/T) || softmax(zs/T)), in float64."""
    return t * t * np.mean(_reference_kl(zs, zt, t))


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    shape = (2, 8, 8, 6)
    return (rng.normal(0, 3, shape).astype("float32"), rng.normal(0, 3, shape).astype("float32"))




@pytest.mark.parametrize("t", TEMPERATURES)
def test_kd_loss_matches_numpy_reference(logits, t):
    zs, zt = logits
    got = float(kd_loss(zs, zt, t))
    assert got > 0
    np.testing.assert_allclose(got, reference_kd(zs, zt, t), rtol=1e-5, atol=1e-7)


def reference_kd_by_class(zs, zt, t, labels):
    """The class-balanced reference: per-pixel KL as above, then the mean over the classes
    present of each class's mean over its pixels (a plain loop over classes)."""
    kl, truth = _reference_kl(zs, zt, t), labels.argmax(-1)
    return t * t * np.mean([kl[truth == c].mean() for c in np.unique(truth)])


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kd_loss_by_class_matches_numpy_reference(logits, t):
    zs, zt = logits
    rng = np.random.default_rng(2)
    truth = rng.choice(6, size=zs.shape[:-1], p=[0.6, 0.3, 0.07, 0.03, 0.0, 0.0])  # two classes absent
    labels = np.eye(6, dtype="float32")[truth]
    got = float(kd_loss(zs, zt, t, labels))
    np.testing.assert_allclose(got, reference_kd_by_class(zs, zt, t, labels), rtol=1e-5, atol=1e-7)
    # a rare class's pixels weigh as much as a common one's: not the per-pixel mean
    assert abs(got - reference_kd(zs, zt, t)) > 1e-3


def test_kd_loss_by_class_is_the_pixel_mean_when_classes_are_equal(logits):
    zs, zt = logits
    labels = np.zeros(zs.shape, "float32")
    labels[..., 3] = 1  # one class everywhere: its mean is the mean over pixels
    np.testing.assert_allclose(float(kd_loss(zs, zt, 2.0, labels)), float(kd_loss(zs, zt, 2.0)), rtol=1e-6)


def test_kd_loss_any_leading_shape(logits):
    zs, zt = logits
    flat = float(kd_loss(zs.reshape(-1, 6), zt.reshape(-1, 6), 3.0))
    np.testing.assert_allclose(flat, float(kd_loss(zs, zt, 3.0)), rtol=1e-6)


@pytest.mark.parametrize("t", TEMPERATURES)
def test_kd_loss_is_exactly_zero_for_equal_logits(logits, t):
    zs, _ = logits
    assert float(kd_loss(zs, zs.copy(), t)) == 0.0


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kd_loss_invariant_to_a_constant_per_pixel(logits, t):
    zs, zt = logits
    rng = np.random.default_rng(1)
    shift_s = rng.normal(0, 20, zs.shape[:-1] + (1,)).astype("float32")
    shift_t = rng.normal(0, 20, zt.shape[:-1] + (1,)).astype("float32")
    base = float(kd_loss(zs, zt, t))
    np.testing.assert_allclose(float(kd_loss(zs + shift_s, zt + shift_t, t)), base, rtol=1e-4)


def test_kd_loss_is_float32_and_finite_from_bfloat16_logits(logits):
    from keras import ops
    zs, zt = logits
    zs16, zt16 = ops.cast(zs * 30, "bfloat16"), ops.cast(zt * 30, "bfloat16")  # saturated softmax
    loss = kd_loss(zs16, zt16, 1.0)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    expected = reference_kd(ops.convert_to_numpy(ops.cast(zs16, "float32")),
                            ops.convert_to_numpy(ops.cast(zt16, "float32")), 1.0)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


# ---- the Distiller ------------------------------------------------------------------

def _tiny_batches(n=16, size=32, seed=0):
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, (n, size // 8, size // 8)).repeat(8, 1).repeat(8, 2)
    images = rng.random((6, 3)).astype("float32")[labels] + rng.normal(0, 0.05, (n, size, size, 3)).astype("float32")
    masks = np.eye(6, dtype="float32")[labels]
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(8)


@pytest.mark.parametrize("balance", ["pixels", "classes"])
def test_distiller_trains_student_only_keeps_masks_under_bf16(policy, balance):
    from segmodel.compress.pruning import Pruner
    from segmodel.losses import task_loss
    from segmodel.metrics import training_metrics
    from segmodel.model import multi_unet_model

    policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    student = multi_unet_model(0.1, 6, 32, 32, 3)
    teacher = fresh_copy(student)  # the trial's own copy of its dense model
    teacher.trainable = False
    pruner = Pruner(student, [{"sparsity": 0.8, "op_types": ["default"]}])
    pruner.prune()
    pruned = {path: keras.ops.convert_to_numpy(m) == 0 for path, m in pruner.masks.items()}
    assert pruned
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]

    loss = task_loss([1 / 6] * 6)
    distiller = Distiller(student, teacher, loss, alpha=0.5, temperature=2.0, balance=balance)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=training_metrics(6))
    data = _tiny_batches()
    logs = distiller.fit(data, validation_data=data, epochs=1, verbose=0).history

    for key in ("loss", "accuracy", "mean_iou", "jacard_coef", "task_loss", "kd_loss"):
        assert key in logs and f"val_{key}" in logs, key
        assert all(np.isfinite(logs[key]))
    assert logs["kd_loss"][-1] > 0  # dropout + pruning: the student no longer equals its teacher
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert any(not np.array_equal(b, a) for b, a in zip(student_before, student.get_weights()))
    for w in student.weights:
        if w.path in pruned:
            assert np.all(keras.ops.convert_to_numpy(w)[pruned[w.path]] == 0), \
                f"{w.path}: pruned weights came back during distillation"

    # The logged validation loss is (1 - alpha) * task + alpha * kd on the student's / teacher's inference outputs.
    x, y = next(iter(data))
    probs = student(x, training=False)
    z_s = logits_view(student, "student")(x, training=False)
    z_t = logits_view(teacher, "teacher")(x, training=False)
    kd = kd_loss(z_s, z_t, 2.0, y if balance == "classes" else None)
    expected = 0.5 * float(loss(y, probs)) + 0.5 * float(kd)
    result = distiller.evaluate(x, y, verbose=0, return_dict=True)
    # bf16 activations: the eager forward passes above and evaluate()'s compiled one round
    # differently (1.2e-4 relative measured with global allocation's masks); a wrong alpha
    # or temperature is off by far more.
    np.testing.assert_allclose(result["loss"], expected, rtol=1e-3)


def test_distiller_with_alpha_zero_is_exactly_plain_training(policy):
    """Same seed, data and weights: with kd_alpha=0 the Distiller must follow plain Keras
    training step for step, so whatever KD changes comes from the distillation term alone."""
    from segmodel.losses import task_loss
    from segmodel.model import multi_unet_model

    policy("float32")
    keras.utils.set_random_seed(0)
    start = multi_unet_model(0.1, 6, 32, 32, 3)
    teacher = fresh_copy(start)
    data = _tiny_batches(n=16)
    finals = []
    for alpha in (None, 0.0):
        keras.utils.set_random_seed(1)
        student = multi_unet_model(0.1, 6, 32, 32, 3)
        student.set_weights(start.get_weights())
        trainer = student if alpha is None else Distiller(student, teacher, task_loss([1 / 6] * 6), alpha, 4.0)
        kw = {"loss": task_loss([1 / 6] * 6)} if alpha is None else {}
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3), **kw)
        trainer.fit(data, epochs=1, verbose=0)
        finals.append(np.concatenate([w.ravel() for w in student.get_weights()]))
    assert np.abs(finals[0] - np.concatenate([w.ravel() for w in start.get_weights()])).max() > 1e-3
    np.testing.assert_allclose(finals[1], finals[0], rtol=0, atol=1e-6)


def test_teacher_without_logits_layer_is_a_clear_error():
    from segmodel.model import multi_unet_model
    student = multi_unet_model(0.1, 6, 32, 32, 3)
    inputs = keras.Input((32, 32, 3))
    plain = keras.Model(inputs, keras.layers.Conv2D(6, 1, activation="softmax", name="head")(inputs))
    with pytest.raises(ParamError, match="no 'logits' layer"):
        Distiller(student, plain, lambda y, p: 0.0)


# ---- parameters and the trial ---------------------------------------------------------

def test_kd_with_schedule_init_needs_a_teacher(capsys):
    from segmodel.cli_trial import main
    from segmodel.params import resolve
    with pytest.raises(ParamError, match="kd needs a teacher.*--teacher"):
        resolve({"kd": "true", "schedule": "init"})
    resolve({"kd": "true", "schedule": "init", "teacher": "t/model.keras"})  # a path makes it valid
    assert main(["--kd", "true", "--schedule", "init"]) == 2
    assert "kd needs a teacher" in capsys.readouterr().err


def test_kd_parameters_come_from_flags_and_the_search_space():
    from segmodel.params import parse_flags, resolve
    p = resolve(parse_flags(["--kd", "true", "--kd_temperature", "2"]),
                {"kd": 1, "kd_temperature": 8, "kd_alpha": 0.25, "kd_balance": "classes"})  # as NNI sends them
    assert (p.kd, p.kd_temperature, p.kd_alpha, p.kd_balance) == (True, 8.0, 0.25, "classes")
    with pytest.raises(ParamError, match="kd_temperature must be > 0"):
        resolve({"kd_temperature": "0"})


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Saved models that cannot teach a 32 px, 3-channel, 6-class trial, and one that can."""
    from segmodel.model import multi_unet_model
    root = tmp_path_factory.mktemp("teachers")
    for name, args in {"ok": (6, 32, 3), "patch64": (6, 64, 3), "rgba": (6, 32, 4), "classes5": (5, 32, 3)}.items():
        multi_unet_model(0.1, args[0], args[1], args[1], args[2]).save(root / f"{name}.keras")
    inputs = keras.Input((32, 32, 3))
    plain = keras.Model(inputs, keras.layers.Conv2D(6, 1, activation="softmax", name="head")(inputs))
    plain.save(root / "nologits.keras")
    (root / "notes.keras").write_text("not a model")
    return root


@pytest.mark.parametrize("teacher, message", [
    ("patch64", r"takes 64x64x3 images, this trial's patches are 32x32x3 \(--patch_size 32\)"),
    ("rgba", r"takes 32x32x4 images, this trial's patches are 32x32x3"),
    ("classes5", r"predicts 5 classes, this trial 6"),
    ("nologits", r"has no 'logits' layer"),
    ("notes", r"is not a Keras \.keras model file"),
    ("missing", r"no such file"),
])
def test_a_teacher_that_cannot_teach_is_one_line_before_any_training(teacher, message, teachers, tmp_path, capsys,
                                                                      policy):
    """The check reads the file's config: a mismatch fails with exit 2 before data, model or
    dense phase (it used to fail after the dense phase, when the teacher was first used)."""
    from segmodel.cli_trial import main
    from segmodel.compress.distill import check_teacher
    check_teacher(str(teachers / "ok.keras"), 32, 3, 6)  # the one that fits passes
    code = main(["--kd", "true", "--teacher", str(teachers / f"{teacher}.keras"), "--patch_size", "32",
                 "--precision", "float32", "--data_dir", str(tmp_path / "no-data-needed"),
                 "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: teacher ") and re.search(message, err[-1]), err
    assert not any(line.startswith("error") for line in err[:-1])
    assert not any((tmp_path / "out").glob("*"))  # nothing trained, nothing written


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Four small synthetic scenes: 18 training and 6 validation patches of 32 px."""
    from segmodel.data.synthetic import SynthSpec, write_dataset
    root = tmp_path_factory.mktemp("kd_data")
    write_dataset(root, SynthSpec(tiles=2, images_per_tile=2, min_size=80, max_size=100, seed=0))
    return str(root)


@pytest.fixture(scope="module")
def kd_trial(tmp_path_factory, tiny_data):
    """trial.py --kd true on tiny settings: dense 1 epoch, oneshot prune, 1 distilled epoch."""
    from segmodel.cli_trial import main
    before = keras.mixed_precision.global_policy().name
    out = tmp_path_factory.mktemp("kd_trial")
    code = main(["--kd", "true", "--kd_temperature", "3", "--kd_alpha", "0.5", "--patch_size", "32",
                 "--data_dir", tiny_data, "--epochs", "1", "--finetune_epochs", "1", "--output_dir", str(out)])
    keras.mixed_precision.set_global_policy(before)
    assert code == 0
    return out


def test_trial_kd_reports_distillation(kd_trial):
    metrics = json.loads((kd_trial / "metrics.json").read_text())
    assert metrics["kd"] == 1 and metrics["kd_temperature"] == 3.0 and metrics["kd_alpha"] == 0.5
    assert metrics["kd_teacher"] == "dense" and metrics["kd_balance"] == "classes" and metrics["diverged"] == 0
    assert metrics["sparsity"] == pytest.approx(0.8, abs=0.01)
    (entry,) = metrics["config_sparsity"]          # --sparsity 0.8: one entry, reached exactly
    assert entry == {"asked": 0.8, "achieved": metrics["sparsity"]}
    header, *rows = (kd_trial / "history.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in rows] == ["dense", "finetune"]
    assert "val_kd_loss" in header.split(",")


@pytest.mark.slow
def test_trial_kd_from_a_saved_teacher_with_schedule_init(kd_trial, tiny_data, tmp_path):
    from segmodel.cli_trial import main
    before = keras.mixed_precision.global_policy().name
    code = main(["--kd", "true", "--schedule", "init", "--teacher", str(kd_trial / "model.keras"),
                 "--patch_size", "32", "--data_dir", tiny_data, "--epochs", "1", "--finetune_epochs", "0", "--output_dir", str(tmp_path)])
    keras.mixed_precision.set_global_policy(before)
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["kd"] == 1 and metrics["kd_teacher"].endswith("model.keras")
    assert "kd_loss" in (tmp_path / "history.csv").read_text().splitlines()[0]
