"""segmodel.tuning.InformedTuner with NNI's real tuners, called as NNI's dispatcher calls
them (generate -> receive_trial_result / trial_end). Only the trial history, which the
adapter reads from NNI's database in an experiment, is given here by the test
(`Scripted.trials`); the real-experiment test is tests/test_tuning_experiment.py."""
import logging
import math

import pytest

from segmodel.experiments import Trial
from segmodel.tuning import InformedTuner, told_value

SPACE = {"learning_rate": {"_type": "loguniform", "_value": [1e-4, 1e-2]},
         "dropout_rate": {"_type": "uniform", "_value": [0, 0.5]}}
STOPPED_AT = [{"default": 0.52}, {"default": 0.41}]   # a stopped trial's intermediate results


class Scripted(InformedTuner):
    """The adapter, with the trials NNI's database would hold given by the test."""

    def __init__(self, **class_args):
        super().__init__(**class_args)
        self.history: dict[int, Trial] = {}

    def trials(self):
        return list(self.history.values())

    def end(self, pid, params, status, intermediate=(), final=None):
        """A trial ends as the dispatcher reports it: its final result first (if any), then trial_end."""
        self.history[pid] = Trial(f"trial{pid}", pid, status, params, final={"default": final} if final is not None else {},
                                  intermediate=list(intermediate), parameter_id=pid)
        if final is not None:
            self.receive_trial_result(pid, params, {"default": final}, trial_job_id=f"trial{pid}")
        self.trial_end(pid, status == "SUCCEEDED")


def is_stopped_region(params) -> bool:
    return params["learning_rate"] < 1e-3


def drive(tuner, rounds=30, startup=6, first=0):
    """Low learning rates get stopped (last intermediate 0.41), the rest finish near 0.8.
    Returns how many proposals after the startup rounds fall in the stopped region."""
    if first == 0:
        tuner.update_search_space(SPACE)
    informed = isinstance(tuner, Scripted)
    repeats = 0
    for i in range(first, first + rounds):
        params = tuner.generate_parameters(i)
        if is_stopped_region(params):
            repeats += i >= startup
            if informed:
                tuner.end(i, params, "EARLY_STOPPED", STOPPED_AT)
            else:
                tuner.trial_end(i, False)  # what NNI alone tells a tuner about a stopped trial
        else:
            final = 0.8 - 0.1 * params["dropout_rate"]
            (tuner.end(i, params, "SUCCEEDED", final=final) if informed else
             (tuner.receive_trial_result(i, params, {"default": final}), tuner.trial_end(i, True)))
    return repeats


@pytest.fixture(autouse=True)
def quiet():
    logging.getLogger("nni").setLevel(logging.WARNING)


# ---- the value told ---------------------------------------------------------------------

@pytest.mark.parametrize("status, intermediate, final, expected", [
    ("SUCCEEDED", STOPPED_AT, 0.83, (0.83, "final")),
    ("SUCCEEDED", [], 0.0, (0.0, "final")),                                   # diverged: reports 0.0 itself
    ("EARLY_STOPPED", STOPPED_AT, None, (0.41, "last_intermediate")),         # the last, not the best (0.52)
    ("USER_CANCELED", STOPPED_AT, None, (0.41, "last_intermediate")),         # maxTrialDuration, web UI
    ("USER_CANCELED", [], None, (0.0, "no_result")),
    ("FAILED", [], None, (0.0, "failed")),                                    # bad parameter: exit 2, nothing reported
    ("FAILED", STOPPED_AT, None, (0.0, "failed")),                            # crashed later: no model either
    ("EARLY_STOPPED", [*STOPPED_AT, {"default": math.nan}], None, (0.0, "no_result")),
])
def test_told_value_is_never_better_than_the_trial_was(status, intermediate, final, expected):
    trial = Trial("t", 0, status, final={"default": final} if final is not None else {}, intermediate=list(intermediate))
    assert told_value(trial, worst=0.0) == expected


def test_minimizing_needs_an_explicit_worst_value():
    with pytest.raises(ValueError, match="set classArgs.worst"):
        InformedTuner(tuner="TPE", optimize_mode="minimize")
    assert InformedTuner(tuner="TPE", optimize_mode="minimize", worst=1e9).worst == 1e9


# ---- learning from stopped trials -----------------------------------------------------------

def test_tpe_stops_proposing_what_the_assessor_stopped():
    """The issue: plain TPE drops stopped trials and keeps sampling the stopped region."""
    from nni.algorithms.hpo.tpe_tuner import TpeTuner
    args = dict(optimize_mode="maximize", tpe_args={"n_startup_jobs": 6})
    informed = sum(drive(Scripted(tuner="TPE", seed=s, **args)) for s in range(3))
    plain = sum(drive(TpeTuner(seed=s, **args)) for s in range(3))
    assert informed * 2 < plain, (informed, plain)   # measured: 18 vs 66 of 72 proposals


