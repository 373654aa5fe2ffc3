"""`python -m segmodel bench` (no name, or `stages`): where a trial's time goes, side by side in one process.

Every figure is taken in this process, on the built-in dataset, with the variants of
a comparison interleaved in rounds so that a shared, noisy CPU slows them alike: the
ratios are the figures to quote, the absolute numbers are this machine's.

    python -m segmodel bench            # full run, ~1 min on 2 idle cores
    python -m segmodel bench --quick    # seconds of work: checks that every stage runs
    python -m segmodel bench --json     # one JSON document on stdout (the table goes to stderr)

Sections: fixed cost of a trial (measured first, from this process's start, doing
what a trial does); data pipeline alone; training images/s dense vs pruned in
float32 and mixed_bfloat16; achieved GFLOP/s against a large matmul; the seed's way
(numpy arrays, fit(batch_size=8), NNI 2.x's eager mask re-application) against ours;
inference dense / pruned / TFLite; peak memory; the speed targets, met or not.

TensorFlow, Keras and segmodel's own modules are imported inside the functions on
purpose: the first section times those very imports, from this process's start.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time

FULL = dict(patch_size=64, batch_size=8, steps=12, rounds=3, baseline_steps=6, infer_batches=12,
            matmul_n=2048, data_epochs=2)
QUICK = dict(patch_size=32, batch_size=4, steps=3, rounds=1, baseline_steps=2, infer_batches=2,
             matmul_n=256, data_epochs=1)
COMPARED = ("float32", "mixed_bfloat16")  # the precisions timed side by side (params.COMPARED: what a trial accepts)
SPARSITY = 0.8  # the seed's config_list


def add_arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the bench runs, numbers meaningless")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout (table to stderr)")
    p.add_argument("--patch_size", type=int, default=None, help="patch side (default 64, the experiment's)")
    p.add_argument("--batch_size", type=int, default=None, help="patches per step (default 8, the seed's)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0 = cores / concurrency)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the seed-style eager baseline (the slowest section)")


def main(args) -> int:
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("patch_size", "batch_size"):
        if getattr(args, key):
            sizes[key] = getattr(args, key)
    import contextlib
    # stdout carries only the JSON: libraries that print on import (segmentation_models) go to stderr
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        result = run(sizes, threads=args.threads, baseline=args.baseline, quick=args.quick)
    table = format_table(result)
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(result, indent=2))
    else:
        print(table)
    return 0


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _rss_mb() -> dict:
    import psutil
    return {"rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


# ---- 1. fixed cost: process start to first training step ---------------------------------

def fixed_cost(params) -> tuple[dict, object]:
    """Do what trial.py does, in this (fresh) process, stamping each stage. The clock
    starts when the OS created the process, so interpreter start-up counts.
    nni is imported as a trial inside NNI imports it (outside NNI a trial skips it)."""
    import psutil

    me = psutil.Process()
    created = me.create_time()
    stamps = [("interpreter + CLI", time.time(), sum(me.cpu_times()[:2]))]

    def stamp(name):
        stamps.append((name, time.time(), sum(me.cpu_times()[:2])))

    try:
        import nni  # noqa: F401
        stamp("import nni (NNI trials only)")
    except ImportError:
        stamp("import nni (not installed)")
    import keras  # noqa: F401
    import tensorflow as tf  # noqa: F401
    stamp("import tensorflow + keras")
    from .. import data as datasets, runtime, train  # noqa: F401
    from ..losses import task_loss  # noqa: F401  (segmentation_models)
    from ..model import multi_unet_model
    from ..pruning import Pruner  # noqa: F401
    stamp("import segmodel + segmentation_models")
    precision = runtime.configure(params)
    splits = datasets.load(params)
    next(iter(splits.train))
    stamp("data: scan, split, first batch")
    model = multi_unet_model(params.dropout_rate, splits.n_classes, params.patch_size, params.patch_size, 3)
    trainer = train.compile_trainer(model, params, splits.n_classes)
    runtime.build_before_tracing(trainer, splits.train.element_spec)  # as a trial's fit does
    stamp("model build + compile")
    trainer.fit(splits.train.take(1), epochs=1, verbose=0, shuffle=False)
    stamp("first training step (tracing + 1 step)")
    t = time.perf_counter()
    trainer.fit(splits.train.take(1), epochs=1, verbose=0, shuffle=False)
    steady = time.perf_counter() - t

    stages, cpu, prev, prev_cpu = {}, {}, created, 0.0
    for name, at, used in stamps:
        stages[name], cpu[name] = round(at - prev, 2), round(used - prev_cpu, 2)
        prev, prev_cpu = at, used
    total = round(stamps[-1][1] - created, 2)
    without_nni = round(total - sum(v for k, v in stages.items() if k.startswith("import nni")), 2)
    return {"stages_s": stages, "stages_cpu_s": cpu, "total_s": total, "total_cpu_s": round(stamps[-1][2], 2),
            "total_without_nni_s": without_nni,
            "later_fit_call_1_step_s": round(steady, 3), "precision": precision,
            "threads": params.threads or runtime.default_threads(), **_rss_mb()}, splits


# ---- 2. the data pipeline alone ---------------------------------------------------------------

def data_throughput(splits, epochs: int) -> dict:
    """Images/s the training pipeline delivers with no model attached: the first epoch
    decodes from disk, later ones may come from its in-memory cache."""
    rates = []
    for _ in range(epochs):
        n, t = 0, time.perf_counter()
        for x, _ in splits.train:
            n += int(x.shape[0])
        rates.append(n / (time.perf_counter() - t))
    return {"images_per_epoch": splits.n_train, "first_epoch_img_s": round(rates[0], 1),
            "later_epoch_img_s": round(rates[-1], 1)}


# ---- 3. training throughput ------------------------------------------------------------------

def _fixed_batches(splits, batch_size: int, n_batches: int):
    """A few real training batches as numpy, and a repeating in-memory dataset of them:
    compute comparisons should not also measure the input pipeline."""
    import numpy as np
    import tensorflow as tf

    xs, ys = [], []
    for x, y in splits.train.unbatch().take(batch_size * n_batches):
        xs.append(x.numpy())
        ys.append(y.numpy())
    x, y = np.stack(xs), np.stack(ys)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True).cache().repeat()
    return x, y, ds.prefetch(2)


def _build(params, n_classes: int, precision: str, pruned: bool, ds_spec):
    import keras

    from ..model import multi_unet_model
    from ..pruning import Pruner
    from ..runtime import build_before_tracing
    from ..train import compile_trainer

    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(params.seed)
    model = multi_unet_model(params.dropout_rate, n_classes, params.patch_size, params.patch_size, 3)
    pruner = None
    if pruned:
        pruner = Pruner(model, [{"sparsity": SPARSITY, "op_types": ["default"]}])
        pruner.prune()
    build_before_tracing(compile_trainer(model, params, n_classes), ds_spec)
    return model, pruner


def training_throughput(params, splits, ds, sizes) -> tuple[dict, dict]:
    """Dense vs pruned (masks held by the kernel constraint) in each precision."""
    from .timing import timed_rounds

    models, variants = {}, {}
    for precision in COMPARED:
        for pruned in (False, True):
            name = f"{'pruned' if pruned else 'dense'} {precision}"
            _log(f"building and tracing {name}")
            model, pruner = _build(params, splits.n_classes, precision, pruned, ds.element_spec)
            model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)  # trace outside the clock
            models[name] = (model, pruner)
            variants[name] = (precision, lambda n, cb, m=model: m.fit(ds, steps_per_epoch=n, epochs=1,
                                                                       verbose=0, shuffle=False, callbacks=cb))
    _log(f"timing {len(variants)} variants x {sizes['rounds']} rounds x {sizes['steps']} steps")
    step = timed_rounds(variants, sizes["rounds"], sizes["steps"])
    bs = sizes["batch_size"]
    out = {name: {"step_ms": round(s * 1e3, 2), "img_s": round(bs / s, 1)} for name, s in step.items()}
    for precision in COMPARED:
        out[f"pruned/dense {precision}"] = round(step[f"pruned {precision}"] / step[f"dense {precision}"], 3)
    out["bf16 speed-up dense"] = round(step["dense float32"] / step["dense mixed_bfloat16"], 3)
    return out, models


# ---- 4. FLOPs and the machine's peak -------------------------------------------------------

def forward_flops(model) -> int:
    """FLOPs of one image's forward pass: 2 x the multiply-adds that flops.count_flops counts."""
    from ..flops import count_flops
    return 2 * count_flops(model)


