"""One trial, top-down: data -> dense training -> pruning -> fine-tuning (optionally
distilled) -> evaluation -> artifacts.

Schedules (same total epochs, `epochs + finetune_epochs`, for each):
  init     prune right after building, then train all epochs with masks (the seed's order)
  oneshot  train dense `epochs`, prune to the target at once, fine-tune `finetune_epochs`
  agp      train dense `epochs`, then raise sparsity on the cubic AGP schedule while fine-tuning

With `prune_mode channel` pruning removes whole filters: the model is rebuilt thinner
(segmodel.channels) at the pruning point, and the thin model is what trains on and is saved.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import keras

from . import runtime
from .errors import ParamError, TrainingDiverged
from .params import Params


def run_trial(params: Params, reporter, out_dir: str | os.PathLike) -> dict:
    """Run one trial and return its final metrics (also reported and written to out_dir)."""
    started = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    precision = runtime.configure(params)

    from . import channels
    from . import data as datasets
    from .flops import count_flops
    from .model import multi_unet_model
    from .pruning import AGPCallback, Pruner, model_file_sizes, sparsity_stats

    config_list = params.config_list  # fail on a bad config or teacher before loading anything
    if params.kd and params.teacher and not Path(params.teacher).is_file():
        raise ParamError(f"teacher: no such file {params.teacher!r}")
    splits = datasets.load(params)
    model = multi_unet_model(params.dropout_rate, splits.n_classes, params.patch_size, params.patch_size, 3)
    history = History(log_dir=out)
    dense_size = {"dense_params": model.count_params(), "dense_flops": count_flops(model)}
    channel = params.prune_mode == "channel" and bool(config_list)
    pruner = Pruner(model, config_list) if config_list and params.prune_mode == "weight" else None
    thin_plan = channels.plan(model, config_list, params.channel_criterion) if channel else None  # fails fast
    steps_per_epoch = max(1, math.ceil(splits.n_train / params.batch_size))
    dense: dict = {}

    try:
        if params.schedule == "init":
            if pruner:
                pruner.prune()
            if channel:
                model, thin_plan = channels.prune(model, config_list, params.channel_criterion)
            teacher = _teacher(model, params) if params.kd else None  # kd needs --teacher here (validated)
            _fit(model, params, splits, params.epochs + params.finetune_epochs, "pruned", history, reporter,
                 teacher=teacher)
        else:
            _fit(model, params, splits, params.epochs, "dense", history, reporter)
            dense = evaluate(model, splits, params)
            teacher = _teacher(model, params) if params.kd else None
            callbacks = []
            if channel:
                model, thin_plan = channels.prune(model, config_list, params.channel_criterion)
            elif pruner and params.schedule == "oneshot":
                pruner.prune()
            elif pruner:  # agp: masks attached (all ones) before the train function is traced
                pruner.prune(fraction=0.0)
                span = params.agp_steps or steps_per_epoch * max(1, params.finetune_epochs - 1)
                callbacks.append(AGPCallback(pruner, span, params.agp_frequency))
            if params.finetune_epochs:
                _fit(model, params, splits, params.finetune_epochs, "finetune", history, reporter,
                     teacher=teacher, callbacks=callbacks)
    except TrainingDiverged as e:
        metrics = {"default": 0.0, "diverged": 1, "diverged_reason": str(e),
                   "duration_s": round(time.time() - started, 1)}
        history.write_csv(out / "history.csv")
        write_json_atomic(out / "metrics.json", metrics)
        reporter.final(_numeric(metrics))
        return metrics

    if pruner:
        pruner.strip()
    final = evaluate(model, splits, params)
    stats = sparsity_stats(model, pruner.targets if pruner else [])
    if thin_plan:  # nothing is zero in a thin model: its sparsity is the share of the dense parameters gone
        stats.update(sparsity=1 - stats["params"] / dense_size["dense_params"], **thin_plan.stats())
    metrics = {
        "default": final["iou"] if params.objective == "iou" else final["accuracy"],
        **{k: v for k, v in final.items() if k != "class_iou"},
        **{f"iou_{name}": v for name, v in final["class_iou"].items()},
        **stats,
        **({"dense_accuracy": dense["accuracy"], "dense_iou": dense["iou"]} if dense else {}),
        **dense_size,
        "flops": count_flops(model),
        "prune_mode": params.prune_mode,
        **({"channel_criterion": params.channel_criterion} if params.prune_mode == "channel" else {}),
        "schedule": params.schedule,
        "kd": int(params.kd),
        "precision": precision,
        "diverged": 0,
        "duration_s": round(time.time() - started, 1),
    }
    if params.kd:
        metrics.update(kd_temperature=params.kd_temperature, kd_alpha=params.kd_alpha,
                       kd_teacher=params.teacher or "dense")

    save_model_atomic(model, out / "model.keras")
    metrics.update(model_file_sizes(out / "model.keras"))  # the shipped size, raw and gzip
    history.write_csv(out / "history.csv")
    write_json_atomic(out / "params.json", params.to_dict())
    write_json_atomic(out / "metrics.json", metrics)
    reporter.final(_numeric(metrics))
    from .artifacts import write_trial_artifacts
    write_trial_artifacts(out, model, splits, history, metrics)  # plots, after the result is safe; never fails
    return metrics


# ---- phases -------------------------------------------------------------------

def _compile(model, params: Params, n_classes: int, teacher=None):
    from .losses import task_loss
    from .metrics import training_metrics

    optimizer = keras.optimizers.Adam(learning_rate=params.learning_rate)
    if teacher is not None:
        from .distill import Distiller
        trainer = Distiller(model, teacher, task_loss(params.class_weights), params.kd_alpha, params.kd_temperature)
        trainer.compile(optimizer=optimizer, metrics=training_metrics(n_classes))
        return trainer
    model.compile(optimizer=optimizer, loss=task_loss(params.class_weights), metrics=training_metrics(n_classes))
    return model


def _fit(model, params, splits, epochs, phase, history, reporter, teacher=None, callbacks=()):
    from .artifacts import tensorboard_callbacks
    trainer = _compile(model, params, splits.n_classes, teacher)
    runtime.build_before_tracing(trainer, splits.train.element_spec)  # one trace, not two
    guard = DivergenceGuard()
    report = EpochReporter(reporter, params.objective, phase, history, guard)
    trainer.fit(splits.train, validation_data=splits.val, epochs=epochs, verbose=2,
                callbacks=[guard, *callbacks, report, *tensorboard_callbacks(history)])
    if guard.reason:
        raise TrainingDiverged(guard.reason)


def _teacher(model, params: Params):
    """The frozen teacher: a saved model if given, else a copy of the dense model."""
    if params.teacher:
        teacher = keras.models.load_model(params.teacher, compile=False)
    else:
        # from_config, not clone_model: clone_model re-compiles the copy and cannot
        # deserialize segmentation_models' summed loss.
        teacher = keras.Model.from_config(model.get_config())
        teacher.set_weights(model.get_weights())
    teacher.trainable = False
    return teacher


def evaluate(model, splits, params: Params) -> dict:
    """Exact validation scores: accuracy and IoU from one confusion matrix, plus the
    task loss and the seed's jacard_coef as Keras averages them."""
    from .losses import task_loss
    from .metrics import confusion_matrix, jacard_coef, scores_from_confusion

    model.compile(loss=task_loss(params.class_weights), metrics=[jacard_coef])
    runtime.build_before_tracing(model, splits.val.element_spec)
    loss, jacard = model.evaluate(splits.val, verbose=0)
    scores = scores_from_confusion(confusion_matrix(model, splits.val, splits.n_classes), splits.class_names)
    return {**scores, "loss": float(loss), "jacard": float(jacard)}


