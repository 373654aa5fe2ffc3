"""Where a trial's time goes: every stage of one, side by side in one process.

Every figure is taken in this process, on the built-in dataset, with the variants of
a comparison interleaved in rounds so that a shared, noisy CPU slows them alike: the
ratios are the figures to quote, the absolute numbers are this machine's.

    python -m benchmarks                # = stages: full run, ~1 min on 2 idle cores
    python -m benchmarks stages --quick # seconds of work: checks that every stage runs
    python -m benchmarks stages --json  # one JSON document on stdout (the table goes to stderr)

Sections: fixed cost of a trial (measured first, from this process's start, doing
what a trial does); data pipeline alone; training images/s dense vs pruned in
float32 and mixed_bfloat16; achieved GFLOP/s against a large matmul; the seed's way
(numpy arrays, fit(batch_size=8), NNI 2.x's eager mask re-application) against ours;
inference dense / pruned / TFLite; peak memory; the speed targets, met or not. One
module each (fixed_cost, training, seed_way, inference); report.py writes the table.

TensorFlow, Keras and segmodel's own modules are imported inside the functions on
purpose: the first section times those very imports, from this process's start.
"""
from __future__ import annotations

import contextlib
import json
import sys

from .common import SPARSITY, log, rss_mb
from .fixed_cost import fixed_cost
from .inference import inference_throughput
from .report import format_table, targets
from .seed_way import seed_vs_ours
from .training import (
    data_throughput,
    fixed_batches,
    forward_flops,
    matmul_peak,
    training_throughput,
)

FULL = dict(patch_size=64, batch_size=8, steps=12, rounds=3, baseline_steps=6, infer_batches=12,
            matmul_n=2048, data_epochs=2)
QUICK = dict(patch_size=32, batch_size=4, steps=3, rounds=1, baseline_steps=2, infer_batches=2,
             matmul_n=256, data_epochs=1)


def add_arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the bench runs, numbers meaningless")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout (table to stderr)")
    p.add_argument("--patch-size", type=int, default=None, help="patch side (default 64, the experiment's)")
    p.add_argument("--batch-size", type=int, default=None, help="patches per step (default 8, the seed's)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0 = cores / concurrency)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the seed-style eager baseline (the slowest section)")


def main(args) -> int:
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("patch_size", "batch_size"):
        if getattr(args, key):
            sizes[key] = getattr(args, key)
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


def run(sizes: dict, threads: int = 0, baseline: bool = True, quick: bool = False) -> dict:
    from segmodel.params import Params

    params = Params(patch_size=sizes["patch_size"], batch_size=sizes["batch_size"], threads=threads,
                    epochs=1, finetune_epochs=0, sparsity=SPARSITY).validate()
    log("fixed cost of a trial (this process, from its start)")
    fixed, splits = fixed_cost(params)
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")  # "N calls triggered retracing": each new model traces once, by design
    import keras

    from segmodel import runtime

    from ..machine import machine

    result = {"machine": machine(), "sizes": sizes, "quick": quick, "fixed_cost": fixed}
    log("data pipeline alone")
    result["data"] = data_throughput(splits, sizes["data_epochs"])

    x, y, ds = fixed_batches(splits, sizes["batch_size"], n_batches=max(4, sizes["baseline_steps"] + 1))
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
        log("seed-style baseline vs ours")
        result["seed_vs_ours"] = seed_vs_ours(params, splits, x, y, sizes)

    log("inference and TFLite export")
    pruned_model, pruner = models["pruned float32"]
    pruner.strip()
    keras.mixed_precision.set_global_policy("float32")
    result["inference"] = inference_throughput(dense_model, pruned_model, x, sizes,
                                               threads or runtime.default_threads(1))
    result["memory"] = {"peak_rss_mb": rss_mb()["peak_rss_mb"],
                        "trial_peak_rss_mb_at_first_step": fixed["peak_rss_mb"]}
    result["precision_auto"] = {"picked": auto, "cpu_bf16": runtime.cpu_supports_bf16(),
                                "gpus": len(_gpus())}
    result["targets"] = targets(result)
    return result


def _gpus():
    import tensorflow as tf
    return tf.config.list_physical_devices("GPU")
