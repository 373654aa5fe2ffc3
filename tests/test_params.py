"""Parameter validation: every rule, every source (defaults, flags, NNI), one-line errors.

Fast: no TensorFlow. The real-NNI counterpart (a broken search space) is in
test_robustness.py.
"""
import math
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmodel.errors import ParamError
from segmodel.experiment import nni_bridge
from segmodel.params import (
    ALLOCATIONS,
    CRITERIA,
    FINETUNE_LRS,
    OBJECTIVES,
    PRECISIONS,
    PRUNE_MODES,
    SCHEDULES,
    Params,
    parse_flags,
    resolve,
)

ROOT = Path(__file__).resolve().parents[1]
KNOWN = [f.name for f in fields(Params)]
FIELD = {f.name: f for f in fields(Params)}


def error_of(flags=None, tuned=None) -> str:
    with pytest.raises(ParamError) as e:
        resolve(flags, tuned)
    message = str(e.value)
    assert "\n" not in message
    return message


# ---- every validation rule ---------------------------------------------------------

BAD = [  # (name, value, what the message must name)
    ("dropout_rate", -0.1, "dropout_rate"), ("dropout_rate", 1.0, "dropout_rate"), ("dropout_rate", 1.5, "dropout_rate"),
    ("learning_rate", 0.0, "learning_rate"), ("learning_rate", -1e-3, "learning_rate"),
    ("weight3", -0.5, "class weights"),
    ("sparsity", -0.1, "sparsity"), ("sparsity", 1.0, "sparsity"),
    ("batch_size", 0, "batch_size"), ("batch_size", -4, "batch_size"),
    ("epochs", 0, "epochs"), ("finetune_epochs", -1, "finetune_epochs"),
    ("patch_size", 0, "patch_size"), ("patch_size", 40, "patch_size"),
    ("patch_stride", -1, "patch_stride"),
    ("val_fraction", 0.0, "val_fraction"), ("val_fraction", 1.0, "val_fraction"),
    ("palette_tolerance", 1.0, "palette_tolerance"),
    ("kd_temperature", 0.0, "kd_temperature"), ("kd_alpha", -1.0, "kd_alpha"), ("kd_alpha", 1.5, "kd_alpha"),
    ("agp_steps", -1, "agp_steps"), ("agp_frequency", 0, "agp_frequency"), ("threads", -1, "threads"),
    ("builtin_tiles", -1, "builtin_tiles"), ("allocation", "layerwise", "allocation"), ("finetune_lr", "step", "finetune_lr"),
    ("schedule", "cubic", "schedule"), ("prune_mode", "filter", "prune_mode"), ("channel_criterion", "l3", "channel_criterion"),
    ("objective", "f1", "objective"), ("precision", "float16", "precision"),
    ("learning_rate", "nan", "learning_rate"), ("dropout_rate", "inf", "dropout_rate"),
    ("prune_config", "[{", "prune_config"), ("prune_config", '{"sparsity": 0.5}', "prune_config"),
    ("prune_config", "/no/such/config.json", "prune_config"),
]


@pytest.mark.parametrize("name,value,named", BAD, ids=[f"{n}={v}" for n, v, _ in BAD])
@pytest.mark.parametrize("source", ["flags", "tuned"])
def test_each_rule_rejects_with_the_parameter_named(name, value, named, source):
    assert name in KNOWN, f"{name} is no longer a parameter: update BAD"  # else "unknown parameter {name}" would pass
    message = error_of(**{source: {name: value}})
    assert named in message and "unknown parameter" not in message


def test_all_zero_class_weights():
    assert "not all be zero" in error_of(tuned={f"weight{i}": 0.0 for i in range(1, 7)})


def test_kd_with_init_schedule_needs_a_teacher():
    assert "teacher" in error_of({"kd": "true", "schedule": "init"})


def test_channel_mode_with_agp_is_accepted():  # gradual channel masks, then the rebuild (test_cost_pruning.py)
    assert resolve({"prune_mode": "channel", "schedule": "agp"}).schedule == "agp"


def test_defaults_and_edges_are_valid():
    assert resolve() == Params()
    edges = {"dropout_rate": 0.0, "sparsity": 0.0, "finetune_epochs": 0, "learning_rate": 1e-12,
             "weight1": 0.0, "batch_size": 1, "epochs": 1, "patch_size": 16}
    params = resolve(tuned=edges)
    assert {k: getattr(params, k) for k in edges} == edges
    assert params.config_list == []  # sparsity 0: nothing to prune


