"""The one way the benchmarks time things: variants interleaved in rounds, medians.

A shared, noisy CPU slows whatever runs while it is busy. Timing each variant in
turn, round after round, spreads that noise over all of them alike, so the ratios
between variants are the figures to quote; the absolute numbers are this machine's.
Keras is imported inside: `stages` times that import itself.
"""
from __future__ import annotations

import statistics
import time

from segmodel.deploy.speed import timed_calls  # noqa: F401  (the one call timer, also the product's)


def timed_rounds(variants: dict, rounds: int, steps: int) -> dict[str, float]:
    """Median seconds per training step of each variant.

    variants: name -> (dtype policy, run(n_steps, callbacks)), where run() trains n_steps
    batches with the callbacks. Each round runs every variant for steps + 1 batches and
    keeps the `steps` intervals between batch ends (the first batch of a round, which
    pays for starting fit(), is not timed)."""
    import keras

    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (policy, run_steps) in variants.items():
            keras.mixed_precision.set_global_policy(policy)
            ends: list[float] = []
            clock = keras.callbacks.LambdaCallback(
                on_train_batch_end=lambda batch, logs=None, ends=ends: ends.append(time.perf_counter()))
            run_steps(steps + 1, [clock])
            times[name] += [b - a for a, b in zip(ends, ends[1:])]
    return {name: statistics.median(t) for name, t in times.items()}
