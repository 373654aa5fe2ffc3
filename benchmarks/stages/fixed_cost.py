"""Section 1 of `stages`: a trial's fixed cost, process start to its first training step.

Measured first, in this fresh process, doing what trial.py does in order: TensorFlow,
Keras and segmodel are imported here, inside the function, so that their import is timed.
"""
from __future__ import annotations

import time

from .common import rss_mb


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
    from segmodel import data as datasets  # noqa: F401
    from segmodel import runtime, train
    from segmodel.compress.pruning import Pruner  # noqa: F401
    from segmodel.losses import task_loss  # noqa: F401  (segmentation_models)
    from segmodel.model import build_model
    stamp("import segmodel + segmentation_models")
    precision = runtime.configure(params)
    splits = datasets.load(params)
    next(iter(splits.train))
    stamp("data: scan, split, first batch")
    model = build_model(params, splits.n_classes)  # the trial's model, its architecture
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
            "threads": params.threads or runtime.default_threads(1), **rss_mb()}, splits
