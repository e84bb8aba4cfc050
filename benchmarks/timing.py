"""What the timing benchmarks share: the median of repeated calls after warm-up."""

from __future__ import annotations

import time


def median_seconds(fn, repeats: int = 30, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[repeats // 2]


def alternated_medians(step, modes, set_mode, repeats: int) -> dict:
    """Median seconds of ``step()`` under each of ``modes`` (``set_mode(mode)`` switches), the
    modes run in alternation, one call each per round, after one warm-up call each."""
    times = {mode: [] for mode in modes}
    for mode in modes:
        set_mode(mode)
        step()
    for _ in range(repeats):
        for mode in modes:
            set_mode(mode)
            started = time.perf_counter()
            step()
            times[mode].append(time.perf_counter() - started)
    return {mode: sorted(ts)[len(ts) // 2] for mode, ts in times.items()}
