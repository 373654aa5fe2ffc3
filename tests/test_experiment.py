"""A real NNI experiment: trials run, report per epoch, finish with a dict result."""
import math

import pytest
from nni_helpers import NNIExperiment, base_config, final_and_intermediate

pytestmark = pytest.mark.slow


def test_two_trials_succeed_and_report(tmp_path):
    epochs, finetune = 2, 1
    config = base_config(trialCommand=base_config()["trialCommand"].replace(
        "--epochs 1 --finetune_epochs 1", f"--epochs {epochs} --finetune_epochs {finetune}"),
        trialConcurrency=2)  # side by side: a trial is mostly start-up, which two cores overlap
    with NNIExperiment(config, tmp_path) as exp:
        trials = exp.wait_done(n_trials=2)
        assert len(trials) == 2
        for t in trials:
            tid = t["trialJobId"]
            assert t["status"] == "SUCCEEDED", exp.trial_log(tid)
            final, inter = final_and_intermediate(exp.metrics(tid))
            assert len(inter) == epochs + finetune, inter  # one per epoch of every phase
            assert len(final) == 1
            result = final[0]
            assert isinstance(result, dict) and isinstance(result["default"], float)
            assert result["default"] == pytest.approx(result["accuracy"])
            assert 0.75 < result["sparsity"] < 0.85
            for key in ("iou", "jacard", "accuracy", "dense_accuracy", "dense_iou"):
                assert 0 <= result[key] <= 1, (key, result[key])
            assert result["loss"] > 0 and math.isfinite(result["loss"])
            # what pruning bought, counted: nearly every weight is a conv's (biases and BN stay)
            assert 0 < result["nonzero_params"] < result["params"]
            assert 1 - result["nonzero_params"] / result["params"] == pytest.approx(result["sparsity"], abs=0.02)
            assert result["diverged"] == 0 and result["duration_s"] > 0
        # Each trial saved its artifacts in NNI's trial output directory.
        for t in trials:
            out = exp.trial_dir(t["trialJobId"])
            assert (out / "metrics.json").is_file() and (out / "model.keras").is_file()
