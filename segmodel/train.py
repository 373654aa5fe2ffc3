"""One trial, top-down: data -> dense training -> pruning -> fine-tuning (optionally
distilled) -> evaluation -> artifacts.

Schedules (same total epochs, `epochs + finetune_epochs`, for each; fine-tuning's learning
rate decays on a cosine unless --finetune_lr constant; sparsity is shared between layers by
one global magnitude ranking unless --allocation uniform):
  init     prune right after building, then train the pruned model on the same schedule
           (`epochs`, then `finetune_epochs` on the fine-tuning learning rate; the seed's order)
  oneshot  train dense `epochs`, prune to the target at once, fine-tune `finetune_epochs`
  agp      train dense `epochs`, then raise sparsity on the cubic AGP schedule while fine-tuning

With `prune_mode channel` pruning removes whole filters: the model is rebuilt thinner
(segmodel.compress.channels) at the pruning point, or with agp at the end of fine-tuning, and the thin
model is what is saved.

What is pruned, and how, is `compression.py`'s; the callbacks live in `callbacks.py`,
file writing and sizes in `files.py`.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import keras
import numpy as np

from . import data as datasets
from . import runtime
from .artifacts import ValidationSample, tensorboard_writer, write_trial_artifacts
from .callbacks import DivergenceGuard, EpochReporter, History
from .compress import Compression, Distiller, check_teacher, count_flops, dead_summary
from .deploy import latency_probe
from .errors import TrainingDiverged
from .experiment import manager, nni_bridge
from .files import gzip_size, save_model_atomic, write_json_atomic
from .losses import task_loss
from .metrics import Scorer, scores_from_confusion, training_metrics
from .model import build_model
from .params import Params
from .surgery import fresh_copy


def run_trial(params: Params, reporter, out_dir: str | os.PathLike) -> dict:
    """Run one trial and return its final metrics (also reported and written to out_dir)."""
    started = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    precision = runtime.configure(params, manager.trial_concurrency)
    if params.kd and params.teacher:  # its input and classes, from the file's config, before any training
        check_teacher(params.teacher, params.patch_size, 3, len(params.class_weights))
    splits = datasets.load(params)
    model = build_model(params, splits.n_classes)
    dense_size = {"dense_params": model.count_params(), "dense_flops": count_flops(model)}
    compression = Compression.for_trial(params, model, splits)  # a bad config_list fails here, before training
    tensorboard = tensorboard_writer(nni_bridge.tensorboard_dir(out))
    history = History(listeners=[tensorboard.write] if tensorboard else [])
    trial = _Phases(params, splits, history, reporter)
    scorer = Scorer(splits.n_classes, task_loss(params.class_weights))
    steps_per_epoch = max(1, math.ceil(splits.n_train / params.batch_size))
    dense: dict = {}

    try:
        if params.schedule == "init":  # prune the untrained model, then train it on the dense trial's schedule
            model = compression.prune(model)
            teacher = _teacher(model, params)
            trial.fit(model, params.epochs, "pruned", teacher=teacher)
        else:  # train dense, prune, fine-tune
            trial.fit(model, params.epochs, "dense")
            dense = evaluate(model, splits, params, scorer)
            teacher = _teacher(model, params)
            model = compression.prune(model)
        if params.finetune_epochs:
            trial.fit(model, params.finetune_epochs, "finetune", teacher=teacher,
                      callbacks=compression.finetune_callbacks(steps_per_epoch),
                      learning_rate=finetune_learning_rate(params, steps_per_epoch * params.finetune_epochs))
    except TrainingDiverged as e:
        metrics = {"default": 0.0, "diverged": 1, "diverged_reason": str(e),
                   "duration_s": round(time.time() - started, 1)}
        _conclude(out, params, history, metrics, reporter)  # params too: retrain can say what diverged
        return metrics
    finally:
        if tensorboard:
            tensorboard.close()

    model, stats = compression.finish(model)
    sample = ValidationSample(splits)  # the plots' predictions, from this pass
    final = evaluate(model, splits, params, scorer, sample.add)
    metrics = {
        "default": final["iou"] if params.objective == "iou" else final["accuracy"],
        **{k: v for k, v in final.items() if k != "class_iou"},
        **{f"iou_{name}": v for name, v in final["class_iou"].items()},
        **stats,
        **dead_summary(model, splits.val),  # channels that never fire on the validation set
        **({"dense_accuracy": dense["accuracy"], "dense_iou": dense["iou"]} if dense else {}),
        **dense_size,
        "flops": count_flops(model),
        "prune_mode": params.prune_mode,
        **({"channel_criterion": params.channel_criterion} if params.prune_mode == "channel" else {}),
        "schedule": params.schedule,
        "allocation": params.allocation,
        "finetune_lr": params.finetune_lr,
        "kd": int(params.kd),
        "precision": precision,
        "diverged": 0,
        "duration_s": round(time.time() - started, 1),
    }
    if params.kd:
        metrics.update(kd_temperature=params.kd_temperature, kd_alpha=params.kd_alpha, kd_balance=params.kd_balance,
                       kd_teacher=params.teacher or "dense")

    shipped = out / "model.keras"
    save_model_atomic(model, shipped)
    # raw and gzip: a pruned model's zeros cost full size raw, almost nothing gzipped
    metrics.update(model_bytes=shipped.stat().st_size, model_gzip_bytes=gzip_size(shipped))
    if params.deploy_size:  # the shipped model's speed here, against the dense one of the same architecture
        metrics.update(latency_probe.measure(model, build_model(params, splits.n_classes), splits, params.deploy_size,
                                             params.deploy_format))
        if params.min_speedup:
            metrics["default"] = latency_probe.constrained(metrics["default"], metrics["speedup"], params.min_speedup)
    _conclude(out, params, history, metrics, reporter)
    write_trial_artifacts(out, sample, splits, history, metrics)  # plots, after the result is safe; never fails
    return metrics


def _conclude(out: Path, params: Params, history: History, metrics: dict, reporter) -> None:
    """Every trial's end, diverged or not: history, params and metrics on disk, then the final result."""
    history.write_csv(out / "history.csv")
    write_json_atomic(out / "params.json", params.to_dict())
    write_json_atomic(out / "metrics.json", metrics)
    reporter.final(_numeric(metrics))


