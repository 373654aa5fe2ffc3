"""Find an NNI experiment (by id or folder) and read its trials, running or stopped.

NNI 3.0 keeps each experiment in `<workdir>/<id>/` (default workdir
`~/nni-experiments`; nnictl records each experiment's workdir in
`~/nni-experiments/.experiment`). We read `db/nni.sqlite` read-only: it holds the
config, every trial's status events, hyperparameters and reported metrics. Each
trial's files (our metrics.json, model.keras, plots) are in its log path,
`environments/local-env/trials/<trial id>/` on the local platform. What segmodel's tuner
adapter told the tuner about each trial is in `checkpoint/tuner_told.jsonl` (segmodel/experiment/tuner.py).

A plain trial folder (`python -m segmodel train --output_dir DIR`) also works
wherever one trial is enough (export): see `load_trial_folder`.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SegmodelError
from . import confirmation

ENDED = ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")
TOLD_LOG = Path("checkpoint") / "tuner_told.jsonl"   # written by segmodel.experiment.tuner.InformedTuner


class ExperimentError(SegmodelError):
    """No such experiment, trial or trial file."""


@dataclass
class Trial:
    id: str
    sequence: int = -1
    status: str = "UNKNOWN"
    parameters: dict = field(default_factory=dict)     # what the tuner sent
    final: dict = field(default_factory=dict)          # the final result as reported to NNI
    intermediate: list = field(default_factory=list)   # per-epoch results, in order
    start_ms: int | None = None
    end_ms: int | None = None
    message: str = ""
    dir: Path | None = None                            # the trial's output folder, if found
    told: dict | None = None                           # what segmodel's tuner adapter told the tuner (TOLD_LOG)
    parameter_id: int | None = None                    # the tuner's id for `parameters`

    @property
    def metrics(self) -> dict:
        """metrics.json from the trial folder (has strings too), over NNI's final result."""
        path = self.dir / "metrics.json" if self.dir else None
        if path and path.is_file():
            try:
                return {**self.final, **json.loads(path.read_text())}
            except (OSError, json.JSONDecodeError):
                pass
        return dict(self.final)

    @property
    def diverged(self) -> str:
        """Why the trial's training diverged ("" if it did not); such a trial saved no model."""
        m = self.metrics
        return (m.get("diverged_reason") or "its loss or weights became NaN") if m.get("diverged") else ""

    @property
    def duration_s(self) -> float | None:
        if self.start_ms is None:
            return None
        end = self.end_ms if self.end_ms is not None else (time.time() * 1000 if self.status == "RUNNING" else None)
        return None if end is None else round((end - self.start_ms) / 1000, 1)

    def file(self, name: str) -> Path:
        """A file in the trial folder, or ExperimentError naming it."""
        if self.dir is None:
            raise ExperimentError(f"trial {self.id}: its output folder was not found")
        path = self.dir / name
        if not path.exists():
            raise ExperimentError(f"trial {self.id}: missing {path}")
        return path


@dataclass
class Experiment:
    id: str
    dir: Path
    config: dict
    trials: list[Trial]
    status: str = ""          # from nnictl's registry (RUNNING, DONE, STOPPED, ...), if known
    start_ms: int | None = None  # when the experiment started

    @property
    def began_ms(self) -> int:
        """When the experiment started: its own record, else its first trial's start (0 if none)."""
        if self.start_ms is not None:
            return self.start_ms
        return min((t.start_ms for t in self.trials if t.start_ms is not None), default=0)

    @property
    def optimize_mode(self) -> str:
        """`maximize` or `minimize`, from the tuner's (or assessor's) classArgs; NNI's default is maximize."""
        for key in ("tuner", "advisor", "assessor"):
            mode = ((self.config.get(key) or {}).get("classArgs") or {}).get("optimize_mode")
            if mode:
                return str(mode).lower()
        return "maximize"

    def trial(self, trial_id: str) -> Trial:
        for t in self.trials:
            if t.id == trial_id or str(t.sequence) == str(trial_id):
                return t
        known = ", ".join(t.id for t in self.trials) or "none"
        raise ExperimentError(f"experiment {self.id} has no trial {trial_id!r} (trials: {known})")

    def ranked(self, metric: str = "default") -> list[Trial]:
        """Trials with a final `metric`, best first; then the rest by sequence number."""
        scored = [t for t in self.trials if _number(t.final.get(metric)) is not None]
        scored.sort(key=lambda t: t.final[metric], reverse=self.optimize_mode != "minimize")
        rest = sorted((t for t in self.trials if t not in scored), key=lambda t: t.sequence)
        return scored + rest

    def best(self, metric: str = "default") -> Trial:
        ranked = [t for t in self.ranked(metric) if _number(t.final.get(metric)) is not None]
        if not ranked:
            raise ExperimentError(f"experiment {self.id} has no trial with a final result yet")
        return ranked[0]


