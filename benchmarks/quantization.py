"""`python -m benchmarks quantization`: which TFLite form is fastest, and what does it cost in
mean IoU? float32, float16, dynamic-range int8 and full int8 of a dense, a weight-pruned
80 %, and channel-pruned 30 % and 50 % model, converted as `export` converts them.

The models are real trials (`python -m segmodel train`, one folder each under OUT, a
finished one reused; or `--models NAME=model.keras ...`). Each form's file at the patch
size is run over the validation set for its mean IoU; then every form of every model,
converted again at --side px (batch 1 and 8, fixed shapes as export writes them), is
timed through the runner `predict` uses, all of them in the same interleaved rounds in
this one process (a busy CPU slows them alike: quote the ratios). Which runtime ran each
file (XNNPACK whole, partly, or TFLite's own kernels) is read from the interpreter.

    python -m benchmarks quantization --out runs/quantization            # 4 trials, then the table
    python -m benchmarks quantization --out runs/q --models dense=a/model.keras ch50=b/model.keras
    python -m benchmarks quantization --out /tmp/q --quick               # checks every stage runs

Targets (issue 22): full int8 >= 2x float32 images/s for the dense model at --side px,
batch 1 and 8; <= 0.5 point mean IoU lost int8 vs float32 on the 24-image validation set
(`--builtin_tiles 24 --val_fraction 0.5`, the trials' data).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROWS = {  # model name -> trial flags (on top of the budget's)
    "dense": {"sparsity": 0},
    "weight 80%": {"prune_mode": "weight", "sparsity": 0.8},
    "channel 30%": {"prune_mode": "channel", "sparsity": 0.3},
    "channel 50%": {"prune_mode": "channel", "sparsity": 0.5},
}
FORMS = ("float32", "float16", "dynamic", "int8", "int8, int8 softmax")
INT8_SOFTMAX = "int8, int8 softmax"   # export --int8-output int8: for integer-only accelerators
# the converged budget of docs/pruning.md on its 24-image validation set
FULL = dict(trial={"patch_size": 64, "epochs": 12, "finetune_epochs": 8, "learning_rate": 2e-3,
                   "builtin_tiles": 24, "val_fraction": 0.5},
            side=256, batches=(1, 8), rounds=7, calibration=128, speed_calibration=16)
QUICK = dict(trial={"patch_size": 32, "epochs": 1, "finetune_epochs": 1, "builtin_tiles": 2, "val_fraction": 0.5},
             side=64, batches=(1, 2), rounds=1, calibration=8, speed_calibration=2)
SPEED_TARGET, IOU_TARGET = 2.0, 0.5
BEFORE = "dense, free batch (the old export)"   # timed only: what export wrote before issue 22
BEFORE_FORMS = ("float32", "dynamic", "int8")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="trial folders, results.json and table.md go here")
    p.add_argument("--models", nargs="+", default=None, metavar="NAME=PATH",
                   help="time these model.keras files instead of training the four rows "
                        "(validation data from the budget's data flags)")
    p.add_argument("--seed", type=int, default=0, help="training seed and data split (default 0)")
    p.add_argument("--side", type=int, default=None, help="input side of the timed files (default 256)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 7)")
    p.add_argument("--threads", type=int, default=0, help="TFLite threads (default: every core)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the bench runs, numbers meaningless")


def main(args) -> int:
    from segmodel.errors import ParamError

    from .table import publish

    budget = dict(QUICK if args.quick else FULL)
    budget.update({k: getattr(args, k) for k in ("side", "rounds") if getattr(args, k)})
    if budget["side"] % 16:
        raise ParamError(f"--side must be a multiple of 16, got {budget['side']}")
    models = dict(_named(m) for m in args.models) if args.models else None
    out = Path(args.out)
    result = run(out, budget, args.seed, models, args.threads or None)
    publish(out, result, format_table(result))
    return 0


def _named(spec: str) -> tuple[str, Path]:
    from segmodel.errors import ParamError
    name, eq, path = spec.partition("=")
    if not eq or not name or not Path(path).is_file():
        raise ParamError(f"--models takes NAME=path/to/model.keras with an existing file, got {spec!r}")
    return name, Path(path)


def _log(msg: str) -> None:
    print(f"[bench quantization] {msg}", file=sys.stderr, flush=True)


def train(out: Path, budget: dict, seed: int) -> dict[str, Path]:
    """Each row's trial (the public trial command), reused when finished; name -> model.keras."""
    from .grid import folder, run_cell
    paths = {}
    for name, flags in ROWS.items():
        cell = {**budget["trial"], **flags}
        argv = [str(x) for key, value in cell.items() for x in (f"--{key}", value)] + ["--seed", str(seed)]
        variant = name.replace(" ", "-").replace("%", "")
        run_cell(out, seed, variant, argv)
        paths[name] = folder(out, seed, variant) / "model.keras"
    return paths


