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


def confusion_matrix(model: keras.Model, dataset, n_classes: int) -> np.ndarray:
    """Accumulate the confusion matrix of `model` over a batched (image, one-hot mask) dataset."""
    import tensorflow as tf

    @tf.function
    def batch_cm(x, y):
        pred = tf.argmax(model(x, training=False), axis=-1)
        true = tf.argmax(y, axis=-1)
        return tf.math.confusion_matrix(tf.reshape(true, [-1]), tf.reshape(pred, [-1]),
                                        num_classes=n_classes, dtype=tf.int64)

    cm = np.zeros((n_classes, n_classes), np.int64)
    for x, y in dataset:
        cm += batch_cm(x, y).numpy()
    return cm
