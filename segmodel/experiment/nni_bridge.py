"""The trial's only `nni` import (the tuner runs in NNI's dispatcher). Everything else talks to a `Reporter`.

Outside an NNI trial (plain `python trial.py`) nni is never imported: reports are
printed and the output folder comes from --output-dir.
"""
from __future__ import annotations

import json
import os
import sys

from ..errors import ParamError
from .confirmation import LABEL


def in_nni() -> bool:
    """True when NNI's trial runner launched this process."""
    return bool(os.environ.get("NNI_PLATFORM")) and os.environ.get("NNI_PLATFORM") != "unittest"


def tuned_parameters() -> dict:
    """The tuner's parameters for this trial ({} outside NNI)."""
    if not in_nni():
        return {}
    import nni
    return from_tuner(nni.get_next_parameter() or {})


def from_tuner(values: dict) -> dict:
    """Translate the keys some NNI tuners add to the search space's own.

    A confirm experiment adds `candidate` (which top trial a cell re-runs; its parameters come
    with it). Hyperband and BOHB add `TRIAL_BUDGET`, the resource of this round: segmodel spends
    it as dense training epochs (set the advisor's R / max_budget in epochs). PBT adds
    checkpoint folders to resume from, which segmodel trials do not do: say so."""
    values = dict(values)
    values.pop(LABEL, None)  # a confirm experiment's name for the cell's candidate: a label, not a parameter
    if "TRIAL_BUDGET" in values:
        values["epochs"] = max(1, round(float(values.pop("TRIAL_BUDGET"))))
    if "load_checkpoint_dir" in values or "save_checkpoint_dir" in values:
        raise ParamError("the PBT tuner is not supported: segmodel trials do not resume from "
                         "load_checkpoint_dir; use TPE, Anneal, Evolution or Hyperband")
    return values


def output_dir() -> str | None:
    """NNI's per-trial output folder (shown in the web UI), if any."""
    return os.environ.get("NNI_OUTPUT_DIR") if in_nni() else None


def trial_id() -> str | None:
    return os.environ.get("NNI_TRIAL_JOB_ID") if in_nni() else None


class Reporter:
    """Sends per-epoch and final results to NNI, or prints them when standalone."""

    def __init__(self):
        self._nni = None
        if in_nni():
            import nni
            self._nni = nni

    def intermediate(self, value: dict) -> None:
        if self._nni:
            self._nni.report_intermediate_result(value)
        else:
            print("intermediate:", json.dumps(value), file=sys.stderr, flush=True)

    def final(self, value: dict) -> None:
        if self._nni:
            self._nni.report_final_result(value)
        else:  # the moment the result is safe (artifacts come after it)
            print("final:", json.dumps(value), file=sys.stderr, flush=True)


def tensorboard_dir(out_dir) -> str:
    """Where this trial writes TensorBoard logs: `<out_dir>/tensorboard`.

    NNI 3.0's TensorBoard button (local platform) reads
    `<experiment>/trials/<id>/output/tensorboard`, not the trial's NNI_OUTPUT_DIR
    (`<experiment>/environments/local-env/trials/<id>`). Inside NNI we link the
    former to the latter, so the button shows our logs."""
    from pathlib import Path

    logs = Path(out_dir).resolve() / "tensorboard"
    logs.mkdir(parents=True, exist_ok=True)
    nni_out, trial = os.environ.get("NNI_OUTPUT_DIR"), trial_id()
    if in_nni() and nni_out and trial:
        nni_out = Path(nni_out).resolve()
        exp_root = nni_out.parents[3] if len(nni_out.parents) > 3 else None
        if exp_root and nni_out.parents[2].name == "environments" and exp_root.name == os.environ.get("NNI_EXP_ID"):
            button = exp_root / "trials" / trial / "output" / "tensorboard"
            try:
                button.parent.mkdir(parents=True, exist_ok=True)
                if not button.exists() and not button.is_symlink():
                    button.symlink_to(logs, target_is_directory=True)
            except OSError as e:  # a convenience: never fail the trial over it
                print(f"warning: cannot link {button} to {logs}: {e}", file=sys.stderr, flush=True)
    return str(logs)
