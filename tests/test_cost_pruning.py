"""Channel pruning to a FLOPs budget (`--prune-target flops:F`): the thin model's counted FLOPs
meet the target to within one channel, floors hold, dead channels go first, the thin model
still equals the masked one, and bad input is one line before training."""
import math

import keras
import numpy as np
import pytest
from artifact_helpers import assert_refused_before_tensorflow
from channel_helpers import assert_equal_outputs, branchy_model, kill, randomize

from segmodel.compress.channel_masks import masked_copy
from segmodel.compress.channels import rebuild
from segmodel.compress.cost_target import target_plan
from segmodel.compress.flops import count_flops
from segmodel.errors import ParamError
from segmodel.model import multi_unet_model
from segmodel.surgery import resized_config

ALL = [{"op_types": ["default"]}]
X32 = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)


def _flops_with(model, widths: dict) -> int:
    """FLOPs counted from a model built at these widths (no weights needed)."""
    return count_flops(keras.Model.from_config(resized_config(model.get_config(), widths)))


@pytest.mark.parametrize("target", [0.5, 0.3])
def test_thin_unet_meets_the_flops_target_to_within_one_channel(unet, target):
    dense = count_flops(unet)
    p = target_plan(unet, ALL, "l1", target)
    thin = rebuild(unet, p)
    assert count_flops(thin) == p.flops <= target * dense and p.reached
    assert p.flops_kept == pytest.approx(count_flops(thin) / dense)
    # greedy: it stopped at the first removal that reached the target, so putting back one of the
    # removed channels (the last one went from one of these layers) goes over it again
    widths = {n: len(k) for n, k in p.keep.items()}
    over = [name for name in widths if widths[name] < p.channels[name]
            and _flops_with(unet, {**widths, name: widths[name] + 1}) > target * dense]
    assert over, "more was removed than the target needed"
    assert thin.get_layer("logits").filters == 6 and thin.output_shape == unet.output_shape
    # one global ranking, not a uniform ratio: the costly channels (full resolution, many inputs)
    # go first, some layers down to the floor, while the cheap deep ones keep all of theirs
    assert "down1_conv2" in [n for n, k in p.keep.items() if len(k) == math.ceil(0.1 * p.channels[n])]
    assert len(p.keep["bottleneck_conv1"]) == 256
    assert_equal_outputs(thin, masked_copy(unet, p), X32)


def test_floors_hold_and_an_unreachable_target_says_so(unet):
    dense = count_flops(unet)
    floor = 0.25
    p = target_plan(unet, ALL, "l2", 0.02, floor=floor)
    assert not p.reached and p.flops == count_flops(rebuild(unet, p)) > 0.02 * dense
    assert p.stats()["prune_target_met"] == 0 and p.stats()["flops_target"] == 0.02
    for name, kept in p.keep.items():  # every layer stopped at its floor (the head keeps its classes)
        assert len(kept) == (6 if name == "logits" else math.ceil(floor * p.channels[name])), name
    # floor 0: down to one channel per layer
    p = target_plan(unet, ALL, "l2", 0.001, floor=0.0)
    assert {len(k) for n, k in p.keep.items() if n != "logits"} == {1}


def test_importance_is_normalized_within_each_layer_and_divided_by_the_saving():
    """Two layers of equal cost, one with 10x larger weights: normalized, the ranking
    follows each channel's weight relative to its own layer, not the layers' scales."""
    inp = keras.Input((8, 8, 2))
    a = keras.layers.Conv2D(4, 1, use_bias=False, name="a")(inp)
    b = keras.layers.Conv2D(4, 1, use_bias=False, name="b")(inp)
    model = keras.Model(inp, keras.layers.Conv2D(2, 1, name="head")(keras.layers.concatenate([a, b])))
    model.get_layer("a").kernel.assign(np.array([[[[10, 10, 10, 1], [10, 10, 10, 1]]]], "float32") * 10)
    model.get_layer("b").kernel.assign(np.array([[[[5, 5, 5, 5], [5, 5, 5, 5]]]], "float32"))
    dense = count_flops(model)  # 64 * (2*4 + 2*4 + 8*2) = 2048; one channel of a or b saves 64 * (2 + 2)
    p = target_plan(model, [{"op_names": ["a", "b"]}], "l1", 1 - 256 / dense + 1e-9, floor=0.0)
    assert p.flops == dense - 256 and p.keep["a"].tolist() == [0, 1, 2] and p.keep["b"].tolist() == [0, 1, 2, 3]


