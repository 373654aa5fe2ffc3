"""Channel pruning: dependency-aware plans, the thin rebuild equal to the masked model,
NNI's criteria and config_list semantics, the errors, and FLOPs counted from layers."""
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from channel_helpers import (
    assert_equal_outputs,
    branchy_model,
    kill,
    outputs,
    randomize,
)
from keras import layers

from segmodel.compress.channel_masks import masked_copy
from segmodel.compress.channels import dead_plan, plan, rebuild
from segmodel.compress.flops import count_flops
from segmodel.compress.importance import importance
from segmodel.errors import ParamError
from segmodel.model import multi_unet_model

HALF = [{"sparsity": 0.5, "op_types": ["default"]}]
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


X16 = np.random.default_rng(1).random((2, 16, 16, 3), dtype=np.float32)


@pytest.mark.parametrize("criterion", ["l1", "l2", "fpgm"])
def test_thin_branchy_model_equals_masked_model(criterion):
    model = randomize(branchy_model())
    p = plan(model, HALF, criterion)
    thin, masked = rebuild(model, p), masked_copy(model, p)
    assert_equal_outputs(thin, masked, X16)
    # pruning really happened and changed what the model computes
    assert any(np.abs(o1 - o2).max() > 1e-3 for o1, o2 in zip(outputs(model, X16), outputs(masked, X16)))
    assert thin.count_params() < model.count_params()
    widths = {l.name: (l.filters if hasattr(l, "filters") else l.units)
              for l in thin.layers if hasattr(l, "kernel")}
    # tied pair shares one keep set; the outputs' producers (seg, cls) keep every channel
    assert widths == {"a": 4, "b": 4, "c": 4, "d": 6, "up": 3, "e": 5, "fc": 8, "seg": 4, "cls": 3}
    np.testing.assert_array_equal(p.keep["b"], p.keep["c"])
    assert thin.get_layer("e").kernel.shape[2] == 3 + 4 + 6   # the concat consumer's input slice


def test_thin_unet_equals_masked_unet_and_is_smaller():
    keras.utils.set_random_seed(0)
    model = randomize(multi_unet_model(0.1, 6, 32, 32, 3))
    p = plan(model, HALF, "l1")
    thin, masked = rebuild(model, p), masked_copy(model, p)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    assert_equal_outputs(thin, masked, x)
    assert thin.output_shape == model.output_shape                 # the head keeps its 6 classes
    assert thin.get_layer("logits").filters == 6
    assert thin.get_layer("up1_conv1").kernel.shape[2] == 64 + 64  # transpose + skip, each halved
    assert count_flops(model) / count_flops(thin) >= 3.5
    assert thin.count_params() < 0.3 * model.count_params()


def test_channel_round_keeps_multiples_and_removes_at_least_the_sparsity():
    keras.utils.set_random_seed(0)
    model = randomize(multi_unet_model(0.1, 6, 32, 32, 3))
    thirty = [{"sparsity": 0.3, "op_types": ["default"]}]
    exact, rounded = plan(model, thirty, "l1"), plan(model, thirty, "l1", round_to=8)
    for name, kept in rounded.keep.items():
        c = rounded.channels[name]
        if name == "logits":
            assert len(kept) == 6  # the head is pinned: nothing to round
            continue
        assert len(kept) == (c - int(c * 0.3)) // 8 * 8  # 16/32/64/128/256 -> 8/16/40/88/176
        assert set(kept) <= set(exact.keep[name])        # the same ranking, cut further
    thin = rebuild(model, rounded)
    assert [thin.get_layer(f"down{i}_conv1").filters for i in range(1, 5)] == [8, 16, 40, 88]
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    assert_equal_outputs(thin, masked_copy(model, rounded), x)


@pytest.mark.parametrize("criterion", ["l1", "apoz", "mean_activation"])
def test_thin_batchnorm_unet_equals_masked_unet(criterion):
    """architecture bn: conv (no bias) -> BN -> ReLU; the BN vectors move with the kept filters."""
    keras.utils.set_random_seed(0)
    model = randomize(multi_unet_model(0.1, 6, 32, 32, 3, architecture="bn"))
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    p = plan(model, HALF, criterion, calibration=x)
    thin, masked = rebuild(model, p), masked_copy(model, p)
    assert_equal_outputs(thin, masked, x)
    assert thin.get_layer("up1_conv1_bn").gamma.shape == (64,) and thin.get_layer("up1_conv1").bias is None
    assert count_flops(model) / count_flops(thin) >= 3.5


