"""The trial's typed parameter set: defaults, command-line flags and NNI's
parameters all land in one `Params`, validated before TensorFlow does any work.

Precedence: defaults < command-line flags < what the tuner sends.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from .cli import FLAG_STYLE, normalize_flags
from .data.palette import DEFAULT_TOLERANCE
from .data.pipeline import DEFAULT_PATCH_SIZE
from .errors import ParamError
from .files import parse_json, read_json

SCHEDULES = ("init", "oneshot", "agp")
PRUNE_MODES = ("weight", "channel")
WEIGHT_CRITERIA = ("l1", "l2", "fpgm")            # ranked from the kernels
ACTIVATION_CRITERIA = ("apoz", "mean_activation")  # ranked from activations on calibration patches
CRITERIA = WEIGHT_CRITERIA + ACTIVATION_CRITERIA
ARCHITECTURES = ("seed", "bn", "leaky")  # segmodel.model
ALLOCATIONS = ("global", "uniform")  # segmodel.compress.pruning.Pruner
FINETUNE_LRS = ("cosine", "constant")
KD_BALANCES = ("pixels", "classes")  # segmodel.compress.distill.kd_loss
OBJECTIVES = ("accuracy", "iou")
DEPLOY_FORMATS = ("float32", "int8")  # segmodel.deploy.latency_probe
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def _p(default, help, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Params:
    # Class weights for DiceLoss, one per class (Building, Land, Road, Vegetation,
    # Water, Unlabeled); normalized to sum 1 before use.
    weight1: float = _p(1 / 6, "class weight: Building")
    weight2: float = _p(1 / 6, "class weight: Land")
    weight3: float = _p(1 / 6, "class weight: Road")
    weight4: float = _p(1 / 6, "class weight: Vegetation")
    weight5: float = _p(1 / 6, "class weight: Water")
    weight6: float = _p(1 / 6, "class weight: Unlabeled")
    architecture: str = _p("bn", "U-Net variant: bn (BatchNorm after each conv: no dead units) | seed (the seed's "
                                 "exact model, conv+ReLU) | leaky (LeakyReLU); docs/units.md", choices=ARCHITECTURES)
    dropout_rate: float = _p(0.1, "dropout between the two convs of each U-Net block")
    learning_rate: float = _p(1e-3, "Adam learning rate")
    batch_size: int = _p(8, "patches per training step")
    epochs: int = _p(4, "epochs of training before pruning (oneshot, agp), or before fine-tuning (init)")
    finetune_epochs: int = _p(2, "epochs of fine-tuning, its learning rate rewound (--finetune_lr)")
    sparsity: float = _p(0.8, "fraction of weights zeroed (weight mode) or of output channels removed (channel "
                              "mode) in every pruned layer (0 = no pruning)")
    prune_mode: str = _p("weight", "weight: zero single weights (same-size model) | channel: remove whole "
                                   "filters and rebuild a thinner, faster model", choices=PRUNE_MODES)
    channel_criterion: str = _p("l1", "channel mode: which filters go first: " + " | ".join(CRITERIA)
                                + " (NNI's L1Norm/L2Norm/FPGM pruners, ActivationAPoZRank/ActivationMeanRank: "
                                "measured on calibration_patches training patches; channels that never fire go "
                                "first)", choices=CRITERIA)
    calibration_patches: int = _p(256, "activation criteria and prune_target: training patches the activations are "
                                       "measured on")
    prune_target: str = _p("", "channel mode: prune to a cost, not a uniform ratio: flops:F (0 < F < 1) = the thin "
                               "model keeps at most F of the dense model's FLOPs (multiply-adds of one forward "
                               "pass), reached by one global ranking of the channels of the layers config_list "
                               "selects (their sparsity values are not used); latency:L = at most L of the dense "
                               "float32 model's TFLite latency at deploy_size on this machine (deploy_format's "
                               "file, measured: the largest flops:F that meets it); empty = each layer's "
                               "sparsity. docs/channels.md")
    channel_floor: float = _p(0.1, "prune_target: every pruned layer keeps at least this fraction of its channels "
                                   "(and at least 1); channels that never fire on the calibration patches may go "
                                   "below it")
    channel_round: int = _p(1, "channel mode: every pruned layer keeps a multiple of this many channels "
                               "(rounded down, at least this many; Torch-Pruning's round_to): 8 fits XNNPACK's "
                               "float32 kernels, docs/channels.md; 1 = no rounding")
    allocation: str = _p("global", "weight mode: how sparsity is shared between layers: global (one magnitude "
                                   "ranking per config_list entry, first and last weighted layer kept dense if "
                                   "small and not named in op_names) | uniform (every layer alike, as NNI's "
                                   "LevelPruner)",
                         choices=ALLOCATIONS)
    schedule: str = _p("oneshot", "when to prune: " + " | ".join(SCHEDULES), choices=SCHEDULES)
    prune_config: str = _p("", "NNI config_list as JSON (overrides --sparsity), or a path to a JSON file")
    agp_steps: int = _p(0, "AGP: optimizer steps from 0 to the target sparsity "
                           "(0 = the first half of fine-tuning; the rest recovers)")
    agp_frequency: int = _p(10, "AGP: recompute masks every N steps")
    finetune_lr: str = _p("cosine", "fine-tuning learning rate: cosine (decays from learning_rate to 0) | constant",
                          choices=FINETUNE_LRS)
    kd: bool = _p(False, "fine-tune the pruned student with knowledge distillation from its teacher")
    kd_temperature: float = _p(4.0, "distillation temperature T")
    kd_alpha: float = _p(0.5, "weight of the distillation term: (1 - alpha) * task + alpha * T^2 * KL")
    kd_balance: str = _p("classes", "how the KL is averaged: classes (each true class's pixels alike, as the Dice "
                                    "term weighs them) | pixels (every pixel alike, Hinton's)", choices=KD_BALANCES)
    teacher: str = _p("", "path to a saved teacher model.keras (default: the trial's dense model)")
    patch_size: int = _p(DEFAULT_PATCH_SIZE, "square patch side in pixels")
    patch_stride: int = _p(0, "stride between patches (0 = patch_size, no overlap)")
    val_fraction: float = _p(0.25, "fraction of source images held out for validation")
    augment: bool = _p(False, "random flips and 90-degree rotations of training patches")
    data_dir: str = _p("", "dataset root (Dubai or flat layout); empty = built-in synthetic set ($SEGMODEL_DATA_DIR)")
    builtin_tiles: int = _p(0, "size of the built-in synthetic set in tiles of 2 images "
                               "(0 = the standard 6; without data_dir)")
    palette: str = _p("", "JSON file mapping class name to mask hex colour (default: Dubai palette)")
    palette_tolerance: float = _p(DEFAULT_TOLERANCE, "fraction of a mask's pixels allowed outside the palette (mapped to Unlabeled); more fails")
    seed: int = _p(0, "random seed for data split, weights and shuffling")
    deterministic: bool = _p(False, "enable TensorFlow op determinism (slower, bit-reproducible)")
    objective: str = _p("accuracy", "what `default` reports: " + " | ".join(OBJECTIVES), choices=OBJECTIVES)
    deploy_size: int = _p(0, "after training, time the shipped model as TFLite (float32 and int8, batch 1, "
                             "XNNPACK) at this square size against the dense model on this machine: reports "
                             "latency_ms and speedup (0 = don't)")
    deploy_format: str = _p("float32", "which TFLite file latency_ms and speedup describe: "
                                       + " | ".join(DEPLOY_FORMATS), choices=DEPLOY_FORMATS)
    min_speedup: float = _p(0.0, "speed budget: default = objective * min(1, speedup / min_speedup) "
                                 "(needs deploy_size; 0 = no budget)")
    precision: str = _p("auto", "compute precision: " + " | ".join(PRECISIONS), choices=PRECISIONS)
    threads: int = _p(0, "TensorFlow intra-op threads (0 = cores / concurrent trials)")
    output_dir: str = _p("", "where artifacts go (default: NNI's trial output dir, else ./out)")

    # ---- derived values -------------------------------------------------
    @property
    def class_weights(self) -> list[float]:
        """The six weights normalized to sum 1, as the DiceLoss gets them."""
        w = [self.weight1, self.weight2, self.weight3, self.weight4, self.weight5, self.weight6]
        total = sum(w)
        return [x / total for x in w]

    @property
    def flops_target(self) -> float | None:
        """F of `--prune_target flops:F`, or None (no target, or a latency one)."""
        kind, value = parse_prune_target(self.prune_target)
        return value if kind == "flops" else None

    @property
    def latency_target(self) -> float | None:
        """L of `--prune_target latency:L`, or None."""
        kind, value = parse_prune_target(self.prune_target)
        return value if kind == "latency" else None

    @property
    def config_list(self) -> list[dict]:
        """NNI-style pruning config: --prune_config if given, else the seed's
        `[{'sparsity': s, 'op_types': ['default']}]` (with a prune_target: which layers only)."""
        if not self.prune_config and self.prune_target:
            return [{"op_types": ["default"]}]
        if not self.prune_config:
            return [{"sparsity": self.sparsity, "op_types": ["default"]}] if self.sparsity > 0 else []
        text = self.prune_config
        if text.lstrip().startswith("["):
            value = parse_json(text, "prune_config", ParamError)
        else:
            value = read_json(text, "prune_config", ParamError)
        if not isinstance(value, list):
            raise ParamError("prune_config: must be a JSON list of dicts, as NNI's config_list")
        return value

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- validation ------------------------------------------------------
    def validate(self) -> "Params":
        """Raise ParamError (one line) on the first invalid value."""
        def need(ok: bool, msg: str):
            if not ok:
                raise ParamError(msg)

        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float):
                need(math.isfinite(v), f"{f.name} must be a finite number, got {v}")
        weights = [self.weight1, self.weight2, self.weight3, self.weight4, self.weight5, self.weight6]
        need(all(w >= 0 for w in weights), f"class weights must be >= 0, got {weights}")
        need(sum(weights) > 0, "class weights must not all be zero")
        need(0 <= self.dropout_rate < 1, f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        need(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        need(0 <= self.sparsity < 1, f"sparsity must be in [0, 1), got {self.sparsity}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.finetune_epochs >= 0, f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        need(self.patch_size >= 16 and self.patch_size % 16 == 0,
             f"patch_size must be a multiple of 16 (the U-Net pools 4 times), got {self.patch_size}")
        need(self.patch_stride >= 0, f"patch_stride must be >= 0, got {self.patch_stride}")
        need(0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}")
        need(0 <= self.palette_tolerance < 1, f"palette_tolerance must be in [0, 1), got {self.palette_tolerance}")
        need(self.kd_temperature > 0, f"kd_temperature must be > 0, got {self.kd_temperature}")
        need(0 <= self.kd_alpha <= 1, f"kd_alpha must be in [0, 1], got {self.kd_alpha}")
        need(self.agp_steps >= 0, f"agp_steps must be >= 0, got {self.agp_steps}")
        need(self.agp_frequency >= 1, f"agp_frequency must be >= 1, got {self.agp_frequency}")
        need(self.builtin_tiles >= 0, f"builtin_tiles must be >= 0, got {self.builtin_tiles}")
        need(self.calibration_patches >= 0, f"calibration_patches must be >= 0, got {self.calibration_patches}")
        need(not (self.prune_mode == "channel" and self.channel_criterion in ACTIVATION_CRITERIA
                  and self.calibration_patches < 1),
             f"channel_criterion {self.channel_criterion} ranks by activations and needs calibration data: "
             "calibration_patches must be >= 1")
        need(self.threads >= 0, f"threads must be >= 0, got {self.threads}")
        need(self.deploy_size == 0 or (self.deploy_size >= 16 and self.deploy_size % 16 == 0),
             f"deploy_size must be 0 or a multiple of 16, got {self.deploy_size}")
        need(self.min_speedup >= 0, f"min_speedup must be >= 0, got {self.min_speedup}")
        need(not (self.min_speedup and not self.deploy_size),
             "min_speedup is a budget on the measured speedup: give --deploy-size too (e.g. 256)")
        need(0 <= self.channel_floor <= 1, f"channel_floor must be in [0, 1], got {self.channel_floor}")
        need(self.channel_round >= 1, f"channel_round must be >= 1, got {self.channel_round}")
        need(self.channel_round == 1 or self.prune_mode == "channel",
             f"channel_round needs prune_mode channel (weight pruning keeps every channel); got {self.prune_mode}")
        need(not self.prune_target or self.prune_mode == "channel",
             f"prune_target needs prune_mode channel (weight pruning removes no FLOPs); got {self.prune_mode}")
        need(not (self.latency_target and not self.deploy_size),
             "prune_target latency:L is measured at the deploy size: give --deploy-size too (e.g. 256)")
        for f in fields(self):
            choices = f.metadata.get("choices")
            v = getattr(self, f.name)
            need(choices is None or v in choices, f"{f.name} must be one of {', '.join(choices or ())}; got {v!r}")
        need(not (self.kd and self.schedule == "init" and not self.teacher),
             "kd needs a teacher: with schedule init there is no dense model, so give --teacher path/model.keras")
        config_list = self.config_list  # parses prune_config, raising ParamError if malformed
        if self.prune_target:
            selection_only(config_list)
        return self

    # ---- sources -----------------------------------------------------------
    def update(self, values: Mapping[str, Any], source: str) -> "Params":
        """Overlay `values` (from NNI or a file), converting types; unknown names are an error."""
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ParamError(f"unknown parameter{'s' * (len(unknown) > 1)} {', '.join(unknown)} from {source}; "
                             f"known: {', '.join(known)}")
        for name, raw in values.items():
            setattr(self, name, _convert(known[name], raw, source))
        return self


PRUNE_TARGETS = ("flops", "latency")


def parse_prune_target(text: str) -> tuple[str | None, float | None]:
    """`flops:F` / `latency:L` -> (kind, fraction in (0, 1)); '' -> (None, None); anything
    else a one-line ParamError."""
    if not text.strip():
        return None, None
    kind, colon, value = (part.strip() for part in text.strip().partition(":"))
    try:
        fraction = float(value) if kind in PRUNE_TARGETS and colon else math.nan
    except ValueError:
        fraction = math.nan
    if not 0 < fraction < 1:
        raise ParamError(f"prune_target must be flops:F or latency:L with 0 < F, L < 1; got {text!r}")
    return kind, fraction


def selection_only(config_list: list) -> None:
    """With a prune_target the config_list chooses layers; a sparsity in it would say something else."""
    for i, entry in enumerate(config_list):
        if isinstance(entry, dict) and not entry.get("exclude") and {"sparsity", "sparsity_per_layer"} & set(entry):
            raise ParamError(f"config_list[{i}] gives a sparsity, but with prune_target the entries only select "
                             "layers (op_types, op_names, exclude) and the target sets how much goes: drop one")


def _convert(f: dataclasses.Field, raw: Any, source: str):
    """Coerce one value to the field's type (NNI sends choice values as they appear in JSON)."""
    kind = type(f.default)
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, (int, float)) and raw in (0, 1):
                return bool(raw)
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            if isinstance(raw, str):
                value = float(raw)
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(raw)
        if kind is float:
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if isinstance(raw, (list, dict)):  # e.g. a prune_config choice in search_space.json
            return json.dumps(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ParamError(f"{f.name} from {source}: expected {kind.__name__}, got {raw!r}") from None


class _OneLineParser(argparse.ArgumentParser):
    """Flag errors in one line, like every other parameter error (usage is in --help)."""

    def error(self, message):
        if message.startswith("unrecognized arguments"):
            message += "; known: " + ", ".join("--" + f.name.replace("_", "-") for f in fields(Params))
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser(prog: str = "trial.py") -> argparse.ArgumentParser:
    """Every parameter is a flag of the same name (`--learning-rate 0.001`)."""
    parser = _OneLineParser(
        prog=prog, allow_abbrev=False,
        description="Train, prune and evaluate the multi-class U-Net once (one NNI trial). Progress goes "
                    "to stderr; stdout gets the final metrics as one JSON object.",
        epilog=FLAG_STYLE.replace("`", ""),
    )
    for f in fields(Params):
        metavar = "BOOL" if type(f.default) is bool else None
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=argparse.SUPPRESS, metavar=metavar,
                            help=f"{f.metadata['help']} (default: {_shown(f.default)})")
    return parser