def run(out: Path, budget: dict, seed: int, models: dict | None, threads: int | None) -> dict:
    import keras

    from segmodel import data as datasets
    from segmodel.deploy import amx
    from segmodel.deploy.export import evaluate_file
    from segmodel.deploy.quantize import float32_model, representative_images
    from segmodel.params import resolve

    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    paths = models or train(out, budget, seed)
    amx.refuse()  # after the trials (bf16 training wants AMX), before the first interpreter
    keras.mixed_precision.set_global_policy("float32")
    splits = datasets.load(resolve({**budget["trial"], "seed": seed}))
    _log(f"{splits.n_val} validation patches of {splits.patch_size}px")
    calibration = lambda n: (lambda: representative_images(splits, n))  # noqa: E731
    rows = {}
    for name, path in paths.items():
        model = float32_model(keras.models.load_model(path, compile=False))
        _log(f"{name}: converting {', '.join(FORMS)} at {splits.patch_size}px and measuring mean IoU...")
        files = convert_forms(model, calibration(budget["calibration"]))
        rows[name] = {"model": str(path), "params": model.count_params(), "forms": {}}
        for form, conv in files.items():
            scores = evaluate_file(_runner(conv.content, threads), splits)
            rows[name]["forms"][form] = {"bytes": len(conv.content), "val_iou": scores["iou"],
                                         "floored": len(conv.floored), **_runtime(scores["runner"])}
        f32 = rows[name]["forms"]["float32"]["val_iou"]
        for form in rows[name]["forms"].values():
            form["iou_delta_points"] = round(100 * (form["val_iou"] - f32), 3)
    speed = time_all(paths, budget, threads, calibration(budget["speed_calibration"]))
    for (name, form, batch), cell in speed.items():
        row = rows.setdefault(name, {"model": rows.get("dense", {}).get("model"), "forms": {}})
        row["forms"].setdefault(form, {}).setdefault("speed", {})[f"b{batch}"] = cell
    return {"budget": {k: list(v) if isinstance(v, tuple) else v for k, v in budget.items()}, "seed": seed,
            "machine": _machine(threads), "validation_patches": splits.n_val,
            "seconds": round(time.time() - started), "rows": rows, "targets": targets(rows, budget)}


def convert_forms(model, images, batch: int = 1, side: int | None = None) -> dict:
    """Every form of `model` as export converts it, from one fixed-shape SavedModel."""
    import tempfile

    from segmodel.deploy.quantize import convert_saved_model, static_saved_model
    with tempfile.TemporaryDirectory() as tmp:
        shape = static_saved_model(model, Path(tmp), batch, side)
        return {form: convert_saved_model(Path(tmp), "int8" if form == INT8_SOFTMAX else form, images, shape,
                                          int8_output="int8" if form == INT8_SOFTMAX else "float")
                for form in FORMS}


def convert_free_batch(model, images, side: int) -> dict:
    """The old export: a SavedModel with an unknown batch (the transpose convs' output shapes
    computed at run time), int8 with the converter's own calibration and an int8 softmax."""
    import tempfile

    from segmodel.deploy.quantize import at_size, convert_saved_model, int8
    with tempfile.TemporaryDirectory() as tmp:
        at_size(model, side).export(tmp, format="tf_saved_model", verbose=False)
        shape = (1, side, side, int(model.input_shape[-1]))  # calibration images tiled to the side
        return {form: int8(Path(tmp), images, shape, floor=False, int8_output="int8") if form == "int8"
                else convert_saved_model(Path(tmp), form) for form in BEFORE_FORMS}


def _runner(content: bytes, threads):
    from segmodel.deploy.runners import TFLiteRunner
    return TFLiteRunner(content, threads=threads)


def _runtime(runner) -> dict:
    d = runner.delegation
    return {"runtime": d["runtime"], "delegated_ops": d["delegated_ops"], "ops": d["ops"]}


def time_all(paths: dict, budget: dict, threads, calibration) -> dict:
    """(model, form, batch) -> img/s and runtime: every form of every model at the side,
    one batch size at a time, all of that batch's files in the same rounds."""
    import keras

    from segmodel.deploy.quantize import float32_model
    from segmodel.deploy.speed import images_per_second
    side, cells = budget["side"], {}
    for batch in budget["batches"]:
        runners = {}
        for name, path in paths.items():
            model = float32_model(keras.models.load_model(path, compile=False))
            _log(f"{name}: converting at {side}px batch {batch}...")
            for form, conv in convert_forms(model, calibration, batch, side).items():
                runners[(name, form)] = _runner(conv.content, threads)
            if name == "dense":
                for form, conv in convert_free_batch(model, calibration, side).items():
                    runners[(BEFORE, form)] = _runner(conv.content, threads)
        _log(f"timing {len(runners)} files at {side}px batch {batch}, {budget['rounds']} rounds")
        for (name, form), ips in images_per_second(runners, batch, budget["rounds"]).items():
            cells[(name, form, batch)] = {"img_s": ips, **_runtime(runners[(name, form)])}
        del runners
    return cells