@pytest.mark.parametrize("architecture", ["seed", "bn"])
def test_pruning_exactly_the_dead_channels_leaves_the_outputs_unchanged(architecture):
    keras.utils.set_random_seed(1)
    model = multi_unet_model(0.1, 6, 32, 32, 3, architecture=architecture)  # he_normal: activations O(1)
    kill(model, "up2_conv2", slice(None), architecture)            # a whole decoder layer
    kill(model, "bottleneck_conv2", np.arange(0, 256, 3), architecture)
    kill(model, "down1_conv1", [0, 5], architecture)
    x = np.random.default_rng(3).random((6, 32, 32, 3), dtype=np.float32)
    p = dead_plan(model, x)
    thin = rebuild(model, p)
    dense_out, thin_out = np.asarray(model(x, training=False)), np.asarray(thin(x, training=False))
    np.testing.assert_allclose(thin_out, dense_out, rtol=1e-5, atol=1e-6)
    assert len(p.keep["up2_conv2"]) == 1                             # one dead channel stays: no empty layer
    assert set(range(0, 256, 3)).isdisjoint(p.keep["bottleneck_conv2"].tolist())
    assert {0, 5}.isdisjoint(p.keep["down1_conv1"].tolist())
    assert len(p.keep["logits"]) == 6 and thin.count_params() < 0.8 * model.count_params()
    # only dead channels went: each removed one never fires on x
    from segmodel.compress.activation_stats import collect
    stats = collect(model, x)
    for name, kept in p.keep.items():
        removed = np.setdiff1d(np.arange(p.channels[name]), kept)
        assert stats.layers[name].never_fires[removed].all(), name
    # and the thin model's channels are alive apart from the one kept in up2_conv2
    assert collect(thin, x).dead_counts()["up2_conv2"] == 1 and sum(collect(thin, x).dead_counts().values()) == 1


def test_activation_criteria_rank_dead_first_then_by_nni_semantics():
    """Channels of a 1x1 ReLU conv on inputs x in [0, 1): 0 dead; 1 = 10 x - 5 (zero half the
    time, large otherwise); 2 = 0.1 x (never zero, small); 3 = x; 4 = 2 x."""
    inp = keras.Input((8, 8, 1))
    k = layers.Conv2D(5, 1, activation="relu", name="k")(inp)
    model = keras.Model(inp, layers.Conv2D(2, 1, name="head")(k))
    model.get_layer("k").set_weights([np.array([[[[1, 10, 0.1, 1, 2]]]], "float32"),
                                      np.array([-5, -5, 0, 0, 0], "float32")])
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)

    def removed(criterion, sparsity):
        kept = plan(model, [{"sparsity": sparsity, "op_names": ["k"]}], criterion, x).keep["k"]
        return sorted(set(range(5)) - set(kept.tolist()))

    assert removed("apoz", 0.2) == removed("mean_activation", 0.2) == [0]   # the dead channel first
    assert removed("apoz", 0.4) == [0, 1]             # most zeros: channel 1 (about half)
    assert removed("mean_activation", 0.4) == [0, 2]  # smallest mean: channel 2
    assert removed("l1", 0.2) == [2]                  # a weight norm cannot see the dead channel
    with pytest.raises(ParamError, match="channel_criterion apoz ranks by activations and needs calibration") as e:
        plan(model, HALF, "apoz")
    assert "\n" not in str(e.value)


def test_a_dead_channel_read_through_a_later_batchnorm_is_not_removed():
    """conv(ReLU) -> BN: BN turns the dead 0 into a constant, so removing it would change the output."""
    inp = keras.Input((4, 4, 1))
    a = layers.Conv2D(3, 1, activation="relu", name="a")(inp)
    model = keras.Model(inp, layers.Conv2D(2, 1, name="head")(layers.BatchNormalization(name="bn")(a)))
    model.get_layer("a").set_weights([np.ones((1, 1, 1, 3), "float32"), np.array([1, -10, 1], "float32")])
    _randomize_bn = model.get_layer("bn")
    _randomize_bn.beta.assign(np.array([0.5, 0.5, 0.5], "float32"))
    x = np.random.default_rng(0).random((2, 4, 4, 1), dtype=np.float32)
    assert len(dead_plan(model, x).keep["a"]) == 3
    # the same channel behind its own BN (conv -> BN -> ReLU) is removed exactly
    inp = keras.Input((4, 4, 1))
    b = layers.Activation("relu", name="relu")(layers.BatchNormalization(name="bn")(layers.Conv2D(3, 1, name="a")(inp)))
    model = keras.Model(inp, layers.Conv2D(2, 1, name="head")(b))
    model.get_layer("a").set_weights([np.ones((1, 1, 1, 3), "float32"), np.array([1, -10, 1], "float32")])
    p = dead_plan(model, x)
    np.testing.assert_array_equal(p.keep["a"], [0, 2])
    np.testing.assert_allclose(rebuild(model, p)(x), model(x), rtol=1e-6, atol=1e-7)


