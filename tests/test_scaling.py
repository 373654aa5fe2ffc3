"""Beyond one machine: every config validates with NNI's own config classes, NNI's own
GPU scheduler places gpu.yml's trials, and a real `platform: remote` experiment runs a
trial over SSH against a throwaway sshd on 127.0.0.1."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from nni.experiment.config import ExperimentConfig
from nni_helpers import BIN, ROOT, NNIExperiment, base_config, final_and_intermediate
from sshd import LocalSshd, sshd_binary

from segmodel.params import parse_flags, resolve

CONFIG_FILES = [ROOT / "config.yml", *sorted((ROOT / "configs").glob("*.yml"))]
SCALING_FILES = {p.stem: p for p in CONFIG_FILES if p.parent.name == "configs"}


def load_validated(path: Path, tmp_path: Path) -> dict:
    """NNI's canonical form of a config file (what nnictl sends to the NNI manager).

    NNI checks that each remote machine's sshKeyFile exists on this machine, so the
    placeholder keys are pointed at a dummy file first."""
    config = ExperimentConfig.load(path)
    services = config.training_service if isinstance(config.training_service, list) else [config.training_service]
    for service in services:
        for machine in getattr(service, "machine_list", None) or []:
            if machine.ssh_key_file and not Path(machine.ssh_key_file).expanduser().is_file():
                dummy = tmp_path / "id_placeholder"
                dummy.write_text("placeholder\n")
                machine.ssh_key_file = str(dummy)
    config.validate()
    return config.json()


# ---------------------------------------------------------------------------------
# Configs, offline
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_validates_with_nni(path, tmp_path):
    canon = load_validated(path, tmp_path)
    # Relative paths resolve from the config's folder to this checkout.
    assert Path(canon["trialCodeDirectory"]) == ROOT
    space = ROOT / "configs" / "compress_search_space.json" if path.stem == "compress" else ROOT / "search_space.json"
    assert canon["searchSpace"] == json.loads(space.read_text())
    # The trial command's flags are valid segmodel parameters.
    argv = shlex.split(canon["trialCommand"])
    assert argv[1] == "trial.py", argv
    resolve(parse_flags(argv[2:]))
    if path.parent.name == "configs":
        # Plain `python3`: on workers it is the venv's (pythonPath / the image), locally
        # trial.py re-executes into ./.venv.
        assert argv[0] == "python3", argv


@pytest.mark.parametrize("name, change, error", [
    ("gpu", lambda c: c.pop("trialGpuNumber"), "max_trial_number_per_gpu does not work without trial_gpu_number"),
    ("remote", lambda c: c["trainingService"]["machineList"][0].update(sshKeyFile="/nonexistent/key"),
     "valid SSH key file"),
    # NNI checks the operator with a bare assert: the failing statement is the message
    ("kubeflow", lambda c: c["trainingService"].update(operator="mpi-operator"), "self.operator in ['tf-operator'"),
])
def test_nni_validation_rejects_broken_variants(name, change, error, tmp_path):
    """The validation above is NNI's real check, not a formality: broken variants fail."""
    import yaml

    data = yaml.safe_load(SCALING_FILES[name].read_text())
    data.update(searchSpaceFile=str(ROOT / "search_space.json"), trialCodeDirectory=str(ROOT))
    change(data)
    with pytest.raises((ValueError, AssertionError)) as failed:
        ExperimentConfig(**data).validate()
    assert error in (str(failed.value) or str(failed.traceback[-1].statement)), failed.getrepr(style="short")


@pytest.mark.parametrize("name", ["remote", "gpu", "kubeflow"])
def test_scaling_config_searches_like_config_yml(name, tmp_path):
    """Only where trials run may differ from the local default, not what is searched."""
    base = load_validated(ROOT / "config.yml", tmp_path)
    other = load_validated(SCALING_FILES[name], tmp_path)
    for key in ("searchSpace", "tuner", "assessor"):
        assert other.get(key) == base.get(key), key