def matmul_peak(n: int, reps: int = 5) -> dict:
    """GFLOP/s of an n x n matmul in float32 and bfloat16: the practical peak of this
    machine with the threads this process has."""
    import tensorflow as tf

    out = {}
    for dtype in ("float32", "bfloat16"):
        a = tf.cast(tf.random.normal((n, n)), dtype)
        b = tf.cast(tf.random.normal((n, n)), dtype)
        mm = tf.function(lambda a, b: tf.reduce_sum(tf.cast(tf.matmul(a, b)[0, :1], "float32")))
        mm(a, b)
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            mm(a, b).numpy()
            best = min(best, time.perf_counter() - t)
        out[dtype] = round(2 * n ** 3 / best / 1e9, 1)
    return out


# ---- 5. the seed's way ----------------------------------------------------------------------

def seed_vs_ours(params, splits, x, y, sizes) -> dict:
    """Seed: whole set as numpy, fit(batch_size=8), eager mask re-application, float32.
    Ours: the tf.data pipeline, graph mode, constraint masks, precision auto."""
    import keras

    from .. import runtime
    from .seed_baseline import nni2_style_pruned
    from .timing import timed_rounds

    bs = sizes["batch_size"]
    seed = nni2_style_pruned(params, splits.n_classes, SPARSITY)
    seed.fit(x[:2 * bs], y[:2 * bs], batch_size=bs, epochs=1, verbose=0)  # build + first eager step
    auto = runtime.choose_precision("auto")
    ours, _ = _build(params, splits.n_classes, auto, pruned=True, ds_spec=splits.train.element_spec)
    train = splits.train.repeat()
    ours.fit(train, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    n_seed = sizes["baseline_steps"]
    variants = {
        "seed": ("float32", lambda n, cb: seed.fit(x[:bs * min(n, n_seed + 1)], y[:bs * min(n, n_seed + 1)],
                                                   batch_size=bs, epochs=1, verbose=0, callbacks=cb)),
        "ours": (auto, lambda n, cb: ours.fit(train, steps_per_epoch=n, epochs=1, verbose=0, shuffle=False,
                                              callbacks=cb)),
    }
    _log(f"seed-style vs ours: {max(2, sizes['rounds'] - 1)} rounds")
    step = timed_rounds(variants, max(2, sizes["rounds"] - 1), sizes["steps"])
    keras.mixed_precision.set_global_policy("float32")
    return {"seed_step_ms": round(step["seed"] * 1e3, 1), "seed_img_s": round(bs / step["seed"], 1),
            "ours_step_ms": round(step["ours"] * 1e3, 1), "ours_img_s": round(bs / step["ours"], 1),
            "ours_precision": auto, "speed-up": round(step["seed"] / step["ours"], 2)}


# ---- 6. inference -----------------------------------------------------------------------------

class _Quiet:
    """Silence file descriptors 1 and 2 (the TFLite converter prints its whole function
    signature from C++ and Python), keeping the text to show if something fails."""

    def __enter__(self):
        import tempfile
        sys.stdout.flush()
        sys.stderr.flush()
        self.sink = tempfile.TemporaryFile()
        self.saved = [os.dup(1), os.dup(2)]
        for fd in (1, 2):
            os.dup2(self.sink.fileno(), fd)
        return self

    def __exit__(self, kind, *_):
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)
            os.close(saved)
        if kind is not None:
            self.sink.seek(0)
            sys.stderr.write(self.sink.read()[-4000:].decode(errors="replace"))
        self.sink.close()