# ---- phases -------------------------------------------------------------------

def finetune_learning_rate(params: Params, steps: int):
    """The fine-tuning phase's learning rate: cosine decay from `learning_rate` to 0 over
    its steps (the pruned model recovers at a high rate, then settles), or constant."""
    if params.finetune_lr == "constant":
        return params.learning_rate
    return keras.optimizers.schedules.CosineDecay(params.learning_rate, decay_steps=max(1, steps))


def compile_trainer(model, params: Params, n_classes: int, teacher=None, learning_rate=None):
    """The model compiled for one phase, or a Distiller around it when there is a teacher
    (`python -m benchmarks stages` compiles its models with this too). `learning_rate`: a float or a
    Keras schedule (default: params.learning_rate)."""
    optimizer = keras.optimizers.Adam(learning_rate=params.learning_rate if learning_rate is None else learning_rate)
    if teacher is not None:
        trainer = Distiller(model, teacher, task_loss(params.class_weights), params.kd_alpha, params.kd_temperature,
                            params.kd_balance)
        trainer.compile(optimizer=optimizer, metrics=training_metrics(n_classes))
        return trainer
    model.compile(optimizer=optimizer, loss=task_loss(params.class_weights), metrics=training_metrics(n_classes))
    return model


class PhaseLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Every phase's learning rate through one schedule: a table of the phase's rate at each
    step, which `set()` refills without tracing the train step again.

    The table holds what a fresh optimizer's own compiled step computes, bit for bit: a
    schedule compiled into a train step has its constants folded by TensorFlow's graph
    optimizer, and its rates differ in the last bit from the same formula on variables (58
    of 152 steps of a cosine). So each rate is computed by a compiled step of the schedule
    itself, reading the step from an int64 variable as the optimizer does."""

    def __init__(self, learning_rate):
        import tensorflow as tf

        self.rates = tf.Variable([0.0], dtype=tf.float32, shape=tf.TensorShape([None]), trainable=False,
                                 name="phase_learning_rates")
        self.set(learning_rate)

    def set(self, learning_rate) -> None:
        """A float (constant) or a CosineDecay without warm-up (constant after its decay_steps)."""
        self.rates.assign(rates_by_step(learning_rate))

    def __call__(self, step):
        last = keras.ops.shape(self.rates)[0] - 1
        return keras.ops.take(self.rates, keras.ops.minimum(keras.ops.cast(step, "int32"), last))


def rates_by_step(learning_rate) -> np.ndarray:
    """The rate at steps 0, 1, ... until it stops changing, as a compiled optimizer step reads it."""
    import tensorflow as tf

    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return np.array([learning_rate], np.float32)
    if not isinstance(learning_rate, keras.optimizers.schedules.CosineDecay) or learning_rate.warmup_steps:
        raise ValueError("PhaseLearningRate takes a float or a CosineDecay without warm-up")
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    rate = tf.function(lambda: learning_rate(step), autograph=False)
    rates = []
    for i in range(int(learning_rate.decay_steps) + 1):
        step.assign(i)
        rates.append(rate().numpy())
    return np.array(rates, np.float32)


class _Phases:
    """What every phase of one trial shares: its data, history and reporter, and the compiled
    train step while the model it was traced for does not change (one trace per trial)."""

    def __init__(self, params: Params, splits, history: History, reporter):
        self.params, self.splits, self.history, self.reporter = params, splits, history, reporter
        self.guard = DivergenceGuard()
        self._compiled = None  # (model, trace key, schedule, the optimizer's fresh state)

    def fit(self, model, epochs: int, phase: str, teacher=None, callbacks=(), learning_rate=None) -> None:
        """One phase: `epochs` of fit(); TrainingDiverged at the first bad batch."""
        trainer = self._trainer(model, teacher, self.params.learning_rate if learning_rate is None else learning_rate)
        report = EpochReporter(self.reporter, self.params.objective, phase, self.history, self.guard)
        trainer.fit(self.splits.train, validation_data=self.splits.val, epochs=epochs, verbose=2,
                    callbacks=[self.guard, *callbacks, report])
        if self.guard.reason:
            raise TrainingDiverged(self.guard.reason)

    def _trainer(self, model, teacher, learning_rate):
        """The phase's trainer. The model of the last phase, unchanged and without a teacher, keeps
        its traced step: its optimizer goes back to its fresh state (as a new optimizer would
        start) and the schedule takes the phase's learning rate. Anything else is compiled."""
        key = _trace_key(model)
        if teacher is None and self._compiled and self._compiled[0] is model and self._compiled[1] == key:
            _, _, schedule, fresh = self._compiled
            for variable, value in zip(model.optimizer.variables, fresh):
                variable.assign(value)
            schedule.set(learning_rate)
            return model
        schedule = PhaseLearningRate(learning_rate)
        trainer = compile_trainer(model, self.params, self.splits.n_classes, teacher, schedule)
        built = runtime.build_before_tracing(trainer, self.splits.train.element_spec)  # one trace, not two
        self._compiled = ((model, key, schedule, [v.numpy() for v in trainer.optimizer.variables])
                          if built and teacher is None else None)
        return trainer