@pytest.mark.parametrize("name, args", [
    ("TPE", dict(optimize_mode="maximize", tpe_args={"n_startup_jobs": 6})),
    ("Anneal", dict(optimize_mode="maximize")),
    ("Evolution", dict(optimize_mode="maximize", population_size=6)),
    ("Random", dict(seed=0)),
])
def test_every_supported_tuner_is_told_every_ending(name, args, monkeypatch, caplog):
    if name == "Anneal":
        pytest.importorskip("hyperopt")
    tuner = Scripted(tuner=name, **args)
    tuner.update_search_space(SPACE)
    outcomes = [("SUCCEEDED", [], 0.8), ("EARLY_STOPPED", STOPPED_AT, None), ("FAILED", [], None),
                ("USER_CANCELED", [], None)] * 3
    for pid, (status, intermediate, final) in enumerate(outcomes):
        tuner.end(pid, tuner.generate_parameters(pid), status, intermediate, final)
    told = [tuner.told[pid] for pid in range(len(outcomes))]
    assert [(r["value"], r["source"]) for r in told[:4]] == [
        (0.8, "final"), (0.41, "last_intermediate"), (0.0, "failed"), (0.0, "no_result")]
    assert all(r["trial"] == f"trial{pid}" for pid, r in enumerate(told))
    tuner.generate_parameters(len(outcomes))  # still proposing
    # nnictl resume: a fresh tuner process gets the 9 trials without a final replayed.
    monkeypatch.setenv("NNI_MODE", "resume")
    resumed = Scripted(tuner=name, **args)
    resumed.history = tuner.history
    with caplog.at_level(logging.INFO, logger="segmodel.tuning"):
        resumed.update_search_space(SPACE)
    assert sum("(resume:" in r.getMessage() for r in caplog.records) == 9
    resumed.import_data([{"parameter": t.parameters, "value": t.final} for t in tuner.trials() if t.final])
    assert resumed.generate_parameters(100) is not None


def test_evolution_survives_what_nni_own_early_stop_path_breaks():
    """NNI's _earlystop_notify_tuner gives the tuner a result, then trial_end(success=False):
    Evolution pops the trial a second time. The adapter ends it as a trial with a result."""
    from nni.algorithms.hpo.evolution_tuner import EvolutionTuner
    plain = EvolutionTuner("maximize", population_size=4)
    plain.update_search_space(SPACE)
    params = plain.generate_parameters(0)
    plain.receive_trial_result(0, params, {"default": 0.41})
    with pytest.raises(KeyError):
        plain.trial_end(0, False)
    tuner = Scripted(tuner="Evolution", optimize_mode="maximize", population_size=4)
    tuner.update_search_space(SPACE)
    tuner.end(0, tuner.generate_parameters(0), "EARLY_STOPPED", STOPPED_AT)
    assert tuner.told[0]["value"] == 0.41


def test_trial_end_before_its_final_result_is_told_once():
    """The dispatcher handles TRIAL_END and FINAL results on two threads, in either order;
    plain TPE then raises KeyError (its _running_params entry is gone)."""
    from nni.algorithms.hpo.tpe_tuner import TpeTuner
    plain = TpeTuner("maximize")
    plain.update_search_space(SPACE)
    params = plain.generate_parameters(0)
    plain.trial_end(0, True)
    with pytest.raises(KeyError):
        plain.receive_trial_result(0, params, {"default": 0.8})
    tuner = Scripted(tuner="TPE", optimize_mode="maximize")
    tuner.update_search_space(SPACE)
    params = tuner.generate_parameters(0)
    tuner.history[0] = Trial("trial0", 0, "SUCCEEDED", params, final={"default": 0.8}, parameter_id=0)
    tuner.trial_end(0, True)                                   # the final is in NNI's database already
    tuner.receive_trial_result(0, params, {"default": 0.8})    # arrives second: not told twice
    assert tuner.told[0]["source"] == "final" and tuner.told[0]["value"] == 0.8


def test_resume_replays_stopped_and_failed_trials(monkeypatch):
    """On `nnictl resume` NNI imports succeeded trials only; the adapter adds the rest,
    so the resumed TPE avoids the stopped region as the live one did."""
    monkeypatch.setenv("NNI_MODE", "resume")
    before = Scripted(tuner="TPE", optimize_mode="maximize", seed=0, tpe_args={"n_startup_jobs": 6})
    drive(before, rounds=20)
    nni_import = [{"parameter": t.parameters, "value": t.final} for t in before.trials() if t.status == "SUCCEEDED"]

    def resumed_proposals(tuner, with_history):
        if with_history:
            tuner.history = dict(before.history)
        tuner.update_search_space(SPACE)   # what the dispatcher does first on resume
        tuner.import_data(nni_import)      # then NNI's own import
        return drive(tuner, rounds=20, startup=0, first=100)

    informed = resumed_proposals(Scripted(tuner="TPE", optimize_mode="maximize", seed=1,
                                          tpe_args={"n_startup_jobs": 6}), True)
    blind = resumed_proposals(Scripted(tuner="TPE", optimize_mode="maximize", seed=1,
                                       tpe_args={"n_startup_jobs": 6}), False)
    assert informed * 2 < blind, (informed, blind)   # measured: 3 vs 12 of 20 proposals