def _tflite_bytes(model) -> bytes:
    import tensorflow as tf

    with _Quiet():
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def inference_throughput(dense, pruned_model, x, sizes, threads: int) -> dict:
    """Images/s of a traced forward pass (dense, pruned) and of the pruned model's TFLite
    export through the runner `predict` uses, all float32, same batches, interleaved."""
    import numpy as np
    import tensorflow as tf

    from ..inference import TFLiteRunner
    from .timing import timed_calls

    bs, n = sizes["batch_size"], sizes["infer_batches"]
    batch = np.ascontiguousarray(x[:bs])
    tflite = _tflite_bytes(pruned_model)
    runner = TFLiteRunner(tflite, threads=threads)
    runners = {"tflite pruned": lambda: runner.probabilities(batch)}
    for name, model in (("dense", dense), ("pruned", pruned_model)):
        fn = tf.function(lambda b, m=model: m(b, training=False))
        runners[name] = lambda fn=fn: fn(batch).numpy()
    result = {name: round(bs / t, 1) for name, t in timed_calls(runners, n).items()}
    pruned_pred = np.argmax(tf.function(lambda b: pruned_model(b, training=False))(batch).numpy(), -1)
    agree = float(np.mean(runner(batch) == pruned_pred))
    return {"img_s": result, "tflite_kb": round(len(tflite) / 1024), "tflite_pixel_agreement": round(agree, 4)}


# ---- the whole run ----------------------------------------------------------------------------

