"""The U-Net's architectures: `seed` is the seed's model, `bn` and `leaky` keep its layer
names, and every one trains, saves, weight- and channel-prunes like the seed."""
import keras
import numpy as np
import pytest

from segmodel.compress.config_list import layer_targets
from segmodel.model import build_model, multi_unet_model
from segmodel.params import Params, from_saved, resolve

CONVS = [f"{b}_conv{i}" for b in ("down1", "down2", "down3", "down4", "bottleneck", "up1", "up2", "up3", "up4")
         for i in (1, 2)]


def _kinds(model):
    return [type(l).__name__ for l in model.layers]


def test_architectures_share_conv_names_and_widths():
    models = {a: multi_unet_model(0.1, 6, 32, 32, 3, architecture=a) for a in ("seed", "bn", "leaky")}
    widths = {a: [m.get_layer(n).filters for n in CONVS] for a, m in models.items()}
    assert widths["seed"] == widths["bn"] == widths["leaky"]
    seed, bn, leaky = models["seed"], models["bn"], models["leaky"]
    assert "BatchNormalization" not in _kinds(seed) and "LeakyReLU" not in _kinds(seed)
    assert all(seed.get_layer(n).activation.__name__ == "relu" and seed.get_layer(n).use_bias for n in CONVS)
    # bn: conv (linear, no bias: BN's beta is the bias) -> BN -> ReLU, for each of the 18 convs
    assert _kinds(bn).count("BatchNormalization") == 18
    for n in CONVS:
        conv = bn.get_layer(n)
        assert conv.activation.__name__ == "linear" and not conv.use_bias
        assert bn.get_layer(f"{n}_relu").input is bn.get_layer(f"{n}_bn").output
    assert bn.count_params() == seed.count_params() - sum(seed.get_layer(n).filters for n in CONVS) \
        + 4 * sum(bn.get_layer(n).filters for n in CONVS)      # biases gone; gamma, beta, mean, variance added
    assert _kinds(leaky).count("LeakyReLU") == 18 and leaky.count_params() == seed.count_params()
    assert leaky.get_layer("down1_conv1_leaky").negative_slope == pytest.approx(0.1)
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    for model in models.values():
        np.testing.assert_allclose(np.sum(model(x), -1), 1.0, atol=1e-5)


def test_level_widths_build_what_channel_pruning_each_level_rebuilds():
    """`filters` (benchmarks widths) against an independent path: a config_list pruning
    each level's blocks by op_names_re, planned and rebuilt by segmodel.compress.channels."""
    from segmodel.compress import channels
    dense = multi_unet_model(0.1, 6, 32, 32, 3, architecture="bn")
    config = [{"op_names_re": ["down1_", "up4_"], "sparsity": 0.5}, {"op_names_re": ["bottleneck_"], "sparsity": 0.75}]
    thin = channels.rebuild(dense, channels.plan(dense, config))
    built = multi_unet_model(0.1, 6, 32, 32, 3, architecture="bn", filters=(8, 32, 64, 128, 64))
    assert [(l.name, getattr(l, "filters", None)) for l in thin.layers] == \
        [(l.name, getattr(l, "filters", None)) for l in built.layers]
    assert thin.count_params() == built.count_params() < dense.count_params()
    with pytest.raises(ValueError, match="filters must be 5 positive ints"):
        multi_unet_model(filters=(16, 32))


def test_trials_default_to_batchnorm_and_the_seed_is_one_flag_away():
    assert Params().architecture == "bn"
    seed = build_model(resolve({"architecture": "seed", "patch_size": 32}), 6)
    reference = multi_unet_model(0.1, 6, 32, 32, 3)                  # the seed's own signature, unchanged
    assert seed.get_config()["layers"] == reference.get_config()["layers"]
    assert "BatchNormalization" in _kinds(build_model(resolve({"patch_size": 32}), 6))


def test_build_model_follows_params_and_unknown_architecture_is_refused():
    model = build_model(resolve({"architecture": "bn", "patch_size": 32, "dropout_rate": 0.2}), 4)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 32, 32, 4)
    assert "BatchNormalization" in _kinds(model) and model.get_layer("down1_drop").rate == 0.2
    with pytest.raises(ValueError, match="architecture must be one of seed, bn, leaky"):
        multi_unet_model(architecture="vgg")


def test_a_trial_saved_before_architectures_existed_reproduces_the_seed():
    saved = {k: v for k, v in Params().to_dict().items() if k != "architecture"}
    assert from_saved(saved, "params.json").architecture == "seed"
    assert from_saved({**saved, "architecture": "bn"}, "params.json").architecture == "bn"


def test_weight_pruning_default_leaves_batchnorm_alone():
    """NNI's 'default' op types are the convs and dense layers: a BN's gamma is never zeroed."""
    bn = multi_unet_model(0.1, 6, 32, 32, 3, architecture="bn")
    targets = layer_targets(bn, [{"sparsity": 0.8, "op_types": ["default"]}])
    assert set(targets) == set(CONVS) | {f"up{i}_transpose" for i in range(1, 5)} | {"logits"}


def test_batchnorm_unet_saves_and_loads(tmp_path):
    model = multi_unet_model(0.1, 6, 32, 32, 3, architecture="bn")
    model.save(tmp_path / "bn.keras")
    loaded = keras.models.load_model(tmp_path / "bn.keras", compile=False)
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
