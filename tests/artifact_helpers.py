"""Tiny, real inputs for the report/export/predict tests, built once per session and
shared through the file system (each builder returns early when its output exists)."""
from __future__ import annotations

import json
from pathlib import Path

# The seed's architecture: the export tests kill one of its conv layers by its bias (a
# BatchNorm U-Net's convs have none); tests/test_latency.py exports the default (bn) one.
TRIAL_FLAGS = {"patch_size": 32, "epochs": 1, "finetune_epochs": 1, "sparsity": 0.5, "batch_size": 8,
               "precision": "float32", "architecture": "seed"}


def tiny_dataset(base: Path) -> Path:
    """4 procedural aerial scenes of 96-128 px in the Dubai layout (1 held out for validation)."""
    from segmodel.data.synthetic import SynthSpec, write_dataset
    root = base / "tiny-data"
    if not (root / "Tile 2").is_dir():
        write_dataset(root, SynthSpec(tiles=2, images_per_tile=2, min_size=96, max_size=128, seed=0))
    return root


class QuietReporter:
    def intermediate(self, value): pass
    def final(self, value): pass


def tiny_trial(base: Path) -> Path:
    """A finished trial folder written by run_trial (patch 32, 1 dense + 1 fine-tune epoch)."""
    from segmodel.params import resolve
    from segmodel.train import run_trial
    out = base / "tiny-trial"
    if not (out / "metrics.json").is_file():
        params = resolve({**TRIAL_FLAGS, "data_dir": str(tiny_dataset(base))})
        run_trial(params, QuietReporter(), out)
    return out


def tiny_export(base: Path) -> Path:
    """`export` of tiny_trial, all formats (speed also timed at 64 px: the twin path, cheaply)."""
    from segmodel.__main__ import main
    out = base / "tiny-export"
    if not (out / "export.json").is_file():
        assert main(["export", str(tiny_trial(base)), "--out", str(out), "--calibration-samples", "16",
                     "--speed-side", "64"]) == 0
    return out


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def assert_refused_before_tensorflow(argv: list[str], expect: str) -> None:
    """The trial refuses `argv` in one line starting with `expect`, exit 2, before it imports
    TensorFlow or Keras."""
    import subprocess
    import sys
    code = ("import sys; from segmodel.cli_trial import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; sys.exit(rc)")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(expect), out.stderr
