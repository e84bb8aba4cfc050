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