def test_config_list_selects_the_layers_and_a_sparsity_in_it_is_refused(unet):
    p = target_plan(unet, [{"op_types": ["Conv2D"]}, {"exclude": True, "op_names": ["down1_conv1"]}], "l1", 0.5)
    assert len(p.keep["down1_conv1"]) == 16
    assert all(len(p.keep[f"up{i}_transpose"]) == p.channels[f"up{i}_transpose"] for i in range(1, 5))
    assert p.flops <= 0.5 * count_flops(unet) and "down1_conv1" not in p.targets
    with pytest.raises(ParamError, match=r"config_list\[0\] gives a sparsity, but with prune_target") as e:
        target_plan(unet, [{"sparsity": 0.5, "op_types": ["default"]}], "l1", 0.5)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("architecture", ["seed", "bn"])
def test_dead_channels_go_first_and_below_the_floor(architecture):
    from segmodel.compress.activation_stats import collect
    from segmodel.compress.channels import dead_plan
    keras.utils.set_random_seed(1)
    model = multi_unet_model(0.1, 6, 32, 32, 3, architecture=architecture)
    kill(model, "up2_conv2", slice(None), architecture)                 # a whole decoder layer
    kill(model, "bottleneck_conv2", np.arange(0, 256, 3), architecture)  # cheap channels: last by cost alone
    never = {n: s.never_fires for n, s in collect(model, X32).layers.items()}
    dense = count_flops(model)

    def removed(p):
        return {n: np.setdiff1d(np.arange(p.channels[n]), k) for n, k in p.keep.items()}

    first = target_plan(model, ALL, "l1", 0.999, calibration=X32)   # just past the first channel or two
    assert any(r.size for r in removed(first).values())
    assert all(never[n][r].all() for n, r in removed(first).items())
    # a target that the dead channels alone just reach: all of them go (one stays per layer), no live one
    exact = dead_plan(model, X32)
    p = target_plan(model, ALL, "l1", count_flops(rebuild(model, exact)) / dense + 1e-6, calibration=X32)
    assert {n: len(k) for n, k in p.keep.items()} == {n: len(k) for n, k in exact.keep.items()}
    assert len(p.keep["up2_conv2"]) == 1 < math.ceil(0.1 * 64)        # below the floor: dead
    assert set(range(0, 256, 3)).isdisjoint(p.keep["bottleneck_conv2"].tolist())
    np.testing.assert_allclose(rebuild(model, p)(X32, training=False), model(X32, training=False),
                               rtol=1e-5, atol=1e-6)  # only dead channels went: exact on the calibration data
    if architecture == "bn":  # dead by their BN, their kernels as large as any: a weight norm cannot tell
        blind = target_plan(model, ALL, "l1", 0.999)
        assert not all(never[n][r].all() for n, r in removed(blind).items())


@pytest.mark.parametrize("criterion", ["fpgm", "apoz", "mean_activation"])
def test_thin_equals_masked_for_target_plans_with_ties_and_batchnorm(criterion):
    model = randomize(branchy_model())
    x = np.random.default_rng(1).random((4, 16, 16, 3), dtype=np.float32)
    p = target_plan(model, ALL, criterion, 0.4, calibration=x)
    thin = rebuild(model, p)
    assert count_flops(thin) == p.flops <= 0.4 * count_flops(model)
    np.testing.assert_array_equal(p.keep["b"], p.keep["c"])  # tied by the Add
    assert len(p.keep["seg"]) == 4 and len(p.keep["cls"]) == 3
    assert_equal_outputs(thin, masked_copy(model, p), x)
    keras.utils.set_random_seed(0)
    bn = randomize(multi_unet_model(0.1, 6, 32, 32, 3, architecture="bn"))
    p = target_plan(bn, ALL, criterion, 0.3, calibration=X32)
    assert_equal_outputs(rebuild(bn, p), masked_copy(bn, p), X32)


