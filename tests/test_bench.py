"""`segmodel bench --quick` runs every section (numbers not checked: it is not a timed
test), and runtime's precision / thread rules on faked machines."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from segmodel import runtime

ROOT = Path(__file__).resolve().parents[1]


# ---- precision auto ------------------------------------------------------------------------

def _cpuinfo(tmp_path, flags: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Fake CPU\nflags\t\t: fpu sse2 avx2 {flags}\n\n"
                    f"processor\t: 1\nflags\t\t: fpu sse2 avx2 {flags}\n")
    return str(path)


@pytest.mark.parametrize("flags, expected", [
    ("avx512f avx512_bf16", True),      # Cooper Lake, Zen 4
    ("avx512f amx_bf16 amx_tile", True),  # Sapphire Rapids
    ("avx512f avx512_vnni", False),     # Cascade Lake: no bf16
    ("", False),
])
def test_cpu_bf16_is_read_from_the_flags(tmp_path, flags, expected):
    assert runtime.cpu_supports_bf16(_cpuinfo(tmp_path, flags)) is expected


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
    monkeypatch.delenv(runtime.CONCURRENCY_ENV, raising=False)

    def serve(profile: dict, prefix: str = ""):
        _FakeManager.profile, _FakeManager.prefix = profile, prefix
        monkeypatch.setenv("NNI_TRIAL_COMMAND_CHANNEL",
                           f"ws://localhost:{server.server_port}{prefix}/platform/local-env/trial-abc")
    yield serve
    server.shutdown()


def test_concurrency_comes_from_the_nni_experiment(nni_manager, monkeypatch):
    nni_manager({"id": "x", "params": {"trialConcurrency": 2, "trainingService": {"platform": "local"}}})
    assert runtime.trial_concurrency() == (2, "NNI experiment")
    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    assert runtime.default_threads() == 4


def test_concurrency_behind_a_url_prefix_and_over_remote_machines(nni_manager):
    nni_manager({"params": {"trialConcurrency": 6, "trainingService": {
        "platform": "remote", "machineList": [{"host": "a"}, {"host": "b"}]}}}, prefix="/nni-prefix")
    assert runtime.trial_concurrency() == (3, "NNI experiment")  # 6 trials over 2 machines


def test_env_variable_wins_and_unreachable_manager_means_one(nni_manager, monkeypatch):
    nni_manager({"params": {"trialConcurrency": 4}})
    monkeypatch.setenv(runtime.CONCURRENCY_ENV, "2")
    assert runtime.trial_concurrency() == (2, runtime.CONCURRENCY_ENV)
    monkeypatch.delenv(runtime.CONCURRENCY_ENV)
    monkeypatch.setenv("NNI_TRIAL_COMMAND_CHANNEL", "ws://127.0.0.1:9/platform/x")  # nothing listens
    assert runtime.trial_concurrency() == (1, "default")
    monkeypatch.setattr(runtime, "available_cores", lambda: 2)
    assert runtime.default_threads(concurrency=4) == 1  # never 0


# ---- the bench itself -------------------------------------------------------------------------

def test_bench_quick_prints_every_figure(tmp_path):
    """One real run, tiny sizes: every section present, every figure a finite number."""
    out = subprocess.run([sys.executable, "-m", "segmodel", "bench", "--quick", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    r = json.loads(out.stdout)  # stdout is exactly one JSON document
    assert set(r) >= {"fixed_cost", "data", "training", "flops", "seed_vs_ours", "inference", "memory",
                      "precision_auto", "targets"}
    assert set(r["fixed_cost"]["stages_s"]) >= {"import tensorflow + keras", "data: scan, split, first batch",
                                                "model build + compile", "first training step (tracing + 1 step)"}
    for kind in ("dense", "pruned"):
        for precision in ("float32", "mixed_bfloat16"):
            assert r["training"][f"{kind} {precision}"]["img_s"] > 0
    assert set(r["inference"]["img_s"]) == {"dense", "pruned", "tflite pruned"}
    assert r["inference"]["tflite_pixel_agreement"] > 0.9  # the export computes the same model
    # Every ratio is the ratio of the figures it is quoted beside (no unit or key mix-up).
    seed = r["seed_vs_ours"]
    assert seed["speed-up"] == pytest.approx(seed["seed_step_ms"] / seed["ours_step_ms"], rel=0.02)
    d = r["data"]
    assert d["headroom_x"] == pytest.approx(d["later_epoch_img_s"] / d["training_consumes_img_s"], rel=0.02)
    t = r["training"]
    assert t["pruned/dense float32"] == pytest.approx(t["pruned float32"]["step_ms"] / t["dense float32"]["step_ms"],
                                                      rel=0.02)
    assert 0 < r["flops"]["achieved"]["dense float32"]["fraction_of_peak"]
    # The whole bench's peak includes the trial-like start it measured first, whose peak
    # includes its RSS at that moment (MB all: a KB/bytes mix-up is 1000x off; the kernel's
    # peak and psutil's current RSS are counted a little differently, hence the 1%).
    m = r["memory"]
    assert m["peak_rss_mb"] >= m["trial_peak_rss_mb_at_first_step"] >= 0.99 * r["fixed_cost"]["rss_mb"]
    assert {t["target"] for t in r["targets"]} >= {"trial fixed cost, process start to first step (s)"}
    assert "Targets" in out.stderr and "Training (in-memory batches" in out.stderr  # the table, beside the JSON


def test_bench_lists_every_figure_and_each_has_help():
    from segmodel.bench import BENCHES, build_parser
    out = subprocess.run([sys.executable, "-m", "segmodel", "bench", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert all(name in out.stdout for name in BENCHES if name != "stages")
    for name in BENCHES:
        assert build_parser(name).description  # each module's docstring says what it measures


def test_prune_overhead_times_three_variants():
    """The bench behind the step-overhead figure, at tiny sizes: three variants, each
    ratio the ratio of its step times."""
    import keras

    from segmodel.bench.prune_overhead import measure
    assert keras.mixed_precision.global_policy().name == "float32"
    r = measure(patch_size=32, batch_size=2, sparsity=0.8, steps=2, rounds=1)
    assert r["precision"] == "float32" and r["steps"] == 2
    assert r["constraint_ratio"] == pytest.approx(r["constraint_step_s"] / r["dense_step_s"], rel=0.01)
    assert r["callback_ratio"] == pytest.approx(r["callback_step_s"] / r["dense_step_s"], rel=0.01)


def test_kd_table_cells_share_the_dense_phase_flags():
    """kd-table's pairing: every cell of a seed has the same flags except the fine-tuning."""
    from segmodel.bench.kd_table import cells
    grid = cells([0, 1], [0.8], [(4.0, 1.0)], ["--patch_size", "32"])
    assert set(grid) == {f"s{s}-0.8-{v}" for s in (0, 1) for v in ("pruned", "nokd", "kd4:1")}
    dense_flags = lambda f: [a for a in f if a not in ("--kd", "true", "false", "--kd_temperature", "4.0",  # noqa: E731
                                                       "--kd_alpha", "1.0", "--finetune_epochs", "0")]
    for seed in (0, 1):
        assert len({tuple(dense_flags(f)) for n, f in grid.items() if n.startswith(f"s{seed}-")}) == 1