def test_thin_model_saves_and_loads_in_plain_keras(tmp_path):
    model = randomize(branchy_model())
    thin = rebuild(model, plan(model, HALF, "l2"))
    thin.save(tmp_path / "thin.keras")
    loaded = keras.models.load_model(tmp_path / "thin.keras", compile=False)
    assert_equal_outputs(loaded, thin, X16)


def test_at_least_one_channel_stays():
    model = branchy_model()
    p = plan(model, [{"sparsity": 0.99, "op_types": ["default"]}], "l1")
    assert {n: len(k) for n, k in p.keep.items() if n not in ("seg", "cls")} == \
        {"a": 1, "b": 1, "c": 1, "d": 1, "up": 1, "e": 1, "fc": 1}
    assert_equal_outputs(rebuild(model, p), masked_copy(model, p), X16)


def test_config_list_exclude_op_names_and_last_match():
    model = branchy_model()
    p = plan(model, [{"sparsity": 0.5, "op_types": ["Conv2D"]},
                     {"exclude": True, "op_names": ["d"]},
                     {"sparsity": 0.25, "op_names": ["e"]}], "l1")
    kept = {n: len(k) for n, k in p.keep.items()}
    assert kept["a"] == 4 and kept["d"] == 12 and kept["e"] == 10 - 2
    assert kept["up"] == 6 and kept["fc"] == 16        # Conv2DTranspose and Dense not selected
    # a tied group is pruned at the smallest sparsity of its members: c alone selected -> b keeps c whole
    p = plan(model, [{"sparsity": 0.5, "op_names": ["c"]}], "l1")
    assert len(p.keep["c"]) == len(p.keep["b"]) == 8
    assert p.stats()["channel_sparsity"] == 0.0


def test_achieved_per_entry_and_one_line_where_the_graph_kept_more(capsys):
    """What each config_list entry asked and got (metrics.json's config_sparsity)."""
    model = multi_unet_model(0.1, 6, 32, 32, 3)
    p = plan(model, [*HALF, {"sparsity": 0.75, "op_names": ["down1_conv1"]}], "l1")
    half, named = p.achieved()
    assert named == {"asked": 0.75, "achieved": 0.75}                  # 12 of its 16 filters: exactly
    selected = [n for n in p.channels if n != "down1_conv1"]
    removed, channels = sum(p.removed[n] for n in selected), sum(p.channels[n] for n in selected)
    assert half == {"asked": 0.5, "achieved": removed / channels}
    assert half["achieved"] < 0.5 and p.removed["logits"] == 0         # the head keeps its 6 classes,
    assert capsys.readouterr().err == ""                               # as documented: not news
    p = plan(model, [*HALF, {"sparsity": 0.5, "op_names": ["logits"]}], "l1")
    assert p.achieved()[1] == {"asked": 0.5, "achieved": 0.0}          # named: said, in one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: pruning got less than asked: config_list[1] asked 0.50")
    assert "logits removed 0 of 6 channels, not 3" in err and "model output" in err
    # a tie: c asked for half, b (added to it) for nothing, so c keeps all its channels
    p = plan(branchy_model(), [{"sparsity": 0.5, "op_names": ["c"]}, {"sparsity": 0.5, "op_names": ["a"]}], "l1")
    assert p.achieved() == [{"asked": 0.5, "achieved": 0.0}, {"asked": 0.5, "achieved": 0.5}]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "c removed 0 of 8 channels, not 4: tied by Add/Multiply to b" in err
    assert "config_list[1]" not in err


