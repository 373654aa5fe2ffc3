"""`InformedTuner`: any built-in NNI tuner, told about every trial that ends.

NNI 3.0's dispatcher gives a tuner only the final results trials report. A trial the
assessor stopped, or one that failed, reaches the tuner's `trial_end()` alone, which TPE
and Anneal ignore: TPE never learns that a region gets stopped and keeps proposing
near-copies of stopped trials. NNI's own remedy (`_earlystop_notify_tuner`, gated by
NNI_INCLUDE_INTERMEDIATE_RESULTS) is set by the manager only from a deprecated v1 field
that a v2 config rejects; it also makes Evolution's `trial_end` raise KeyError, skips
failed trials and is forgotten on `nnictl resume`. So segmodel wraps the tuner:

    tuner:
      className: segmodel.experiment.tuner.InformedTuner
      codeDirectory: .
      classArgs: {tuner: TPE, optimize_mode: maximize, tpe_args: {n_startup_jobs: 6}}

Everything but `tuner` and `worst` goes to the built-in tuner, validated by NNI's own
validator. When a trial ends without a final result the wrapped tuner receives it as a
result, `told_value()`: a stopped or canceled trial its last intermediate `default`
(what it was worth when stopped; Optuna feeds pruned trials to its TPE the same way);
a failed one `worst` (default 0.0 = the lowest accuracy or IoU, below any real result).
The trial's history is read from NNI's own database (incrementally: records.TrialTable),
where the manager stores each metric before passing it on and a trial's end before sending
TRIAL_END. A SUCCEEDED trial is told only its final result: NNI may hand over its TRIAL_END
first (the dispatcher handles it on another thread), so its trial_end is held until the
final arrives. On `nnictl resume` these
trials are replayed to the tuner too (NNI's resume imports only succeeded ones). Every
value told is appended to `<experiment>/checkpoint/tuner_told.jsonl`, which
`python -m segmodel report` shows.

This module runs in NNI's dispatcher process (`python -m nni`), never in a trial, so it
imports nni directly; the trial path keeps nni in nni_bridge.py.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from pathlib import Path

from nni.tools.package_utils.tuner_factory import (
    create_builtin_class_instance,
    create_validator_instance,
)
from nni.tuner import Tuner
from nni.utils import extract_scalar_reward

from . import records
from .records import ENDED, TOLD_LOG, Trial

_logger = logging.getLogger("segmodel.experiment.tuner")


def told_value(trial: Trial, worst: float, metric: str = "default") -> tuple[float, str]:
    """(value, source) the tuner is told about an ended trial. Never better than the
    trial really was: its final result; else, if it failed, `worst`; else (stopped,
    canceled) its last intermediate result, or `worst` when it reported none."""
    final = trial.final.get(metric)
    if _finite(final):
        return float(final), "final"
    if trial.status == "FAILED":
        return worst, "failed"
    last = trial.intermediate[-1].get(metric) if trial.intermediate else None
    if _finite(last):
        return float(last), "last_intermediate"
    return worst, "no_result"


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class InformedTuner(Tuner):
    """A built-in tuner (`tuner`: TPE, Anneal, Evolution, Random, ...) that also learns
    from stopped and failed trials. `worst`: the value told for a failed trial (default
    0.0 when maximizing; required when minimizing)."""

    def __init__(self, tuner: str = "TPE", worst: float | None = None, **class_args):
        validator = create_validator_instance("tuners", tuner)
        if validator is not None:
            validator.validate_class_args(**class_args)
        self.base = create_builtin_class_instance(tuner, class_args, "tuners")
        mode = getattr(getattr(self.base, "optimize_mode", None), "value", "maximize")
        if worst is None and mode == "minimize":
            raise ValueError("segmodel.experiment.tuner.InformedTuner: set classArgs.worst (the value told for a failed "
                             "trial, worse than any real result) when optimize_mode is minimize")
        self.worst = 0.0 if worst is None else float(worst)
        checkpoint = self.get_checkpoint_path()  # <experiment>/checkpoint, set by the NNI manager
        self.folder = Path(checkpoint).parent if checkpoint else None
        self.told: dict[int, dict] = {}  # parameter id -> what the tuner was told, this run
        self._lock = threading.Lock()    # the dispatcher calls trial_end and the rest from two threads
        self._table = records.TrialTable(self.folder) if self.folder else None
        self._held: dict[int, dict] = {}  # SUCCEEDED trials whose final result is not in yet -> trial_end kwargs
        self._released: set[int] = set()  # held trials given up on (no final came)
        self._replayed = False

    # ---- what NNI's dispatcher calls ----------------------------------------------------

    def update_search_space(self, search_space):
        with self._lock:
            self.base.update_search_space(search_space)
            if os.environ.get("NNI_MODE") == "resume" and not self._replayed:
                self._replayed = True
                self._replay()

    def generate_parameters(self, parameter_id, **kwargs):
        with self._lock:
            return self.base.generate_parameters(parameter_id, **kwargs)

    def generate_multiple_parameters(self, parameter_id_list, **kwargs):
        with self._lock:
            return self.base.generate_multiple_parameters(parameter_id_list, **kwargs)

    def receive_trial_result(self, parameter_id, parameters, value, **kwargs):
        with self._lock:
            if parameter_id is not None and parameter_id in self.told:
                return  # trial_end came first and already told the tuner this result
            if parameter_id in self._released:
                _logger.warning("final result of parameter id %s came after its trial was given up; not told",
                                parameter_id)
                return
            self.base.receive_trial_result(parameter_id, parameters, value, **kwargs)
            self._record(parameter_id, kwargs.get("trial_job_id"), extract_scalar_reward(value), "final")
            if parameter_id in self._held:  # its trial_end came first: pass it on now
                self.base.trial_end(parameter_id, True, **self._held.pop(parameter_id))

    def trial_end(self, parameter_id, success, **kwargs):
        with self._lock:
            if parameter_id is not None and parameter_id not in self.told:
                if self._tell_ended(parameter_id, success, kwargs):
                    return  # held until its final result arrives
            # A tuner that got a result must not treat the trial as lost (Evolution would
            # pop it a second time and raise KeyError).
            self.base.trial_end(parameter_id, success or parameter_id in self.told, **kwargs)

    def import_data(self, data):
        with self._lock:
            self.base.import_data(data)

    # ---- stopped and failed trials ------------------------------------------------------

    def trials(self) -> list[Trial]:
        """The experiment's trials as NNI's database holds them now (read incrementally)."""
        return list(self._table.refresh().trials.values()) if self._table else []

    def _tell_ended(self, parameter_id: int, success: bool, kwargs: dict) -> bool:
        """Tell the tuner about an ended trial that sent no final result yet; True if it is
        held instead: a SUCCEEDED trial is told only its final result, which NNI may
        deliver after TRIAL_END (two dispatcher threads; and the manager may send
        TRIAL_END while it is still storing the final)."""
        try:
            trials = self.trials()
            self._release_held(trials)
            found = [t for t in trials if t.parameter_id == parameter_id]
            trial = max(found, key=lambda t: t.sequence, default=None)  # ids repeat after some resumes
            if trial is None:
                raise LookupError("no trial with this parameter id in NNI's database")
            if success and not trial.final:
                self._held[parameter_id] = kwargs
                _logger.info("trial %s succeeded; its final result is not in yet: held", trial.id)
                return True
            value, source = told_value(trial, self.worst)
            self.base.receive_trial_result(parameter_id, trial.parameters, {"default": value}, trial_job_id=trial.id)
        except Exception as e:  # never worse than NNI alone: the experiment goes on, the trial is untold
            _logger.warning("trial with parameter id %s ended; could not tell the tuner: %r", parameter_id, e)
            return False
        self._record(parameter_id, trial.id, value, source, trial.status)
        return False

    def _release_held(self, trials: list[Trial]) -> None:
        """A held trial still without a final in NNI's database when another trial ends
        will get none (the manager drops metrics after a trial's end): end it untold, as
        NNI alone would."""
        with_final = {t.parameter_id for t in trials if t.final}
        for pid in [p for p in self._held if p not in with_final]:
            _logger.warning("trial with parameter id %s succeeded without a final result; the tuner is told "
                            "nothing about it", pid)
            self._released.add(pid)
            self.base.trial_end(pid, True, **self._held.pop(pid))

    def _replay(self) -> None:
        """On resume: the ended trials NNI's own import leaves out (it imports SUCCEEDED ones with a final)."""
        entries = []
        for t in self.trials():
            if t.status not in ENDED or t.status == "SUCCEEDED":  # NNI imports those with a final itself
                continue
            value, source = told_value(t, self.worst)
            entries.append({"parameter": t.parameters, "value": {"default": value}})
            self._record(None, t.id, value, f"resume:{source}", t.status)
        if entries:
            self.base.import_data(entries)

    def _record(self, parameter_id, trial_id, value, source, status=None) -> None:
        record = {"time_ms": int(time.time() * 1000), "trial": trial_id, "parameter_id": parameter_id,
                  "value": value, "source": source, "status": status}
        if parameter_id is not None:
            self.told[parameter_id] = record
        _logger.info("told the tuner %s for trial %s (%s)", value, trial_id, source)
        if self.folder is not None:
            line = (json.dumps(record) + "\n").encode()
            fd = os.open(self.folder / TOLD_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)  # one append of one whole line: a reader never sees half a record
            finally:
                os.close(fd)
