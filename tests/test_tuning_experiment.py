"""A real NNI experiment with config.yml's tuner (segmodel.experiment.tuner.InformedTuner around TPE):
the trial an assessor stops reaches the tuner with its last intermediate `default`, `report`
shows it, and `nnictl resume` replays it to the new tuner process."""
import csv

import pytest
from nni_helpers import (
    ROOT,
    TINY_DATA,
    base_config,
    final_and_intermediate,
    running_experiment,
    wait_for,
)

# Fifteen tiny epochs: the assessor stops the first trial at its first report, fourteen
# epochs before it could finish, which leaves NNI's kill many times the time it needs.
EPOCHS = 15
TRIAL = f"{TINY_DATA} --batch_size 8 --schedule init --sparsity 0 --epochs {EPOCHS} --finetune_epochs 0 --threads 1"

# the repository root is on sys.path (python -m pytest)
from benchmarks import tuner as tuner_bench
from segmodel.__main__ import main
from segmodel.experiment import records

pytestmark = pytest.mark.slow


def told_records(exp) -> dict:
    return records.read_told(exp.workdir / "nni-experiments" / exp.id)


def test_a_stopped_trial_reaches_the_tuner_and_survives_resume(tmp_path):
    config = base_config(trialCommand=base_config()["trialCommand"].split(" --")[0] + " " + TRIAL,
                         maxTrialNumber=2, trialConcurrency=1, maxExperimentDuration="15m",
                         assessor={"className": "nni_stop_assessor.StopFirstTrial",
                                   "codeDirectory": str(ROOT / "tests")})
    assert config["tuner"]["className"] == "segmodel.experiment.tuner.InformedTuner"  # config.yml's own tuner
    with running_experiment(config, tmp_path) as exp:
        jobs = exp.wait_done(n_trials=2)
        # The dispatcher handles TRIAL_END after NNI records the status: wait for its record.
        told = wait_for(lambda: len(told_records(exp)) == 2 and told_records(exp), "the tuner to be told twice")
        folder = exp.workdir / "nni-experiments" / exp.id
        trials = {t.id: t for t in records.load(folder).trials}
        stopped = next(t for t in trials.values() if t.status == "EARLY_STOPPED")
        finished = next(t for t in trials.values() if t.status == "SUCCEEDED")
        _, intermediate = final_and_intermediate(exp.metrics(stopped.id))
        assert 1 <= len(intermediate) < EPOCHS and not stopped.final, [j["status"] for j in jobs]
        assert told[stopped.id]["source"] == "last_intermediate"
        assert told[stopped.id]["value"] == intermediate[-1]["default"] == stopped.intermediate[-1]["default"]
        assert told[stopped.id]["parameter_id"] == stopped.parameter_id
        assert told[finished.id]["source"] == "final" and told[finished.id]["value"] == finished.final["default"]

        out = tmp_path / "report"
        assert main(["report", exp.id, "--out", str(out)]) == 0
        rows = {r["trial"]: r for r in csv.DictReader((out / "leaderboard.csv").open())}
        assert float(rows[stopped.id]["told"]) == pytest.approx(told[stopped.id]["value"])
        assert float(rows[finished.id]["told"]) == pytest.approx(finished.final["default"])
        assert (out / "best_vs_time.png").read_bytes()[:4] == b"\x89PNG"
        # The measurement's table row for this experiment (benchmarks/tuner.py).
        row = tuner_bench.summarize(records.load(folder))
        assert (row["trials"], row["finished"], row["stopped"], row["near_dup_stopped"]) == (2, 1, 1, 0)
        assert row["best"] == finished.final["default"] and row["best_minute"] > 0

        # Resume: NNI imports only the succeeded trial; the adapter replays the stopped one.
        assert exp.stop().returncode == 0
        exp.resume()
        log = folder / records.TOLD_LOG
        replayed = wait_for(lambda: [ln for ln in log.read_text().splitlines() if '"resume:' in ln],
                            "the resumed tuner to replay the stopped trial")
        assert len(replayed) == 1 and stopped.id in replayed[0] and '"resume:last_intermediate"' in replayed[0]