def _machine(threads) -> dict:
    import platform

    import tensorflow as tf

    from segmodel.deploy import amx
    from segmodel.deploy.runners import tflite_interpreter_class
    from segmodel.runtime import available_cores as _cores
    from segmodel.runtime import cpu_name
    return {"cpu": cpu_name(), "amx": amx.state(), "cores": _cores(), "tflite_threads": threads or _cores(),
            "tflite_runtime": tflite_interpreter_class().__module__, "tensorflow": tf.__version__,
            "python": platform.python_version(), "load_avg_1m": round(os.getloadavg()[0], 2)}


def targets(rows: dict, budget: dict) -> list[dict]:
    """Issue 22's targets: int8 vs float32 speed of the dense model, int8's IoU cost per model."""
    found = []
    dense = rows.get("dense") or next(iter(rows.values()))
    for b in budget["batches"]:
        f32, i8 = (dense["forms"][f].get("speed", {}).get(f"b{b}", {}).get("img_s") for f in ("float32", "int8"))
        if f32 and i8:
            found.append({"target": f"full int8 / float32 img/s, dense, {budget['side']}px batch {b}",
                          "value": round(i8 / f32, 2), "goal": f">= {SPEED_TARGET:g}", "met": i8 / f32 >= SPEED_TARGET})
    for name, row in rows.items():
        if name == BEFORE:
            continue
        delta = row["forms"]["int8"]["iou_delta_points"]
        found.append({"target": f"mean IoU, int8 - float32, {name} (points)", "value": delta,
                      "goal": f">= -{IOU_TARGET:g}", "met": delta >= -IOU_TARGET})
    return found


def format_table(r: dict) -> str:
    """One Markdown row per (model, form): size, IoU, runtime, img/s per batch with the
    ratio to the dense model's float32 file at that batch; then the machine and targets."""
    batches = r["budget"]["batches"]
    side = r["budget"]["side"]
    rows = r["rows"]
    base_name = "dense" if "dense" in rows else next(iter(rows))
    base = {b: rows[base_name]["forms"]["float32"].get("speed", {}).get(f"b{b}", {}).get("img_s") for b in batches}
    head = ["model", "form", "MB", "val mean IoU", "Δ vs its float32 (pt)", "runtime (ops delegated)"]
    head += [f"img/s {side}px b{b} (× {base_name} float32)" for b in batches]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|---:|---|" + "---:|" * len(batches)]
    for name, row in rows.items():
        for form, f in row["forms"].items():
            measured = "val_iou" in f  # the old export's files are only timed
            cells = [name, form, f"{f['bytes'] / 1e6:.2f}" if measured else "",
                     f"{f['val_iou']:.4f}" if measured else "",
                     "—" if form == "float32" or not measured else f"{f['iou_delta_points']:+.2f}",
                     _runtime_cell(f, batches)]
            for b in batches:
                s = f.get("speed", {}).get(f"b{b}")
                cells.append("" if not s else f"{s['img_s']:.1f} ({s['img_s'] / base[b]:.2f}×)" if base[b]
                             else f"{s['img_s']:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
    m, t = r["machine"], r["budget"]["trial"]
    lines += ["", f"Trials: {t} seed {r['seed']}; {r['validation_patches']} validation patches; int8: "
              "softmax head in float32 (export's default), `int8, int8 softmax`: export --int8-output int8. "
              f"TFLite via {m['tflite_runtime']}, {m['tflite_threads']} threads, "
              f"median of {r['budget']['rounds']} interleaved rounds; {m['cores']} cores, {m['cpu']}, "
              f"AMX: {m.get('amx', '?')}, load {m['load_avg_1m']}; {r['seconds']} s.", "",
              "| target | measured | goal | met |", "|---|---|---|---|"]
    lines += [f"| {x['target']} | {x['value']} | {x['goal']} | {'✔' if x['met'] else '✘'} |" for x in r["targets"]]
    return "\n".join(lines)


def _runtime_cell(f: dict, batches) -> str:
    """The validation file's runtime, and the timed files' where they differ."""
    seen = [f"{f['runtime']} {f['delegated_ops']}/{f['ops']}"] if "runtime" in f else []
    for b in batches:
        s = f.get("speed", {}).get(f"b{b}")
        if s and f"{s['runtime']} {s['delegated_ops']}/{s['ops']}" not in seen:
            seen.append(f"{'b' + str(b) + ': ' if seen else ''}{s['runtime']} {s['delegated_ops']}/{s['ops']}")
    return ", ".join(seen) + (f"; {f['floored']} range(s) floored" if f.get("floored") else "")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quantization", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    from segmodel.errors import SegmodelError
    try:
        sys.exit(main(parser.parse_args()))
    except SegmodelError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
