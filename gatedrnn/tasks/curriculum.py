"""A curriculum on the sequence length of a synthetic task (Bengio et al. 2009; Zaremba &
Sutskever 2014): training batches start short and grow, stage by stage, to the task's length.

A stage ends when the training loss, averaged over its last ``window`` batches, has fallen to
``fraction`` of the memoryless baseline at that stage's length; the next batch is drawn at the
next length. Validation and test always use the task's full length, so every reported number
is at the length the task names. The state (the stage and its recent losses) is plain JSON,
kept in the trainer's checkpoint, so a resumed run advances exactly as an uninterrupted one.
"""

from __future__ import annotations

from typing import Callable

FRACTION, WINDOW = 0.15, 50


def parse_lengths(text: str, final: int, minimum: int = 1) -> list[int]:
    """The stages of ``--curriculum`` ("100,200,400"): increasing lengths of at least
    ``minimum`` and below ``final``, which is appended as the last stage."""
    try:
        lengths = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--curriculum takes comma-separated lengths such as 100,200,400; got {text!r}") from None
    if any(a >= b for a, b in zip(lengths, lengths[1:])):
        raise ValueError(f"--curriculum lengths must be increasing; got {text!r}")
    if lengths[0] < minimum:
        raise ValueError(f"--curriculum lengths must be at least {minimum} for this task; got {text!r}")
    if lengths[-1] >= final:
        raise ValueError(f"--curriculum lengths must be below --length {final} (its last stage); got {text!r}")
    return lengths + [final]


class Curriculum:
    """Training lengths ``lengths`` (the last is the task's), advanced by the training loss
    against ``baseline(length)``, the memoryless predictor's loss at that length."""

    def __init__(self, lengths: list[int], baseline: Callable[[int], float], fraction: float | None = None,
                 window: int | None = None):  # fmt: skip
        self.lengths, self.baseline = list(lengths), baseline
        self.fraction = FRACTION if fraction is None else fraction
        self.window = WINDOW if window is None else window
        self.stage, self.recent = 0, []

    @property
    def length(self) -> int:
        """The length of the next training batch."""
        return self.lengths[self.stage]

    def observe(self, loss: float) -> bool:
        """Records one training batch's loss; True when it ends the stage."""
        if self.stage == len(self.lengths) - 1:
            return False
        self.recent = (self.recent + [float(loss)])[-self.window :]
        mean = sum(self.recent) / len(self.recent)
        if len(self.recent) == self.window and mean <= self.fraction * self.baseline(self.length):
            self.stage, self.recent = self.stage + 1, []
            return True
        return False

    def state_dict(self) -> dict:
        return {"stage": self.stage, "recent": list(self.recent)}

    def load_state_dict(self, state: dict) -> None:
        if not 0 <= state["stage"] < len(self.lengths):
            raise ValueError(f"the checkpoint's curriculum stage {state['stage']} does not exist in {self.lengths}")
        self.stage, self.recent = int(state["stage"]), [float(v) for v in state["recent"]]