# ---- callbacks and records ---------------------------------------------------------


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

    def on_train_begin(self, logs=None):
        import tensorflow as tf
        weights = [getattr(w, "value", w) for w in self.model.trainable_weights]
        # One compiled reduction over all weights: ~6 ms a batch for the 1.9 M of the U-Net on a busy 2-core CPU.
        self._weights_finite = tf.function(
            lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(w)) for w in weights]))

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
    """Rows of (epoch, phase, metrics...) across all phases of a trial."""

    def __init__(self, log_dir: Path | None = None):
        self.rows: list[dict] = []
        self.log_dir = log_dir  # TensorBoard logs go to log_dir/tensorboard (artifacts.TensorBoardLog)

    def add(self, phase: str, logs: dict) -> None:
        self.rows.append({"epoch": len(self.rows) + 1, "phase": phase, **logs})

    def write_csv(self, path: Path) -> None:
        import csv
        import io
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(path, buf.getvalue())


# ---- atomic output ---------------------------------------------------------------------

def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, value) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def save_model_atomic(model, path: Path) -> None:
    """Keras insists on the .keras suffix, so the temp file keeps it. What is saved is an
    uncompiled copy: a .keras file always carries the compiled optimizer's state, and the
    one evaluate() builds (never used) would double the file."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    ship = type(model).from_config(model.get_config())  # clone_model would copy the compile state
    ship.set_weights(model.get_weights())
    try:
        ship.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _numeric(metrics: dict) -> dict:
    """NNI's web UI plots numbers; drop strings and Nones from what it gets."""
    return {k: v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
