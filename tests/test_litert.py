"""Exported .tflite files run through LiteRT (ai-edge-litert) when it is installed, and
through tf.lite.Interpreter otherwise: both paths run a real file and agree with Keras."""
import sys

import keras
import numpy as np
import pytest
from keras import layers

from segmodel.deploy.runners import TFLiteRunner, tflite_interpreter_class


@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory):
    import tensorflow as tf
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, layers.Conv2D(4, 3, padding="same", activation="softmax")(inp))
    path = tmp_path_factory.mktemp("litert") / "m.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path, model


def _check(path, model):
    x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    runner = TFLiteRunner(path, threads=1)
    np.testing.assert_allclose(runner.probabilities(x), model(x).numpy(), atol=1e-5)
    d = runner.delegation  # read from this interpreter's graph: conv and softmax both in XNNPACK's partition
    assert d["runtime"] == "xnnpack" and d["delegated_ops"] == d["ops"] == 2, d
    return runner


def test_litert_runs_the_file_when_installed(tflite_file):
    pytest.importorskip("ai_edge_litert.interpreter")
    runner = _check(*tflite_file)
    assert type(runner.interpreter).__module__.startswith("ai_edge_litert")


def test_tf_lite_is_the_fallback(tflite_file, monkeypatch):
    import tensorflow as tf
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails as if not installed
    assert tflite_interpreter_class() is tf.lite.Interpreter
    runner = _check(*tflite_file)
    assert isinstance(runner.interpreter, tf.lite.Interpreter)
