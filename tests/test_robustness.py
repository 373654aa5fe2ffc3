"""A failing trial never takes the experiment down, and says what happened.

- divergence: a learning rate that really diverges stops training at once and reports
  a final result the tuner can learn from (default 0.0, diverged 1), exit 0;
- reproducibility: same seed and parameters, same final metrics (op determinism on);
- a broken search space (a name the trial does not know) fails every trial with one
  clear line in its stderr while the experiment runs on to its trial limit.
"""
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from nni_helpers import STALL_S, TINY_DATA, base_config, running_experiment

from segmodel.experiment.records import read_told

ROOT = Path(__file__).resolve().parents[1]
# Tiny but real: built-in data, 32 px patches with a wide training stride (~90 patches).
TINY = TINY_DATA.split()


def run_trial_py(out_dir, *flags, timeout=300):
    return subprocess.Popen([sys.executable, "trial.py", *TINY, "--output_dir", str(out_dir), *flags],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def printed_metrics(stdout: str) -> dict:
    """trial.py's stdout is the final metrics alone, one JSON object (progress: stderr)."""
    return json.loads(stdout)


# ---- divergence ---------------------------------------------------------------------

def _tiny_model():
    import keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    return model


def _nan_proof_ce(y, p):
    """Like the seed's focal loss, which clips the prediction, but finite for NaN weights
    in every precision: whether clip() passes a NaN through depends on the dtype and the
    kernel (it does in float32 on CPU, not always in bfloat16), so NaNs become a
    uniform guess first. The guard must then notice the weights, not the loss."""
    import keras
    p = keras.ops.clip(keras.ops.nan_to_num(p, nan=1 / 3), 1e-7, 1 - 1e-7)
    return keras.ops.mean(keras.losses.categorical_crossentropy(y, p))


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("case", ["nan_loss", "nan_weights_finite_loss"])
def test_divergence_guard_stops_at_the_first_bad_batch(case, precision, policy):
    import keras

    from segmodel.callbacks import DivergenceGuard

    policy(precision)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(64) % 3]
    model = _tiny_model()
    # nan_loss: a NaN in the output layer and a loss that passes NaN on (no clipping);
    # nan_weights_finite_loss: a NaN in the first layer and a loss that stays finite.
    nan_loss = case == "nan_loss"
    model.compile(optimizer=keras.optimizers.SGD(1.0),
                  loss=(lambda y, p: keras.ops.mean(keras.ops.square(y - p))) if nan_loss else _nan_proof_ce)

    class Poison(keras.callbacks.Callback):  # after batch 3, one weight becomes NaN
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 3:
                kernel = self.model.layers[-1 if nan_loss else 0].kernel
                poisoned = np.array(kernel.numpy())
                poisoned[0, 0] = np.nan
                kernel.assign(poisoned)

    guard, seen = DivergenceGuard(), []
    count = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(float(logs["loss"])))
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[Poison(), guard, count])
    assert len(seen) == 4, seen  # batches 1-4 of 16 in epoch 1, then stop
    assert "at batch 4" in guard.reason
    if nan_loss:
        assert not math.isfinite(seen[-1]) and "loss became nan" in guard.reason, guard.reason
    else:
        assert math.isfinite(seen[-1]) and "weights became NaN" in guard.reason, (seen, guard.reason)


def test_diverging_learning_rate_reports_diverged_and_exits_0(tmp_path):
    """lr 1e4 blows the seed model's weights up to NaN within two batches while the seed's clipped
    focal loss stays finite (~1.1): the guard must watch the weights, not only the loss. (The
    BatchNorm U-Net is invariant to its conv weights' scale: it survives that rate.)"""
    code, out, err = finish(run_trial_py(tmp_path, "--learning_rate", "1e4", "--epochs", "3", "--finetune_epochs", "1",
                                         "--architecture", "seed"))
    assert code == 0, err[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["diverged"] == 1 and metrics["default"] == 0.0, metrics
    assert printed_metrics(out) == metrics
    reason = metrics["diverged_reason"]
    batch = int(reason.split("at batch ")[1].split()[0])
    assert batch <= 3, reason  # stopped at once: ~12 batches an epoch, 3 epochs planned
    # No epoch completed, so no history rows and no intermediate result; no model saved.
    assert (tmp_path / "history.csv").read_text().strip() == ""
    assert "intermediate:" not in err
    assert not (tmp_path / "model.keras").exists()
    assert not list(tmp_path.glob(".*tmp*"))


# ---- reproducibility ------------------------------------------------------------------

def test_same_seed_same_metrics_with_op_determinism(tmp_path):
    flags = ["--seed", "7", "--deterministic", "true", "--epochs", "1", "--finetune_epochs", "1",
             "--threads", "1", "--augment", "true"]
    procs = [run_trial_py(tmp_path / name, *flags) for name in ("a", "b")]  # side by side
    runs = []
    for proc in procs:
        code, out, err = finish(proc)
        assert code == 0, err[-3000:]
        runs.append(printed_metrics(out))
    a, b = runs
    numeric = [k for k, v in a.items() if isinstance(v, float) and k != "duration_s"]
    assert {"accuracy", "iou", "loss", "dense_accuracy"} <= set(numeric)
    assert {k: a[k] for k in numeric} == {k: b[k] for k in numeric}  # bit for bit, as README promises


# ---- a broken search space in a real experiment ----------------------------------------------


@pytest.mark.slow
def test_broken_search_space_fails_trials_clearly_and_experiment_runs_on(tmp_path):
    space = json.loads((ROOT / "search_space.json").read_text())
    space["weight7"] = space["weight6"]                                  # a typo'd name
    space["dropout_rate"] = {"_type": "uniform", "_value": [1.0, 1.5]}  # and an impossible range
    (tmp_path / "broken.json").write_text(json.dumps(space))
    config = base_config(searchSpaceFile=str(tmp_path / "broken.json"), maxTrialNumber=3, trialConcurrency=2)
    with running_experiment(config, tmp_path) as exp:
        trials = exp.wait_done(n_trials=3)
        status = exp.status()
        assert status != "ERROR"
        assert len(trials) == 3  # the experiment went on after the first failure
        for t in trials:
            tid = t["trialJobId"]
            assert t["status"] == "FAILED", t
            stderr = (exp.trial_dir(tid) / "trial.stderr").read_text()  # NNI 3.0 local: the trial's stderr
            lines = [line for line in stderr.splitlines() if line.strip()]
            assert len(lines) == 1, exp.trial_log(tid)
            assert lines[0].startswith("error: unknown parameter weight7 from NNI search space; known: weight1,")
            assert "Traceback" not in exp.trial_log(tid)
            assert not (exp.trial_dir(tid) / "metrics.json").exists()
        # The run is over but not in error: every trial was tried.
        assert exp.wait_done()
        # ... and config.yml's tuner was told each failure as the worst result (segmodel/experiment/tuner.py).
        folder = exp.workdir / "nni-experiments" / exp.id
        deadline = time.time() + STALL_S
        while len(told := read_told(folder)) < 3 and time.time() < deadline:
            time.sleep(1)  # the dispatcher handles TRIAL_END just after NNI records the status
        assert sorted((r["value"], r["source"]) for r in told.values()) == [(0.0, "failed")] * 3, told
