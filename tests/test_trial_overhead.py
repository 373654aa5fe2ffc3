"""A trial spends its time training: one traced train step for all its phases, the same results
as compiling each phase afresh, and the whole trial's anatomy measured from outside
(`python -m benchmarks trial-anatomy`)."""
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from artifact_helpers import TRIAL_FLAGS, QuietReporter, tiny_dataset
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

from segmodel import train
from segmodel.params import resolve

ROOT = Path(__file__).resolve().parents[1]


def test_phase_learning_rate_is_what_a_compiled_keras_cosine_gives_bit_for_bit():
    import tensorflow as tf
    cosine = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=151)
    step = tf.Variable(0, dtype=tf.int64)  # as an optimizer's compiled step reads it: folded constants
    compiled = tf.function(lambda: cosine(step), autograph=False)
    schedule = train.PhaseLearningRate(1e-3)
    phase = tf.function(lambda: schedule(step), autograph=False)  # one trace for every setting below
    assert phase().numpy() == np.float32(1e-3)  # constant: the float a fresh optimizer holds
    schedule.set(cosine)
    for i in range(160):
        step.assign(i)
        assert phase().numpy() == compiled().numpy(), i
    schedule.set(7e-4)
    assert phase().numpy() == np.float32(7e-4)
    with pytest.raises(ValueError, match="warm-up"):
        schedule.set(keras.optimizers.schedules.CosineDecay(1e-3, 10, warmup_target=2e-3, warmup_steps=3))


def _trial(tmp_path, monkeypatch, name, **flags):
    """A tiny oneshot weight-pruning trial in this process; (metrics, train traces, test traces)."""
    traces = {"train": 0, "test": 0}
    real_train, real_test = TensorFlowTrainer.train_step, TensorFlowTrainer.test_step

    def train_step(self, data):  # Python runs only while tf.function traces
        traces["train"] += 1
        return real_train(self, data)

    def test_step(self, data):
        traces["test"] += 1
        return real_test(self, data)

    monkeypatch.setattr(TensorFlowTrainer, "train_step", train_step)
    monkeypatch.setattr(TensorFlowTrainer, "test_step", test_step)
    params = resolve({**TRIAL_FLAGS, "data_dir": str(tiny_dataset(tmp_path.parent)), "epochs": 2,
                      "finetune_epochs": 2, "deterministic": True, "threads": 1, **flags})
    metrics = train.run_trial(params, QuietReporter(), tmp_path / name)
    monkeypatch.undo()
    return metrics, traces


def test_dense_and_finetune_share_one_trace_and_match_a_fresh_compile(tmp_path, monkeypatch):
    shared, traces = _trial(tmp_path, monkeypatch, "shared")
    assert traces == {"train": 1, "test": 1}  # fit() traced once for both phases, validation too
    monkeypatch.setattr(train, "_trace_key", lambda model: object())  # never the same: compile each phase
    fresh, fresh_traces = _trial(tmp_path, monkeypatch, "fresh")
    assert fresh_traces == {"train": 2, "test": 2}
    # not compared: the clock, and the gzip of a .keras zip, whose entries carry their write time
    numeric = [k for k, v in shared.items() if isinstance(v, (int, float)) and k not in ("duration_s", "model_gzip_bytes")]
    assert {"iou", "dense_iou", "sparsity", "loss"} <= set(numeric)
    assert {k: shared[k] for k in numeric} == {k: fresh[k] for k in numeric}  # bit for bit


def test_a_changed_model_is_traced_again(tmp_path, monkeypatch):
    """Channel pruning rebuilds the model at the prune point: its own trace, not the dense one's."""
    metrics, traces = _trial(tmp_path, monkeypatch, "channel", prune_mode="channel")
    assert metrics["params"] < metrics["dense_params"]
    assert traces["train"] == 2


def test_trial_anatomy_times_a_whole_trial_from_outside(tmp_path):
    flags = "--patch-size 32 --patch-stride 160 --val-fraction 0.1 --epochs 2 --finetune-epochs 2 --precision float32"
    config = tmp_path / "config.yml"
    config.write_text(f"trialCommand: python3 trial.py {flags}\n")
    out = tmp_path / "anatomy.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "trial-anatomy", "--config", str(config),
                           "--repeat", "1", "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(out.read_text())["summary"]["this"]
    stages = summary["stages"]
    assert list(stages)[:3] == ["start -> configured", "set-up -> epoch 1", "phase 1 epochs (2)"]
    assert {"between phases 1/2", "phase 2 epochs (2)", "last epoch -> final", "metrics printed -> exit"} <= set(stages)
    walls = [wall for wall, _ in stages.values()]
    assert all(w >= 0 for w in walls) and sum(walls) == pytest.approx(summary["wall_s"], abs=0.05)
    assert 0 < summary["steady_training_s"] < summary["wall_s"]
    assert summary["achieved_gflop_s"] > 0 and summary["precision"] == "float32"
    assert "| **wall / steady training** |" in done.stdout
