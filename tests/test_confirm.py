"""`confirm`: the search's top trials re-run on seeds as a new NNI experiment, and `report`'s
verdict on it. The statistics are checked against numpy/scipy on the same numbers; the
experiment itself is real (a tiny search, then its confirmation, stopped and resumed)."""
import csv
import json
import math
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml
from nni_helpers import ROOT, TINY_DATA, NNIExperiment, base_config, free_port, running_experiment, wait_for
from scipy import stats

from segmodel.__main__ import main
from segmodel.errors import ParamError
from segmodel.experiment import confirmation, nni_bridge, records
from segmodel.experiment.confirm import DENSE, check_reachable, experiment_config, plan, start, trial_overrides
from segmodel.experiment.confirmation import LABEL, REFERENCE, TUNER
from segmodel.experiment.records import Experiment, Trial

SOURCE_CONFIG = yaml.safe_load((ROOT / "config.yml").read_text())


def fake_source(finals: list[float], config=None) -> Experiment:
    """A finished search: trial i tried learning rate 10^-(i+2) and scored finals[i]."""
    trials = [Trial(id=f"t{i}", sequence=i, status="SUCCEEDED", final={"default": v},
                    parameters={"learning_rate": 10 ** -(i + 2), "dropout_rate": 0.1})
              for i, v in enumerate(finals)]
    return Experiment("src", ROOT, config or SOURCE_CONFIG, trials)


def fake_confirm(values: dict[str, list[float]]) -> Experiment:
    """A confirm experiment's trials: values[label][seed]."""
    trials = [Trial(id=f"{label}-{seed}", status="SUCCEEDED", final={"default": v},
                    parameters={LABEL: label, "seed": seed, "learning_rate": 1e-3})
              for label, vs in values.items() for seed, v in enumerate(vs)]
    return Experiment("conf", ROOT, {"tuner": {"className": TUNER}}, trials)


# ---- the statistics, against numpy and scipy -------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_paired_difference_and_p_match_scipy(n):
    rng = np.random.default_rng(n)
    a = rng.normal(0.70, 0.05, n)
    b = a - rng.normal(0.01, 0.02, n)  # paired: b shares a's seed effect
    ca = confirmation.Candidate("a", dict(enumerate(a)))
    cb = confirmation.Candidate("b", dict(enumerate(b)))
    assert ca.mean == pytest.approx(np.mean(a)) and ca.sd == pytest.approx(np.std(a, ddof=1))
    d = confirmation.paired(ca, cb)
    ref = stats.ttest_rel(a, b)
    assert d.mean == pytest.approx(np.mean(a - b)) and d.sd == pytest.approx(np.std(a - b, ddof=1))
    assert d.t == pytest.approx(ref.statistic) and d.p == pytest.approx(ref.pvalue, rel=1e-9)


@pytest.mark.parametrize("df", [1, 2, 3, 7, 30])
def test_t_distribution_tail_matches_scipy(df):
    for t in (0.0, 0.3, 1.0, 2.2, 4.0, 12.0, 80.0):
        assert confirmation.t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9, abs=1e-300)


def test_candidates_ranked_by_mean_and_the_winner_is_its_best_seed():
    exp = fake_confirm({"x": [0.60, 0.70, 0.65], "y": [0.62, 0.72, 0.68], REFERENCE: [0.70, 0.80, 0.75]})
    ranked = confirmation.candidates(exp)
    assert [c.label for c in ranked] == [REFERENCE, "y", "x"]  # the reference is ranked, never the winner
    assert confirmation.winner_trial(exp).id == "y-1"
    line = confirmation.verdict(ranked, "default")
    d = stats.ttest_rel([0.62, 0.72, 0.68], [0.60, 0.70, 0.65])
    assert line.startswith("winner y: default 0.6733") and f"p {d.pvalue:.3f}" in line
    assert ("NOT distinguishable" in line) == (d.pvalue >= 0.05)
    rows = {r["candidate"]: r for r in confirmation.table(ranked, "default")}
    assert rows["x"]["vs_winner"] == pytest.approx(-0.0233, abs=1e-4)
    assert rows["y"]["vs_reference"] == pytest.approx(np.mean([-0.08, -0.08, -0.07]))
    assert "vs_winner" not in rows["y"] and rows["y"]["rank"] == 2


