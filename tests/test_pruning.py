"""Pruning: mask computation, NNI config_list semantics, masks holding through real
graph-mode training, the AGP schedule, and a stripped model that plain Keras loads."""
import json
import subprocess
import sys
import textwrap
import zipfile

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from keras import layers

from segmodel.compress.config_list import layer_targets, prunable_weights
from segmodel.compress.pruning import (
    AGPCallback,
    Pruner,
    agp_sparsity,
    magnitude_mask,
    protected_layers,
    sparsity_stats,
)
from segmodel.errors import ParamError
from segmodel.files import gzip_size
from segmodel.model import multi_unet_model
from segmodel.params import Params
from segmodel.surgery import own_weights, walk_layers
from segmodel.train import finetune_learning_rate


def reference_mask(w, s):
    """Independent reference: order by (|w|, flat index), zero the first int(n*s)."""
    flat = np.abs(np.asarray(w, dtype=np.float64)).ravel()
    order = np.lexsort((np.arange(flat.size), flat))
    keep = np.ones(flat.size, bool)
    keep[order[:int(flat.size * s)]] = False
    return keep.reshape(np.shape(w))


def tiny_model():
    inp = keras.Input((8, 8, 3), name="x")
    x = layers.Conv2D(4, 3, padding="same", name="a")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="b")(x)
    x = layers.Conv2DTranspose(4, 3, padding="same", name="t")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.Sequential([layers.Dense(5, name="inner")], name="head")(x)
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="d")(x), name="tiny")


def toy_data(n=16):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 3), dtype=np.float32), np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]


def layer_sparsity(model, names) -> dict:
    """Each named layer's fraction of zeros, measured as run_trial measures the whole model."""
    return {name: sparsity_stats(model, [name])["sparsity"] for name in names}


def zero_masks(model, names):
    by_name = {layer.name: layer for layer in walk_layers(model)}
    return {w.path: w.numpy() == 0 for n in names for w in prunable_weights(by_name[n])}




# ---- mask computation -------------------------------------------------------------------

@pytest.mark.parametrize("w, s", [
    (np.array([3.0, -1.0, 2.0, -0.5]), 0.5),
    (np.array([1.0, -1.0, 1.0, 1.0, -1.0]), 0.6),           # all tied: first ones in flat order
    (np.array([0.0, 2.0, 0.0, -2.0, 1.0, 1.0]), 0.5),       # ties across the threshold
    (np.array([5.0]), 0.99),                                # tiny: int(0.99) = 0, nothing pruned
    (np.array([5.0, -7.0]), 0.5),
    (np.arange(24, dtype=float).reshape(2, 3, 4) - 11.5, 0.8),
    (np.random.default_rng(1).normal(size=(3, 3, 4, 8)), 0.0),  # sparsity 0 prunes nothing
    (np.random.default_rng(2).normal(size=(3, 3, 4, 8)), 0.9),
])
def test_mask_matches_numpy_reference(w, s):
    mask = magnitude_mask(w, s)
    assert mask.shape == w.shape and mask.dtype == bool
    np.testing.assert_array_equal(mask, reference_mask(w, s))
    assert np.count_nonzero(~mask) == int(w.size * s)


@settings(max_examples=60, deadline=None)
@given(w=hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=6),
                    elements=st.integers(-4, 4).map(float)),  # small integers: many ties
       s=st.floats(0, 0.999))
def test_mask_property(w, s):
    mask = magnitude_mask(w, s)
    assert np.count_nonzero(~mask) == int(w.size * s)
    a = np.abs(w)
    if mask.any() and (~mask).any():
        assert a[mask].min() >= a[~mask].max()
    np.testing.assert_array_equal(mask, reference_mask(w, s))


# ---- config_list semantics ------------------------------------------------------------------

DEFAULT_LAYERS = {"a", "b", "t", "inner", "d"}  # BatchNormalization is not a 'default' op type


def test_default_op_types_and_nested_layers():
    assert layer_targets(tiny_model(), [{"sparsity": 0.5, "op_types": ["default"]}]) == \
        {n: 0.5 for n in ["a", "b", "t", "inner", "d"]}


