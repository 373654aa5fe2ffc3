"""The one call timer: every call once untimed, then all of them in turn, round after round.

A shared, noisy CPU slows whatever runs while it is busy; interleaving spreads that noise
over all the calls alike, so the ratios between them are the figures to quote. Export and
trials time TFLite files with it, and so do the benchmarks.
"""
from __future__ import annotations

import statistics
import time


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
