"""Channel pruning to a measured latency (`--prune-target latency:L`): the search keeps the
largest FLOPs target that meets the budget (checked against FLOPs as an exact cost), a trial
reports what it measured and whether it met it, and a machine that cannot time is refused."""
import json

import keras
import pytest
from artifact_helpers import TRIAL_FLAGS, QuietReporter, tiny_dataset

from segmodel.compress.cost_target import search_latency, target_plan
from segmodel.errors import ParamError
from segmodel.params import resolve

ALL = [{"op_types": ["default"]}]


@pytest.mark.parametrize("budget", [0.4, 0.75])
def test_search_finds_the_largest_target_that_meets_the_budget(unet, budget):
    """With the plan's FLOPs share as its 'latency', the answer is the flops:F plan at the
    budget, to the bisection's resolution; every candidate it kept met the budget."""
    plan_at = lambda f: target_plan(unet, ALL, "l1", f)  # noqa: E731
    fit = search_latency(plan_at, lambda plan: plan.flops_kept, budget)
    deepest = fit.tried[0][0]
    assert fit.reached and plan_at(fit.flops_target).flops_kept <= budget
    assert budget - (1 - deepest) / 2 ** 6 <= fit.flops_target <= budget + 0.01
    assert len(fit.tried) == 7 and all(ratio <= budget for f, ratio in fit.tried if f <= fit.flops_target)
    assert fit.stats() == {"latency_target": budget, "latency_kept": round(fit.ratio, 4), "prune_target_met": 1}


def test_search_out_of_reach_answers_the_deepest_plan(unet):
    plan_at = lambda f: target_plan(unet, ALL, "l1", f, floor=0.5)  # noqa: E731
    fit = search_latency(plan_at, lambda plan: plan.flops_kept, 0.05)
    assert not fit.reached and len(fit.tried) == 1
    assert fit.flops_target == fit.ratio == plan_at(1e-9).flops_kept > 0.05
    assert fit.stats()["prune_target_met"] == 0


class Recorder(QuietReporter):
    def final(self, value):
        self.result = value


def _params(tmp_path, **flags):
    base = {k: v for k, v in TRIAL_FLAGS.items() if k != "sparsity"}
    return resolve({**base, "architecture": "bn", "data_dir": str(tiny_dataset(tmp_path)), "prune_mode": "channel",
                    "deploy_size": 32, **flags})


def test_trial_with_a_latency_target_reports_what_it_measured(tmp_path, capsys, monkeypatch):
    """The trial path end to end, with two bisection steps: each candidate is a TFLite conversion
    and a timing child, and the search itself is tested above against FLOPs as an exact cost."""
    import functools

    from segmodel.compress import cost_target
    from segmodel.compress.flops import count_flops
    from segmodel.train import run_trial
    monkeypatch.setattr(cost_target, "search_latency", functools.partial(cost_target.search_latency, steps=2))
    params = _params(tmp_path, prune_target="latency:0.6", schedule="init")
    reporter = Recorder()
    run_trial(params, reporter, tmp_path / "trial")
    keras.mixed_precision.set_global_policy("float32")
    saved = json.loads((tmp_path / "trial" / "metrics.json").read_text())
    assert saved["latency_target"] == 0.6 and len(saved["latency_search"]) in (1, 3)  # deepest, then 2 steps
    # met or not is what the search measured for the plan it kept
    assert saved["prune_target_met"] == int(saved["latency_kept"] <= 0.6)
    assert [round(saved["flops_target"], 4), saved["latency_kept"]] in saved["latency_search"] \
        or not saved["prune_target_met"]
    model = keras.models.load_model(tmp_path / "trial" / "model.keras", compile=False)
    assert saved["flops"] == count_flops(model) <= saved["flops_target"] * saved["dense_flops"] + 1
    # NNI gets the numbers: the budget, what was measured, met or not; the search's list stays in metrics.json
    assert {k: reporter.result[k] for k in ("latency_target", "latency_kept", "prune_target_met")} == \
        {k: saved[k] for k in ("latency_target", "latency_kept", "prune_target_met")}
    assert "latency_search" not in reporter.result and reporter.result["speedup"] > 0
    assert "prune_target latency:0.6: flops:" in capsys.readouterr().err


def test_a_machine_that_cannot_time_is_refused_before_training(tmp_path, monkeypatch):
    """The probe times the dense model when the trial starts: a runner that fails there is a
    one-line ParamError (exit 2), not a crash after training."""
    from segmodel import data as datasets
    from segmodel.compress.compression import Compression
    from segmodel.deploy import latency_probe
    from segmodel.model import build_model

    class NoRuntime:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("no TFLite runtime\nsecond line")

    params = _params(tmp_path, prune_target="latency:0.5")
    splits = datasets.load(params)
    monkeypatch.setattr(latency_probe, "TFLiteRunner", NoRuntime)
    with pytest.raises(ParamError) as e:
        Compression.for_trial(params, build_model(params, splits.n_classes), splits)
    assert str(e.value) == ("prune_target latency: cannot time a TFLite model on this machine "
                            "(RuntimeError: no TFLite runtime)")