def test_layer_walk_finds_every_variable_once():
    """The pruner's view of a model, public Keras API only: nested models are walked,
    and each variable belongs to exactly one layer. If a Keras upgrade changes how
    layers list their sublayers or weights, this fails before any pruning does."""
    from segmodel.model import multi_unet_model
    for model in (tiny_model(), multi_unet_model(0.1, 6, 32, 32, 3)):
        owned = [id(v) for layer in [model, *walk_layers(model)] for v in own_weights(layer)]
        assert sorted(owned) == sorted(id(v) for v in model.weights), model.name
    names = [layer.name for layer in walk_layers(tiny_model())]
    assert names.index("head") < names.index("inner")  # depth first: a nested model, then its layers


def test_last_matching_entry_decides():
    m = tiny_model()
    t = layer_targets(m, [{"sparsity": 0.5, "op_types": ["default"]}, {"sparsity": 0.9, "op_names": ["b"]}])
    assert t["b"] == 0.9 and t["a"] == 0.5
    t = layer_targets(m, [{"sparsity": 0.9, "op_names": ["b"]}, {"sparsity": 0.5, "op_types": ["default"]}])
    assert t["b"] == 0.5


def test_exclude_and_reinclude():
    m = tiny_model()
    t = layer_targets(m, [{"sparsity": 0.5, "op_types": ["default"]}, {"exclude": True, "op_names": ["d", "t"]}])
    assert set(t) == DEFAULT_LAYERS - {"d", "t"}
    t = layer_targets(m, [{"sparsity": 0.5, "op_types": ["default"]}, {"exclude": True, "op_types": ["Dense"]},
                          {"sparsity_per_layer": 0.3, "op_names": ["d"]}])
    assert t == {"a": 0.5, "b": 0.5, "t": 0.5, "d": 0.3}


def test_op_types_and_op_names_both_must_match():
    m = tiny_model()
    assert layer_targets(m, [{"sparsity": 0.4, "op_types": ["Conv2D"], "op_names": ["b", "t", "d"]}]) == {"b": 0.4}
    assert layer_targets(m, [{"sparsity": 0.4, "op_types": ["Conv2DTranspose"]}]) == {"t": 0.4}


def test_op_names_re_matches_names_from_their_start_as_nni_does():
    m = tiny_model()  # NNI 3.0: re.match, anchored at the name's start
    assert layer_targets(m, [{"sparsity": 0.4, "op_names_re": ["[ab]$", "t"]}]) == {"a": 0.4, "b": 0.4, "t": 0.4}
    with pytest.raises(ParamError, match="matches no layer"):
        layer_targets(m, [{"sparsity": 0.4, "op_names_re": ["nn"]}])  # inside "inner", not at its start
    t = layer_targets(m, [{"sparsity": 0.5, "op_types": ["default"]},
                          {"sparsity": 0.2, "op_names": ["d"], "op_names_re": ["i"]}])  # union of the two
    assert t == {"a": 0.5, "b": 0.5, "t": 0.5, "inner": 0.2, "d": 0.2}


def test_biases_never_pruned_and_named_layer_types():
    m = tiny_model()
    for layer in walk_layers(m):
        for v in layer.weights:
            if v.name in ("bias", "beta"):
                v.assign(np.full(v.shape, 0.01, np.float32))
    p = Pruner(m, [{"sparsity": 0.75, "op_types": ["default", "BatchNormalization"]}], allocation="uniform")
    p.prune()
    assert {w.name for w in p.weights} == {"kernel", "gamma"}
    assert all(np.all(v.numpy() == np.float32(0.01))
               for layer in walk_layers(m) for v in layer.weights if v.name in ("bias", "beta"))
    assert layer_sparsity(m, ["bn"]) == {"bn": 0.75}