def test_channel_round_keeps_multiples_and_the_target_met(unet):
    dense = count_flops(unet)
    exact = target_plan(unet, ALL, "l1", 0.3, floor=0.25)
    p = target_plan(unet, ALL, "l1", 0.3, floor=0.25, round_to=8)
    floors = {n: math.ceil(0.25 * c) for n, c in p.channels.items()}
    for name, kept in p.keep.items():
        n, before = len(kept), len(exact.keep[name])
        assert n == p.channels[name] or n % 8 == 0 or n == before < 8 or n == floors[name], (name, n)
        assert set(kept) <= set(exact.keep[name])  # rounding only removes, lowest ranked first
    thin = rebuild(unet, p)
    assert p.reached and count_flops(thin) == p.flops < exact.flops <= 0.3 * dense
    assert_equal_outputs(thin, masked_copy(unet, p), X32)


def test_activation_criterion_without_calibration_and_bad_targets():
    model = branchy_model()
    with pytest.raises(ParamError, match="apoz ranks by activations and needs calibration"):
        target_plan(model, ALL, "apoz", 0.5)
    for target, floor in [(0.0, 0.1), (1.5, 0.1), (0.5, 1.5)]:
        with pytest.raises(ParamError):
            target_plan(model, ALL, "l1", target, floor)


# ---- the trial: parameters, the prune point, metrics --------------------------------------

@pytest.mark.parametrize("argv,expect", [
    (["--prune-mode", "channel", "--prune-target", "latency:0.5"],
     "error: prune_target latency:L is measured at the deploy size: give --deploy-size"),
    (["--prune-mode", "channel", "--prune-target", "flops:1.2"],
     "error: prune_target must be flops:F or latency:L with 0 < F, L < 1"),
    (["--prune-mode", "channel", "--prune-target", "latency:0", "--deploy-size", "64"],
     "error: prune_target must be flops:F or latency:L"),
    (["--prune-mode", "channel", "--prune-target", "flops"], "error: prune_target must be flops:F"),
    (["--prune-mode", "channel", "--prune-target", "params:0.5"], "error: prune_target must be flops:F"),
    (["--prune-target", "latency:0.5", "--deploy-size", "64"], "error: prune_target needs prune_mode channel"),
    (["--prune-target", "flops:0.5"], "error: prune_target needs prune_mode channel"),
    (["--prune-mode", "channel", "--prune-target", "flops:0.5", "--sparsity", "0.5"],
     "error: give sparsity or prune_target, not both"),
    (["--prune-mode", "channel", "--prune-target", "flops:0.5", "--prune-config",
      '[{"sparsity": 0.5, "op_types": ["Conv2D"]}]'], "error: config_list[0] gives a sparsity, but with prune_target"),
    (["--prune-mode", "channel", "--prune-target", "flops:0.5", "--channel-floor", "2"],
     "error: channel_floor must be in [0, 1]"),
    (["--prune-mode", "channel", "--channel-round", "0"], "error: channel_round must be >= 1"),
    (["--channel-round", "8"], "error: channel_round needs prune_mode channel"),
])
def test_bad_target_is_one_line_exit_2_before_tensorflow(argv, expect):
    assert_refused_before_tensorflow(argv, expect)


def test_params_with_a_target_select_layers_only():
    from segmodel.params import resolve
    params = resolve({"prune_mode": "channel", "prune_target": "flops:0.45"})
    assert params.flops_target == 0.45 and params.config_list == [{"op_types": ["default"]}]
    config = '[{"op_types": ["Conv2D"]}, {"exclude": true, "op_names": ["logits"]}]'
    assert resolve({"prune_mode": "channel", "prune_target": "flops:0.5", "prune_config": config}).config_list[1] \
        == {"exclude": True, "op_names": ["logits"]}
    assert resolve().flops_target is None