def test_remote_config_tells_workers_where_python_and_manager_are(tmp_path):
    canon = load_validated(SCALING_FILES["remote"], tmp_path)
    service = canon["trainingService"]
    assert service["platform"] == "remote" and len(service["machineList"]) >= 2
    for machine in service["machineList"]:
        assert machine["pythonPath"].endswith("/bin"), machine   # a venv's bin/ folder, not the interpreter
        assert "password" not in machine and machine["sshKeyFile"]
    assert canon["nniManagerIp"]                                 # workers cannot report to "localhost"
    assert resolve(parse_flags(shlex.split(canon["trialCommand"])[2:])).data_dir  # a path on every worker


def test_kubeflow_config_uses_our_image_and_nfs(tmp_path):
    canon = load_validated(SCALING_FILES["kubeflow"], tmp_path)
    service = canon["trainingService"]
    assert service["platform"] == "kubeflow" and service["operator"] == "tf-operator"
    assert service["storage"]["storageType"] == "nfs"
    assert "segmodel" in service["worker"]["dockerImage"]         # not NNI's default msranni/nni image
    data_dir = resolve(parse_flags(shlex.split(canon["trialCommand"])[2:])).data_dir
    assert data_dir.startswith("/tmp/mount/"), data_dir          # where NNI mounts the NFS share in pods
    assert canon["nniManagerIp"]


