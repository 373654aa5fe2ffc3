"""`nnictl stop` while a trial is mid-epoch, then `nnictl resume`: the experiment goes
on and finishes more trials, and the killed trial's artifacts are complete or absent.

What NNI 3.0 does (measured): stop kills the trial process; resume re-runs the killed
trial from scratch under the same trial id and output folder, with the same parameters
(`parameter_source: resumed`), then carries on with new trials.

train.py writes metrics.json, history.csv and params.json via temp file + rename, and
the model as `.model.<pid>.tmp.keras` renamed to model.keras, so a kill leaves at most
dot-prefixed temp files that nothing reads.
"""
import json
import time
import zipfile

import pytest
from nni_helpers import (
    TINY_DATA,
    base_config,
    final_and_intermediate,
    running_experiment,
    wait_for,
)

pytestmark = pytest.mark.slow

# Three tiny epochs (about a second each). The stop lands mid-trial on any machine because
# the test pauses the trial (SIGSTOP) as soon as its first epoch has reported and only then
# stops the experiment: NNI's SIGINT stays pending and its SIGKILL 5 s later ends the trial,
# however fast the CPU. No pruning: this is about processes and files, not the model.
TRIAL = f"{TINY_DATA} --batch_size 8 --schedule init --sparsity 0 --epochs 3 --finetune_epochs 0 --threads 1"


def check_artifacts_complete_or_absent(folder):
    """What a reader trusts (metrics.json, model.keras) is whole, or not there at all."""
    metrics, model = folder / "metrics.json", folder / "model.keras"
    if model.exists():
        assert zipfile.is_zipfile(model) and metrics.exists()
    if metrics.exists():
        json.loads(metrics.read_text())
    leftovers = [p.name for p in folder.iterdir() if ".tmp" in p.name]
    assert all(name.startswith(".") for name in leftovers), leftovers  # hidden temp files only
    return metrics.exists(), model.exists(), leftovers


def test_stop_mid_epoch_then_resume(tmp_path):
    """Created with the tuner's old class path, as every experiment made before the layout of
    issue 36 stored it: `nnictl resume` must still import it (segmodel/tuning.py)."""
    config = base_config(trialCommand=base_config()["trialCommand"].split(" --")[0] + " " + TRIAL,
                         maxTrialNumber=2, trialConcurrency=1, maxExperimentDuration="15m")
    config["tuner"]["className"] = "segmodel.tuning.InformedTuner"
    with running_experiment(config, tmp_path) as exp:
        first = wait_for(lambda: next((t for t in exp.trials() if t["status"] == "RUNNING"), None),
                         "the first trial to start")["trialJobId"]
        wait_for(lambda: trial_processes(exp.id), "the trial process")  # the check below can see one
        # One epoch reported => the trial is in its second epoch: freeze it there, then stop.
        wait_for(lambda: final_and_intermediate(exp.metrics(first))[1], "the first epoch to end")
        paused = signal_trials(exp.id, "suspend")
        assert paused, "the trial ended before it could be paused"
        try:
            stopped = exp.stop()
        finally:
            signal_trials(exp.id, "resume")  # a survivor would run on only to take its pending SIGINT
        assert stopped.returncode == 0, stopped.stderr
        stopped_at_ms = time.time() * 1000
        wait_for(lambda: not trial_processes(exp.id), "the trial processes to end")
        killed = exp.trial_dir(first)
        has_metrics, has_model, _ = check_artifacts_complete_or_absent(killed)
        assert (has_metrics, has_model) == (False, False)

        exp.resume()  # the tuner's class is imported again, by the name the experiment stored
        trials = exp.wait_done(n_trials=2)

        assert exp.status() != "ERROR"
        assert len(trials) == 2 and all(t["status"] == "SUCCEEDED" for t in trials), \
            [(t["status"], exp.trial_log(t["trialJobId"])) for t in trials]
        rerun = next(t for t in trials if t["trialJobId"] == first)
        assert rerun["startTime"] > stopped_at_ms  # it ran again, after the resume
        # The killed trial, re-run, now has complete artifacts; so does the new trial.
        for t in trials:
            assert check_artifacts_complete_or_absent(exp.trial_dir(t["trialJobId"]))[:2] == (True, True)


def signal_trials(experiment_id, action):
    """psutil's suspend() (SIGSTOP) or resume() (SIGCONT) on the experiment's live trial processes."""
    import psutil
    done = []
    for pid in trial_processes(experiment_id):
        try:
            getattr(psutil.Process(pid), action)()
            done.append(pid)
        except psutil.NoSuchProcess:
            pass
    return done


def trial_processes(experiment_id):
    """Live processes started for this experiment's trials (NNI sets NNI_EXP_ID in their environment)."""
    import psutil
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "trial.py" in " ".join(proc.info["cmdline"] or []) and \
                    proc.environ().get("NNI_EXP_ID") == experiment_id and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found
