"""benchmarks/ (`python -m benchmarks`): the grid runner on real tiny trials, its paired
table against hand-computed numbers, the registry's command line, and the CPU seconds
trials-per-hour reads from outside a trial."""
from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys

import pytest
from nni_helpers import ROOT

sys.path.insert(0, str(ROOT))  # `benchmarks` lives at the repository root, outside the package

from benchmarks import BENCHES, grid, table  # noqa: E402
from benchmarks.__main__ import build_parser, main  # noqa: E402
from benchmarks.presets import Preset  # noqa: E402

# ---- the paired table -------------------------------------------------------------------------

def _row(seed, variant, iou, **more):
    return {"seed": seed, "variant": variant, "iou": iou, "model_gzip_bytes": 100, **more}


def test_paired_table_against_hand_computed_numbers():
    rows = [_row(0, "dense", 0.80), _row(1, "dense", 0.70),
            _row(0, "pruned", 0.79, model_gzip_bytes=30), _row(1, "pruned", 0.67, model_gzip_bytes=40),
            _row(0, "late", 0.85)]  # one seed only: paired with seed 0's dense alone
    text = table.paired_table(rows, {"dense": "dense", "pruned": "dense", "late": "dense"},
                              ("worst", "wins", "gzip"))
    head, _, dense, pruned, late = text.splitlines()
    assert head == "| variant | seeds | val mean IoU | Δ vs dense (pt, paired) | worst seed Δ (pt) | better in " \
                   "| gzip vs reference |"
    assert dense == "| dense | 2 | 0.750 ± 0.071 | — |  |  | 1.00 |"
    # paired: -1 and -3 points -> mean -2, sd sqrt(2); unpaired means give the same -2 but hide the sd
    assert pruned == "| pruned | 2 | 0.730 ± 0.085 | -2.00 ± 1.41 | -3.00 | 0/2 | 0.35 |"
    assert late == "| late | 1 | 0.850 ± 0.000 | +5.00 ± 0.00 | +5.00 | 1/1 | 1.00 |"


def test_each_variant_paired_with_its_own_reference_and_diverged_cells_counted():
    rows = [_row(0, "0.8-nokd", 0.60, dense_iou=0.7), _row(0, "0.8-kd", 0.62, dense_iou=0.7),
            _row(0, "0.9-nokd", 0.50, dense_iou=0.7), _row(0, "0.9-kd", 0.49, dense_iou=0.7),
            {"seed": 1, "variant": "0.9-kd", "diverged": 1}]
    refs = {"0.8-nokd": "0.8-nokd", "0.8-kd": "0.8-nokd", "0.9-nokd": "0.9-nokd", "0.9-kd": "0.9-nokd"}
    lines = table.paired_table(rows, refs, ("before_delta",)).splitlines()
    assert "Δ vs reference (pt, paired)" in lines[0]
    assert lines[3] == "| 0.8-kd | 1 | 0.620 ± 0.000 | +2.00 ± 0.00 (vs 0.8-nokd) | +0.00 ± 0.00 |"
    assert lines[5] == "| 0.9-kd | 1 (+1 diverged) | 0.490 ± 0.000 | -1.00 ± 0.00 (vs 0.9-nokd) | +0.00 ± 0.00 |"


# ---- the grid runner, for real -----------------------------------------------------------------

def test_grid_runs_real_trials_pairs_them_and_resumes(tmp_path, artifacts, capsys):
    """Two variants x two seeds of real `python -m segmodel train` trials: one folder per
    cell with that cell's flags, Δ computed from the trials' own metrics, finished cells
    not run again, --print-only tabulates a partial grid."""
    from artifact_helpers import tiny_dataset
    out = tmp_path / "grid"
    argv = ["grid", "--variant", "dense=--sparsity 0", "--variant", "half=--sparsity 0.5", "--seeds", "0", "1",
            "--jobs", "2", "--out", str(out), "--", "--data-dir", str(tiny_dataset(artifacts)),
            "--patch-size", "32", "--epochs", "1", "--finetune-epochs", "0", "--precision", "float32"]
    assert main(argv) == 0
    ran = capsys.readouterr()
    assert ran.err.count("segmodel train") == 4
    metrics = {(s, v): json.loads((out / f"s{s}-{v}" / "metrics.json").read_text())
               for s in (0, 1) for v in ("dense", "half")}
    params = {k: json.loads((out / f"s{k[0]}-{k[1]}" / "params.json").read_text()) for k in metrics}
    assert {k: (p["seed"], p["sparsity"], p["threads"]) for k, p in params.items()} == \
        {(s, v): (s, 0.5 if v == "half" else 0.0, 1) for s, v in metrics}
    assert metrics[(0, "half")]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    d = [100 * (metrics[(s, "half")]["iou"] - metrics[(s, "dense")]["iou"]) for s in (0, 1)]
    half_line = next(line for line in ran.out.splitlines() if line.startswith("| half |"))
    assert half_line.split(" | ")[3] == f"{statistics.mean(d):+.2f} ± {statistics.stdev(d):.2f}"
    assert len(json.loads((out / "rows.json").read_text())) == 4
    assert (out / "table.md").read_text().startswith(ran.out.splitlines()[0])

    assert main(argv) == 0  # resumed: every cell has its metrics.json, with these very parameters
    resumed = capsys.readouterr().err
    assert "segmodel train" not in resumed and "warning" not in resumed
    longer = [*argv[:argv.index("--epochs")], "--epochs", "2", *argv[argv.index("--epochs") + 2:]]
    assert main(longer) == 0  # reused, but never silently: the cells were trained with 1 epoch
    assert capsys.readouterr().err.count("finished with other epochs; reused") == 4

    (out / "s1-half" / "metrics.json").unlink()
    assert main([*argv[:argv.index("--")], "--print-only"]) == 0
    printed = capsys.readouterr()
    assert "segmodel train" not in printed.err
    assert re.search(r"^\| half \| 1 \| ", printed.out, re.MULTILINE)  # only seed 0 left