def _trace_key(model) -> tuple:
    """What a traced train step depends on beyond the model and its variables' values: its
    trainable weights and their constraints (a pruning mask attached later needs a new trace)."""
    return tuple((id(w), id(w.constraint)) for w in model.trainable_weights)


def _teacher(model, params: Params):
    """The frozen teacher when the trial distils (`kd`), else None: a saved model if
    given, else a copy of the dense model."""
    if not params.kd:
        return None
    if params.teacher:
        teacher = keras.models.load_model(params.teacher, compile=False)
    else:
        teacher = fresh_copy(model)
    teacher.trainable = False
    return teacher


def evaluate(model, splits, params: Params, scorer: Scorer | None = None, each_batch=None) -> dict:
    """Exact validation scores: accuracy and IoU from one confusion matrix, plus the
    task loss and the seed's jacard_coef as Keras' evaluate() averages them. The model
    is only run, never compiled or changed. A trial passes its `scorer`, which traces
    each model's pass once; `each_batch` sees the predictions (`Scorer`)."""
    scorer = scorer or Scorer(splits.n_classes, task_loss(params.class_weights))
    cm, loss, jacard = scorer(model, splits.val, each_batch)
    return {**scores_from_confusion(cm, splits.class_names), "loss": loss, "jacard": jacard}


def _numeric(metrics: dict) -> dict:
    """NNI's web UI plots numbers; drop strings and Nones from what it gets."""
    return {k: v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
