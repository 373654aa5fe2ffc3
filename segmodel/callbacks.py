"""The Keras callbacks of a trial: stop at divergence, report every epoch, keep the history.

Each phase of a trial (dense, pruned, finetune) is one `fit()`; these callbacks carry
what must survive across phases (the `History`) and what NNI sees after every epoch.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import keras
import tensorflow as tf

from .files import write_text_atomic


class DivergenceGuard(keras.callbacks.Callback):
    """Stop at the first batch after which the loss or any trainable weight is NaN or
    infinite; no epochs are wasted.

    Checking the loss alone is not enough: the focal loss clips the softmax output, so a
    model whose weights have all become NaN (learning rate 10 or 1e4, say) still reports
    a finite loss of about 1.2 and would train on, uselessly, to the end."""

    def __init__(self):
        super().__init__()
        self.reason = ""
        self._weights_finite = None
        self._watched: list = []

    def on_train_begin(self, logs=None):
        self.reason = ""
        weights = [getattr(w, "value", w) for w in self.model.trainable_weights]
        if self._weights_finite is None or len(weights) != len(self._watched) \
                or any(a is not b for a, b in zip(weights, self._watched)):
            # One compiled reduction over all weights (~6 ms a batch for the U-Net's 1.9 M on a busy
            # 2-core CPU), traced again only when a later phase trains other weights.
            self._weights_finite = tf.function(
                lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(w)) for w in weights]))
            self._watched = weights

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.reason = f"loss became {float(loss)} at batch {batch + 1}"
        elif self._weights_finite is not None and not bool(self._weights_finite()):
            self.reason = f"weights became NaN or infinite at batch {batch + 1} (loss {float(loss or 0):.4g})"
        if self.reason:
            self.model.stop_training = True


class EpochReporter(keras.callbacks.Callback):
    """Every epoch of every phase: one intermediate result to NNI and one history row."""

    def __init__(self, reporter, objective: str, phase: str, history: "History", guard=None):
        super().__init__()
        self.reporter, self.objective, self.phase, self.history = reporter, objective, phase, history
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        if (self.guard and self.guard.reason) or not all(math.isfinite(v) for v in logs.values()):
            return  # the divergence guard ends the phase; don't send NaN or a dead model's scores to the tuner
        self.history.add(self.phase, logs)
        acc, iou = logs.get("val_accuracy", 0.0), logs.get("val_mean_iou", 0.0)
        self.reporter.intermediate({"default": iou if self.objective == "iou" else acc,
                                    "accuracy": acc, "iou": iou, "loss": logs.get("val_loss", 0.0)})


class History:
    """Rows of (epoch, phase, metrics...) across all phases of a trial; each new row is
    also handed to the listeners (the trial's TensorBoard log)."""

    def __init__(self, listeners=()):
        self.rows: list[dict] = []
        self.listeners = list(listeners)

    def add(self, phase: str, logs: dict) -> None:
        self.rows.append({"epoch": len(self.rows) + 1, "phase": phase, **logs})
        for listen in self.listeners:
            listen(self.rows[-1])

    def write_csv(self, path: Path) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(path, buf.getvalue())
