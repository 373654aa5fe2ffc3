"""Gradual channel pruning (`--prune-mode channel --schedule agp`): masks raised on AGP's cubic
schedule through fine-tuning, held at zero by the optimizer's constraints, never lifted once
set, and the rebuild at the end equal to the masked model."""
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from channel_helpers import assert_equal_outputs

from segmodel.compress.channel_masks import channel_masks, masked_copy
from segmodel.compress.compression import Compression
from segmodel.compress.flops import count_flops
from segmodel.compress.pruning import MaskConstraint, agp_sparsity
from segmodel.model import multi_unet_model
from segmodel.params import resolve

RNG = np.random.default_rng(0)
X = RNG.random((8, 32, 32, 3), dtype=np.float32)
Y = keras.utils.to_categorical(RNG.integers(0, 6, (8, 32, 32)), 6)


def _fine_tune(flags, architecture):
    """A U-Net at 32 px through compression.prune, 12 steps of fit with the AGP callback (its
    schedule over the first 6, masks every 2) and finish; the plans made on the way, in order."""
    import tensorflow as tf
    keras.utils.set_random_seed(0)
    params = resolve({"prune_mode": "channel", "schedule": "agp", "agp_steps": 6, "agp_frequency": 2,
                      "patch_size": 32, "calibration_patches": 8, **flags})
    model = multi_unet_model(0.1, 6, 32, 32, 3, architecture=architecture)
    dense = count_flops(model)
    splits = SimpleNamespace(train=tf.data.Dataset.from_tensor_slices((X, Y)).batch(2))
    compression = Compression.for_trial(params, model, splits)
    pruned = compression.prune(model)
    assert pruned is model and count_flops(model) == dense          # same size while it trains
    masker, plans = compression.masker, []
    plan_at = masker.plan_at
    masker.plan_at = lambda *a: plans.append((a[1], plan_at(*a))) or plans[-1][1]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    before = [w.numpy().copy() for w in model.weights]
    model.fit(X, Y, batch_size=2, epochs=3, verbose=0, callbacks=compression.finetune_callbacks(4))
    assert masker.fraction == 1.0 and [f for f, _ in plans] == [agp_sparsity(s, 6, 1.0) for s in (2, 4, 6)]
    for w, mask in channel_masks(model, masker.plan):          # held at 0 through every step
        assert isinstance(w.constraint, MaskConstraint) and not w.numpy()[mask == 0].any(), w.path
    assert any(np.abs(w.numpy() - b).max() > 1e-3 for w, b in zip(model.weights, before))  # it trained
    masked = masked_copy(model, masker.plan)
    thin, stats = compression.finish(model)
    assert not any(isinstance(w.constraint, MaskConstraint) for w in model.weights)
    return thin, masked, stats, [p for _, p in plans], dense


def _assert_same_logits(thin, masked):
    """Equal to float precision, before the softmax (12 steps at lr 1e-2 on random labels blow the
    logits up to ~1e4, where a saturated softmax turns float rounding into visible differences)."""
    def logits(m):
        return keras.Model(m.inputs, m.get_layer("logits").output)
    assert_equal_outputs(logits(thin), logits(masked), X)


def _removed(plan):
    return {n: set(range(plan.channels[n])) - set(k.tolist()) for n, k in plan.keep.items()}


def _assert_nested(plans):
    """A channel once masked stays masked, and more go at every update."""
    for earlier, later in zip(plans, plans[1:]):
        a, b = _removed(earlier), _removed(later)
        assert all(a[n] <= b[n] for n in a) and sum(map(len, b.values())) > sum(map(len, a.values())) > 0


def test_agp_masks_uniform_channels_gradually_and_the_rebuild_equals_the_masked_model():
    thin, masked, stats, plans, dense = _fine_tune({"sparsity": 0.5}, "seed")
    _assert_nested(plans)
    assert stats["channel_sparsity"] == pytest.approx(0.5, abs=0.01) and thin.get_layer("down1_conv1").filters == 8
    assert stats["flops_kept"] == count_flops(thin) / dense < 0.3
    _assert_same_logits(thin, masked)


@pytest.mark.parametrize("criterion", ["apoz", "l2"])
def test_agp_to_a_flops_target_with_batchnorm(criterion):
    """BN architecture: the masks zero the BN's gamma and beta too."""
    thin, masked, stats, plans, dense = _fine_tune(
        {"prune_target": "flops:0.4", "channel_criterion": criterion}, "bn")
    _assert_nested(plans)
    assert plans[-1].flops == count_flops(thin) <= 0.4 * dense and stats["prune_target_met"] == 1
    assert thin.get_layer("down2_conv1_bn").gamma.shape[0] == thin.get_layer("down2_conv1").filters
    _assert_same_logits(thin, masked)


def test_forced_channels_go_first_whatever_the_criterion_ranks():
    """What keeps masks from being lifted: a criterion may rank a zeroed filter anywhere (FPGM
    by its distance to the others: five 1x1 filters as points (0,0) (1,0) (0,1) (5,5) (0.4,0.4),
    (0.4,0.4) the nearest the median), but the channels an earlier plan removed go first."""
    from segmodel.compress.channels import plan
    from segmodel.compress.cost_target import target_plan
    inp = keras.Input((4, 4, 2))
    model = keras.Model(inp, keras.layers.Conv2D(2, 1, name="head")(keras.layers.Conv2D(5, 1, name="k")(inp)))
    model.get_layer("k").kernel.assign(np.array([[0, 0], [1, 0], [0, 1], [5, 5], [0.4, 0.4]], "float32").T[None, None])
    first = {"k": np.array([False, False, True, False, False])}
    only_k = [{"sparsity": 0.2, "op_names": ["k"]}]
    assert plan(model, only_k, "fpgm").keep["k"].tolist() == [0, 1, 2, 3]
    assert plan(model, only_k, "fpgm", forced=first).keep["k"].tolist() == [0, 1, 3, 4]
    assert plan(model, [{**only_k[0], "sparsity": 0.4}], "fpgm", forced=first).keep["k"].tolist() == [0, 1, 3]
    # with a FLOPs target they go even when the target asks for nothing, and below the floor
    assert target_plan(model, [{"op_names": ["k"]}], "fpgm", 1.0, floor=1.0, forced=first).keep["k"].tolist() \
        == [0, 1, 3, 4]


def test_trial_with_gradual_channel_pruning(tmp_path):
    import json

    from artifact_helpers import TRIAL_FLAGS, QuietReporter, tiny_dataset

    from segmodel.train import run_trial
    params = resolve({**TRIAL_FLAGS, "data_dir": str(tiny_dataset(tmp_path)), "prune_mode": "channel",
                      "schedule": "agp", "agp_frequency": 4})
    run_trial(params, QuietReporter(), tmp_path / "trial")
    keras.mixed_precision.set_global_policy("float32")
    metrics = json.loads((tmp_path / "trial" / "metrics.json").read_text())
    model = keras.models.load_model(tmp_path / "trial" / "model.keras", compile=False)
    assert metrics["schedule"] == "agp" and model.get_layer("down1_conv1").filters == 8
    assert metrics["channel_sparsity"] == pytest.approx(0.5, abs=0.01) and metrics["flops"] == count_flops(model)
    header, *rows = (tmp_path / "trial" / "history.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in rows] == ["dense", "finetune"]
