"""segmodel.experiment.tuner.InformedTuner with NNI's real tuners, called as NNI's dispatcher calls
them (generate -> receive_trial_result / trial_end). In most tests the trial history, which
the adapter reads from NNI's database in an experiment, is given by the test
(`Scripted.trials`); the ordering tests at the end run NNI's own dispatcher over an
experiment folder written as NNI's manager writes it (`ManagerRecord`). The
real-experiment test is tests/test_tuning_experiment.py."""
import dataclasses
import json
import logging
import math

import pytest
from nni.runtime.msg_dispatcher import MsgDispatcher
from nni.runtime.tuner_command_channel import CommandType

from benchmarks.tuner_db import ManagerRecord
from segmodel.experiment import records
from segmodel.experiment.records import Trial
from segmodel.experiment.tuner import InformedTuner, told_value

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
    with caplog.at_level(logging.INFO, logger="segmodel.experiment.tuner"):
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


# ---- through NNI's own dispatcher, over NNI's database ----------------------------------------

class Dispatcher(MsgDispatcher):
    """NNI's dispatcher without its websocket to the manager: what it sends is kept.
    `process_command` is what each of its two worker threads does with a command."""

    def __init__(self, tuner):
        super().__init__("ws://_unittest_segmodel", tuner)
        self.sent = []

    def send(self, command, data):
        self.sent.append((command, data))


@pytest.fixture
def nni_run(tmp_path, monkeypatch):
    """An experiment folder written as the manager writes it, and NNI's dispatcher around an
    InformedTuner that finds it as under `python -m nni` (NNI_CHECKPOINT_DIRECTORY)."""
    record = ManagerRecord(tmp_path / "exp0001")
    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(record.folder / "checkpoint"))
    tuner = InformedTuner(tuner="TPE", optimize_mode="maximize", seed=0)
    dispatcher = Dispatcher(tuner)
    dispatcher.process_command(CommandType.Initialize, SPACE)
    yield record, dispatcher, tuner
    record.close()


def start_trial(record, dispatcher) -> tuple[str, int]:
    """The manager asks for a trial; the dispatcher's NewTrialJob becomes a running trial."""
    dispatcher.process_command(CommandType.RequestTrialJobs, 1)
    command, content = dispatcher.sent[-1]
    assert command is CommandType.NewTrialJob
    trial = record.submit(content)
    record.running(trial)
    for epoch, value in enumerate(STOPPED_AT):
        dispatcher.process_command(*record.metric(trial, "PERIODICAL", value, epoch))
    return trial, json.loads(content)["parameter_id"]


def tpe_results(tuner) -> list[float]:
    """The losses TPE has recorded, one per result it was given (its history per parameter)."""
    return [r.loss for r in next(iter(tuner.base._history.values()), [])]


# The manager stores each message before it sends it; the dispatcher handles final results
# on one queue and TRIAL_END on another. The last order: the status poll stores the end and
# sends TRIAL_END while the final is still being stored.
ORDERS = [("store final", "handle final", "store end", "handle end"),
          ("store final", "store end", "handle end", "handle final"),
          ("store end", "store final", "handle end", "handle final"),
          ("store end", "handle end", "store final", "handle final")]


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: ", ".join(o))
def test_a_succeeded_trial_is_told_its_final_result_whatever_the_order(nni_run, order):
    record, dispatcher, tuner = nni_run
    trial, pid = start_trial(record, dispatcher)
    stored = {}
    for step in order:
        if step == "store final":
            stored["final"] = record.metric(trial, "FINAL", {"default": 0.83, "iou": 0.7})
        elif step == "store end":
            stored["end"] = record.end(trial, "SUCCEEDED")
        else:
            dispatcher.process_command(*stored[step.split()[1]])
    assert (tuner.told[pid]["value"], tuner.told[pid]["source"]) == (0.83, "final")
    assert tpe_results(tuner) == [-0.83]        # told once, its final (TPE minimizes -value)
    assert pid not in tuner.base._running_params      # and its trial_end passed on
    told = records.read_told(record.folder)
    assert told[trial]["source"] == "final"
    assert len((record.folder / records.TOLD_LOG).read_text().splitlines()) == 1
    assert not dispatcher.worker_exceptions


def test_a_succeeded_trial_that_sends_no_final_is_told_nothing(nni_run):
    record, dispatcher, tuner = nni_run
    silent, pid = start_trial(record, dispatcher)
    dispatcher.process_command(*record.end(silent, "SUCCEEDED"))
    assert pid not in tuner.told and pid in tuner.base._running_params   # held for its final
    stopped, stopped_pid = start_trial(record, dispatcher)
    record.killed(stopped)                                                # the assessor's kill
    dispatcher.process_command(*record.end(stopped, "USER_CANCELED"))
    # Another trial ended and the database still has no final: the first is ended untold.
    assert pid not in tuner.told and pid not in tuner.base._running_params
    assert (tuner.told[stopped_pid]["source"], tuner.told[stopped_pid]["status"]) == ("last_intermediate", "EARLY_STOPPED")
    assert tpe_results(tuner) == [-0.41]
    # A final that comes after all (the manager drops them after a trial's end) breaks nothing:
    # plain TPE would raise KeyError here and stop NNI's dispatcher.
    dispatcher.process_command(*record.metric(silent, "FINAL", {"default": 0.9}))
    assert pid not in tuner.told and tpe_results(tuner) == [-0.41]
    assert not dispatcher.worker_exceptions


def test_trial_table_reads_only_what_was_added_and_agrees_with_a_full_read(tmp_path):
    record = ManagerRecord(tmp_path / "exp0002")
    table = records.TrialTable(record.folder)
    for pid in range(12):
        record.trial(pid, stopped=pid % 3 == 1)   # 4 stopped: the assessor's kill, then USER_CANCELED
        if pid % 5 == 0:
            table.refresh()
    last = record.submit(json.dumps({"parameter_id": 12, "parameters": {"learning_rate": 0.001}}))
    record.running(last)
    record.metric(last, "PERIODICAL", {"default": 0.5})
    # The kill's log line, read while the manager is still writing it, counts once it is whole.
    record.log.write('[2026-01-01 00:00:00] INFO (NNIManager) NNIManager received command from dispatcher: KI, "T00')
    record.log.flush()
    table.refresh()
    assert last not in table.killed
    record.log.write('12x"\n')
    record.log.flush()
    record.end(last, "USER_CANCELED")
    assert table.refresh().trials[last].status == "EARLY_STOPPED"
    full = records.load(record.folder).trials
    assert [dataclasses.replace(t, dir=None, told=None) for t in full] == \
        sorted(table.trials.values(), key=lambda t: t.sequence)
    assert [t.status for t in full].count("EARLY_STOPPED") == 5 and full[-1].intermediate == [{"default": 0.5}]
    assert all(t.dir and t.dir.is_dir() for t in full)
    record.close()


def test_bench_tuner_db_times_both_reads():
    """`python -m benchmarks tuner-db` at a tiny size (the figures are in docs/tuning.md)."""
    from benchmarks.tuner_db import measure
    small, row = measure([3, 6], rounds=2)
    assert (small["trials"], row["trials"]) == (3, 6) and row["full_ms"] > 0 and row["incremental_ms"] > 0
    assert row["full_over_incremental"] == pytest.approx(row["full_ms"] / row["incremental_ms"], rel=0.05)