def test_compression_warns_in_one_line_when_the_floors_stop_it(capsys):
    from segmodel.compress.compression import Compression
    from segmodel.params import resolve
    params = resolve({"prune_mode": "channel", "prune_target": "flops:0.05", "channel_floor": "0.5",
                      "calibration_patches": "0", "patch_size": "32"})
    keras.utils.set_random_seed(0)
    model = multi_unet_model(0.1, 6, 32, 32, 3)
    compression = Compression.for_trial(params, model)
    capsys.readouterr()
    thin, stats = compression.finish(compression.prune(model))
    err = capsys.readouterr().err
    assert err.startswith("warning: prune_target flops:0.05 not reached: the floors (channel_floor 0.5)")
    assert err.count("\n") == 1
    assert stats["prune_target_met"] == 0 and stats["flops_kept"] == count_flops(thin) / count_flops(model) > 0.05
    assert thin.get_layer("down1_conv1").filters == 8
    # per config_list entry (metrics' config_sparsity): the target asked, not the entry
    assert stats["config_sparsity"] == [{"asked": None, "achieved": stats["channel_sparsity"]}]


@pytest.mark.parametrize("floor, unrounded", [("0.4", True), ("0.5", False)])
def test_channel_round_the_floors_refuse_is_said(capsys, floor, unrounded):
    """At floor 0.4 the U-Net's layers stop at 7/13/26/52/103 channels, none a multiple of 8:
    the trial says so in one line; at 0.5 (8/16/32/64/128) rounding holds and nothing is said."""
    from segmodel.compress.compression import Compression
    from segmodel.params import resolve
    params = resolve({"prune_mode": "channel", "prune_target": "flops:0.05", "channel_floor": floor,
                      "channel_round": "8", "calibration_patches": "0", "patch_size": "32"})
    keras.utils.set_random_seed(0)
    model = multi_unet_model(0.1, 6, 32, 32, 3)
    compression = Compression.for_trial(params, model)
    capsys.readouterr()
    thin = compression.prune(model)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("warning: prune_target flops:0.05 not reached")
    widths = {thin.get_layer(f"{name}_conv1").filters for name in ("down1", "down2", "down3", "down4")}
    assert (widths == {7, 13, 26, 52}) == unrounded and (widths == {8, 16, 32, 64}) != unrounded
    if unrounded:
        assert lines[1:] == [f"warning: channel_round 8 not met in {len(compression.plan.targets) - 1} layer(s) "
                             "(down1_conv1 7, down1_conv2 7, down2_conv1 13, down2_conv2 13 and "
                             f"{len(compression.plan.targets) - 5} more): the floors (channel_floor 0.4) or "
                             "fewer than 8 channels left keep these counts"]
    else:
        assert lines[1:] == []


def test_trial_with_a_flops_target_reports_what_it_kept(tmp_path):
    import json

    from artifact_helpers import TRIAL_FLAGS, QuietReporter, tiny_dataset

    from segmodel.params import resolve
    from segmodel.train import run_trial
    flags = {k: v for k, v in TRIAL_FLAGS.items() if k != "sparsity"}
    params = resolve({**flags, "data_dir": str(tiny_dataset(tmp_path)), "prune_mode": "channel",
                      "prune_target": "flops:0.4", "channel_criterion": "apoz", "calibration_patches": 16})
    metrics = run_trial(params, QuietReporter(), tmp_path / "trial")
    keras.mixed_precision.set_global_policy("float32")
    saved = json.loads((tmp_path / "trial" / "metrics.json").read_text())
    model = keras.models.load_model(tmp_path / "trial" / "model.keras", compile=False)
    assert saved["flops"] == count_flops(model) and saved["flops_kept"] == saved["flops"] / saved["dense_flops"]
    assert saved["flops_kept"] <= 0.4 and saved["flops_target"] == 0.4 and saved["prune_target_met"] == 1
    assert metrics["flops_kept"] == saved["flops_kept"] and 0 < saved["channel_sparsity"] < 1
