"""Start a real NNI experiment for a test, talk to its REST API, always stop it.

Usage:
    with NNIExperiment(config_dict, tmp_path) as exp:
        exp.wait_done()
        trials = exp.trials()
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from segmodel.experiment.manager import free_port  # noqa: F401  (the tests' helper too)
from segmodel.experiment.records import ENDED

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NNICTL = str(BIN / "nnictl")
# A wait gives up after this long without any event (trial status change, new metric):
# far longer than one tiny epoch on the slowest CPU we have seen, so only a hang trips it.
STALL_S = 300
# Tiny but real trials: built-in data, 32 px patches at a wide training stride (~14 batches of
# 8 an epoch instead of ~220) and few validation images: every epoch costs about a second.
TINY_DATA = "--patch_size 32 --patch_stride 160 --val_fraction 0.1"


def wait_for(predicate, what, stall=STALL_S):
    """Poll until predicate() is truthy; give up only after `stall` seconds without it
    (a hang on any machine, not a deadline tuned on one)."""
    deadline = time.time() + stall
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"waited {stall}s for {what}")


def base_config(**overrides) -> dict:
    """config.yml with tiny, fast trials; overrides replace top-level keys."""
    config = yaml.safe_load((ROOT / "config.yml").read_text())
    config.update({
        "trialCommand": f"{sys.executable} trial.py {TINY_DATA} --epochs 1 --finetune_epochs 1",
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

    @classmethod
    def attach(cls, exp_id: str, port: int, working_directory: Path, env: dict | None = None) -> "NNIExperiment":
        """An experiment something else started (e.g. `segmodel confirm`), to watch and stop."""
        exp = cls({}, Path(working_directory).parent, env)
        exp.config["experimentWorkingDirectory"] = str(working_directory)
        exp.id, exp.port = exp_id, port
        return exp

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

    def stop(self) -> subprocess.CompletedProcess | None:
        if self.id:
            return subprocess.run([NNICTL, "stop", self.id], env=self.env, capture_output=True, text=True,
                                  timeout=120)
        return None

    def resume(self) -> None:
        """`nnictl resume` on a new free port: the experiment goes on where it stopped."""
        self.port = free_port()
        resumed = subprocess.run([NNICTL, "resume", self.id, "--port", str(self.port)], env=self.env,
                                 capture_output=True, text=True, timeout=180, cwd=self.workdir)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr

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

    def progress(self) -> tuple:
        """What changes while an experiment makes progress: its status, each trial's
        status, and how many metric records (intermediate or final) NNI has."""
        trials = self.trials()
        return (self.status(), tuple(sorted((t["trialJobId"], t["status"]) for t in trials)),
                len(self.get("/metric-data") or []))

    def wait_done(self, n_trials: int | None = None, stall: float = STALL_S) -> list[dict]:
        """Wait until the experiment is DONE/NO_MORE_TRIAL (or n_trials have ended).

        No total deadline tuned on one machine: the wait follows events and gives up only
        when nothing at all happened (no status change, no new metric) for `stall` seconds."""
        ended = set(ENDED)
        last, changed = None, time.time()
        while time.time() - changed < stall:
            status = self.status()
            trials = self.trials()
            done = [t for t in trials if t["status"] in ended]
            if status == "ERROR":
                raise RuntimeError(f"experiment ERROR: {self.get('/check-status')}")
            if (n_trials and len(done) >= n_trials) or (not n_trials and status in ("DONE", "NO_MORE_TRIAL")):
                return trials
            now = self.progress()
            if now != last:
                last, changed = now, time.time()
            time.sleep(2)
        raise TimeoutError(f"experiment made no progress for {stall:.0f}s: {self.status()} {self.trials()}")

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


@contextlib.contextmanager
def running_experiment(config, workdir, attempts=2):
    """An NNIExperiment whose tuner connected. NNI 3.0 gives the tuner process a
    hard-coded 10 s to connect (nni_node/core/tuner_command_channel.js); on a machine
    so loaded that importing it takes longer, the experiment is ERROR before any trial:
    start a fresh one once more."""
    for attempt in range(1, attempts + 1):
        folder = Path(workdir) / f"attempt{attempt}"
        folder.mkdir()
        exp = NNIExperiment(config, folder)
        exp.start()
        try:
            if _tuner_connected(exp) or attempt == attempts:
                yield exp
                return
        finally:
            exp.stop()


def _tuner_connected(exp, timeout=30) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = exp.get("/check-status")
        if status["status"] == "ERROR":
            return "Tuner did not connect" not in str(status.get("errors"))
        if exp.trials():
            return True
        time.sleep(1)
    return True