@pytest.mark.parametrize("config, message", [
    ([{"sparsity": 0.5, "op_names": ["nope"]}], "matches no layer"),
    ([{"sparsity": 0.5, "op_types": ["LSTM"]}], "matches no layer"),
    ([{"sparsity": 0.5, "op_names": ["gap"]}], "matches no layer"),   # a layer without weights
    ([{"sparsity": 0.5, "op_types": ["default"]}, {"exclude": True, "op_names": ["zz"]}], r"config_list\[1\]"),
    ([{"sparsity": 1.0, "op_types": ["default"]}], r"\[0, 1\)"),
    ([{"sparsity": -0.1, "op_types": ["default"]}], r"\[0, 1\)"),
    ([{"sparsity": True, "op_types": ["default"]}], r"\[0, 1\)"),
    ([{"sparsity": "0.5", "op_types": ["default"]}], r"\[0, 1\)"),
    ([{"op_types": ["default"]}], "sparsity must be"),
    ([{"sparsity": 0.5, "sparsity_per_layer": 0.5, "op_types": ["default"]}], "not both"),
    ([{"sparsity": 0.5}], "op_types, op_names or op_names_re"),
    ([{"sparsity": 0.5, "op_types": "Conv2D"}], "list of strings"),
    ([{"sparsity": 0.5, "op_names_re": "a"}], "list of strings"),
    ([{"sparsity": 0.5, "op_names_re": ["("]}], "bad regular expression"),
    ([{"sparsity": 0.5, "op_names_re": ["zz"]}], r"matches no layer .*op_names_re=\['zz'\]"),
    ([{"sparsity": 0.5, "op_types": ["default"], "ops": 1}], "unknown keys"),
    ([{"exclude": "yes", "op_names": ["a"]}], "exclude must be"),
    (["Conv2D"], "must be a dict"),
    ({"sparsity": 0.5}, "must be a list"),
])
def test_config_errors(config, message):
    with pytest.raises(ParamError, match=message):
        layer_targets(tiny_model(), config)


# ---- global allocation ----------------------------------------------------------------------

def _zeros_and_size(model, names):
    by_name = {layer.name: layer for layer in walk_layers(model)}
    ws = [w.numpy() for n in names for w in prunable_weights(by_name[n])]
    return sum(int(np.count_nonzero(w == 0)) for w in ws), sum(w.size for w in ws)


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9])
def test_global_ranking_reaches_the_exact_overall_sparsity_with_the_ends_dense(target):
    keras.utils.set_random_seed(1)
    m = multi_unet_model(0.1, 6, 32, 32, 3)
    p = Pruner(m, [{"sparsity": target, "op_types": ["default"]}], allocation="global")
    assert p.protected == {"down1_conv1", "logits"}  # first and last weighted layer: 432 and 96 weights
    by_name = {layer.name: layer for layer in walk_layers(m)}
    values = {n: [np.abs(w.numpy()) for w in prunable_weights(by_name[n])] for n in p.targets}
    p.prune()
    zeros, total = _zeros_and_size(m, p.targets)
    assert zeros == int(total * target)  # exact over all selected layers, protected ones counted
    assert sparsity_stats(m, p.targets)["sparsity"] == zeros / total
    assert _zeros_and_size(m, p.protected)[0] == 0
    # one threshold: every pruned weight is no larger than every kept one, across layers
    free = [n for n in p.targets if n not in p.protected]
    pairs = [(v, w.numpy() == 0) for n in free for v, w in zip(values[n], prunable_weights(by_name[n]))]
    assert max(v[z].max() for v, z in pairs if z.any()) <= min(v[~z].min() for v, z in pairs if (~z).any())
    fractions = {n: _zeros_and_size(m, [n])[0] / _zeros_and_size(m, [n])[1] for n in free}
    assert max(fractions.values()) - min(fractions.values()) > 0.1  # each layer loses what its weights deserve


def test_global_protects_the_models_ends_only():
    """Excluding the first conv and the head by config_list protects no other layer."""
    m = multi_unet_model(0.1, 6, 32, 32, 3)
    config = [{"sparsity": 0.8, "op_types": ["default"]}, {"exclude": True, "op_names": ["down1_conv1", "logits"]}]
    p = Pruner(m, config, allocation="global")
    assert p.protected == set() and "down1_conv2" in p.targets
    assert Pruner(m, [{"sparsity": 0.8, "op_names": ["down1_conv1", "down2_conv1"]}], "global").protected == set()


