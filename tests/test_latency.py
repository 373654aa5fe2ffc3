"""A trial times what it ships (--deploy-size): float32 and int8 TFLite against its dense model."""
import pytest
from artifact_helpers import TRIAL_FLAGS, QuietReporter, tiny_dataset

from segmodel.deploy.latency_probe import constrained
from segmodel.errors import ParamError
from segmodel.params import resolve


def test_min_speedup_scales_the_objective_only_below_the_budget():
    assert constrained(0.8, 3.0, 2.0) == 0.8           # faster than asked: the objective as it is
    assert constrained(0.8, 1.0, 2.0) == pytest.approx(0.4)  # half the asked speedup: half the objective


@pytest.mark.parametrize("flags, message", [
    ({"min_speedup": 2.0}, "give --deploy-size"),
    ({"deploy_size": 100}, "multiple of 16"),
    ({"deploy_format": "int4"}, "deploy_format must be one of"),
])
def test_bad_latency_parameters_are_one_line_before_training(flags, message):
    with pytest.raises(ParamError, match=message):
        resolve(flags)


def test_channel_pruned_trial_reports_its_measured_latency(artifacts, tmp_path):
    from segmodel.train import run_trial
    params = resolve({**TRIAL_FLAGS, "architecture": "bn", "data_dir": str(tiny_dataset(artifacts)), "prune_mode": "channel",
                      "sparsity": 0.5, "deploy_size": 64, "deploy_format": "int8", "min_speedup": 100.0})
    metrics = run_trial(params, QuietReporter(), tmp_path)
    for form in ("float32", "int8"):
        assert metrics[f"{form}_latency_ms"] > 0
        assert metrics[f"{form}_speedup"] == pytest.approx(metrics["dense_latency_ms"] / metrics[f"{form}_latency_ms"],
                                                           rel=1e-2)
        assert metrics[f"{form}_xnnpack"] == 1  # the runner ran each file whole on XNNPACK
    assert (metrics["latency_ms"], metrics["speedup"]) == (metrics["int8_latency_ms"], metrics["int8_speedup"])
    # a budget no model meets scales the objective down by the shortfall
    assert metrics["default"] == pytest.approx(metrics["accuracy"] * metrics["speedup"] / 100.0)
