"""Sections 2-4 of `stages`: the data pipeline alone, training dense vs pruned in two
precisions (interleaved), and the arithmetic against the machine's matmul peak."""
from __future__ import annotations

import time

from ..timing import timed_rounds
from .common import COMPARED, SPARSITY, log


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


def fixed_batches(splits, batch_size: int, n_batches: int):
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


def build(params, n_classes: int, precision: str, pruned: bool, ds_spec):
    import keras

    from segmodel.compress.pruning import Pruner
    from segmodel.model import build_model
    from segmodel.runtime import build_before_tracing
    from segmodel.train import compile_trainer

    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(params.seed)
    model = build_model(params, n_classes)  # the trial's model, its architecture
    pruner = None
    if pruned:
        pruner = Pruner(model, [{"sparsity": SPARSITY, "op_types": ["default"]}])
        pruner.prune()
    build_before_tracing(compile_trainer(model, params, n_classes), ds_spec)
    return model, pruner


def training_throughput(params, splits, ds, sizes) -> tuple[dict, dict]:
    """Dense vs pruned (masks held by the kernel constraint) in each precision."""
    models, variants = {}, {}
    for precision in COMPARED:
        for pruned in (False, True):
            name = f"{'pruned' if pruned else 'dense'} {precision}"
            log(f"building and tracing {name}")
            model, pruner = build(params, splits.n_classes, precision, pruned, ds.element_spec)
            model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)  # trace outside the clock
            models[name] = (model, pruner)
            variants[name] = (precision, lambda n, cb, m=model: m.fit(ds, steps_per_epoch=n, epochs=1,
                                                                       verbose=0, shuffle=False, callbacks=cb))
    log(f"timing {len(variants)} variants x {sizes['rounds']} rounds x {sizes['steps']} steps")
    step = timed_rounds(variants, sizes["rounds"], sizes["steps"])
    bs = sizes["batch_size"]
    out = {name: {"step_ms": round(s * 1e3, 2), "img_s": round(bs / s, 1)} for name, s in step.items()}
    for precision in COMPARED:
        out[f"pruned/dense {precision}"] = round(step[f"pruned {precision}"] / step[f"dense {precision}"], 3)
    out["bf16 speed-up dense"] = round(step["dense float32"] / step["dense mixed_bfloat16"], 3)
    return out, models


def forward_flops(model) -> int:
    """FLOPs of one image's forward pass: 2 x the multiply-adds that flops.count_flops counts."""
    from segmodel.compress.flops import count_flops
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