def run(sizes: dict, threads: int = 0, baseline: bool = True, quick: bool = False) -> dict:
    from ..params import Params

    params = Params(patch_size=sizes["patch_size"], batch_size=sizes["batch_size"], threads=threads,
                    epochs=1, finetune_epochs=0, sparsity=SPARSITY).validate()
    _log("fixed cost of a trial (this process, from its start)")
    fixed, splits = fixed_cost(params)
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")  # "N calls triggered retracing": each new model traces once, by design
    import keras

    from .. import runtime

    result = {"machine": _machine(), "sizes": sizes, "quick": quick, "fixed_cost": fixed}
    _log("data pipeline alone")
    result["data"] = data_throughput(splits, sizes["data_epochs"])

    x, y, ds = _fixed_batches(splits, sizes["batch_size"], n_batches=max(4, sizes["baseline_steps"] + 1))
    training, models = training_throughput(params, splits, ds, sizes)
    result["training"] = training

    dense_model = models["dense float32"][0]
    fwd = forward_flops(dense_model)
    peak = matmul_peak(sizes["matmul_n"])
    train_flops = 3 * fwd * sizes["batch_size"]
    gflops = {}
    for name in ("dense float32", "dense mixed_bfloat16", "pruned float32", "pruned mixed_bfloat16"):
        achieved = train_flops / (training[name]["step_ms"] / 1e3) / 1e9
        ref = peak["bfloat16" if "bfloat16" in name else "float32"]
        gflops[name] = {"gflop_s": round(achieved, 1), "fraction_of_peak": round(achieved / ref, 3)}
    result["flops"] = {"forward_gflop_per_image": round(fwd / 1e9, 4), "train_step_gflop": round(train_flops / 1e9, 3),
                       "matmul_peak_gflop_s": peak, "matmul_n": sizes["matmul_n"], "achieved": gflops}

    auto = runtime.choose_precision("auto")
    ours_name = f"pruned {auto}" if f"pruned {auto}" in training else "pruned float32"
    consumption = training[ours_name]["img_s"]
    result["data"]["training_consumes_img_s"] = consumption
    result["data"]["headroom_x"] = round(result["data"]["later_epoch_img_s"] / consumption, 1)

    if baseline:
        _log("seed-style baseline vs ours")
        result["seed_vs_ours"] = seed_vs_ours(params, splits, x, y, sizes)

    _log("inference and TFLite export")
    pruned_model, pruner = models["pruned float32"]
    pruner.strip()
    keras.mixed_precision.set_global_policy("float32")
    result["inference"] = inference_throughput(dense_model, pruned_model, x, sizes,
                                               threads or runtime.default_threads())
    result["memory"] = {"peak_rss_mb": _rss_mb()["peak_rss_mb"],
                        "trial_peak_rss_mb_at_first_step": fixed["peak_rss_mb"]}
    result["precision_auto"] = {"picked": auto, "cpu_bf16": runtime.cpu_supports_bf16(),
                                "gpus": len(_gpus())}
    result["targets"] = targets(result)
    return result


def _gpus():
    import tensorflow as tf
    return tf.config.list_physical_devices("GPU")