@pytest.mark.parametrize("name,choices", [("schedule", SCHEDULES), ("objective", OBJECTIVES), ("precision", PRECISIONS),
                                          ("prune_mode", PRUNE_MODES), ("channel_criterion", CRITERIA),
                                          ("allocation", ALLOCATIONS), ("finetune_lr", FINETUNE_LRS)])
def test_every_choice_is_accepted(name, choices):
    for choice in choices:
        flags = {name: choice, **({"teacher": "t.keras"} if name == "schedule" else {})}
        assert getattr(resolve(flags), name) == choice


# ---- unknown names -----------------------------------------------------------------------

def test_unknown_name_from_nni_lists_the_known_names():
    message = error_of(tuned={"weight7": 0.5, "dropout_rate": 0.2})
    assert "unknown parameter weight7 from NNI search space" in message
    assert message.endswith(", ".join(KNOWN)) or all(n in message for n in KNOWN)


def test_several_unknown_names_are_all_reported():
    message = error_of(tuned={"lr": 0.1, "dropout": 0.2})
    assert "unknown parameters dropout, lr" in message


# ---- parsing and conversion (property-based) ------------------------------------------------------

def _ranged(lo, hi, lo_open=False, hi_open=True):
    return st.floats(lo, hi, exclude_min=lo_open, exclude_max=hi_open, allow_nan=False)


VALID_FLOATS = {
    "dropout_rate": _ranged(0, 1), "learning_rate": _ranged(0, 1e3, lo_open=True, hi_open=False),
    "sparsity": _ranged(0, 1), "val_fraction": _ranged(0, 1, lo_open=True),
    "weight1": _ranged(0, 1e6, hi_open=False), "kd_temperature": _ranged(0, 100, lo_open=True, hi_open=False),
    "kd_alpha": _ranged(0, 1, hi_open=False),
}
VALID_INTS = {"batch_size": 1, "epochs": 1, "finetune_epochs": 0, "seed": 0, "threads": 0,
              "agp_steps": 0, "agp_frequency": 1, "builtin_tiles": 0}


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_valid_floats_round_trip_from_flags_and_nni(data):
    name = data.draw(st.sampled_from(sorted(VALID_FLOATS)))
    value = data.draw(VALID_FLOATS[name])
    as_flag = data.draw(st.sampled_from([repr(value), str(value), f"{value:.17g}", f"  {value!r} "]))
    assert getattr(resolve({name: as_flag}), name) == value
    assert getattr(resolve(tuned={name: value}), name) == value
    if value.is_integer():  # NNI may send a whole number as an int (quniform, choice)
        assert getattr(resolve(tuned={name: int(value)}), name) == value


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_valid_ints_round_trip_from_int_float_and_text(data):
    name = data.draw(st.sampled_from(sorted(VALID_INTS)))
    value = data.draw(st.integers(VALID_INTS[name], 10**6))
    for raw in (value, float(value), str(value), f"{float(value)}", f" {value} "):
        assert getattr(resolve(tuned={name: raw}), name) == value
        assert type(getattr(resolve(tuned={name: raw}), name)) is int


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(sorted(VALID_INTS)),
       value=st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()))
def test_fractional_ints_are_rejected_with_the_name(name, value):
    for raw in (value, repr(value)):
        message = error_of(tuned={name: raw})
        assert name in message and "expected int" in message


@pytest.mark.parametrize("name", sorted(VALID_INTS))
def test_bool_is_not_an_int(name):
    assert name in error_of(tuned={name: True})


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(sorted(VALID_FLOATS)),
       text=st.text(min_size=1).filter(lambda t: not _is_number(t)))
def test_non_numbers_are_rejected_with_the_name(name, text):
    message = error_of({name: text})
    assert name in message and "\n" not in message


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(["dropout_rate", "learning_rate", "kd_alpha"]),
       raw=st.sampled_from(["nan", "inf", "-inf", "NaN", "Infinity", math.nan, math.inf]))
def test_non_finite_floats_are_rejected(name, raw):
    assert name in error_of(tuned={name: raw})


TRUE, FALSE = ["true", "True", "TRUE", " yes", "on", "1", 1, 1.0, True], ["false", "False", "no", "off", "0", 0, 0.0, False]


