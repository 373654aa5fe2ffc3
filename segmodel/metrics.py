"""Segmentation metrics.

`jacard_coef` is the seed's (a soft IoU over the whole batch, averaged per batch by
Keras). The numbers we report are exact over the validation set: pixel accuracy and
per-class / mean IoU from one accumulated confusion matrix.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops


def jacard_coef(y_true, y_pred):
    """The seed's Jaccard coefficient: (|y*p| + 1) / (|y| + |p| - |y*p| + 1) over all pixels and classes."""
    y_true = ops.reshape(ops.cast(y_true, "float32"), (-1,))
    y_pred = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
    intersection = ops.sum(y_true * y_pred)
    return (intersection + 1.0) / (ops.sum(y_true) + ops.sum(y_pred) - intersection + 1.0)


def mean_iou_metric(n_classes: int) -> keras.metrics.Metric:
    """Keras' MeanIoU accumulates a confusion matrix over the epoch: exact, not a mean of batches."""
    return keras.metrics.MeanIoU(num_classes=n_classes, sparse_y_true=False, sparse_y_pred=False, name="mean_iou")


def training_metrics(n_classes: int) -> list:
    return ["accuracy", jacard_coef, mean_iou_metric(n_classes)]


def scores_from_confusion(cm: np.ndarray, class_names) -> dict:
    """Pixel accuracy, per-class IoU and mean IoU from a confusion matrix (rows = truth).

    A class absent from both truth and prediction has no IoU and is left out of the mean
    (as keras.metrics.MeanIoU does)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = cm.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "iou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou)},
    }


class Scorer:
    """One pass over a batched (image, one-hot mask) dataset, nothing compiled or changed:
    the confusion matrix (rows = truth), and `loss_fn` and `jacard_coef` as Keras' evaluate()
    averages them (the loss weighted by batch size, jacard per batch). Each model's pass is
    traced once, however often it is scored (a weight-pruned trial scores the same model after
    each phase); `each_batch(x, y, probabilities)` sees every batch's predictions (the plots)."""

    def __init__(self, n_classes: int, loss_fn):
        self.n_classes, self.loss_fn = n_classes, loss_fn
        self._model = self._pass = None

    def __call__(self, model: keras.Model, dataset, each_batch=None) -> tuple[np.ndarray, float, float]:
        if self._model is not model:
            self._model, self._pass = model, self._traced(model)
        cm = np.zeros((self.n_classes, self.n_classes), np.int64)
        loss_sum = jacard_sum = 0.0
        n_samples = n_batches = 0
        for x, y in dataset:
            batch_cm, loss, jacard, n, probs = self._pass(x, y)
            cm += batch_cm.numpy()
            loss_sum, jacard_sum = loss_sum + float(loss) * int(n), jacard_sum + float(jacard)
            n_samples, n_batches = n_samples + int(n), n_batches + 1
            if each_batch is not None:
                each_batch(x, y, probs)
        return cm, loss_sum / max(1, n_samples), jacard_sum / max(1, n_batches)

    def _traced(self, model):
        import tensorflow as tf

        n_classes, loss_fn = self.n_classes, self.loss_fn

        @tf.function
        def batch_scores(x, y):
            probs = tf.cast(model(x, training=False), tf.float32)
            y = tf.cast(y, tf.float32)
            true, pred = tf.reshape(tf.argmax(y, -1), [-1]), tf.reshape(tf.argmax(probs, -1), [-1])
            cm = tf.math.confusion_matrix(true, pred, num_classes=n_classes, dtype=tf.int64)
            return cm, loss_fn(y, probs), jacard_coef(y, probs), tf.shape(x)[0], probs

        return batch_scores
