"""segmodel.runtime's rules: precision `auto` from the CPU's flags (faked machines), threads
from the NNI experiment's concurrency (a fake manager's REST API), one trace of the train step."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from segmodel import runtime
from segmodel.experiment import manager

# ---- precision auto ------------------------------------------------------------------------

def _cpuinfo(tmp_path, flags: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Fake CPU\nflags\t\t: fpu sse2 avx2 {flags}\n\n"
                    f"processor\t: 1\nflags\t\t: fpu sse2 avx2 {flags}\n")
    return str(path)


@pytest.mark.parametrize("flags, supports, pays", [
    ("avx512f avx512_bf16", True, False),           # Cooper Lake, Zen 4: bf16, no faster than float32
    ("avx512f avx512_bf16 amx_bf16 amx_tile", True, True),  # Sapphire Rapids
    ("avx512f avx512_vnni", False, False),          # Cascade Lake: no bf16
    ("", False, False),
])
def test_cpu_bf16_is_read_from_the_flags(tmp_path, flags, supports, pays):
    assert runtime.cpu_supports_bf16(_cpuinfo(tmp_path, flags)) is supports
    assert runtime.cpu_bf16_pays(_cpuinfo(tmp_path, flags)) is pays


def test_cpu_bf16_needs_a_whole_flag_and_a_readable_file(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("flags\t: avx512_bf16x\nmodel name\t: mentions avx512_bf16 but not as a flag\n")
    assert runtime.cpu_supports_bf16(str(path)) is False
    assert runtime.cpu_supports_bf16(str(tmp_path / "missing")) is False


def test_pick_precision_rule():
    assert runtime.pick_precision(None, cpu_bf16=True) == "mixed_bfloat16"
    assert runtime.pick_precision(None, cpu_bf16=False) == "float32"
    assert runtime.pick_precision((8, 0), cpu_bf16=False) == "mixed_float16"  # a GPU decides, not the CPU
    assert runtime.pick_precision((6, 1), cpu_bf16=True) == "float32"         # no tensor cores


# ---- threads from the experiment's concurrency -----------------------------------------------

class _FakeManager(BaseHTTPRequestHandler):
    profile: dict = {}
    prefix = ""

    def do_GET(self):
        if self.path == f"{self.prefix}/api/v1/nni/experiment":
            body, code = json.dumps(self.profile).encode(), 200
        else:
            body, code = b'{"error": "not found"}', 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def nni_manager(monkeypatch):
    """A fake NNI manager REST API, and a trial environment pointing at it."""
    server = HTTPServer(("127.0.0.1", 0), _FakeManager)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv(manager.CONCURRENCY_ENV, raising=False)

    def serve(profile: dict, prefix: str = ""):
        _FakeManager.profile, _FakeManager.prefix = profile, prefix
        monkeypatch.setenv("NNI_TRIAL_COMMAND_CHANNEL",
                           f"ws://localhost:{server.server_port}{prefix}/platform/local-env/trial-abc")
    yield serve
    server.shutdown()


def test_concurrency_comes_from_the_nni_experiment(nni_manager, monkeypatch):
    nni_manager({"id": "x", "params": {"trialConcurrency": 2, "trainingService": {"platform": "local"}}})
    assert manager.trial_concurrency() == (2, "NNI experiment")
    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    assert runtime.default_threads(manager.trial_concurrency()[0]) == 4


def test_concurrency_behind_a_url_prefix_and_over_remote_machines(nni_manager):
    nni_manager({"params": {"trialConcurrency": 6, "trainingService": {
        "platform": "remote", "machineList": [{"host": "a"}, {"host": "b"}]}}}, prefix="/nni-prefix")
    assert manager.trial_concurrency() == (3, "NNI experiment")  # 6 trials over 2 machines


def test_env_variable_wins_and_unreachable_manager_means_one(nni_manager, monkeypatch):
    nni_manager({"params": {"trialConcurrency": 4}})
    monkeypatch.setenv(manager.CONCURRENCY_ENV, "2")
    assert manager.trial_concurrency() == (2, manager.CONCURRENCY_ENV)
    monkeypatch.delenv(manager.CONCURRENCY_ENV)
    monkeypatch.setenv("NNI_TRIAL_COMMAND_CHANNEL", "ws://127.0.0.1:9/platform/x")  # nothing listens
    assert manager.trial_concurrency() == (1, "default")
    monkeypatch.setattr(runtime, "available_cores", lambda: 2)
    assert runtime.default_threads(concurrency=4) == 1  # never 0


# ---- the speed fix: one trace of the train step, not two ------------------------------------

def test_build_before_tracing_makes_fit_trace_the_train_step_once():
    """Keras 3 on TF creates optimizer slots and metric state inside the first trace, and
    tf.function then traces again; runtime.build_before_tracing creates them beforehand."""
    import keras
    import numpy as np
    import tensorflow as tf

    def traces_of_first_fit(prebuild: bool) -> int:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        data = tf.data.Dataset.from_tensor_slices((np.zeros((4, 4), "float32"),
                                                   np.eye(3, dtype="float32")[[0, 1, 2, 0]])).batch(2)
        if prebuild:
            assert runtime.build_before_tracing(model, data.element_spec)
        count, step = [0], model.train_step

        def counted(batch):
            count[0] += 1
            return step(batch)
        model.train_step = counted
        model.fit(data, epochs=1, verbose=0)
        return count[0]

    assert traces_of_first_fit(prebuild=False) == 2  # if Keras fixes this upstream, the helper can go
    assert traces_of_first_fit(prebuild=True) == 1