def test_quality_cells_pair_each_method_with_its_seeds_dense_trial():
    """bench quality: per seed one dense trial (--sparsity 0) and one per method and
    sparsity, differing from it only in the method's flags and the sparsity."""
    from segmodel.bench.quality import METHODS, cells
    grid = cells([0, 1], [0.8, 0.9], ["recipe", "seed"], ["--patch_size", "32"])
    assert set(grid) == {f"s{s}-dense" for s in (0, 1)} | {f"s{s}-{m}-{x}" for s in (0, 1)
                                                           for m in ("recipe", "seed") for x in (0.8, 0.9)}
    assert grid["s1-dense"] == ["--patch_size", "32", "--seed", "1", "--sparsity", "0"]
    assert grid["s1-seed-0.9"] == ["--patch_size", "32", *METHODS["seed"][1], "--seed", "1", "--sparsity", "0.9"]
    assert METHODS["recipe"][1] == []  # the recipe is what a trial does by default


def test_quality_table_reports_paired_deltas():
    from segmodel.bench.quality import table
    row = dict(measured_sparsity=0.8, precision="float32", duration_s=1.0, model_gzip_bytes=100, val_accuracy=0.9)
    rows = [{**row, "seed": 0, "method": "dense", "sparsity": 0.0, "val_iou": 0.80, "measured_sparsity": 0.0},
            {**row, "seed": 1, "method": "dense", "sparsity": 0.0, "val_iou": 0.70, "measured_sparsity": 0.0},
            {**row, "seed": 0, "method": "recipe", "sparsity": 0.8, "val_iou": 0.79},
            {**row, "seed": 1, "method": "recipe", "sparsity": 0.8, "val_iou": 0.67}]
    line = table(rows).splitlines()[3]
    # paired: -1 and -3 points, mean -2, sd 1.4; unpaired means would give the same mean but hide the sd
    assert "| 80% | 0.8000 | 2 | 0.730 ± 0.085 | -2.0 ± 1.4 pt | -3.0 pt |" in line


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
