"""Process-wide TensorFlow settings for one trial: seeds, threads, precision.

Called once, before any model is built (Keras reads the dtype policy at layer
creation, TensorFlow fixes its thread pools at first use).

Threads: NNI starts `trialConcurrency` trials at once on one machine, and each
TensorFlow process would otherwise size its pools to every core, so N trials
oversubscribe the CPU N times over. Each trial takes its share instead:
cores // concurrency (the concurrency is asked of NNI by `experiment.manager`).
"""
from __future__ import annotations

import math
import os
import sys
from typing import Callable

# ---- precision -----------------------------------------------------------------------

def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU a figure was measured on (`lscpu`'s Model name)."""
    try:
        for line in open(cpuinfo):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo cannot be read)."""
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def cpu_supports_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """AVX512-BF16 or AMX-BF16 in the CPU flags: oneDNN runs bfloat16 matmuls/convs natively."""
    return bool(cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


def cpu_bf16_pays(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """bfloat16 training is faster than float32 here: AMX-BF16 in the CPU flags. Measured, not
    assumed (docs/machines.md): the U-Net's training step in mixed_bfloat16 ran 1.16x float32's
    speed on an Intel Xeon with AMX (`python -m benchmarks step-options`) and 0.95x on an AMD EPYC with AVX512-BF16 alone, whose bf16
    dot products run no faster than its float32 FMAs once the casts are paid."""
    return "amx_bf16" in cpu_flags(cpuinfo)


def pick_precision(gpu_capability: tuple[int, int] | None, cpu_bf16: bool) -> str:
    """The `auto` rule on plain facts: a GPU decides if there is one (tensor cores from
    compute capability 7.0 run float16), else whether bfloat16 pays on the CPU (`cpu_bf16_pays`)."""
    if gpu_capability is not None:
        return "mixed_float16" if tuple(gpu_capability) >= (7, 0) else "float32"
    return "mixed_bfloat16" if cpu_bf16 else "float32"


def choose_precision(requested: str) -> str:
    """`auto`: mixed_float16 on a GPU with tensor cores, mixed_bfloat16 on a CPU with AMX, float32 elsewhere."""
    if requested != "auto":
        return requested
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    capability = None
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        capability = tuple(details.get("compute_capability", (0, 0)))
    return pick_precision(capability, cpu_bf16_pays())


# ---- threads -------------------------------------------------------------------------

def available_cores() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota
    (a container limited to 2 CPUs on a 64-core host has 2)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:  # cgroup v2: "max 100000" or "200000 100000"
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def default_threads(concurrency: int) -> int:
    """Cores available to this process divided by the trials that run beside it."""
    return max(1, available_cores() // max(1, concurrency))


# ---- tracing once ----------------------------------------------------------------------

def build_before_tracing(trainer, element_spec) -> bool:
    """Create the optimizer's slots and the compiled metrics' state now, eagerly, from
    the dataset's element_spec (no data is read).

    Keras 3 on TensorFlow, without a distribution strategy, defers this to the first
    trace of the train step; variables created while tracing make tf.function trace
    the whole step a second time, about 2.5x the CPU of a single trace, on every
    fit() of every trial. Only for the stock train_step (a custom one, as the
    Distiller's, builds what it needs itself); returns whether it built."""
    import keras

    build = getattr(trainer, "_symbolic_build", None)  # what Keras runs itself under a strategy
    stock = type(trainer).train_step is keras.Model.train_step
    if build is None or not stock or getattr(trainer, "run_eagerly", False):
        return False
    try:
        build(data_batch=element_spec)
    except Exception:  # private API: if it ever changes, lose only the speed-up
        return False
    return True


# ---- all together ----------------------------------------------------------------------

def configure(params, concurrency: Callable[[], tuple[int, str]] = lambda: (1, "default")) -> str:
    """Apply seeds, threads and precision; returns the precision policy in force.
    `concurrency()`: (trials running at once on this machine, where that number came from),
    asked only when --threads is not given (a trial passes experiment.manager.trial_concurrency)."""
    import keras
    import tensorflow as tf

    if params.threads:
        threads, why = params.threads, "--threads"
    else:
        concurrency, source = concurrency()
        threads = default_threads(concurrency)
        why = f"{available_cores()} cores / {concurrency} concurrent trial(s), from {source}"
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
    print(f"segmodel: {threads} intra-op thread(s) ({why}); precision {precision}", file=sys.stderr, flush=True)
    return precision