def _shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def parse_flags(argv: list[str] | None = None, prog: str = "trial.py") -> dict[str, Any]:
    """The flags given on the command line only (not defaults), as raw strings; `--a_b`
    and `--a-b` are the same flag (cli.normalize_flags)."""
    argv = sys.argv[1:] if argv is None else argv
    return vars(build_parser(prog).parse_args(normalize_flags(argv)))


def command_flags(command: str) -> list[str]:
    """The trial flags of a command line `python3 trial.py FLAGS` (an NNI config's trialCommand)."""
    words = shlex.split(command)
    at = next((i for i, w in enumerate(words) if w.endswith("trial.py")), None)
    return words[at + 1:] if at is not None else []


def from_saved(values: Mapping[str, Any], source: str) -> Params:
    """A trial's Params from its params.json; names an older version had and this one
    retired are ignored (new ones get their defaults; a trial saved before `architecture`
    existed trained the seed's model)."""
    known = {f.name for f in fields(Params)}
    values = {"architecture": "seed", **values}
    return Params().update({k: v for k, v in values.items() if k in known}, source)


def resolve(flags: Mapping[str, Any] | None = None, tuned: Mapping[str, Any] | None = None) -> Params:
    """defaults < flags < tuner, validated."""
    params = Params()
    if flags:
        params.update(flags, "command line")
    if tuned:
        params.update(tuned, "NNI search space")
    params.validate()
    if params.prune_target and "sparsity" in {**(flags or {}), **(tuned or {})}:
        raise ParamError(f"give sparsity or prune_target, not both: with prune_target {params.prune_target} "
                         "the target decides how many channels go")
    return params