@pytest.mark.parametrize("name", ["kd", "augment", "deterministic"])
def test_bools_parse_from_text_numbers_and_bools(name):
    flags = {"teacher": "t.keras"}
    for raw in TRUE:
        assert getattr(resolve(flags, {name: raw}), name) is True, raw
    for raw in FALSE:
        assert getattr(resolve(flags, {name: raw}), name) is False, raw


@settings(max_examples=100, deadline=None)
@given(raw=st.one_of(st.text().filter(lambda t: t.strip().lower() not in
                                      {"1", "0", "true", "false", "yes", "no", "on", "off"}),
                     st.integers().filter(lambda i: i not in (0, 1)),
                     st.floats(allow_nan=False).filter(lambda x: x not in (0.0, 1.0))))
def test_other_bool_values_are_rejected(raw):
    message = error_of(tuned={"augment": raw})
    assert "augment" in message and "expected bool" in message


@settings(max_examples=50, deadline=None)
@given(name=st.sampled_from(["schedule", "objective", "precision", "prune_mode", "channel_criterion", "allocation",
                             "finetune_lr"]), text=st.text())
def test_choices_accept_only_their_names(name, text):
    choices = FIELD[name].metadata["choices"]
    flags = {name: text, "teacher": "t.keras"}
    if text in choices:
        assert getattr(resolve(flags), name) == text
    else:
        message = error_of(flags)
        assert f"{name} must be one of" in message and all(c in message for c in choices)


def test_prune_config_from_nni_may_be_a_json_list():
    config = [{"sparsity": 0.5, "op_types": ["Conv2D"]}]
    assert resolve(tuned={"prune_config": config}).config_list == config


# ---- precedence and NNI's extra keys ---------------------------------------------------

def test_tuner_beats_flags_beats_defaults():
    params = resolve({"dropout_rate": "0.2", "epochs": "3"}, {"dropout_rate": 0.3})
    assert (params.dropout_rate, params.epochs, params.batch_size) == (0.3, 3, Params().batch_size)


def test_flags_parse_with_underscores_and_hyphens():
    assert parse_flags(["--learning-rate", "0.01", "--batch_size", "4"]) == {"learning_rate": "0.01", "batch_size": "4"}


def test_hyperband_budget_becomes_epochs():
    tuned = nni_bridge.from_tuner({"dropout_rate": 0.2, "TRIAL_BUDGET": 3.0})
    assert resolve(tuned=tuned).epochs == 3
    assert resolve(tuned=nni_bridge.from_tuner({"TRIAL_BUDGET": 0.33})).epochs == 1


def test_pbt_checkpoints_get_a_clear_error():
    with pytest.raises(ParamError, match="PBT tuner is not supported"):
        nni_bridge.from_tuner({"load_checkpoint_dir": "/a", "save_checkpoint_dir": "/b"})


# ---- the command line: one line on stderr, exit 2, before TensorFlow ----------------------------------

@pytest.mark.parametrize("argv,expect", [
    (["--dropout_rate", "1.5"], "error: dropout_rate must be in [0, 1), got 1.5"),
    (["--learning-rate", "0"], "error: learning_rate must be > 0, got 0.0"),
    (["--batch_size", "2.5"], "error: batch_size from command line: expected int, got '2.5'"),
    (["--weight7", "1"], "error: unrecognized arguments: --weight7 1; known: --weight1,"),
    (["--dropout", "0.5"], "error: unrecognized arguments: --dropout 0.5"),  # no abbreviations: one name a flag
])
def test_trial_py_bad_flag_one_line_exit_2(argv, expect):
    out = subprocess.run([sys.executable, "trial.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(expect), out.stderr
    assert out.stdout == ""


def test_bad_parameter_fails_before_tensorflow_is_imported():
    code = ("import sys; from segmodel.cli_trial import main; rc = main(['--sparsity', '1']); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == "error: sparsity must be in [0, 1), got 1.0"


def test_config_yml_passes_only_what_differs_from_the_defaults():
    """One source of truth: a default lives in Params; config.yml's trial command states
    only where the experiment differs (a flag equal to its default would be a second copy)."""
    # the repository root is on sys.path (python -m pytest)
    from benchmarks.grid import config_trial_flags
    flags = parse_flags(config_trial_flags(Path(__file__).resolve().parents[1] / "config.yml"))
    assert flags, "config.yml's trialCommand has no flags: then say so in its comment"
    for name, raw in flags.items():
        assert getattr(resolve({name: raw}), name) != getattr(Params(), name), f"--{name} repeats its default"
