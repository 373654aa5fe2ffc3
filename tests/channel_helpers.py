"""Models and comparisons the channel-pruning tests share (test_channels, test_cost_pruning)."""
import keras
import numpy as np
from keras import layers


def branchy_model():
    """Every kind of dependency: BN, an Add of two convs (tied), pooling, upsampling,
    a channel Concatenate (skip), Conv2DTranspose, padding/cropping, and a Dense head
    after global pooling next to a conv head."""
    inp = keras.Input((16, 16, 3), name="x")
    a = layers.Conv2D(8, 3, padding="same", name="a")(inp)
    a = layers.BatchNormalization(name="a_bn")(a)
    a = layers.ReLU(name="a_relu")(a)
    b = layers.Conv2D(8, 3, padding="same", activation="relu", name="b")(a)
    c = layers.Conv2D(8, 1, name="c")(a)
    s = layers.Add(name="add")([b, c])                       # b and c are tied
    p = layers.MaxPooling2D(name="pool")(s)
    d = layers.Conv2D(12, 3, padding="same", activation="relu", name="d")(p)
    d = layers.Dropout(0.3, name="drop")(d)
    u = layers.Conv2DTranspose(6, 2, strides=2, name="up")(d)
    u = layers.Cropping2D(1, name="crop")(layers.ZeroPadding2D(1, name="pad")(u))
    m = layers.concatenate([u, s, layers.UpSampling2D(2, name="ups")(d)], name="cat")  # 6 + 8 + 12
    e = layers.Conv2D(10, 3, padding="same", activation="relu", name="e")(m)
    e = layers.BatchNormalization(name="e_bn")(e)
    seg = layers.Conv2D(4, 1, activation="softmax", name="seg")(e)
    g = layers.GlobalAveragePooling2D(name="gap")(e)
    h = layers.Dense(16, activation="relu", name="fc")(g)
    cls = layers.Dense(3, name="cls")(h)
    return keras.Model(inp, [seg, cls], name="branchy")


def randomize(model, seed=0):
    """Weights far from init (BN statistics included) so every channel matters."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = rng.normal(0, 0.5, w.shape).astype("float32")
        w.assign(np.abs(v) + 0.5 if "variance" in w.name else v)
    return model


def before_softmax(model):
    """The same model and weights with every softmax activation made linear: random weights
    saturate the softmax, where a float-rounding difference between two near-equal logits
    reads 0 against 1; the logits compare to within rounding."""
    config = model.get_config()
    for layer in config["layers"]:
        if layer["config"].get("activation") == "softmax":
            layer["config"]["activation"] = "linear"
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def outputs(model, x):
    out = before_softmax(model)(x, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def assert_equal_outputs(a, b, x):
    for oa, ob in zip(outputs(a, x), outputs(b, x)):
        assert oa.shape == ob.shape
        np.testing.assert_allclose(oa, ob, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(oa).max()))


def kill(model, layer, channels, architecture):
    """Make channels never fire: output -1 before the ReLU on every input (seed: kernel 0,
    bias -1; bn: gamma 0, beta -1, the conv's kernel left random)."""
    if architecture == "bn":
        bn = model.get_layer(f"{layer}_bn")
        for w, value in ((bn.gamma, 0.0), (bn.beta, -1.0)):
            v = w.numpy()
            v[channels] = value
            w.assign(v)
        return
    conv = model.get_layer(layer)
    kernel, bias = conv.kernel.numpy(), conv.bias.numpy()
    kernel[..., channels] = 0
    bias[channels] = -1
    conv.kernel.assign(kernel)
    conv.bias.assign(bias)