def test_tied_group_ranked_by_summed_criterion():
    inp = keras.Input((4, 4, 2))
    b = layers.Conv2D(4, 1, use_bias=False, name="b")(inp)
    c = layers.Conv2D(4, 1, use_bias=False, name="c")(inp)
    out = layers.Conv2D(2, 1, name="head")(layers.Add()([b, c]))
    model = keras.Model(inp, out)
    # per-filter L1: b = [1, 9, 5, 2], c = [9, 1, 5, 1] -> sums [10, 10, 10, 3]: filter 3 goes
    model.get_layer("b").kernel.assign(np.array([[[[1, 9, 5, 2], [0, 0, 0, 0]]]], "float32"))
    model.get_layer("c").kernel.assign(np.array([[[[9, 1, 5, 1], [0, 0, 0, 0]]]], "float32"))
    p = plan(model, [{"sparsity": 0.25, "op_names": ["b", "c"]}], "l1")
    np.testing.assert_array_equal(p.keep["b"], [0, 1, 2])
    np.testing.assert_array_equal(p.keep["c"], [0, 1, 2])


def test_each_criterion_ranks_a_constructed_kernel():
    # five 1x1 filters over 2 inputs, as points: (0,0) (1,0) (0,1) (5,5) (0.4,0.4)
    points = np.array([[0, 0], [1, 0], [0, 1], [5, 5], [0.4, 0.4]], "float32")
    np.testing.assert_allclose(importance(points, "l1"), [0, 1, 1, 10, 0.8], rtol=1e-6)
    np.testing.assert_allclose(importance(points, "l2"), [0, 1, 1, 50 ** 0.5, 0.32 ** 0.5], rtol=1e-6)
    inp = keras.Input((4, 4, 2))
    model = keras.Model(inp, layers.Conv2D(2, 1, name="head")(layers.Conv2D(5, 1, name="k")(inp)))
    model.get_layer("k").kernel.assign(points.T[None, None])
    removed = {}
    for criterion in ("l1", "l2", "fpgm"):
        kept = plan(model, [{"sparsity": 0.2, "op_names": ["k"]}], criterion).keep["k"]
        removed[criterion] = sorted(set(range(5)) - set(kept.tolist()))
    # L1/L2 drop the smallest filter; FPGM the one nearest the geometric median, (0.4, 0.4)
    assert removed == {"l1": [0], "l2": [0], "fpgm": [4]}
    # L1 and L2 disagree when one filter is spread out and another concentrated
    spread = np.array([[1, 1, 1, 1], [3, 0, 0, 0], [9, 9, 9, 9]], "float32")
    assert np.argmin(importance(spread, "l1")) == 1 and np.argmin(importance(spread, "l2")) == 0


def test_unsupported_layer_on_a_pruned_path_is_one_line_naming_it():
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, name="conv")(inp)
    x = layers.Flatten(name="flat")(x)
    model = keras.Model(inp, layers.Dense(2, name="out")(x))
    with pytest.raises(ParamError, match=r"'flat' \(Flatten\).*pruned layer conv") as e:
        plan(model, HALF, "l1")
    assert "\n" not in str(e.value)
    # excluding the conv feeding it makes the model prunable (nothing to prune here, then)
    p = plan(model, HALF + [{"exclude": True, "op_names": ["conv"]}], "l1")
    assert len(p.keep["conv"]) == 4
    # a layer that mixes channels on a pruned path, and a channels-not-last BatchNormalization
    for make, name, kind in [(lambda x: layers.LayerNormalization(name="ln")(x), "ln", "LayerNormalization"),
                             (lambda x: layers.DepthwiseConv2D(3, name="dw")(x), "dw", "DepthwiseConv2D"),
                             (lambda x: layers.BatchNormalization(axis=1, name="bn1")(x), "bn1",
                              "BatchNormalization"),
                             (lambda x: layers.MaxPooling2D(data_format="channels_first", name="cf")(x), "cf",
                              "MaxPooling2D with data_format channels_first")]:
        inp = keras.Input((8, 8, 3))
        y = make(layers.Conv2D(4, 1, name="conv")(inp))
        model = keras.Model(inp, layers.Conv2D(2, 1, name="head")(y))
        with pytest.raises(ParamError, match=rf"'{name}' \({kind}\)"):
            plan(model, HALF, "l1")


def test_not_functional_and_bad_criterion_and_config():
    seq = keras.Sequential([keras.Input((4, 4, 3)), layers.Conv2D(2, 1)])
    with pytest.raises(ParamError, match="functional"):
        plan(seq, HALF, "l1")
    with pytest.raises(ParamError, match="channel_criterion"):
        plan(branchy_model(), HALF, "l3")
    with pytest.raises(ParamError, match=r"sparsity must be a number in \[0, 1\)"):
        plan(branchy_model(), [{"sparsity": 1.0, "op_types": ["default"]}], "l1")


