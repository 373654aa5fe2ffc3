"""The grid benchmarks: each a Preset = variants x default seeds and trial flags, run by grid.py.

A variant is a name -> the trial flags that make it (or (flags, the variant it is paired
with)). `python -m benchmarks NAME --help` lists a preset's variants; --only picks some.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """A grid: variant name -> trial flags (or (flags, its reference variant))."""
    doc: str                       # first line: what it measures; the rest: --help epilog
    variants: dict
    reference: str = "dense"       # what a variant is paired with unless it names its own
    default: tuple = ()            # patterns (fnmatch) of the variants run without --only; () = all
    seeds: tuple = (0, 1, 2)
    trial_flags: str = ""          # flags of every cell, before the variant's
    config: str = ""               # NNI config (from the repo root) whose trialCommand flags come first
    columns: tuple = ()            # extra table columns (table.COLUMNS)
    jobs: int = 1

    def flags(self, name: str) -> str:
        value = self.variants[name]
        return value[0] if isinstance(value, tuple) else value

    def reference_of(self, name: str) -> str:
        value = self.variants[name]
        return value[1] if isinstance(value, tuple) else self.reference


SPARSITIES = (0.5, 0.8, 0.9)

# ---- quality: does pruning keep accuracy at a converged budget? ----------------------------
# method -> flags; "recipe" is what a trial does by default
METHODS = {
    "recipe": "",                                               # oneshot, global ranking, cosine fine-tuning
    "seed": "--allocation uniform --finetune-lr constant",      # uniform per layer, constant lr (the seed's)
    "uniform": "--allocation uniform",                          # uniform per layer, cosine fine-tuning
    "constant": "--finetune-lr constant",                       # global ranking, constant lr
    "agp": "--schedule agp",                                    # AGP, global ranking, cosine fine-tuning
    "kd": "--kd true",                                          # recipe + distillation (its defaults)
}
QUALITY = Preset(
    doc="""Does a pruned model keep its accuracy? Dense vs pruned at the same total epochs, paired by seed.

    python -m benchmarks quality                    # dense + recipe/seed x 50/80/90 % (~70 min, 2 cores)
    python -m benchmarks quality --seeds 0 1 2 --only recipe-0.8 recipe-0.9
    python -m benchmarks quality --print-only --only '*'     # tabulate whatever finished

