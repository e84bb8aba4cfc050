"""What the timing benchmarks share: the median of repeated calls after warm-up."""

from __future__ import annotations

import random
import statistics
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


def round_times(steps, budget_s: float, min_rounds: int = 30, max_rounds: int = 1000, seed: int | None = 0):
    """Each of ``steps``' seconds in every round (a list per step, round by round), every step
    run once per round, after two warm-up calls each; as many rounds as ``budget_s`` allows,
    within ``[min_rounds, max_rounds]``. Each round's order is drawn afresh from ``seed``, or,
    with ``seed=None``, is the order of ``steps``.

    Why drawn: a step's time depends on the step that ran before it (what it left in the
    caches), and a fixed order, even run forward then backward, gives each step its own
    predecessors. Measured here with an LSTM at (B, T, I, H) = (14, 6, 198, 37), inference, a
    torch.nn layer against an identical copy of itself: 1.07-1.08 in three fixed-order runs,
    0.998 and 0.999 in a drawn order (``benchmarks/random_shapes.py``'s control column)."""
    rng = random.Random(seed) if seed is not None else None
    for step in steps:
        step()
    started = time.perf_counter()
    for step in steps:
        step()
    once = time.perf_counter() - started
    rounds = max(min_rounds, min(max_rounds, int(budget_s / max(once, 1e-6))))
    times = [[] for _ in steps]
    order = list(range(len(steps)))
    for _ in range(rounds):
        if rng is not None:
            rng.shuffle(order)
        for k in order:
            started = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - started)
    return times


def round_ratio(times, over) -> float:
    """The median over rounds of one step's time over another's in the same round (a drift of
    the machine's speed moves both alike): ``times`` and ``over`` from :func:`round_times`."""
    return statistics.median(t / t0 for t, t0 in zip(times, over))


def shuffled_ratios(steps, budget_s: float, min_rounds: int = 30, max_rounds: int = 1000, seed: int | None = 0):
    """Median seconds of each of ``steps`` and each one's :func:`round_ratio` over ``steps[0]``,
    timed by :func:`round_times` (each round in a drawn order; ``seed=None``: as given)."""
    times = round_times(steps, budget_s, min_rounds, max_rounds, seed)
    return [statistics.median(ts) for ts in times], [round_ratio(ts, times[0]) for ts in times]
