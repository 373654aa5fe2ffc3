"""Dead-unit statistics (segmodel.compress.activation_stats): APoZ, mean activation and "never fires" with
NNI's semantics, on hand-made models whose channels are known, checked against numpy."""

import keras
import numpy as np
import pytest
from artifact_helpers import assert_refused_before_tensorflow
from keras import layers

from segmodel.compress.activation_stats import collect, dead_summary, observed_layers
from segmodel.errors import ParamError
from segmodel.params import resolve

X = np.random.default_rng(0).random((10, 6, 6, 2), dtype=np.float32)


def known_model():
    """A 1x1 ReLU conv with four channels of known behaviour on inputs in [0, 1):
    0 always fires (bias 1), 1 fires where x0 > 0.5, 2 never fires (bias -1), 3 = x1;
    then a conv -> BN -> ReLU block and a linear conv (NNI applies relu to it)."""
    inp = keras.Input((6, 6, 2), name="x")
    a = layers.Conv2D(4, 1, activation="relu", name="a")(inp)
    b = layers.Conv2D(3, 1, use_bias=False, name="b")(a)
    b = layers.BatchNormalization(name="b_bn")(b)
    b = layers.Activation("relu", name="b_relu")(b)
    c = layers.Conv2D(2, 1, name="c")(b)
    model = keras.Model(inp, c)
    model.get_layer("a").set_weights([np.array([[[[0, 1, 0, 0], [0, 0, 0, 1]]]], "float32"),
                                      np.array([1, -0.5, -1, 0], "float32")])
    model.get_layer("b").set_weights([np.array([[[[1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]]]], "float32")])
    bn = model.get_layer("b_bn")
    bn.set_weights([np.ones(3, "float32"), np.array([0, -100, 0], "float32"), np.zeros(3, "float32"),
                    np.ones(3, "float32")])  # gamma, beta (channel 1 pushed below 0), moving mean, variance
    return model


def _reference(tensor):
    """NNI's definitions on the whole (N, H, W, C) tensor after the activation."""
    flat = np.asarray(tensor, np.float64).reshape(-1, tensor.shape[-1])
    return (flat == 0).mean(0), flat.mean(0), flat.max(0) <= 0


def test_statistics_match_nni_definitions_computed_in_numpy():
    model = known_model()
    stats = collect(model, X)
    assert stats.patches == 10
    probe = keras.Model(model.input, [model.get_layer(n).output for n in ("a", "b_relu", "c")])
    a, b, c = (np.asarray(t) for t in probe(X))
    for name, tensor in (("a", a), ("b", b), ("c", np.maximum(c, 0))):  # c is linear: NNI's relu applied
        apoz, mean, never = _reference(tensor)
        np.testing.assert_allclose(stats.layers[name].apoz, apoz, rtol=1e-12)
        np.testing.assert_allclose(stats.layers[name].mean, mean, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(stats.layers[name].never_fires, never)
    a_stats = stats.layers["a"]
    np.testing.assert_allclose(a_stats.apoz, [0, (X[..., 0] <= 0.5).mean(), 1, (X[..., 1] == 0).mean()])
    np.testing.assert_array_equal(a_stats.exactly_dead, [False, False, True, False])
    assert stats.layers["b"].observed.layer == "b_relu" and stats.layers["b"].observed.chain == ("b", "b_bn", "b_relu")
    assert stats.layers["b"].never_fires[1] and not stats.layers["b"].never_fires[[0, 2]].any()
    # the linear conv is ranked (relu applied) but neither dead nor alive
    assert stats.layers["c"].observed.activation is None
    assert stats.dead_counts() == {"a": 1, "b": 1}
    assert stats.dead_fraction() == pytest.approx(2 / 7)


def test_streaming_over_batches_and_the_sample_limit():
    import tensorflow as tf
    model = known_model()
    ds = tf.data.Dataset.from_tensor_slices((X, np.zeros((10, 1), "float32"))).batch(3)  # (x, y) batches of 3
    limited = collect(model, ds, limit=5)
    whole = collect(model, X[:5])
    assert limited.patches == 5
    for name in whole.layers:
        np.testing.assert_allclose(limited.layers[name].apoz, whole.layers[name].apoz, rtol=1e-12)
        np.testing.assert_allclose(limited.layers[name].mean, whole.layers[name].mean, rtol=1e-6)
    with pytest.raises(ParamError, match="no samples"):
        collect(model, X[:0])


def test_fused_leaky_and_softmax_activations_are_found():
    inp = keras.Input((4, 4, 3))
    x = layers.Conv2D(4, 1, name="leaky_conv")(inp)
    x = layers.LeakyReLU(0.1, name="leaky")(x)
    x = layers.Conv2D(4, 1, activation="relu", name="relu_conv")(x)
    x = layers.BatchNormalization(name="post_bn")(x)      # after the activation: not in the chain
    x = layers.Conv2D(3, 1, activation="softmax", name="head")(x)
    found = observed_layers(keras.Model(inp, x))
    assert (found["leaky_conv"].layer, found["leaky_conv"].activation) == ("leaky", "leakyrelu")
    assert not found["leaky_conv"].rectified             # LeakyReLU's zeros are not exact
    assert (found["relu_conv"].layer, found["relu_conv"].chain) == ("relu_conv", ("relu_conv",))
    assert found["head"].activation is None               # a softmax head is read raw, never "dead"


def test_dead_summary_counts_layers_with_an_activation():
    summary = dead_summary(known_model(), X)
    assert summary == {"dead_channel_fraction": pytest.approx(2 / 7), "dead_channels": {"a": 1, "b": 1}}


# ---- the parameters: bad input is one line, exit 2, before TensorFlow ----------------------------

def test_activation_criterion_needs_calibration_patches():
    base = {"prune_mode": "channel", "channel_criterion": "apoz"}
    assert resolve(base).calibration_patches == 256
    for criterion in ("apoz", "mean_activation"):
        with pytest.raises(ParamError, match=f"channel_criterion {criterion} .*calibration_patches must be >= 1"):
            resolve({**base, "channel_criterion": criterion, "calibration_patches": 0})
    assert resolve({"channel_criterion": "l1", "calibration_patches": 0, "prune_mode": "channel"})
    with pytest.raises(ParamError, match="calibration_patches must be >= 0"):
        resolve({"calibration_patches": -1})


@pytest.mark.parametrize("argv,expect", [
    (["--prune_mode", "channel", "--channel_criterion", "apoz", "--calibration_patches", "0"],
     "error: channel_criterion apoz ranks by activations and needs calibration data"),
    (["--channel_criterion", "apos"], "error: channel_criterion must be one of l1, l2, fpgm, apoz, mean_activation"),
    (["--architecture", "resnet"], "error: architecture must be one of seed, bn, leaky; got 'resnet'"),
])
def test_trial_py_refuses_bad_criterion_input_in_one_line(argv, expect):
    assert_refused_before_tensorflow(argv, expect)
