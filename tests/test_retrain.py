"""`retrain`: the chosen trial's parameters at a new budget, as one real trial (patch 32)."""
import json

import pytest
from artifact_helpers import read_json

from segmodel.__main__ import main
from segmodel.errors import ParamError
from segmodel.retrain import retrain_params


def test_retrain_params_keep_the_trials_and_take_the_new_budget(tmp_path):
    saved = {"learning_rate": 0.003, "epochs": 1, "finetune_epochs": 0, "sparsity": 0.5, "output_dir": "old",
             "retired_name": 1}  # a params.json from another version may carry names this one lacks
    p = retrain_params(saved, tmp_path / "new", ["--epochs", "12", "--finetune-epochs", "8", "--sparsity", "0.9"])
    assert (p.learning_rate, p.epochs, p.finetune_epochs, p.sparsity) == (0.003, 12, 8, 0.9)
    assert p.output_dir == str(tmp_path / "new") and p.allocation == "global" and p.finetune_lr == "cosine"
    assert retrain_params(saved, tmp_path, []).epochs == 1  # budget defaults to the trial's
    with pytest.raises(ParamError, match="--out"):
        retrain_params(saved, tmp_path, ["--output_dir", "x"])
    with pytest.raises(ParamError, match="epochs"):
        retrain_params(saved, tmp_path, ["--epochs", "0"])


def test_retrain_reruns_a_trial_folder_with_more_epochs(trial, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("retrained") / "winner"
    assert main(["retrain", str(trial), "--out", str(out), "--", "--epochs", "2", "--finetune_epochs", "1",
                 "--sparsity", "0.9"]) == 0
    old, new = read_json(trial / "params.json"), read_json(out / "params.json")
    assert (new["epochs"], new["finetune_epochs"], new["sparsity"], new["output_dir"]) == (2, 1, 0.9, str(out))
    assert {k: v for k, v in new.items() if k not in ("epochs", "finetune_epochs", "sparsity", "output_dir")} \
        == {k: v for k, v in old.items() if k not in ("epochs", "finetune_epochs", "sparsity", "output_dir")}
    metrics = read_json(out / "metrics.json")
    assert metrics["sparsity"] == pytest.approx(0.9, abs=1e-5) and (out / "model.keras").is_file()
    phases = [row.split(",")[1] for row in (out / "history.csv").read_text().splitlines()[1:]]
    assert phases == ["dense", "dense", "finetune"]
    printed = capsys.readouterr()
    assert json.loads(printed.out)["iou"] == metrics["iou"] and "export" in printed.err  # stdout: the JSON alone
