"""Per-trial artifacts on a tiny real trial folder (run_trial, patch 32): plots, history,
TensorBoard logs where NNI's TensorBoard button looks."""
import numpy as np
import pytest


def test_trial_writes_plots_history_and_tensorboard(trial):
    for name in ("metrics.json", "params.json", "history.csv", "model.keras",
                 "iou_vs_epoch.png", "loss_vs_epoch.png", "pr_curves.png", "predictions.png"):
        path = trial / name
        assert path.is_file() and path.stat().st_size > 0, name
    assert (trial / "iou_vs_epoch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (trial / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,phase,") and "val_mean_iou" in lines[0] and "val_loss" in lines[0]
    assert [ln.split(",")[1] for ln in lines[1:]] == ["dense", "finetune"]
    for run in ("train", "validation"):
        assert list((trial / "tensorboard" / run).glob("events.out.tfevents.*")), run


def test_precision_recall_matches_sklearn():
    from sklearn.metrics import average_precision_score

    from segmodel.artifacts import precision_recall
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.3
    score = np.round(np.clip(y * 0.3 + rng.random(2000) * 0.7, 0, 1), 2)  # ties on purpose
    precision, recall, ap = precision_recall(y, score)
    assert ap == pytest.approx(average_precision_score(y, score), abs=1e-9)
    assert recall[-1] == pytest.approx(1.0) and np.all(np.diff(recall) >= 0)


def test_tensorboard_dir_links_where_nni_button_looks(tmp_path, monkeypatch):
    from segmodel.experiment import nni_bridge
    out = tmp_path / "exp42" / "environments" / "local-env" / "trials" / "AbCdE"
    out.mkdir(parents=True)
    monkeypatch.setenv("NNI_PLATFORM", "local")
    monkeypatch.setenv("NNI_OUTPUT_DIR", str(out))
    monkeypatch.setenv("NNI_TRIAL_JOB_ID", "AbCdE")
    monkeypatch.setenv("NNI_EXP_ID", "exp42")
    logs = nni_bridge.tensorboard_dir(out)
    button = tmp_path / "exp42" / "trials" / "AbCdE" / "output" / "tensorboard"
    assert button.resolve() == (out / "tensorboard").resolve() == type(button)(logs)