# ---- the registry and its command line ---------------------------------------------------------

def test_unknown_name_lists_the_known_ones_and_exits_2():
    run = subprocess.run([sys.executable, "-m", "benchmarks", "quailty"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert "did you mean 'quality'" in run.stderr and all(name in run.stderr for name in BENCHES)
    listed = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0 and all(f"\n  {name} " in listed.stdout for name in BENCHES)


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_every_bench_parser_builds_with_hyphenated_options(name):
    parser = build_parser(name)
    assert parser.description and parser.prog == f"python -m benchmarks {name}"
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    assert all(re.fullmatch(r"--[a-z0-9]+(-[a-z0-9]+)*", o) for o in options), options


@pytest.mark.parametrize("name", sorted(n for n, t in BENCHES.items() if isinstance(t, Preset)))
def test_each_preset_selects_valid_trials(name):
    """Without options a preset's cells are real trial flags (parsed as the trial parses
    them) and each variant's reference is among them."""
    preset = BENCHES[name]
    args = build_parser(name).parse_args(["--variant", "x=--sparsity 0"] if not preset.variants else [])
    variants = grid.select(preset, args.only, args.variant, args.reference)
    assert all(ref in variants for _, ref in variants.values())
    base = grid.base_flags(preset, args.config, args.trial_flags, variants, args.jobs)
    from segmodel.params import parse_flags, resolve
    for flags in grid.cells(args.seeds, variants, base).values():
        resolve(parse_flags(flags))


def test_widths_bench_times_each_width_set_against_dense(tmp_path, capsys):
    """Real conversions and timing at a tiny side: every row's files ran, FLOPs follow the widths."""
    assert main(["widths", "--out", str(tmp_path), "--widths", "half=8,16,32,64,128", "--side", "16",
                 "--batches", "1", "--rounds", "1"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert list(rows) == ["dense", "half"] and rows["half"]["widths"] == [8, 16, 32, 64, 128]
    assert rows["dense"]["mflops_64px"] / rows["half"]["mflops_64px"] == pytest.approx(3.955, abs=0.01)
    assert all(rows[n]["img_s"][k] > 0 for n in rows for k in ("float32 b1", "int8 b1"))
    assert "| 8/16/32/64/128 | half |" in (tmp_path / "table.md").read_text()
    assert main(["widths", "--out", str(tmp_path), "--widths", "half=8,16"]) == 2
    assert "five positive ints" in capsys.readouterr().err


def test_bad_grid_input_is_one_line_and_exit_2(capsys):
    assert main(["quality", "--only", "nosuch-*"]) == 2
    assert "no such variant; known: dense, recipe-0.5" in capsys.readouterr().err
    assert main(["quality", "--", "--sparsity", "0.3"]) == 2  # every variant sets it: it would change nothing
    assert "--sparsity: set per cell by the grid" in capsys.readouterr().err


def test_reference_always_runs_and_variant_flags_win_over_extra_ones():
    from segmodel.params import parse_flags
    preset = BENCHES["kd-table"]
    assert list(grid.select(preset, ["*-kd4:1"], [], "")) == ["0.8-nokd", "0.8-kd4:1", "0.9-nokd", "0.9-kd4:1"]
    variants = grid.select(preset, ["0.8-pruned"], [], "")
    base = grid.base_flags(preset, "", ["--", "--finetune-epochs", "2"], variants, jobs=1)
    flags = {v: parse_flags(f) for (seed, v), f in grid.cells([0], variants, base).items()}
    assert flags["0.8-nokd"]["finetune_epochs"] == "2" and flags["0.8-pruned"]["finetune_epochs"] == "0"
    assert flags["0.8-pruned"]["seed"] == "0" and flags["0.8-pruned"]["threads"]  # one thread count for all
    assert base == ["--schedule", "oneshot", "--finetune-epochs", "2", "--threads", base[-1]]  # each flag once


def test_benchmarks_use_only_public_segmodel_names_that_exist():
    """The benches import segmodel inside their functions (stages times those imports), so
    a renamed product function would only show when a bench runs: check every import here."""
    import ast
    import importlib.util
    used = {(node.module, a.name) for path in (ROOT / "benchmarks").rglob("*.py")
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segmodel") for a in node.names}
    assert ("segmodel.train", "compile_trainer") in used
    for module, name in used:
        assert not name.startswith("_"), f"{module}.{name} is private"
        assert hasattr(importlib.import_module(module), name) or importlib.util.find_spec(f"{module}.{name}"), \
            f"{module}.{name}"


# ---- trials-per-hour: a trial's CPU seconds, measured from outside it ---------------------------

def test_cpu_seconds_of_a_trial_come_from_bash_times():
    from benchmarks.trials_per_hour import trial_cpu_s, with_cpu_times
    burn = (f"{sys.executable} -c \"import os\nwhile sum(os.times()[:2]) < 0.3: pass\n"
            "print(sum(os.times()[:2]))\nraise SystemExit(3)\"")
    run = subprocess.run(["/bin/bash", "-c", with_cpu_times(burn)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 3  # the trial's own exit status is what NNI sees
    assert trial_cpu_s(run.stderr) >= float(run.stdout) - 0.01 >= 0.29  # bash rounds to ms
    assert trial_cpu_s("no times here") is None