def test_a_tie_on_every_seed_is_not_distinguishable():
    ranked = confirmation.candidates(fake_confirm({"x": [0.6, 0.7], "y": [0.6, 0.7]}))
    assert "NOT distinguishable" in confirmation.verdict(ranked, "default")


# ---- what confirm starts -------------------------------------------------------------------

def test_cells_are_the_top_trials_times_seeds_with_the_flags_and_a_dense_reference():
    source = fake_source([0.5, 0.9, 0.7, 0.9])  # t3 repeats t1's score, not its parameters
    overrides = trial_overrides(["--epochs", "12", "--finetune-epochs", "8"])
    assert overrides == {"epochs": 12, "finetune_epochs": 8}
    cells = plan(source, 2, 3, "default", overrides, REFERENCE)
    assert len(cells) == 9 and [c["seed"] for c in cells] == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # seed by seed
    assert [c[LABEL] for c in cells[:3]] == ["t1", "t3", REFERENCE]
    t1 = cells[0]
    assert t1["learning_rate"] == 1e-3 and t1["epochs"] == 12 and t1["finetune_epochs"] == 8
    dense = cells[2]
    assert {k: dense[k] for k in DENSE} == DENSE and dense["learning_rate"] == t1["learning_rate"]
    assert nni_bridge.from_tuner(t1) == {k: v for k, v in t1.items() if k != LABEL}  # a label, not a parameter

    config = experiment_config(source, cells, 2, 3, budget_changed=True, reference=REFERENCE)
    assert config["tuner"]["className"] == TUNER and config["tuner"]["classArgs"]["cells"] == cells
    assert config["maxTrialNumber"] == 9 and "assessor" not in config and "maxExperimentDuration" not in config
    assert "maxTrialDuration" not in config  # a longer budget would hit the search's limit
    assert config["searchSpace"][LABEL]["_value"] == ["t1", "t3", REFERENCE]
    assert config["trialCommand"] == SOURCE_CONFIG["trialCommand"]
    assert config["trainingService"] == SOURCE_CONFIG["trainingService"]
    assert config["experimentName"] == "confirm src: top 2 x 3 seeds + dense"


def test_the_dense_reference_of_a_channel_search_is_a_valid_trial():
    """configs/compress.yml's trial command prunes channels (--channel-round 8, a latency target):
    its dense cells switch all of that off, and each is checked as its trial would check it."""
    compress = yaml.safe_load((ROOT / "configs" / "compress.yml").read_text())
    cells = plan(fake_source([0.5, 0.9], compress), 1, 2, "default", {}, REFERENCE)
    dense = [c for c in cells if c[LABEL] == REFERENCE]
    assert len(dense) == 2 and all(c["channel_round"] == 1 and c["prune_mode"] == "weight" for c in dense)


@pytest.mark.parametrize("argv, message", [
    (["confirm", "no-such-experiment"], "no NNI experiment 'no-such-experiment'"),
    (["confirm", "x", "--seeds", "1"], "needs at least 2 seeds"),
    (["confirm", "x", "--top", "0"], "need at least 1 candidate"),
])
def test_bad_requests_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:")
    assert message in err


def test_bad_plans_are_refused_before_anything_starts():
    with pytest.raises(ParamError, match="has 2 finished trial"):
        plan(fake_source([0.5, 0.9]), 3, 2, "default", {}, None)
    with pytest.raises(ParamError, match="confirm sets each cell's seed"):
        trial_overrides(["--seed", "4"])
    with pytest.raises(ParamError, match="learning_rate"):  # every cell is checked as its trial would check it
        plan(fake_source([0.5, 0.9]), 1, 2, "default", {"learning_rate": -1.0}, None)
    closed = free_port()  # nothing listens there
    remote = {**SOURCE_CONFIG, "trainingService": {"platform": "remote", "machineList": [
        {"host": "127.0.0.1", "port": closed, "user": "u"}]}}
    with pytest.raises(ParamError, match=f"not reachable: remote machine 127.0.0.1:{closed}"):
        check_reachable(remote)
    with socket.socket() as busy:  # the search's web UI, say: nothing is started on its port
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ParamError, match=f"port {busy.getsockname()[1]} is in use"):
            start(ROOT / "config.yml", busy.getsockname()[1])


