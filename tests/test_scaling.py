"""Beyond one machine: every config validates with NNI's own classes, and a real
`platform: remote` experiment runs a trial over SSH (sshd on 127.0.0.1)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import yaml

from nni_helpers import BIN, ROOT, NNIExperiment, base_config, final_and_intermediate
from sshd import LocalSshd, sshd_binary

CONFIGS = sorted((ROOT / "configs").glob("*.yml"))


# ---------------------------------------------------------------------------------
# A real remote run
# ---------------------------------------------------------------------------------
def _pip_pin(folder: Path) -> Path:
    """Constraints file pinning the manager's nni: NNI's worker runs `pip install nni
    --upgrade` on connect, which must neither reach the network nor move the version."""
    import nni
    path = folder / "constraints.txt"
    path.write_text(f"nni=={nni.__version__}\n")
    return path


def _kill_trial_keepers(remote_home: Path) -> None:
    """NNI's remote worker starts a detached trial keeper; end any the experiment left behind."""
    for pid_file in remote_home.glob("nni-experiments/*/environments/*/trial_keeper*/trial_keeper.pid"):
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


def _remote_trial_files(remote_home: Path, exp_id: str, trial_id: str) -> Path | None:
    hits = list(remote_home.glob(f"nni-experiments/{exp_id}/environments/*/trials/{trial_id}"))
    return hits[0] if hits else None


def _remote_log(remote_home: Path, exp_id: str, trial_id: str) -> str:
    folder = _remote_trial_files(remote_home, exp_id, trial_id)
    if not folder:
        return f"(no remote trial folder under {remote_home})"
    parts = [f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(folder.iterdir())
             if p.is_file() and p.suffix in ("", ".log", ".stdout", ".stderr")]
    return "\n".join(parts)


@pytest.mark.slow
def test_remote_trial_over_ssh_succeeds(tmp_path):
    binary, why = sshd_binary()
    if not binary:
        pytest.skip(why)
    remote_home = tmp_path / "worker-home"   # the worker's $HOME: NNI keeps its files there
    remote_home.mkdir()
    worker_env = {
        "HOME": str(remote_home),
        "PIP_NO_INDEX": "1",
        "PIP_CONSTRAINT": str(_pip_pin(tmp_path)),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    try:
        sshd = LocalSshd(tmp_path / "sshd", env=worker_env)
        sshd.start()
    except (RuntimeError, OSError, subprocess_error()) as e:
        pytest.skip(f"sshd cannot start here: {e}")
    try:
        config = base_config(
            # As configs/remote.yml: plain `python3`, found through the worker's pythonPath.
            trialCommand="python3 trial.py --patch_size 32 --epochs 1 --finetune_epochs 1",
            maxTrialNumber=1,
            trialConcurrency=1,
            maxTrialDuration="3m",
            nniManagerIp="127.0.0.1",
            trainingService={"platform": "remote", "machineList": [sshd.machine(pythonPath=str(BIN))]},
        )
        with NNIExperiment(config, tmp_path) as exp:
            try:
                trials = exp.wait_done(timeout=200, n_trials=1)
            except (TimeoutError, RuntimeError) as e:
                manager_log = tmp_path / "nni-experiments" / (exp.id or "") / "log" / "nnimanager.log"
                tail = manager_log.read_text(errors="replace")[-4000:] if manager_log.exists() else ""
                raise AssertionError(f"{e}\n--- nnimanager.log\n{tail}\n--- sshd.log\n{sshd.log_tail()}") from None
            assert len(trials) == 1
            tid = trials[0]["trialJobId"]
            assert trials[0]["status"] == "SUCCEEDED", _remote_log(remote_home, exp.id, tid)
            final, inter = final_and_intermediate(exp.metrics(tid))
            assert len(inter) == 2, inter   # one per epoch: 1 dense + 1 fine-tune
            assert len(final) == 1 and isinstance(final[0]["default"], float)
            assert 0.75 < final[0]["sparsity"] < 0.85
            # The trial ran on the worker's copy of the code, not in this checkout.
            remote_trial = _remote_trial_files(remote_home, exp.id, tid)
            assert remote_trial is not None, "no trial folder on the worker"
            uploaded = list(remote_home.glob(f"nni-experiments/{exp.id}/environments/*/upload/*.tgz"))
            assert uploaded, "trial code was not uploaded to the worker"
    finally:
        _kill_trial_keepers(remote_home)
        sshd.stop()


def subprocess_error():
    import subprocess
    return subprocess.SubprocessError
