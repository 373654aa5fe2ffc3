"""Process-wide TensorFlow settings for one trial: seeds, threads, precision.

Called once, before any model is built (Keras reads the dtype policy at layer
creation, TensorFlow fixes its thread pools at first use).
"""
from __future__ import annotations

import os


def cpu_supports_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPU runs bfloat16 matmuls natively."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(requested: str) -> str:
    """`auto`: mixed_float16 on a GPU with tensor cores, mixed_bfloat16 on a bf16 CPU, float32 elsewhere."""
    if requested != "auto":
        return requested
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        if details.get("compute_capability", (0, 0)) >= (7, 0):
            return "mixed_float16"
        return "float32"
    return "mixed_bfloat16" if cpu_supports_bf16() else "float32"


def default_threads() -> int:
    """Cores available to this process divided by the trials that run beside it."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    concurrency = int(os.environ.get("SEGMODEL_TRIAL_CONCURRENCY", "1") or 1)
    return max(1, cores // max(1, concurrency))


def configure(params) -> str:
    """Apply seeds, threads and precision; returns the precision policy in force."""
    import keras
    import tensorflow as tf

    threads = params.threads or default_threads()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        pass  # already initialized in this process (tests): keep what is there
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass
    keras.utils.set_random_seed(params.seed)
    if params.deterministic:
        tf.config.experimental.enable_op_determinism()
    precision = choose_precision(params.precision)
    keras.mixed_precision.set_global_policy(precision)
    return precision
