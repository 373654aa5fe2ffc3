"""A diverged trial keeps its params.json, and `retrain` / `export` of it say in one line
(exit 2) what happened, instead of failing on the missing file. Divergence itself (the
guard, the final result 0.0) is tested in tests/test_robustness.py."""
import json

import keras
import pytest

from segmodel.__main__ import main

TINY = ["--patch_size", "32", "--patch_stride", "160", "--batch_size", "8", "--val_fraction", "0.1",
        "--precision", "float32", "--epochs", "2", "--finetune_epochs", "1"]


@pytest.fixture(scope="module")
def diverged(tmp_path_factory):
    """A real trial whose learning rate (1e4) blows the weights up at once."""
    out = tmp_path_factory.mktemp("diverged")
    before = keras.mixed_precision.global_policy().name
    code = main(["train", *TINY, "--learning_rate", "1e4", "--architecture", "seed", "--output_dir", str(out)])
    keras.mixed_precision.set_global_policy(before)
    assert code == 0
    return out


def last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and not any(line.startswith("error") for line in err[:-1]), err
    return err[-1]


def test_a_diverged_trial_keeps_its_parameters(diverged):
    metrics = json.loads((diverged / "metrics.json").read_text())
    assert metrics["diverged"] == 1 and not (diverged / "model.keras").exists()
    assert json.loads((diverged / "params.json").read_text())["learning_rate"] == 1e4


def test_export_of_a_diverged_trial_is_one_line(diverged, tmp_path, capsys):
    assert main(["export", str(diverged), "--out", str(tmp_path / "ship")]) == 2
    error = last_error(capsys)
    assert f"trial {diverged.name} diverged (weights became NaN" in error and "saved no model" in error
    assert not (tmp_path / "ship").exists()


def test_retrain_of_a_diverged_trial_asks_for_other_parameters(diverged, tmp_path, capsys):
    assert main(["retrain", str(diverged), "--out", str(tmp_path / "again")]) == 2
    error = last_error(capsys)
    assert f"trial {diverged.name} diverged" in error and "after -- (e.g. -- --learning-rate 1e-4)" in error
    assert not (tmp_path / "again").exists()
    # With other parameters it is a trial like any other (here: a bad one, refused before training).
    # (--out before the experiment: on Python 3.11 argparse gives the empty trial flags away
    # before an option that follows the experiment, and `-- flags` after it is then refused)
    assert main(["retrain", "--out", str(tmp_path / "again"), str(diverged), "--", "--learning-rate", "0"]) == 2
    error = last_error(capsys)
    assert "learning_rate" in error and "diverged" not in error
