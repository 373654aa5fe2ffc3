"""`report` (and `export` of the best trial) on a real, tiny NNI experiment:
one trial succeeds, one fails on an invalid sparsity."""
import csv

import pytest
from artifact_helpers import read_json, tiny_dataset
from nni_helpers import NNIExperiment, base_config

from segmodel.__main__ import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def experiment(artifacts, tmp_path_factory):
    base = artifacts
    work = tmp_path_factory.mktemp("report-exp")
    config = base_config(
        trialCommand=base_config()["trialCommand"] + f" --finetune_epochs 0 --data_dir '{tiny_dataset(base)}'",
        searchSpace={"sparsity": {"_type": "choice", "_value": [0.5, 1.5]}},
        tuner={"name": "GridSearch"},
        maxTrialNumber=2,
    )
    config.pop("searchSpaceFile", None)
    with NNIExperiment(config, work) as exp:
        # A running experiment (trials waiting or training) reports without error.
        assert main(["report", exp.id, "--out", str(work / "early")]) == 0
        exp.wait_done(n_trials=2)
        yield exp


def test_report_ranks_trials_and_lists_the_failed_one(experiment, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", experiment.id, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "sparsity must be in [0, 1)" in printed
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert [r["status"] for r in rows] == ["SUCCEEDED", "FAILED"]
    best, failed = rows
    assert best["rank"] == "1" and float(best["iou"]) > 0 and float(best["sparsity"]) == pytest.approx(0.5, abs=0.01)
    assert float(best["gzip_mb"]) > 0 and float(best["duration_s"]) > 0 and best["hp_sparsity"] == "0.5"
    assert failed["rank"] == "" and "sparsity must be in [0, 1)" in failed["note"]
    md = (out / "leaderboard.md").read_text()
    assert "## Trials without a final result" in md and failed["trial"] in md
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    # The experiment folder works as well as its id.
    assert main(["report", str(experiment.workdir / "nni-experiments" / experiment.id), "--out", str(out)]) == 0


def test_trial_artifacts_and_tensorboard_button_path(experiment):
    ok = [t for t in experiment.trials() if t["status"] == "SUCCEEDED"][0]["trialJobId"]
    out = experiment.trial_dir(ok)
    for name in ("history.csv", "iou_vs_epoch.png", "loss_vs_epoch.png", "pr_curves.png", "predictions.png"):
        assert (out / name).is_file(), name
    button = experiment.workdir / "nni-experiments" / experiment.id / "trials" / ok / "output" / "tensorboard"
    assert list(button.glob("validation/events.out.tfevents.*"))


def test_export_takes_the_best_trial_and_names_bad_trials(experiment, tmp_path, capsys):
    trials = {t["status"]: t["trialJobId"] for t in experiment.trials()}
    out = tmp_path / "export"
    assert main(["export", experiment.id, "--out", str(out), "--formats", "keras,tflite_int8",
                 "--calibration-samples", "8"]) == 0
    result = read_json(out / "export.json")
    assert result["trial"] == trials["SUCCEEDED"] and result["experiment"] == experiment.id
    assert [e["format"] for e in result["formats"]] == ["keras", "tflite_int8"]
    capsys.readouterr()
    assert main(["export", experiment.id, "--trial", trials["FAILED"], "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: trial {trials['FAILED']}: missing ") and err.endswith("params.json")
    assert main(["export", experiment.id, "--trial", "nope", "--out", str(out)]) == 2
    assert "has no trial 'nope'" in capsys.readouterr().err


def test_report_on_missing_experiment_is_one_line(capsys):
    assert main(["report", "no-such-experiment"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no NNI experiment 'no-such-experiment'") and "\n" not in err


def test_pareto_front_against_measured_latency(tmp_path):
    """`--pareto-x latency_ms,speedup`: the front is the trials no other is both faster and better than."""
    from segmodel.experiment.report import pareto_front, plot_pareto
    rows = [{"trial": "a", "seq": 1, "iou": 0.80, "latency_ms": 20.0, "speedup": 1.0, "default": 0.80, "rank": 1},
            {"trial": "b", "seq": 2, "iou": 0.78, "latency_ms": 9.0, "speedup": 2.2, "default": 0.78, "rank": 2},
            {"trial": "c", "seq": 3, "iou": 0.70, "latency_ms": 12.0, "speedup": 1.7, "default": 0.70, "rank": 3}]
    points = [(r["latency_ms"], r["iou"]) for r in rows]
    assert [rows[i]["trial"] for i in pareto_front(points, maximize_x=False)] == ["b", "a"]
    assert plot_pareto(rows, tmp_path / "pareto.png", axes=("latency_ms", "speedup"))
    assert (tmp_path / "pareto.png").stat().st_size > 1000