def _nni_schedule(spec: dict) -> list:
    """Where NNI 3.0's trial-keeper scheduler puts `spec['trials']` trials (None = waits)."""
    import nni_node
    node_dir = Path(nni_node.__path__[0])
    out = subprocess.run([str(node_dir / "node"), str(ROOT / "tests" / "nni_gpu_schedule.js"), json.dumps(spec)],
                         env={**os.environ, "NODE_PATH": f"{node_dir}:{node_dir / 'node_modules'}"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gpu_config_schedules_trials_with_nni(tmp_path):
    """gpu.yml's settings, on a fake machine with as many GPUs as it lists: NNI starts
    trialConcurrency trials at once, each with a CUDA_VISIBLE_DEVICES of its own."""
    canon = load_validated(SCALING_FILES["gpu"], tmp_path)
    service = canon["trainingService"]
    assert service["platform"] == "local" and service["useActiveGpu"] is False
    indices = service["gpuIndices"]
    per_gpu = service["maxTrialNumberPerGpu"]
    spec = dict(gpus=len(indices), trialGpuNumber=canon["trialGpuNumber"], maxTrialNumberPerGpu=per_gpu,
                gpuIndices=indices, useActiveGpu=False, trials=canon["trialConcurrency"] + 1)
    placed = _nni_schedule(spec)
    assert all(placed[:-1]) and placed[-1] is None, placed   # exactly trialConcurrency fit
    assert sorted(placed[:-1]) == sorted(str(i) for i in indices for _ in range(per_gpu))
    # useActiveGpu false: a GPU that already runs another process gets no trials.
    two = dict(spec, gpus=2, gpuIndices=[0, 1], maxTrialNumberPerGpu=1, busyGpus=[0], trials=2)
    assert _nni_schedule(two) == ["1", None]


def test_nni_never_schedules_a_trial_that_asks_for_every_gpu():
    """The NNI 3.0 quirk docs/scaling.md warns about (why gpu.yml shares its GPU)."""
    assert _nni_schedule(dict(gpus=1, trialGpuNumber=1, maxTrialNumberPerGpu=1, trials=1)) == [None]
    assert _nni_schedule(dict(gpus=2, trialGpuNumber=2, maxTrialNumberPerGpu=1, trials=1)) == [None]
    assert _nni_schedule(dict(gpus=2, trialGpuNumber=1, maxTrialNumberPerGpu=1, trials=3)) == ["0", "1", None]


# ---------------------------------------------------------------------------------
# GPUs, in-process: precision auto and memory growth (TensorFlow's device list faked)
# ---------------------------------------------------------------------------------
def test_precision_auto_and_memory_growth_on_a_gpu(monkeypatch):
    import keras
    import tensorflow as tf

    from segmodel import runtime
    from segmodel.params import Params

    gpus = [tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(2)]
    details = {"compute_capability": (8, 0)}
    grown = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda device: dict(details))
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", lambda device, on: grown.append((device.name, on)))

    assert runtime.choose_precision("auto") == "mixed_float16"      # tensor cores (Volta and later)
    details["compute_capability"] = (6, 1)
    assert runtime.choose_precision("auto") == "float32"            # Pascal: float16 would be slower
    assert runtime.choose_precision("float32") == "float32"        # an explicit choice wins
    details["compute_capability"] = (7, 0)
    try:
        assert runtime.configure(Params(precision="auto")) == "mixed_float16"
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert grown == [(g.name, True) for g in gpus]                   # every visible GPU grows on demand


_HAS_GPU = subprocess.run(["sh", "-c", "nvidia-smi -L"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _HAS_GPU, reason="no NVIDIA GPU (nvidia-smi -L fails)")
def test_trials_honour_cuda_visible_devices_on_a_real_gpu(tmp_path):
    """Two trials on one GPU at once, as NNI starts them with maxTrialNumberPerGpu 2."""
    probe = ("import os, json, tensorflow as tf; from segmodel import runtime; from segmodel.params import Params;"
             "p = runtime.configure(Params()); g = tf.config.list_physical_devices('GPU');"
             "print(json.dumps({'gpus': len(g), 'precision': p,"
             " 'growth': [tf.config.experimental.get_memory_growth(d) for d in g]}))")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}
    procs = [subprocess.Popen([sys.executable, "-c", probe], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        seen = json.loads(out.strip().splitlines()[-1])
        assert seen["gpus"] == 1 and seen["growth"] == [True]
        assert seen["precision"] in ("mixed_float16", "float32")
    hidden = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                            capture_output=True, text=True, timeout=300)
    assert json.loads(hidden.stdout.strip().splitlines()[-1])["gpus"] == 0   # trialGpuNumber 0: CPU only


# ---------------------------------------------------------------------------------
# Files for the cluster: the trial image and what NNI uploads
# ---------------------------------------------------------------------------------
def test_dockerfile_installs_the_package_and_context_skips_the_venv():
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")              # continuation lines
    instructions = [line.split(None, 1) for line in joined.splitlines() if line.strip()]
    assert instructions[0] == ["FROM", "python:3.11-slim"]
    copied = " ".join(rest for op, rest in instructions if op == "COPY")
    for needed in ("pyproject.toml", "segmodel"):
        assert needed in copied
    assert any(op == "RUN" and "pip install" in rest for op, rest in instructions)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_nniignore_keeps_the_upload_small():
    """NNI refuses to upload a code directory of > 2000 files or > 300 MB; the venv alone is more."""
    patterns = (ROOT / ".nniignore").read_text().split()
    for name in (".venv", ".git", "out", "runs"):
        assert name in patterns, name


# ---------------------------------------------------------------------------------
# A real remote run over SSH
# ---------------------------------------------------------------------------------
def _kill_trial_keepers(worker_home: Path) -> None:
    """NNI's remote worker starts a detached trial keeper; end any the experiment left behind."""
    for pid_file in worker_home.glob("nni-experiments/*/environments/*/trial_keeper*/trial_keeper.pid"):
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


def _worker_trial_dir(worker_home: Path, exp_id: str, trial_id: str) -> Path | None:
    hits = list(worker_home.glob(f"nni-experiments/{exp_id}/environments/*/trials/{trial_id}"))
    return hits[0] if hits else None


def _worker_log(worker_home: Path, exp_id: str, trial_id: str) -> str:
    folder = _worker_trial_dir(worker_home, exp_id, trial_id)
    if not folder:
        return f"(no trial folder on the worker under {worker_home})"
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted(folder.glob("trial.*")))


@pytest.mark.slow
def test_remote_trial_over_ssh_succeeds(tmp_path):
    binary, why = sshd_binary()
    if not binary:
        pytest.skip(why)
    import nni

    # The dataset sits on a "shared" path, as an NFS mount would on every worker.
    shared_data = tmp_path / "shared" / "dubai"
    subprocess.run([sys.executable, "-m", "segmodel", "data", "synth", str(shared_data), "--tiles", "2",
                    "--images-per-tile", "2", "--min-size", "64", "--max-size", "96"],
                   check=True, capture_output=True, timeout=120)
    # The worker's login environment. NNI keeps its files in the worker's $HOME, and on
    # connect runs `pip install nni --upgrade` there: pinned, and with no index to reach.
    worker_home = tmp_path / "worker-home"
    worker_home.mkdir()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"nni=={nni.__version__}\n")
    worker_env = {"HOME": str(worker_home), "PIP_CONSTRAINT": str(constraints), "PIP_NO_INDEX": "1",
                  "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    sshd = LocalSshd(tmp_path / "sshd", env=worker_env)
    try:
        sshd.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"sshd cannot start here: {e}")
    try:
        config = base_config(
            # As in configs/remote.yml: plain `python3` (the venv's, via pythonPath) and --data_dir.
            trialCommand=f"python3 trial.py --patch_size 32 --epochs 1 --finetune_epochs 1 "
                         f"--data_dir {shlex.quote(str(shared_data))}",
            maxTrialNumber=1,
            trialConcurrency=1,
            maxTrialDuration="4m",
            nniManagerIp="127.0.0.1",
            trainingService={"platform": "remote", "machineList": [sshd.machine(pythonPath=str(BIN))]},
        )
        with NNIExperiment(config, tmp_path) as exp:
            try:
                trials = exp.wait_done(n_trials=1)  # ~90 s alone; more on a busy machine
            except (TimeoutError, RuntimeError) as e:
                log = tmp_path / "nni-experiments" / str(exp.id) / "log" / "nnimanager.log"
                tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
                raise AssertionError(f"{e}\n--- nnimanager.log\n{tail}\n--- sshd.log\n{sshd.log_tail()}") from None
            assert len(trials) == 1
            tid = trials[0]["trialJobId"]
            assert trials[0]["status"] == "SUCCEEDED", _worker_log(worker_home, exp.id, tid)
            final, inter = final_and_intermediate(exp.metrics(tid))
            assert len(inter) == 2, inter                       # one per epoch: 1 dense + 1 fine-tune
            assert len(final) == 1 and isinstance(final[0]["default"], float)
            assert 0.75 < final[0]["sparsity"] < 0.85

            # It ran on the worker, in NNI's copy of the code, without the venv...
            upload = next(worker_home.glob(f"nni-experiments/{exp.id}/environments/*/upload/trial_code"))
            assert (upload / "trial.py").is_file() and (upload / "segmodel").is_dir()
            assert not (upload / ".venv").exists()
            # ...with the worker's interpreter (pythonPath), and read the shared dataset.
            trial_dir = _worker_trial_dir(worker_home, exp.id, tid)
            assert trial_dir is not None, "no trial folder on the worker"
            used = json.loads((trial_dir / "params.json").read_text())
            assert used["data_dir"] == str(shared_data)
            assert (trial_dir / "metrics.json").is_file()

        # `confirm` of this search runs on the same workers: their machine list, reachable now...
        folder = tmp_path / "nni-experiments" / exp.id
        confirm = [sys.executable, "-m", "segmodel", "confirm", str(folder), "--top", "1", "--seeds", "2",
                   "--dry-run", "--out", str(tmp_path / "confirm")]
        run = subprocess.run(confirm, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        written = load_validated(tmp_path / "confirm" / "config.yml", tmp_path)
        assert written["trainingService"]["machineList"][0]["port"] == sshd.port
        assert written["trialCommand"] == config["trialCommand"] and written["maxTrialNumber"] == 2
        # ...and refused in one line, nothing started, once they are not
        sshd.stop()
        run = subprocess.run(confirm, capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and "not reachable: remote machine 127.0.0.1" in run.stderr, run.stderr
    finally:
        _kill_trial_keepers(worker_home)
        sshd.stop()