def _number(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


# ---- locating --------------------------------------------------------------------

def nni_home() -> Path:
    """nnictl's home: the default experiment folder and its `.experiment` registry."""
    return Path.home() / "nni-experiments"


def _registry() -> dict:
    try:
        return json.loads((nni_home() / ".experiment").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def find(experiment: str | os.PathLike) -> Path:
    """The experiment folder (the one holding db/nni.sqlite) for an id or a path."""
    text = str(experiment)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "db" / "nni.sqlite").is_file():
            return path
        children = sorted({p.parent.parent.resolve() for p in path.glob("*/db/nni.sqlite")})  # `_latest` is a link
        if len(children) == 1:  # an experimentWorkingDirectory with one experiment
            return children[0]
        raise ExperimentError(f"{path} is not an NNI experiment folder (no db/nni.sqlite)")
    entry = _registry().get(text) or {}
    for root in [entry.get("logDir"), nni_home()]:
        if root and (Path(root) / text / "db" / "nni.sqlite").is_file():
            return Path(root) / text
    raise ExperimentError(f"no NNI experiment {text!r}: not a folder, and not found in {nni_home()} "
                          "or nnictl's experiment list")


def load(experiment: str | os.PathLike) -> Experiment:
    """Read an experiment's config and trials (safe while it runs)."""
    folder = find(experiment)
    table = TrialTable(folder).refresh()
    profile = table.profile()
    config = json.loads(profile[0]) if profile and profile[0] else {}
    exp_id = profile[1] if profile else folder.name
    told = read_told(folder)
    for t in table.trials.values():
        t.told = told.get(t.id)
        t.dir = _trial_dir(folder, t.id, table.log_paths.get(t.id))
    status = (_registry().get(exp_id) or {}).get("status", "")
    return Experiment(exp_id, folder, config, sorted(table.trials.values(), key=lambda t: t.sequence), status,
                      profile[2] if profile else None)


class TrialTable:
    """An experiment's trials as NNI's database and manager log hold them, read incrementally.

    The manager only appends (TrialJobEvent and MetricData rows, nnimanager.log lines), so
    `refresh()` reads what came after the last row and log line it saw: the tuner adapter
    calls it at every trial end, and a full re-read grows with the experiment."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.db = self.folder / "db" / "nni.sqlite"
        self.trials: dict[str, Trial] = {}
        self.log_paths: dict[str, str] = {}   # trial id -> the log path its last event named
        self.killed: set[str] = set()         # trials the assessor stopped (_KILLED)
        self._rowids = (0, 0)                 # last TrialJobEvent, MetricData rowid read
        self._log_offset = 0                  # bytes of nnimanager.log read (whole lines only)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)

    def profile(self) -> tuple | None:
        """(params, id, startTime) of the experiment's latest profile revision."""
        try:
            with contextlib.closing(self._connect()) as conn:
                return conn.execute("SELECT params, id, startTime FROM ExperimentProfile "
                                    "ORDER BY revision DESC LIMIT 1").fetchone()
        except sqlite3.Error as e:
            raise ExperimentError(f"cannot read {self.db}: {e}") from None

    def refresh(self) -> "TrialTable":
        try:
            with contextlib.closing(self._connect()) as conn:
                events = conn.execute("SELECT rowid, timestamp, trialJobId, event, data, logPath, sequenceId, message "
                                      "FROM TrialJobEvent WHERE rowid > ? ORDER BY rowid", self._rowids[:1]).fetchall()
                metrics = conn.execute("SELECT rowid, trialJobId, type, data FROM MetricData "
                                       "WHERE rowid > ? ORDER BY rowid", self._rowids[1:]).fetchall()
        except sqlite3.Error as e:
            raise ExperimentError(f"cannot read {self.db}: {e}") from None
        self._rowids = (events[-1][0] if events else self._rowids[0], metrics[-1][0] if metrics else self._rowids[1])
        for _, ts, tid, event, data, log_path, seq, message in events:
            t = self.trials.setdefault(tid, Trial(tid))
            if seq is not None and seq >= 0:
                t.sequence = seq
            if data and not t.parameters:  # the hyperparameters come with WAITING or RUNNING
                t.parameters, t.parameter_id = _parameters(data)
            if event == "RUNNING":
                t.start_ms = ts
            elif event in ENDED:
                t.end_ms = ts
            if event not in ("ADD_CUSTOMIZED", "ADD_HYPERPARAMETER"):
                t.status = event
            if log_path:
                self.log_paths[tid] = log_path
            if message:
                t.message = message
        for _, tid, kind, data in metrics:
            t = self.trials.setdefault(tid, Trial(tid))
            value = _decode(data)
            if kind == "FINAL":
                t.final = value if isinstance(value, dict) else {"default": value}
            else:
                t.intermediate.append(value if isinstance(value, dict) else {"default": value})
        self._read_kills()
        for tid in self.killed:
            if tid in self.trials and self.trials[tid].status == "USER_CANCELED":
                self.trials[tid].status = "EARLY_STOPPED"
        return self

    def _read_kills(self) -> None:
        """Trials the assessor stopped. NNI 3.0 records them as USER_CANCELED; only the
        manager's log (`received command from dispatcher: KI, "<id>"`) tells them apart."""
        try:
            with open(self.folder / "log" / "nnimanager.log", "rb") as f:
                if os.fstat(f.fileno()).st_size < self._log_offset:
                    self._log_offset = 0  # a new log: read it from the start
                f.seek(self._log_offset)
                new = f.read()
        except OSError:
            return
        whole = new[:new.rfind(b"\n") + 1]  # a line still being written is read next time
        self._log_offset += len(whole)
        self.killed.update(_KILLED.findall(whole.decode(errors="replace")))


_KILLED = re.compile(r'received command from dispatcher: KI, "([^"]+)"')


def read_told(folder: Path) -> dict[str, dict]:
    """Trial id -> the first record segmodel's tuner adapter wrote for it ({} without the adapter).
    A line cut short by a crash is skipped."""
    told: dict[str, dict] = {}
    try:
        lines = (Path(folder) / TOLD_LOG).read_text().splitlines()
    except OSError:
        return told
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("trial"):
            told.setdefault(record["trial"], record)
    return told


def _parameters(data: str) -> tuple[dict, int | None]:
    """(parameters, parameter_id) from a trial event's data."""
    try:
        value = json.loads(data)
        value = json.loads(value) if isinstance(value, str) else value
        params = value.get("parameters", value)
        pid = value.get("parameter_id")
        return (json.loads(params) if isinstance(params, str) else dict(params)), pid if isinstance(pid, int) else None
    except (json.JSONDecodeError, AttributeError, TypeError):
        return {}, None


def _decode(data: str):
    """NNI stores a metric as JSON of a JSON string (sometimes with NaN)."""
    value = json.loads(data)
    while isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            break
    return value


def _trial_dir(folder: Path, trial_id: str, log_path: str | None) -> Path | None:
    if log_path:
        local = log_path.split("://", 1)[-1]
        local = local.split(":", 1)[-1] if local.startswith("localhost:") else local
        if Path(local).is_dir():
            return Path(local)
    for candidate in [folder / "environments" / "local-env" / "trials" / trial_id, *folder.glob(f"environments/*/trials/{trial_id}"),
                      folder / "trials" / trial_id]:
        if candidate.is_dir():
            return candidate
    return None


# ---- one trial, from an experiment or a plain folder -----------------------------

def is_trial_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "params.json").is_file() and (p / "metrics.json").is_file()


