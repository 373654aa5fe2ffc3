"""The table logic of benchmarks/tuner.py on recorded trials (the real experiment is in
tests/test_tuning_experiment.py; the full 20-minute runs are the README's measurement)."""
import sys

from nni_helpers import ROOT

from segmodel.experiment.records import Experiment, Trial

sys.path.insert(0, str(ROOT))  # `benchmarks` lives at the repository root, outside the package
from benchmarks.tuner import (  # noqa: E402
    format_table,
    near_duplicates,
    plot_runs,
    summarize,
    variants,
)


def trial(seq, status, lr, dropout, final=None, end_min=None):
    return Trial(f"t{seq}", seq, status, {"learning_rate": lr, "dropout_rate": dropout},
                 final={"default": final} if final is not None else {},
                 start_ms=0, end_ms=None if end_min is None else int(end_min * 60000))


# The run: three stopped trials at lr 1.0e-4 to 1.8e-4 and dropout 0.3285-0.3294.
TRIALS = [trial(0, "SUCCEEDED", 3e-3, 0.10, 0.80, 1.0),
          trial(1, "EARLY_STOPPED", 1.0e-4, 0.3285, end_min=1.5),
          trial(2, "EARLY_STOPPED", 1.4e-4, 0.3287, end_min=2.0),   # x1.4, +0.0002: near-duplicate of 1
          trial(3, "EARLY_STOPPED", 1.8e-4, 0.3294, end_min=2.5),   # x1.29 of 2: near-duplicate
          trial(4, "EARLY_STOPPED", 1.6e-4, 0.3600, end_min=3.0),   # dropout +0.03: not one
          trial(5, "EARLY_STOPPED", 4.0e-4, 0.3290, end_min=3.5),   # x2.2 of 3: not one
          trial(6, "SUCCEEDED", 2e-3, 0.20, 0.85, 4.2),
          trial(7, "FAILED", 1e-3, 0.20, end_min=4.5),
          trial(8, "SUCCEEDED", 2e-3, 0.21, 0.84, 5.0)]


def test_near_duplicates_of_earlier_stopped_trials():
    assert [t.sequence for t in near_duplicates(TRIALS)] == [2, 3]
    assert [t.sequence for t in near_duplicates(TRIALS, after=3)] == [3]


def test_summary_and_table():
    exp = Experiment("abc", ROOT, {"tuner": {"classArgs": {"optimize_mode": "maximize", "tpe_args": {"n_startup_jobs": 3}}}},
                     TRIALS, start_ms=0)
    row = summarize(exp)
    assert row == {"experiment": "abc", "trials": 9, "finished": 3, "stopped": 5, "near_dup_stopped": 2,
                   "near_dup_after_startup": 1, "best": 0.85, "best_minute": 4.2}
    other = {**row, "experiment": "def", "stopped": 3, "best": 0.81, "best_minute": 9.0}
    table = format_table([{"variant": "new", "seed": 0, **row}, {"variant": "new", "seed": 1, **other}])
    lines = table.splitlines()
    assert lines[0].startswith("| variant | seed | experiment |") and len(lines) == 5
    assert lines[2] == "| new | 0 | abc | 9 | 3 | 5 | 2 (1) | 0.8500 | 4.2 |"
    assert lines[4] == "| **new** | median | 2 runs | 9.0 | 3.0 | 4.0 | 2.0 (1.0) | 0.8300 | 6.6 |"


def test_plain_variant_is_the_wrapped_builtin_tuner():
    (name, informed), (plain_name, plain) = variants(ROOT / "config.yml", plain=True)
    assert informed["tuner"]["className"] == "segmodel.experiment.tuner.InformedTuner"
    assert informed["tuner"]["codeDirectory"] == str(ROOT) and informed["trialCodeDirectory"] == str(ROOT)
    args = dict(informed["tuner"]["classArgs"])
    assert plain["tuner"] == {"name": args.pop("tuner"), "classArgs": args} and plain_name == "config (plain TPE)"
    assert plain["assessor"] == informed["assessor"] and plain["trialCommand"] == informed["trialCommand"]


def test_plot_of_every_run(tmp_path):
    """One step curve per run, drawn to where the run stopped (the failed trial at 4.5 min)."""
    import matplotlib.pyplot as plt
    exp = Experiment("abc", ROOT, {}, TRIALS, start_ms=0)
    early = Experiment("def", ROOT, {}, TRIALS[:3], start_ms=0)
    drawn = []
    real_savefig = plt.Figure.savefig
    plt.Figure.savefig = lambda fig, path, **kw: (drawn.append(fig), real_savefig(fig, path, **kw))[1]
    try:
        plot_runs([("new", exp), ("old", early)], tmp_path / "best.png")
    finally:
        plt.Figure.savefig = real_savefig
    assert (tmp_path / "best.png").read_bytes()[:4] == b"\x89PNG"
    lines = drawn[0].axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["new", "old"]
    assert list(lines[0].get_xdata()) == [1.0, 4.2, 5.0, 5.0] and list(lines[0].get_ydata()) == [0.8, 0.85, 0.85, 0.85]
    assert list(lines[1].get_xdata()) == [1.0, 2.0] and list(lines[1].get_ydata()) == [0.8, 0.8]
