"""Knowledge distillation in Keras: the pruned student learns from its dense teacher.

The seed's PyTorch recipe, CE(y_s, target) + KL(softmax(z_t/T) || softmax(z_s/T)) * T^2 / batch,
carried over to segmentation, where every pixel is a sample: the distillation term is
T^2 times the mean over pixels of KL(p_t || p_s), p = softmax(z / T) over the class axis,
by default class-balanced over the true labels (`kd_loss`), as the Dice term is.

`Distiller` follows keras-io's "Knowledge Distillation" example (a `keras.Model` that
wraps student and teacher) with its own train/test steps, because the loss needs the
student's logits and its probabilities from the *same* forward pass (one dropout draw),
while the compiled metrics see only the probabilities, exactly as in plain training.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
from keras import ops

from ..errors import ParamError
from ..params import KD_BALANCES


def kd_loss(student_logits, teacher_logits, temperature: float, labels=None):
    """T^2 * mean over pixels of KL(softmax(z_t / T) || softmax(z_s / T)).

    Classes on the last axis, any leading shape; returns a float32 scalar. Works from
    logits with log-softmax (never from clipped probabilities) and in float32 even when
    the logits come out of a bfloat16/float16 layer.

    With `labels` (one-hot truth, the logits' shape) the mean is class-balanced: the mean,
    over the classes present, of each class's mean KL over its pixels. The Dice term weighs
    classes so; a per-pixel mean lets the common classes drown a rare one's soft targets.
    """
    t = float(temperature)
    log_ps = ops.log_softmax(ops.cast(student_logits, "float32") / t, axis=-1)
    log_pt = ops.log_softmax(ops.cast(teacher_logits, "float32") / t, axis=-1)
    kl = ops.sum(ops.exp(log_pt) * (log_pt - log_ps), axis=-1)
    if labels is None:
        return (t * t) * ops.mean(kl)
    onehot = ops.reshape(ops.cast(labels, "float32"), (-1, ops.shape(labels)[-1]))
    pixels = ops.sum(onehot, axis=0)
    per_class = ops.sum(onehot * ops.reshape(kl, (-1, 1)), axis=0) / ops.maximum(pixels, 1.0)
    present = ops.cast(pixels > 0, "float32")
    return (t * t) * ops.sum(per_class * present) / ops.maximum(ops.sum(present), 1.0)


def check_teacher(path: str, patch_size: int, channels: int, classes: int) -> None:
    """A --teacher that cannot teach this trial is a ParamError before any training: its
    input (patch side, channels) and its `logits` classes, read from the .keras file's
    config.json (a zip), without loading it. Otherwise it would fail after the dense phase."""
    where = f"teacher {path!r}"
    if not Path(path).is_file():
        raise ParamError(f"{where}: no such file")
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))["config"]
    except (zipfile.BadZipFile, KeyError, TypeError, ValueError, OSError):
        raise ParamError(f"{where} is not a Keras .keras model file (a trial's model.keras is one)") from None
    layers = {spec.get("name") or spec["config"].get("name"): spec for spec in config.get("layers", [])}
    inputs = [spec["config"].get("batch_shape") for spec in layers.values() if spec.get("class_name") == "InputLayer"]
    logits = layers.get("logits", {}).get("config", {})
    if "filters" not in logits and "units" not in logits:
        raise ParamError(f"{where} has no 'logits' layer; distillation needs the segmodel U-Net head "
                         "(logits conv + softmax)")
    shape = list(inputs[0][1:]) if len(inputs) == 1 and inputs[0] else None
    want = [patch_size, patch_size, channels]
    if shape is None or len(shape) != 3 or any(s is not None and s != w for s, w in zip(shape, want)):
        side = "x".join("?" if s is None else str(s) for s in shape or []) or "other"
        raise ParamError(f"{where} takes {side} images, this trial's patches are {patch_size}x{patch_size}x"
                         f"{channels} (--patch_size {patch_size}): give a teacher trained on the same patches")
    if logits.get("filters", logits.get("units")) != classes:
        raise ParamError(f"{where} predicts {logits.get('filters', logits.get('units'))} classes, "
                         f"this trial {classes}")


def logits_view(model: keras.Model, role: str) -> keras.Model:
    """`model`'s pre-softmax `logits` layer as an output (same layers, same weights)."""
    try:
        layer = model.get_layer("logits")
    except ValueError:
        raise ParamError(f"{role} model {model.name!r} has no 'logits' layer; distillation needs the "
                         "segmodel U-Net head (logits conv + softmax)") from None
    return keras.Model(model.inputs, layer.output, name=f"{model.name}_{role}_logits")


class Distiller(keras.Model):
    """Trains `student` on (1 - alpha) * task_loss(y, p_s) + alpha * kd_loss(z_s, z_t, T),
    Hinton et al.'s weighting (kd_loss carries the T^2 that keeps its gradients on the
    task's scale): alpha 0 is plain training, 1 learns from the teacher alone. `balance`
    "classes" averages the KL class-balanced over the true labels, "pixels" over pixels (`kd_loss`).

    The teacher is frozen and always runs with training=False; gradients go to the
    student's trainable variables only, through the compiled optimizer, which also runs
    the variables' constraints after each step (so pruning masks hold). Logs use the
    plain-training names, on the student's probabilities: `loss` (the total), the
    compiled metrics (`accuracy`, `jacard_coef`, `mean_iou`), plus `task_loss` and
    `kd_loss`; validation logs the same on the validation set.
    """

    def __init__(self, student: keras.Model, teacher: keras.Model, task_loss, alpha: float = 0.5,
                 temperature: float = 4.0, balance: str = "classes", **kwargs):
        super().__init__(name=kwargs.pop("name", "distiller"), **kwargs)
        if not 0 <= alpha <= 1:
            raise ParamError(f"kd_alpha must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ParamError(f"kd_temperature must be > 0, got {temperature}")
        if balance not in KD_BALANCES:
            raise ParamError(f"kd_balance must be one of {', '.join(KD_BALANCES)}, got {balance!r}")
        s_classes, t_classes = student.output.shape[-1], teacher.output.shape[-1]
        if s_classes != t_classes:
            raise ParamError(f"teacher predicts {t_classes} classes, the student {s_classes}")
        teacher.trainable = False
        self.student, self.teacher = student, teacher
        self.task_loss, self.alpha, self.temperature = task_loss, float(alpha), float(temperature)
        self.balance = balance
        # Same layers as the student, two outputs: logits for the KD term, probabilities for the rest.
        self._student_heads = keras.Model(student.inputs, [logits_view(student, "student").output, student.output],
                                          name=f"{student.name}_heads")
        self._teacher_logits = logits_view(teacher, "teacher")
        self.task_loss_tracker = keras.metrics.Mean(name="task_loss")
        self.kd_loss_tracker = keras.metrics.Mean(name="kd_loss")

    def call(self, x, training=None):
        """Predictions are the student's: Keras builds the compiled metrics from these."""
        return self.student(x, training=training)

    def _step_losses(self, x, y, training: bool):
        teacher_logits = ops.stop_gradient(self._teacher_logits(x, training=False))
        student_logits, probs = self._student_heads(x, training=training)
        task = self.task_loss(y, probs)
        kd = kd_loss(student_logits, teacher_logits, self.temperature, y if self.balance == "classes" else None)
        return (1.0 - self.alpha) * ops.cast(task, "float32") + self.alpha * kd, task, kd, probs

    def train_step(self, data):
        import tensorflow as tf  # this trainer targets the TensorFlow backend

        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        weights = self.student.trainable_variables
        with tf.GradientTape() as tape:
            loss, task, kd, probs = self._step_losses(x, y, training=True)
            scaled = self.optimizer.scale_loss(loss)  # identity unless a LossScaleOptimizer (mixed_float16)
        grads = tape.gradient(scaled, weights)
        self.optimizer.apply_gradients(zip(grads, weights))
        return self._update_metrics(x, y, probs, loss, task, kd)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        loss, task, kd, probs = self._step_losses(x, y, training=False)
        return self._update_metrics(x, y, probs, loss, task, kd)

    def _update_metrics(self, x, y, probs, loss, task, kd):
        batch = ops.shape(x)[0]
        for metric in self.metrics:  # loss tracker, compiled metrics, our two trackers
            if metric.name == "loss":
                metric.update_state(loss, sample_weight=batch)
            elif metric is self.task_loss_tracker:
                metric.update_state(task, sample_weight=batch)
            elif metric is self.kd_loss_tracker:
                metric.update_state(kd, sample_weight=batch)
            else:
                metric.update_state(y, probs)
        return self.get_metrics_result()