def test_a_layer_named_in_op_names_gets_exactly_its_entrys_sparsity(capsys):
    """Protection is for the layers the user did not name: an explicit entry is never overridden."""
    keras.utils.set_random_seed(4)
    m = multi_unet_model(0.1, 6, 32, 32, 3)
    config = [{"sparsity": 0.5, "op_types": ["default"]}, {"sparsity": 0.9, "op_names": ["down1_conv1"]}]
    p = Pruner(m, config)
    assert p.protected == {"logits"}                                  # the unnamed end only
    p.prune()
    assert layer_sparsity(m, ["down1_conv1", "logits"]) == {"down1_conv1": int(432 * 0.9) / 432, "logits": 0.0}
    rest = [n for n in p.targets if n != "down1_conv1"]
    zeros, size = _zeros_and_size(m, rest)
    assert zeros == int(size * 0.5)                                   # entry 0 exact, logits counted
    assert p.achieved() == [{"asked": 0.5, "achieved": zeros / size}, {"asked": 0.9, "achieved": int(432 * 0.9) / 432}]
    assert capsys.readouterr().err == ""                              # nothing lowered, nothing said
    # Both ends named, several to an entry: each named layer gets exactly its entry's sparsity.
    m = multi_unet_model(0.1, 6, 32, 32, 3)
    p = Pruner(m, [{"sparsity": 0.8, "op_names": ["logits", "up1_conv1"]},
                   {"sparsity": 0.3, "op_names": ["down1_conv1"]}])
    assert p.protected == set()
    p.prune()
    assert layer_sparsity(m, ["logits", "down1_conv1"]) == \
        {"logits": int(96 * 0.8) / 96, "down1_conv1": int(432 * 0.3) / 432}
    assert layer_sparsity(m, ["up1_conv1"])["up1_conv1"] == pytest.approx(0.8, abs=1e-4)


def test_protection_that_lowers_an_entry_says_so_in_one_line(capsys):
    m = multi_unet_model(0.1, 6, 32, 32, 3)
    p = Pruner(m, [{"sparsity": 0.9999, "op_types": ["default"]}])  # more than the unprotected 99.97 %
    p.prune()
    (entry,) = p.achieved()
    zeros, size = _zeros_and_size(m, p.targets)
    assert entry == {"asked": 0.9999, "achieved": zeros / size} and zeros == size - 432 - 96
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: pruning got less than asked: config_list[0] asked 1.00")
    assert "down1_conv1, logits kept dense" in err and "op_names" in err


def test_pruner_and_trials_default_to_the_same_allocation():
    import inspect
    assert inspect.signature(Pruner).parameters["allocation"].default == Params().allocation == "global"


def test_global_protects_only_small_ends_and_ranks_each_target_apart():
    keras.utils.set_random_seed(2)
    m = tiny_model()  # its first conv (108 of 431 weights) is too big to protect
    config = [{"sparsity": 0.5, "op_types": ["Conv2D"]}, {"sparsity": 0.9, "op_names": ["t", "inner"]}]
    p = Pruner(m, config, allocation="global")
    assert p.protected == set() == protected_layers(m, p.targets)
    p.prune()
    for names, target in ((["a", "b"], 0.5), (["t", "inner"], 0.9)):
        zeros, size = _zeros_and_size(m, names)
        assert zeros == int(size * target)


def test_uniform_allocation_is_the_per_layer_rule_and_protects_nothing():
    keras.utils.set_random_seed(3)
    m = tiny_model()
    p = Pruner(m, [{"sparsity": 0.8, "op_types": ["default"]}], allocation="uniform")
    p.prune()
    assert p.protected == set()
    by_name = {layer.name: layer for layer in walk_layers(m)}
    sizes = {n: int(np.prod(by_name[n].kernel.shape)) for n in p.targets}
    assert layer_sparsity(m, p.targets) == pytest.approx({n: int(k * 0.8) / k for n, k in sizes.items()})