The trial flags are a budget where the dense model has converged (its validation curve is
printed to judge it), on a built-in set 4x the usual validation images (24). The dense
variant is the same trial with --sparsity 0: same epochs and learning-rate schedule, no
pruning. Methods: recipe = the trial's defaults (oneshot, global ranking, cosine
fine-tuning); seed = uniform per layer + constant lr (the seed's); uniform; constant;
agp; kd = recipe + distillation.""",
    variants={"dense": "--sparsity 0",
              **{f"{m}-{s}": f"{flags} --sparsity {s}".strip() for m, flags in METHODS.items() for s in SPARSITIES}},
    default=("recipe-*", "seed-*"),
    # 64 px, 12 dense + 8 fine-tuning epochs at lr 2e-3 (dense has converged), 48 built-in
    # images, half validation (~1000 patches): the dense seed-to-seed spread is 0.6 pt here.
    trial_flags="--patch-size 64 --learning-rate 2e-3 --epochs 12 --finetune-epochs 8 --builtin-tiles 24 "
                "--val-fraction 0.5",
    columns=("sparsity", "worst", "gzip", "time"),
)

# ---- prune-table: every schedule at 50/80/90 %, the short budget --------------------------------
# NNI's usual advice, as one more variant per schedule: leave the first conv (3 input
# channels) and the 1x1 head (16 -> 6) dense. Together they hold 528 of the 1.94M weights.
KEEP_ENDS = '[{"sparsity": 0.8, "op_types": ["default"]}, {"exclude": true, "op_names": ["down1_conv1", "logits"]}]'
SCHEDULES = ("init", "oneshot", "agp")
PRUNE_TABLE = Preset(
    doc="""Dense vs pruned for every schedule at 50/80/90 %, same total epochs: the pruning table.

    python -m benchmarks prune-table --out runs/prune_table
    python -m benchmarks prune-table --out runs/prune_table --print-only     # from finished cells
    python -m benchmarks prune-table -- --data-dir /data/dubai                # flags after -- go to every trial

`*-0.8-ends` keeps the first conv and the head dense (NNI's usual advice).""",
    variants={"dense": "--sparsity 0 --schedule oneshot",
              **{f"{sch}-{s}": f"--sparsity {s} --schedule {sch}" for sch in SCHEDULES for s in SPARSITIES},
              **{f"{sch}-0.8-ends": f"--prune-config {shlex.quote(KEEP_ENDS)} --schedule {sch}" for sch in SCHEDULES}},
    seeds=(0, 1),
    trial_flags="--patch-size 64 --epochs 3 --finetune-epochs 2",
    columns=("per_seed", "sparsity", "accuracy", "before", "time", "size", "gzip"),
)

# ---- kd-table: fine-tuning with and without distillation -----------------------------------------
KD_CONFIGS = ((4, 0.5), (4, 1), (1, 0.1), (1, 1), (4, 0.1))  # (T, alpha); 4:0.5 = the trial's defaults
KD_TABLE = Preset(
    doc="""Does distillation help the pruned student? Fine-tuning with and without KD, paired by seed.

    python -m benchmarks kd-table --seeds 0 1 2 --jobs 3 --only '*-pruned' '*-nokd' '*-kd4:1' '*-kd1:0.1' \\
        -- --patch-size 64 --epochs 3 --finetune-epochs 2

Per seed and sparsity: the pruned model before fine-tuning (S-pruned, --finetune-epochs 0),
fine-tuned without KD (S-nokd, the reference of its sparsity) and with KD at each T:alpha
(S-kdT:A). A seed fixes split, initial weights and data order, and at a fixed thread
count a trial is bit-for-bit reproducible on a CPU, so every cell of a seed fine-tunes
the same dense model: the column "Δ before pruning" must read 0.00 ± 0.00.""",
    variants={name: value for s in (0.8, 0.9) for name, value in {
        f"{s}-pruned": (f"--sparsity {s} --finetune-epochs 0 --kd false", f"{s}-nokd"),
        f"{s}-nokd": (f"--sparsity {s} --kd false", f"{s}-nokd"),
        **{f"{s}-kd{t:g}:{a:g}": (f"--sparsity {s} --kd true --kd-temperature {t} --kd-alpha {a}", f"{s}-nokd")
           for t, a in KD_CONFIGS}}.items()},
    reference="0.8-nokd",
    default=("*-pruned", "*-nokd", "*-kd4:0.5"),
    trial_flags="--schedule oneshot",
    columns=("before", "before_delta", "wins"),
)

# ---- precision-iou: does mixed_bfloat16 cost accuracy? ---------------------------------------------
PRECISION_IOU = Preset(
    doc="""Does mixed_bfloat16 cost accuracy? float32 vs mixed_bfloat16 trials, same seeds.

    python -m benchmarks precision-iou --seeds 0 1 2 --jobs 2

config.yml's trial flags (the default experiment), one thread a trial. Compare the
paired Δ with the spread between seeds (the sd of float32's own scores): the noise floor.
bfloat16 runs on any x86 CPU; without AVX512-BF16/AMX it is emulated and slow.""",
    variants={"float32": "--precision float32", "mixed_bfloat16": "--precision mixed_bfloat16"},
    reference="float32",
    config="config.yml",
    trial_flags="--threads 1",
    jobs=2,
    columns=("per_seed", "deltas", "before", "before_delta"),
)

# ---- channels: a thinner model that is as accurate? (its speed: quantization --models) ----------------
TARGET = "flops:0.35"
CHANNEL = "--prune-mode channel --schedule oneshot"
# per-level widths 8/16/40/80/152 (levels 1-5; multiples of 8, ~40 % of the channels): `python -m benchmarks widths`
# has them 2.0x faster than dense as float32 at 256 px, where uniform 40 % (10/20/39/77/154) is 1.5x
W40 = json.dumps([{"op_names_re": ["down[12]_", "up[34]_"], "sparsity": 0.5},
                  {"op_names_re": ["down[34]_", "up[12]_"], "sparsity": 0.375},
                  {"op_names_re": ["bottleneck_"], "sparsity": 0.40625}])
# the -init-d0 rows: trained from scratch (the dense schedule) without dropout
INIT_D0 = "--prune-mode channel --schedule init --channel-criterion l1 --dropout-rate 0"
# configs/compress.yml's rounding, its best trials' floor and its "level 1's encoder kept" layers
COMPRESS_D0 = (f"{INIT_D0} --channel-round 8 --channel-floor 0.4 --prune-config "
               f"'{json.dumps([{'op_types': ['default']}, {'exclude': True, 'op_names_re': ['down1_']}])}'")


def half_of(*layers_re: str) -> str:
    """--prune-config: these layers (op_names_re) lose half their channels, the rest stay whole."""
    return json.dumps([{"op_names_re": list(layers_re), "sparsity": 0.5}])


# -b256: the bottleneck whole (8/16/32/64/256): it holds a third of the weights and 2 % of the
# float32 time (`python -m benchmarks widths`); -w16: level 1 whole (16/16/32/64/128): every thin
# shape with 8 channels at full resolution trained to 0.877-0.884 (seed 0); -enc16 / -dec16: only
# level 1's encoder (down1_*, the skip) or its decoder (up4_*, what the head sees) whole
HALF_KEEPING = {"b256": half_of("down[1234]_", "up[1234]_"),
                "w16": half_of("down[234]_", "up[123]_", "bottleneck_"),
                "enc16": half_of("down[234]_", "up[1234]_", "bottleneck_"),
                "dec16": half_of("down[1234]_", "up[123]_", "bottleneck_")}
CHANNELS = Preset(
    doc="""Dense vs channel-pruned models at the converged budget: IoU, params, FLOPs, dead channels, paired by seed.

    python -m benchmarks channels --out runs/channels                 # the default rows, 3 seeds (~4.5 h, 2 cores)
    python -m benchmarks quantization --out runs/channels-speed \\
        --models dense=runs/channels/s0-dense/model.keras l1-50=runs/channels/s0-l1-50/model.keras ...
                                                                     # then float32/int8 img/s at 256 px, b1 and b8

l1-30/l1-50: today's uniform ratio (every layer loses that share of its channels, l1
ranking); flops-*: one global ranking of importance per FLOP down to 35 % of the dense
FLOPs (--prune-target, per-layer floors of 0.1; -floor50: of one half); apoz-* / mean-* rank by activations
(NNI's APoZ / mean-activation criteria) instead of weights;
recovery: -agp masks channels gradually through fine-tuning, -kd distils from the trial's
dense model; every fine-tuning rewinds the learning rate (cosine from --learning-rate).
init trains the thin model from scratch on the dense schedule; w40: per-level widths 8/16/40/80/152;
-d0: dropout 0 (dense-d0 is its dense trial: --reference dense-d0); -b256: the bottleneck kept whole;
-w16: level 1 kept whole (16 channels at full resolution); -enc16 / -dec16: only its encoder / decoder half;
compress-best / compress-d0-*: what configs/compress.yml found (before / since its dropout-0 space);
weight-80 is the weight-pruning default.""",
    variants={"dense": "--sparsity 0 --schedule oneshot",
              "l1-30": f"{CHANNEL} --sparsity 0.3 --channel-criterion l1",
              "l1-50": f"{CHANNEL} --sparsity 0.5 --channel-criterion l1",
              "apoz-50": f"{CHANNEL} --sparsity 0.5 --channel-criterion apoz",
              "mean-50": f"{CHANNEL} --sparsity 0.5 --channel-criterion mean_activation",
              "l1-30-agp": "--prune-mode channel --schedule agp --sparsity 0.3 --channel-criterion l1",
              "l1-50-agp": "--prune-mode channel --schedule agp --sparsity 0.5 --channel-criterion l1",
              "l1-50-kd": f"{CHANNEL} --sparsity 0.5 --channel-criterion l1 --kd true",
              "l1-30-init": "--prune-mode channel --schedule init --sparsity 0.3 --channel-criterion l1",
              "l1-50-init": "--prune-mode channel --schedule init --sparsity 0.5 --channel-criterion l1",
              "w40-init": f"--prune-mode channel --schedule init --prune-config '{W40}'",
              "flops-35": f"{CHANNEL} --prune-target {TARGET} --channel-criterion l1",
              "flops-35-apoz": f"{CHANNEL} --prune-target {TARGET} --channel-criterion apoz",
              "flops-35-floor50": f"{CHANNEL} --prune-target {TARGET} --channel-criterion l1 --channel-floor 0.5",
              "flops-35-agp": f"--prune-mode channel --schedule agp --prune-target {TARGET} --channel-criterion l1",
              "weight-80": "--prune-mode weight --sparsity 0.8 --schedule oneshot",
              "l1-50-init-d0": f"{INIT_D0} --sparsity 0.5",
              "dense-d0": "--sparsity 0 --schedule oneshot --dropout-rate 0",
              **{f"l1-50-{row}-init-d0": f"{INIT_D0} --prune-config '{config}'" for row, config in HALF_KEEPING.items()},
              # the best trial of configs/compress.yml (run povlsz8c, docs/compress.md): its latency:0.45
              # search ended at flops:0.1865 on that machine; the FLOPs target makes the same widths anywhere
              "compress-best": "--prune-mode channel --schedule init --prune-target flops:0.1865 --channel-floor 0.4 "
                               "--channel-criterion mean_activation --learning-rate 0.0015",
              # configs/compress.yml at dropout 0 (run q7d3ugy8, docs/compress.md): its best trial (level 1's
              # encoder kept, the rest at the 0.4 floor, the bisection adding bottleneck_conv2 channels:
              # latency:0.5 -> flops:0.2489) and its fastest within half a point (the floors alone)
              "compress-d0-best": f"{COMPRESS_D0} --prune-target flops:0.2489",
              "compress-d0-floor40": f"{COMPRESS_D0} --prune-target flops:0.237"},
    default=("dense", "l1-30", "l1-50", "l1-30-agp", "l1-50-agp", "l1-50-kd", "l1-30-init", "l1-50-init", "w40-init",
             "flops-35", "flops-35-floor50", "flops-35-agp"),
    # the quality preset's converged budget (24 validation images, 12 + 8 epochs at lr 2e-3)
    trial_flags="--patch-size 64 --learning-rate 2e-3 --epochs 12 --finetune-epochs 8 --builtin-tiles 24 "
                "--val-fraction 0.5",
    columns=("params", "mflops", "dead", "size", "time"),
    jobs=2,
)

# ---- grid: any variants, from the command line ------------------------------------------------------
GRID = Preset(
    doc="""Any grid: the variants given with --variant NAME=FLAGS x --seeds, paired with the first (or --reference).

    python -m benchmarks grid --variant 'lr2e-3=--learning-rate 2e-3' --variant 'lr1e-3=--learning-rate 1e-3' \\
        --seeds 0 1 2 -- --patch-size 64""",
    variants={},
    reference="",
    columns=("per_seed", "worst", "wins", "time"),
)
