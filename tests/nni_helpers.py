"""Start a real NNI experiment for a test, talk to its REST API, always stop it.

Usage:
    with NNIExperiment(config_dict, tmp_path) as exp:
        exp.wait_done(timeout=300)
        trials = exp.trials()
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NNICTL = str(BIN / "nnictl")


def free_port() -> int:
    """A free TCP port; NNI also uses port+1 internally, so make sure both are free."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no free port pair found")


def base_config(**overrides) -> dict:
    """config.yml with tiny, fast trials; overrides replace top-level keys."""
    config = yaml.safe_load((ROOT / "config.yml").read_text())
    config.update({
        "trialCommand": f"{sys.executable} trial.py --patch_size 32 --epochs 1 --finetune_epochs 1",
        "trialCodeDirectory": str(ROOT),
        "searchSpaceFile": str(ROOT / "search_space.json"),
        "maxTrialNumber": 2,
        "trialConcurrency": 1,
        "maxExperimentDuration": "10m",
    })
    config.pop("assessor", None)
    if "codeDirectory" in config["tuner"]:  # segmodel's tuner adapter: this checkout, not the temp config's folder
        config["tuner"]["codeDirectory"] = str(ROOT)
    config.update(overrides)
    return config


class NNIExperiment:
    def __init__(self, config: dict, workdir: Path, env: dict | None = None):
        self.workdir = Path(workdir)
        self.config = dict(config, experimentWorkingDirectory=str(self.workdir / "nni-experiments"))
        self.port = free_port()
        self.env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **(env or {})}
        self.id: str | None = None

    # -- lifecycle --------------------------------------------------------------
    def __enter__(self) -> "NNIExperiment":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        path = self.workdir / "config.yml"
        path.write_text(yaml.safe_dump(self.config))
        out = subprocess.run([NNICTL, "create", "--config", str(path), "--port", str(self.port)],
                             env=self.env, capture_output=True, text=True, timeout=180, cwd=self.workdir)
        if out.returncode != 0:
            raise RuntimeError(f"nnictl create failed:\n{out.stdout}\n{out.stderr}")
        self.id = self.get("/experiment")["id"]

    def stop(self) -> None:
        if self.id:
            subprocess.run([NNICTL, "stop", self.id], env=self.env, capture_output=True, timeout=120)

    # -- REST API -----------------------------------------------------------------
    def get(self, path: str):
        url = f"http://127.0.0.1:{self.port}/api/v1/nni{path}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def trials(self) -> list[dict]:
        return self.get("/trial-jobs")

    def metrics(self, trial_id: str) -> list[dict]:
        return self.get(f"/metric-data/{trial_id}")

    def status(self) -> str:
        return self.get("/check-status")["status"]

    def wait_done(self, timeout: float, n_trials: int | None = None) -> list[dict]:
        """Wait until the experiment is DONE/NO_MORE_TRIAL (or n_trials have ended)."""
        ended = {"SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"}
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = self.status()
            trials = self.trials()
            done = [t for t in trials if t["status"] in ended]
            if status in ("DONE", "NO_MORE_TRIAL", "ERROR") or (n_trials and len(done) >= n_trials):
                if status == "ERROR":
                    raise RuntimeError(f"experiment ERROR: {self.get('/check-status')}")
                if not n_trials or len(done) >= n_trials:
                    return trials
            time.sleep(2)
        raise TimeoutError(f"experiment not done in {timeout}s: {self.status()} {self.trials()}")

    def trial_dir(self, trial_id: str) -> Path:
        """The trial's NNI_OUTPUT_DIR (NNI 3.0 local: environments/local-env/trials/<id>)."""
        root = Path(self.config["experimentWorkingDirectory"]) / self.id
        found = sorted(root.glob(f"**/trials/{trial_id}"))
        if not found:
            raise FileNotFoundError(f"no output folder for trial {trial_id} under {root}")
        return found[0]

    def trial_log(self, trial_id: str) -> str:
        """stderr + stdout of a trial, for assertion messages."""
        root = self.trial_dir(trial_id)
        parts = [p.read_text(errors="replace") for p in (root / "trial.stderr", root / "stderr", root / "trial.log") if p.exists()]
        return "\n".join(parts)[-4000:]


def final_and_intermediate(records: list[dict]) -> tuple[list, list]:
    """Split a trial's metric records into (final, intermediate), values decoded."""
    final, inter = [], []
    for r in records:
        value = json.loads(r["data"])
        value = json.loads(value) if isinstance(value, str) else value
        (final if r["type"] == "FINAL" else inter).append(value)
    return final, inter