def test_flops_counted_from_layers():
    inp = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same")(inp)                 # 16*16 * 9*3 * 8
    x = layers.Conv2D(4, 3, strides=2, padding="same")(x)        # 8*8 * 9*8 * 4
    x = layers.Conv2DTranspose(2, 2, strides=2)(x)               # 8*8 (input) * 4*4 * 2
    x = layers.Dense(5)(x)                                       # 16*16 * 2*5
    y = layers.Dense(7)(layers.GlobalAveragePooling2D()(x))      # 5*7
    y = keras.Sequential([layers.Dense(3)])(y)                   # nested: 7*3
    model = keras.Model(inp, y)
    assert count_flops(model) == 16 * 16 * 27 * 8 + 8 * 8 * 72 * 4 + 8 * 8 * 16 * 2 + 16 * 16 * 10 + 35 + 21
    unet = multi_unet_model(0.1, 6, 64, 64, 3)
    assert count_flops(unet) == 4 * count_flops(multi_unet_model(0.1, 6, 32, 32, 3))


# ---- the trial: dense -> rank -> thin rebuild -> (distilled) fine-tuning -> export ---------------

class RecordingReporter:
    def __init__(self):
        self.finals = []

    def intermediate(self, value):
        pass

    def final(self, value):
        self.finals.append(value)


@pytest.fixture(scope="module")
def channel_trial(tmp_path_factory):
    """trial, channel mode, oneshot at 50% ranked by APoZ on 16 training patches, with distillation
    from the dense model (patch 32, 1 + 1 epochs)."""
    from artifact_helpers import TRIAL_FLAGS, tiny_dataset

    from segmodel.params import resolve
    from segmodel.train import run_trial
    base = tmp_path_factory.mktemp("channel")
    params = resolve({**TRIAL_FLAGS, "data_dir": str(tiny_dataset(base)), "prune_mode": "channel",
                      "channel_criterion": "apoz", "calibration_patches": 16,
                      "kd": "true"})
    reporter = RecordingReporter()
    run_trial(params, reporter, base / "trial")
    keras.mixed_precision.set_global_policy("float32")
    return base / "trial", reporter.finals[0]