def test_unknown_allocation_is_a_param_error():
    with pytest.raises(ParamError, match="allocation"):
        Pruner(tiny_model(), [{"sparsity": 0.5, "op_types": ["default"]}], allocation="layerwise")


def test_finetune_learning_rate_cosine_decays_to_zero_and_constant_is_the_rate():
    schedule = finetune_learning_rate(Params(learning_rate=2e-3, finetune_lr="cosine"), 100)
    values = [float(schedule(step)) for step in (0, 50, 100, 150)]
    assert values == pytest.approx([2e-3, 1e-3, 0.0, 0.0], abs=1e-9)  # lr * (1 + cos(pi t / n)) / 2
    assert float(schedule(25)) == pytest.approx(2e-3 * (1 + np.cos(np.pi / 4)) / 2)
    assert finetune_learning_rate(Params(learning_rate=2e-3, finetune_lr="constant"), 100) == 2e-3


# ---- masks hold through real training ---------------------------------------------------------

@pytest.mark.parametrize("dtype_policy", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_zeros_survive_graph_mode_training(policy, dtype_policy):
    """mixed_float16 (what `auto` picks on a GPU) trains through Keras' LossScaleOptimizer:
    its scaled, possibly skipped steps must keep the masks too (it runs on a CPU as well)."""
    policy(dtype_policy)
    keras.utils.set_random_seed(0)
    m = tiny_model()
    p = Pruner(m, [{"sparsity": 0.7, "op_types": ["default"]}])
    p.prune()
    before = zero_masks(m, p.targets)
    start = [w.numpy().copy() for w in p.weights]
    m.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy")
    x, y = toy_data()
    m.fit(x, y, batch_size=4, epochs=2, verbose=0)  # 8 optimizer steps
    assert not m.run_eagerly and m.optimizer.iterations.numpy() == 8
    assert isinstance(m.optimizer, keras.optimizers.LossScaleOptimizer) == (dtype_policy == "mixed_float16")
    after = zero_masks(m, p.targets)
    for w, w0 in zip(p.weights, start):
        np.testing.assert_array_equal(after[w.path], before[w.path])
        assert not np.allclose(w.numpy()[~before[w.path]], w0[~before[w.path]])  # it trained
    total = sum(int(np.prod(w.shape)) for w in p.weights)
    assert sparsity_stats(m, p.targets)["sparsity"] == int(total * 0.7) / total  # global: one ranking


def test_strip_gives_back_the_original_constraint():
    m = tiny_model()
    kernel = m.get_layer("a").kernel
    kernel.constraint = keras.constraints.NonNeg()
    p = Pruner(m, [{"sparsity": 0.5, "op_names": ["a"]}])
    p.prune()
    m.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    m.fit(*toy_data(8), batch_size=4, verbose=0)
    w = kernel.numpy()
    assert w.min() >= 0 and np.count_nonzero(w == 0) >= int(w.size * 0.5)  # both constraints held
    p.strip()
    assert isinstance(kernel.constraint, keras.constraints.NonNeg) and not p.attached


# ---- AGP ------------------------------------------------------------------------------------

def test_agp_schedule_values():
    assert agp_sparsity(0, 100, 0.8) == 0.0
    assert agp_sparsity(50, 100, 0.8) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    assert agp_sparsity(25, 100, 0.8, initial=0.2) == pytest.approx(0.8 + (0.2 - 0.8) * 0.75 ** 3)
    assert agp_sparsity(100, 100, 0.8) == agp_sparsity(250, 100, 0.8) == 0.8
    assert agp_sparsity(-5, 100, 0.8) == 0.0 and agp_sparsity(3, 0, 0.8) == 0.8
    steps = np.diff([agp_sparsity(t, 40, 0.9) for t in range(41)])
    assert np.all(steps >= 0) and np.all(np.diff(steps) <= 1e-12)  # rises fast, then levels off


class RecordSparsity(keras.callbacks.Callback):
    def __init__(self, names):
        super().__init__()
        self.names, self.seen = names, []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append(sparsity_stats(self.model, self.names)["sparsity"])


def test_agp_callback_reaches_target_on_schedule():
    keras.utils.set_random_seed(0)
    m = tiny_model()
    p = Pruner(m, [{"sparsity": 0.8, "op_types": ["Conv2D", "Dense"]}], allocation="uniform")
    p.prune(0.0)
    m.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
    agp, rec = AGPCallback(p, total_steps=6, frequency=2), RecordSparsity(p.targets)
    m.fit(*toy_data(32), batch_size=4, epochs=1, verbose=0, callbacks=[agp, rec])  # 8 steps
    sizes = [int(np.prod(w.shape)) for w in p.weights]
    expected = [sum(int(n * 0.8 * agp_sparsity(t, 6, 1.0)) for n in sizes) / sum(sizes) for t in (2, 4, 6)]
    assert rec.seen[1:6:2] == pytest.approx(expected)
    assert rec.seen[0] == 0.0 and rec.seen[5] == rec.seen[6] == rec.seen[7]  # frozen after the target
    by_name = {layer.name: layer for layer in walk_layers(m)}
    sizes = {n: int(np.prod(by_name[n].kernel.shape)) for n in p.targets}
    assert layer_sparsity(m, p.targets) == pytest.approx({n: int(k * 0.8) / k for n, k in sizes.items()})


def test_agp_callback_retraces_a_model_traced_before_masks():
    m = tiny_model()
    m.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy")
    m.fit(*toy_data(8), batch_size=4, verbose=0)  # train step traced without constraints
    p = Pruner(m, [{"sparsity": 0.6, "op_names": ["b"]}])
    m.fit(*toy_data(32), batch_size=4, verbose=0, callbacks=[AGPCallback(p, total_steps=2, frequency=1)])
    assert layer_sparsity(m, ["b"])["b"] == int(144 * 0.6) / 144


# ---- a model to ship ---------------------------------------------------------------------------

LOAD_WITHOUT_SEGMODEL = textwrap.dedent("""
    import json, sys
    import keras, numpy as np
    model = keras.models.load_model(sys.argv[1], compile=False)
    out = {l.name: [float(np.mean(np.asarray(l.kernel) == 0)), int(np.prod(l.kernel.shape))]
           for l in model.layers if getattr(l, "kernel", None) is not None}
    print(json.dumps({"segmodel_imported": "segmodel" in sys.modules, "zeros": out}))
""")


def test_stripped_model_loads_in_plain_keras_with_its_zeros(tmp_path):
    from segmodel.files import save_model_atomic
    from segmodel.model import multi_unet_model

    keras.utils.set_random_seed(0)
    m = multi_unet_model(0.1, 6, 32, 32, 3)
    config = [{"sparsity": 0.8, "op_types": ["default"]}, {"sparsity": 0.5, "op_names": ["logits"]}]
    p = Pruner(m, config, allocation="uniform")
    p.prune()
    m.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    m.fit(rng.random((4, 32, 32, 3), np.float32), np.eye(6, dtype=np.float32)[rng.integers(0, 6, (4, 32, 32))],
          batch_size=4, verbose=0)
    targets = dict(p.targets)
    p.strip()
    path = tmp_path / "model.keras"
    save_model_atomic(m, path)  # as run_trial saves it: the model alone, no optimizer state
    assert b"MaskConstraint" not in zipfile.ZipFile(path).read("config.json")
    weight_bytes = sum(w.numpy().nbytes for w in m.weights)
    assert path.stat().st_size < 1.05 * weight_bytes
    assert gzip_size(path) < 0.5 * path.stat().st_size

    run = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_SEGMODEL, str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert loaded["segmodel_imported"] is False
    assert set(loaded["zeros"]) == set(targets)
    for name, (zero_fraction, n) in loaded["zeros"].items():
        assert zero_fraction == pytest.approx(int(n * targets[name]) / n, abs=1e-12), name
