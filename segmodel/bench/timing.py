"""The one way segmodel times things: variants interleaved in rounds, medians.

A shared, noisy CPU slows whatever runs while it is busy. Timing each variant in
turn, round after round, spreads that noise over all of them alike, so the ratios
between variants are the figures to quote; the absolute numbers are this machine's.
"""
from __future__ import annotations

import statistics
import time

import keras


class StepClock(keras.callbacks.Callback):
    """perf_counter() at the end of every training batch."""

    def __init__(self):
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def timed_rounds(variants: dict, rounds: int, steps: int) -> dict[str, float]:
    """Median seconds per training step of each variant.

    variants: name -> (dtype policy, run(n_steps, callbacks)), where run() trains n_steps
    batches with the callbacks. Each round runs every variant for steps + 1 batches and
    keeps the `steps` intervals between batch ends (the first batch of a round, which
    pays for starting fit(), is not timed)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (policy, run_steps) in variants.items():
            keras.mixed_precision.set_global_policy(policy)
            clock = StepClock()
            run_steps(steps + 1, [clock])
            times[name] += [b - a for a, b in zip(clock.ends, clock.ends[1:])]
    return {name: statistics.median(t) for name, t in times.items()}


def timed_calls(calls: dict, rounds: int) -> dict:
    """Median seconds of each zero-argument call: every call runs once untimed (trace,
    allocate, warm caches), then all of them in turn, `rounds` times."""
    for call in calls.values():
        call()
    times: dict = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            t = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - t)
    return {key: statistics.median(t) for key, t in times.items()}
