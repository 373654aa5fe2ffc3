"""`ConfirmTuner`: a confirm experiment's tuner, a fixed list of cells (candidate x seed),
each handed out once.

Runs in NNI's dispatcher (`python -m nni`), as InformedTuner does. Which cells are taken is
read from the experiment's own database, not remembered: after `nnictl resume`, NNI re-runs
the trials the stop killed itself (same trial id, same parameters), so a cell any trial of
this experiment already holds is never handed out again, and only the missing ones run.
NNI stores this class path in the experiment's profile: keep it importable.
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from nni import NoMoreTrialError
from nni.tuner import Tuner

from . import records
from .confirmation import LABEL

_logger = logging.getLogger("segmodel.experiment.confirm_tuner")


def cell_key(parameters: dict) -> str:
    """A cell's identity: its candidate and seed."""
    return json.dumps([str(parameters.get(LABEL)), int(parameters.get("seed", 0))])


class ConfirmTuner(Tuner):
    """`cells`: the parameter sets to run, each once (its `candidate` and `seed` among them).
    `optimize_mode`: the source experiment's, so that `report` ranks the same way."""

    def __init__(self, cells: list[dict], optimize_mode: str = "maximize"):
        self.cells = list(cells)
        self.optimize_mode = optimize_mode
        checkpoint = self.get_checkpoint_path()  # <experiment>/checkpoint, set by the NNI manager
        self.folder = Path(checkpoint).parent if checkpoint else None
        self._given: set[str] = set()
        self._read_db = False
        self._lock = threading.Lock()

    def update_search_space(self, search_space):
        pass  # the cells are the space

    def generate_parameters(self, parameter_id, **kwargs):
        with self._lock:
            if not self._read_db:  # once: the cells this experiment's trials hold already (a resume)
                self._read_db = True
                self._given |= self._held()
            for cell in self.cells:
                key = cell_key(cell)
                if key not in self._given:
                    self._given.add(key)
                    return dict(cell)
        raise NoMoreTrialError("every cell of the confirm experiment has its trial")

    def _held(self) -> set[str]:
        if self.folder is None or not (self.folder / "db" / "nni.sqlite").is_file():
            return set()
        held = {cell_key(t.parameters) for t in records.TrialTable(self.folder).refresh().trials.values()
                if t.parameters}
        if held:
            _logger.info("resumed: %d of %d cells already have a trial", len(held), len(self.cells))
        return held

    def receive_trial_result(self, parameter_id, parameters, value, **kwargs):
        pass  # nothing to learn: the list is fixed

    def import_data(self, data):
        pass  # the database says which cells ran (_held)