def test_channel_trial_saves_and_reports_the_thin_model(channel_trial):
    out, final = channel_trial
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["prune_mode"] == "channel" and metrics["channel_criterion"] == "apoz" and metrics["kd"] == 1
    model = keras.models.load_model(out / "model.keras", compile=False)
    assert model.get_layer("down1_conv1").filters == 8 and model.get_layer("logits").filters == 6
    assert metrics["params"] == model.count_params() < 0.3 * metrics["dense_params"]
    assert metrics["flops"] == count_flops(model) and metrics["dense_flops"] / metrics["flops"] >= 3.5
    assert metrics["channel_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert metrics["sparsity"] == pytest.approx(1 - metrics["params"] / metrics["dense_params"])
    for key in ("params", "dense_params", "flops", "dense_flops", "channel_sparsity", "dead_channel_fraction"):
        assert final[key] == metrics[key]
    (entry,) = metrics["config_sparsity"]                                 # --sparsity 0.5 as one entry
    assert entry["asked"] == 0.5 and 0.49 < entry["achieved"] < 0.5      # the head's channels stay
    # dead units on the validation set, per layer with an activation (18 convs), as a fraction
    assert set(metrics["dead_channels"]) == {l.name for l in model.layers
                                              if type(l).__name__ == "Conv2D" and l.name != "logits"}
    assert "dead_channels" not in final  # NNI plots numbers; the per-layer dict lives in metrics.json
    widths = sum(l.filters for l in model.layers if l.name in metrics["dead_channels"])
    assert metrics["dead_channel_fraction"] == pytest.approx(sum(metrics["dead_channels"].values()) / widths)
    header, *rows = (out / "history.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in rows] == ["dense", "finetune"] and "kd_loss" in header


def test_channel_mode_with_schedule_init_trains_the_thin_model(tmp_path):
    from artifact_helpers import TRIAL_FLAGS, QuietReporter, tiny_dataset

    from segmodel.params import resolve
    from segmodel.train import run_trial
    params = resolve({**TRIAL_FLAGS, "data_dir": str(tiny_dataset(tmp_path)), "epochs": 1, "finetune_epochs": 0,
                      "schedule": "init", "prune_mode": "channel", "sparsity": 0.75})
    metrics = run_trial(params, QuietReporter(), tmp_path / "init")
    keras.mixed_precision.set_global_policy("float32")
    assert metrics["schedule"] == "init" and metrics["params"] < 0.1 * metrics["dense_params"]
    assert keras.models.load_model(tmp_path / "init" / "model.keras").get_layer("down1_conv1").filters == 4


def test_thin_model_exports_to_tflite_float_and_int8(channel_trial, tmp_path):

    from segmodel.__main__ import main
    out, _ = channel_trial
    assert main(["export", str(out), "--out", str(tmp_path), "--formats", "keras,tflite_float32,tflite_int8",
                 "--calibration-samples", "8"]) == 0
    result = json.loads((tmp_path / "export.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert (result["prune_mode"], result["params"], result["flops"]) == ("channel", metrics["params"], metrics["flops"])
    formats = {e["format"]: e for e in result["formats"]}
    assert formats["tflite_float32"]["val_iou"] == pytest.approx(formats["keras"]["val_iou"], abs=1e-3)
    assert formats["tflite_int8"]["bytes"] < formats["tflite_float32"]["bytes"] / 3
    assert formats["tflite_int8"]["input_dtype"] == "int8"


def test_report_pareto_plot_can_put_flops_on_the_x_axis(tmp_path, capsys):
    from segmodel.__main__ import main
    from segmodel.experiment.report import pareto_front, plot_pareto
    rows = [{"rank": i + 1, "seq": i, "iou": iou, "mflops": f, "sparsity": s, "gzip_mb": None}
            for i, (iou, f, s) in enumerate([(0.60, 47.5, 0.0), (0.59, 12.0, 0.75), (0.50, 20.0, 0.5)])]
    assert pareto_front([(r["mflops"], r["iou"]) for r in rows], maximize_x=False) == [1, 0]  # 20 MFLOPs dominated
    assert plot_pareto(rows, tmp_path / "p.png", axes=("mflops",))
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["report", "whatever", "--pareto-x", "latency"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --pareto-x: unknown key latency") and "\n" not in err


def test_every_point_of_the_compress_search_space_is_a_valid_trial():
    import itertools
    import shlex

    import yaml

    from segmodel.params import parse_flags, resolve
    space = json.loads((CONFIGS / "compress_search_space.json").read_text())
    command = yaml.safe_load((CONFIGS / "compress.yml").read_text())["trialCommand"]
    flags = parse_flags(shlex.split(command)[2:])
    assert {v["_type"] for v in space.values()} == {"choice"}
    choices = {k: v["_value"] for k, v in space.items()}
    plans = set()
    for values in itertools.product(*choices.values()):
        p = resolve(flags, dict(zip(choices, values)))
        assert p.prune_mode == "channel" and 0 < p.latency_target < 1 and p.channel_round == 8
        assert p.deploy_size == 256 and p.schedule == "init" and p.dropout_rate == 0
        plans.add((p.channel_floor, json.dumps(p.config_list)))
    assert len(plans) == len(choices["channel_floor"]) * len(choices["prune_config"])


def test_the_compress_space_holds_uniform_half_and_level_1s_encoder_kept():
    """At floor 0.5 the tightest plan of each prune_config choice is a shape measured on five seeds:
    uniform 50 % (benchmarks' l1-50-init-d0) and level 1's encoder kept whole (l1-50-enc16-init-d0)."""
    from benchmarks.presets import HALF_KEEPING
    from segmodel.compress.cost_target import target_plan
    from segmodel.model import build_model
    from segmodel.params import Params
    space = json.loads((CONFIGS / "compress_search_space.json").read_text())
    model = build_model(Params(patch_size=32), 6)
    every_layer, encoder_kept = space["prune_config"]["_value"]
    assert 0.5 in space["channel_floor"]["_value"]
    for config, preset in ((every_layer, HALF),
                           (encoder_kept, json.loads(HALF_KEEPING["enc16"]))):
        tightest = target_plan(model, config, "l1", 1e-9, 0.5, round_to=8)
        widths = {name: len(kept) for name, kept in tightest.keep.items()}
        assert widths == {name: len(kept) for name, kept in plan(model, preset, "l1").keep.items()}
    assert widths["down1_conv2"] == 16 and widths["up4_conv2"] == 8


def test_fpgm_matches_the_pairwise_definition():
    filters = np.random.default_rng(3).normal(size=(7, 12))
    pairwise = np.sqrt(((filters[:, None] - filters[None]) ** 2).sum(-1)).sum(1)
    np.testing.assert_allclose(importance(filters, "fpgm"), pairwise, rtol=1e-10, atol=1e-10)
