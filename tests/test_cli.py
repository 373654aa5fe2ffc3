"""Every command's --help, and one flag style across them (hyphens; underscores accepted)."""
import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from segmodel.__main__ import build_parser, main
from segmodel.cli import normalize_flags
from segmodel.params import build_parser as trial_parser

ROOT = Path(__file__).resolve().parents[1]
WRITERS = {"report", "confirm", "export", "retrain", "predict", "data synth"}  # commands that write files


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every leaf command of `python -m segmodel`, `data synth` and `data inspect` included."""
    found = {}

    def walk(parser, prefix):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs and parser.add_help:  # `train` parses its own flags: added below
            found[prefix] = parser
        for action in subs:
            for name, sub in action.choices.items():
                walk(sub, f"{prefix} {name}".strip())

    walk(build_parser(), "")
    found["train"] = trial_parser("python -m segmodel train")  # parses its own flags
    return found


def test_every_command_is_walked():
    assert set(commands()) == {"train", "data synth", "data inspect", "report", "confirm", "export", "retrain",
                               "predict"}


@pytest.mark.parametrize("name", sorted(commands()))
def test_help_exits_0_and_describes_the_command(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([*name.split(), "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m segmodel " + name)
    assert len(out.splitlines()) > 5 and "show this help message" in out


@pytest.mark.parametrize("name", sorted(commands()))
def test_options_are_spelled_with_hyphens(name):
    options = [o for a in commands()[name]._actions for o in a.option_strings if o.startswith("--")]
    assert options and all(re.fullmatch(r"--[a-z0-9]+(-[a-z0-9]+)*", o) for o in options), options


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_writer_takes_out(name):
    """`--out DIR` (default ./<command>-<input>), or the folder to write as the argument (data synth)."""
    dests = {a.dest for a in commands()[name]._actions}
    assert "out" in dests or name == "data synth" and "dir" in dests


def test_underscore_spelling_is_the_same_option():
    assert normalize_flags(["--patch_size", "64", "--out=my_dir", "-x", "--", "--keep_me"]) == \
        ["--patch-size", "64", "--out=my_dir", "-x", "--", "--keep_me"]
    from segmodel.params import parse_flags
    assert parse_flags(["--patch_size", "64"]) == parse_flags(["--patch-size", "64"]) == {"patch_size": "64"}
    args = build_parser().parse_args(normalize_flags(["predict", "m.keras", "a.png", "--patch_size", "32"]))
    assert args.patch_size == 32


def test_trial_stdout_is_json_alone_on_a_user_error():
    """A bad flag: nothing on stdout, one line on stderr, exit 2."""
    run = subprocess.run([sys.executable, str(ROOT / "trial.py"), "--patch_size", "30"],
                         capture_output=True, text=True, timeout=120, env={"SEGMODEL_NO_REEXEC": "1",
                                                                          "PATH": "/usr/bin:/bin"})
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "patch_size" in run.stderr


def test_help_and_the_light_faces_load_neither_tensorflow_nor_nni():
    """`python -m segmodel --help` stays instant: every command's parser, the `deploy` and
    `experiment` faces and the names they list, and the kept aliases load no TensorFlow."""
    probe = ("import sys, contextlib, io\n"
             "from segmodel.__main__ import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    try: main(['--help'])\n"
             "    except SystemExit: pass\n"
             "import segmodel.deploy as d, segmodel.experiment as e, segmodel.amx\n"
             "names = [d.convert, d.load_runner, d.images_per_second, d.LatencyProbe, e.load, e.Reporter]\n"
             "heavy = sorted({'tensorflow', 'keras', 'nni', 'segmentation_models'} & set(sys.modules))\n"
             "assert not heavy, heavy\n")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_old_tuner_name_is_the_new_class():
    """NNI stored `segmodel.tuning.InformedTuner` in every experiment made before the layout."""
    from segmodel.experiment.tuner import InformedTuner
    from segmodel.tuning import InformedTuner as Old
    assert Old is InformedTuner