def _machine() -> dict:
    import platform

    import tensorflow as tf

    from .. import runtime
    from .trials import cpu_name
    conc, source = runtime.trial_concurrency()
    return {"cpu": cpu_name(), "cores": runtime.available_cores(), "trial_concurrency": conc, "concurrency_from": source,
            "threads": runtime.default_threads(conc), "cpu_bf16": runtime.cpu_supports_bf16(),
            "tensorflow": tf.__version__, "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


# ---- targets and the table ----------------------------------------------------------------------

def targets(r: dict) -> list[dict]:
    """The speed targets as measured ratios: (name, value, goal, met)."""
    out = []

    def add(name, value, goal, met):
        out.append({"target": name, "value": value, "goal": goal, "met": bool(met) if value is not None else None})

    t = r["training"]
    for precision in COMPARED:
        v = t[f"pruned/dense {precision}"]
        add(f"pruned step / dense step ({precision})", v, "<= 1.10", v <= 1.10)
    if "seed_vs_ours" in r:
        v = r["seed_vs_ours"]["speed-up"]
        add("ours vs seed-style training speed-up", v, ">= 3", v >= 3)
    p = r["precision_auto"]
    expect = "mixed_float16" if p["gpus"] else ("mixed_bfloat16" if p["cpu_bf16"] else "float32")
    add("precision auto picks bf16 where supported", p["picked"], expect, p["picked"] == expect)
    v = r["data"]["headroom_x"]
    add("data pipeline / training consumption", v, ">= 5", v >= 5)
    v = r["fixed_cost"]["total_s"]
    add("trial fixed cost, process start to first step (s)", v, "<= 15", v <= 15)
    v = r["fixed_cost"]["total_cpu_s"]  # single-threaded stages: = wall time on an idle machine
    add("  the same in CPU s (= wall on an idle machine)", v, "<= 15", v <= 15)
    return out


def format_table(r: dict) -> str:
    s = r["sizes"]
    m = r["machine"]
    lines = [f"segmodel bench{' --quick (sizes too small to mean anything)' if r['quick'] else ''}: "
             f"patch {s['patch_size']}, batch {s['batch_size']}, {m['cores']} cores, {m['threads']} threads, "
             f"TF {m['tensorflow']}, load {m['load_avg_1m']}",
             ""]

    def section(title):
        lines.extend(["", title])

    def row(label, value, note=""):
        lines.append(f"  {label:<46} {value:>12}  {note}".rstrip())

    f = r["fixed_cost"]
    section(f"Fixed cost of a trial (process start -> first training step), precision {f['precision']}")
    for name, v in f["stages_s"].items():
        row(name, f"{v:.2f} s", f"cpu {f['stages_cpu_s'][name]:.2f} s")
    row("total", f"{f['total_s']:.2f} s", f"cpu {f['total_cpu_s']:.2f} s; {f['total_without_nni_s']:.2f} s outside NNI")
    row("later fit() call, 1 step (reference)", f"{f['later_fit_call_1_step_s']:.2f} s")

    d = r["data"]
    section("Data pipeline alone vs training")
    row("pipeline, first epoch (decode from disk)", f"{d['first_epoch_img_s']:.0f} img/s")
    row("pipeline, later epochs", f"{d['later_epoch_img_s']:.0f} img/s")
    row("training consumes (pruned, precision auto)", f"{d['training_consumes_img_s']:.1f} img/s")
    row("headroom", f"{d['headroom_x']:.1f} x")

    t = r["training"]
    section("Training (in-memory batches, graph mode)")
    for precision in COMPARED:
        for kind in ("dense", "pruned"):
            v = t[f"{kind} {precision}"]
            row(f"{kind} {precision}", f"{v['img_s']:.1f} img/s", f"{v['step_ms']:.1f} ms/step")
        row(f"pruned / dense step time, {precision}", f"{t[f'pruned/dense {precision}']:.3f} x")
    row("bf16 speed-up (dense)", f"{t['bf16 speed-up dense']:.2f} x")

    fl = r["flops"]
    section(f"Arithmetic: {fl['forward_gflop_per_image']:.3f} GFLOP forward/image, "
            f"training step = 3 x forward x batch = {fl['train_step_gflop']:.2f} GFLOP")
    for dtype, v in fl["matmul_peak_gflop_s"].items():
        row(f"peak: {fl['matmul_n']}^2 matmul {dtype}", f"{v:.1f} GFLOP/s")
    for name, v in fl["achieved"].items():
        row(f"achieved: {name}", f"{v['gflop_s']:.1f} GFLOP/s", f"{100 * v['fraction_of_peak']:.0f}% of peak")

    if "seed_vs_ours" in r:
        b = r["seed_vs_ours"]
        section("Seed's way vs ours (pruned training)")
        row("seed: numpy arrays, eager, NNI 2.x masks, fp32", f"{b['seed_img_s']:.1f} img/s",
            f"{b['seed_step_ms']:.0f} ms/step")
        row(f"ours: tf.data, graph, constraint, {b['ours_precision']}", f"{b['ours_img_s']:.1f} img/s",
            f"{b['ours_step_ms']:.0f} ms/step")
        row("speed-up", f"{b['speed-up']:.2f} x")

    i = r["inference"]
    section("Inference (float32, batch as above)")
    for name, v in i["img_s"].items():
        row(name, f"{v:.1f} img/s")
    row("TFLite size / pixel agreement with Keras", f"{i['tflite_kb']} KB", f"{100 * i['tflite_pixel_agreement']:.2f}%")

    mem = r["memory"]
    section("Memory")
    row("peak RSS, trial-like start (to first step)", f"{mem['trial_peak_rss_mb_at_first_step']:.0f} MB")
    row("peak RSS, whole bench", f"{mem['peak_rss_mb']:.0f} MB")

    section("Targets")
    for tg in r["targets"]:
        mark = {True: "met", False: "MISSED", None: "n/a"}[tg["met"]]
        row(tg["target"], str(tg["value"]), f"goal {tg['goal']}: {mark}")
    return "\n".join(lines)
