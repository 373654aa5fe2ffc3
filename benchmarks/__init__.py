"""Every figure segmodel quotes, one command each: `python -m benchmarks [NAME] [options]`.

Run from the repository root; not part of the segmodel package (not in the wheel, not
uploaded with a trial's code) and built on segmodel's public API only.

    python -m benchmarks                # = stages: where a trial's time goes
    python -m benchmarks NAME --help    # what NAME measures and its options

Two kinds. Quality tables are presets of the one grid runner (grid.py: trial variants x
seeds -> a table paired by seed), whose cells are real trials through the public trial
command. Speed comparisons run their variants side by side in one process, interleaved
(timing.py): quote the ratios, and name the CPU (`lscpu | grep 'Model name'`).

Adding a benchmark is one entry of BENCHES: a Preset (presets.py) or a module of this
package with `add_arguments(parser)` and `main(args) -> int`, whose docstring is its help.
"""
from __future__ import annotations

from . import presets

# name -> a grid Preset, or the module ("benchmarks.x") of a bench; the first runs without a name
BENCHES = {
    "stages": "benchmarks.stages",
    "prune-overhead": "benchmarks.prune_overhead",
    "quality": presets.QUALITY,
    "prune-table": presets.PRUNE_TABLE,
    "kd-table": presets.KD_TABLE,
    "precision-iou": presets.PRECISION_IOU,
    "channels": presets.CHANNELS,
    "memory": "benchmarks.memory",
    "trial-anatomy": "benchmarks.trial_anatomy",
    "step-options": "benchmarks.step_options",
    "trials-per-hour": "benchmarks.trials_per_hour",
    "tuner": "benchmarks.tuner",
    "tuner-db": "benchmarks.tuner_db",
    "quantization": "benchmarks.quantization",
    "widths": "benchmarks.widths",
    "grid": presets.GRID,
}
DEFAULT = "stages"