# ---- a real confirmation: search, confirm, stop, resume, report ---------------------------

@pytest.mark.slow
def test_a_confirm_experiment_runs_every_cell_once_across_a_resume(tmp_path):
    search = base_config(trialCommand=base_config()["trialCommand"].split(" --")[0] + " " + TINY_DATA
                         + " --batch_size 8 --epochs 1 --finetune_epochs 1 --threads 1",
                         maxTrialNumber=2, trialConcurrency=2)  # 1 thread each: two at a time on 2 cores
    with running_experiment(search, tmp_path) as source:
        source.wait_done()
        source_folder = source.workdir / "nni-experiments" / source.id
        wait_for(lambda: all(t.status == "SUCCEEDED" for t in records.load(source_folder).trials), "both trials to end")
        port, out = free_port(), tmp_path / "confirm"
        run = subprocess.run([sys.executable, "-m", "segmodel", "confirm", str(source_folder), "--top", "2",
                              "--seeds", "2", "--port", str(port), "--out", str(out)],
                             env=source.env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        conf_id = run.stdout.split("started experiment ")[1].split(":")[0]
        conf = NNIExperiment.attach(conf_id, port, source.workdir / "nni-experiments", source.env)
        try:
            # Stop once the first cell has finished (the second may be running), then resume.
            wait_for(lambda: any(t["status"] == "SUCCEEDED" for t in conf.trials()), "the first cell to finish")
            before = {t["trialJobId"]: t for t in conf.trials()}
            assert conf.stop().returncode == 0
            conf.resume()
            trials = conf.wait_done(n_trials=4)  # NO_MORE_TRIAL comes while the last cell runs
        finally:
            conf.stop()
    assert len(trials) == 4 and all(t["status"] == "SUCCEEDED" for t in trials), trials
    for t in trials:  # a cell finished before the stop was not run again
        if before.get(t["trialJobId"], {}).get("status") == "SUCCEEDED":
            assert t["startTime"] == before[t["trialJobId"]]["startTime"]
    exp = records.load(source.workdir / "nni-experiments" / conf_id)
    ranked_source = [t.id for t in records.load(source_folder).ranked()]
    cells = sorted((t.parameters[LABEL], t.parameters["seed"]) for t in exp.trials)
    assert cells == sorted((label, seed) for label in ranked_source[:2] for seed in (0, 1))

    # report ranks the candidates by mean, with the numbers numpy and scipy give
    assert main(["report", str(exp.dir), "--out", str(tmp_path / "report")]) == 0
    rows = list(csv.DictReader((tmp_path / "report" / "confirm.csv").open()))
    values = {label: [t.final["default"] for t in sorted(exp.trials, key=lambda t: t.parameters["seed"])
                      if t.parameters[LABEL] == label] for label, _ in cells}
    means = {label: float(np.mean(v)) for label, v in values.items()}
    assert [r["candidate"] for r in rows] == sorted(means, key=means.get, reverse=True)
    for r in rows:
        assert float(r["mean"]) == pytest.approx(means[r["candidate"]])
        assert float(r["sd"]) == pytest.approx(np.std(values[r["candidate"]], ddof=1))
    first, second = (values[r["candidate"]] for r in rows)
    diff = np.subtract(second, first)
    assert float(rows[1]["vs_winner"]) == pytest.approx(np.mean(diff))
    if np.std(diff) > 0:
        assert float(rows[1]["vs_winner_p"]) == pytest.approx(stats.ttest_rel(second, first).pvalue, rel=1e-6)
    assert (tmp_path / "report" / "seeds.png").read_bytes()[:4] == b"\x89PNG"
    # retrain and export take the winner by mean: its best seed's trial
    winner = records.select_trial(str(exp.dir))[0]
    assert winner.parameters[LABEL] == rows[0]["candidate"]
    assert winner.final["default"] == max(values[rows[0]["candidate"]])
    assert json.loads((winner.dir / "params.json").read_text())["seed"] == winner.parameters["seed"]
    assert not math.isnan(winner.final["default"])
