"""How fast a run goes: a tqdm bar whose speed and ETA leave out a process's first steps
(which build or load the native kernels), and the pace it reads them from."""

from __future__ import annotations

import time

WARMUP_STEPS = 3  # a process's first steps, left out of its speed: the first builds or loads the native kernels


class Pace:
    """Steps per second of this process, timed from its ``WARMUP_STEPS``-th step on.

    The first step of a process builds or loads the native kernels and sets up torch's custom
    operators: seconds, where a later step takes milliseconds. A speed averaged from the start
    spreads those seconds over every step still to come, and the first ETA comes out several
    times too long; timed from after the warm-up, it does not. ``tick`` is called after each step."""

    def __init__(self, clock=None):
        self.clock = clock or time.perf_counter
        self.steps = 0
        self.first = self.last = None  # (steps, time) at the end of the warm-up, and at the latest step

    def tick(self, n: int = 1) -> None:
        self.steps += n
        if self.steps >= WARMUP_STEPS:
            self.last = (self.steps, self.clock())
            if self.first is None:
                self.first = self.last

    @property
    def rate(self) -> float | None:
        """Steps per second since the warm-up; None until a step after it is timed."""
        if self.first is None or self.last[1] <= self.first[1]:
            return None
        return (self.last[0] - self.first[0]) / (self.last[1] - self.first[1])


def progress_bar(total: int, initial: int, desc: str, **options):
    """A tqdm bar (hidden where output is not a terminal) whose speed and ETA are its
    :class:`Pace`'s (``bar.pace``): "?" during the warm-up steps, then timed from after them."""
    from tqdm.auto import tqdm

    class Bar(tqdm):
        def __init__(self, *args, **kwargs):
            self.pace = Pace()  # before tqdm's first display, which reads it
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            self.pace.tick(n)
            return super().update(n)

        @property
        def format_dict(self):
            values = super().format_dict
            if "rate" in values:  # a bar that shows: running, or its last line as it closes
                values["rate"] = self.pace.rate or (None if self.disable else 0)  # 0 shows as "?"; None, the average
            return values

    return Bar(**{"total": total, "initial": initial, "desc": desc, "unit": "step", "dynamic_ncols": True,
                  "disable": None, **options})  # fmt: skip