def load_trial_folder(path: str | os.PathLike) -> Trial:
    """A trial written by `python -m segmodel train --output_dir DIR` (no NNI)."""
    p = Path(path)
    try:
        metrics = json.loads((p / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ExperimentError(f"cannot read {p / 'metrics.json'}: {e}") from None
    return Trial(id=p.name, status="SUCCEEDED", final=metrics, dir=p)


def select_trial(experiment: str, trial_id: str | None = None, metric: str = "default") -> tuple[Trial, Experiment | None]:
    """The named trial, or the experiment's best (of a confirm experiment: the best seed of the
    candidate with the best mean); a trial folder stands for itself."""
    if is_trial_folder(experiment):
        if trial_id:
            raise ExperimentError(f"{experiment} is a single trial's folder; --trial applies to experiments only")
        return load_trial_folder(experiment), None
    exp = load(experiment)
    if trial_id:
        return exp.trial(trial_id), exp
    if confirmation.is_confirm(exp):  # the winner by mean over seeds, its best seed's trial
        trial = confirmation.winner_trial(exp, metric, exp.optimize_mode != "minimize")
        if trial is None:
            raise ExperimentError(f"confirm experiment {exp.id} has no candidate with a final {metric} yet")
        return trial, exp
    return exp.best(metric), exp
