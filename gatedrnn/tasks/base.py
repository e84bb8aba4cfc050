"""What every task provides to the trainer: batches, a model head, a loss, and metrics."""

from __future__ import annotations

import torch


def batch_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A generator for one training batch, fixed by (seed, step): a resumed run draws the
    same batches as an uninterrupted one without carrying any data state."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 97 + stream) % (2**63))


class Task:
    """The interface the trainer uses; each task module has one subclass.

    ``input_size``/``output_size`` shape the model; ``readout`` is ``"last"`` (one output per
    sequence) or ``"all"`` (one per step); ``metric`` names the number reported, with
    ``lower_is_better``; ``baseline`` is what a trivial predictor scores.
    """

    name: str
    input_size: int
    output_size: int
    readout: str = "all"
    metric: str = "loss"
    lower_is_better: bool = True
    baseline: float | None = None
    vocab_size: int | None = None  # integer inputs go through an embedding when set

    def train_batch(self, step: int, batch_size: int, seed: int):
        """(inputs, targets) for one training step."""
        raise NotImplementedError

    def split(self, name: str, seed: int):
        """The fixed (inputs, targets) of the ``"valid"`` or ``"test"`` split."""
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Every number worth logging for a batch; includes ``self.metric``."""
        raise NotImplementedError

    def solved(self, metrics: dict[str, float]) -> bool:
        return False

    def marked_positions(self, inputs: torch.Tensor) -> list[int] | None:
        """Time steps of one sequence worth marking in a gate heatmap, if any."""
        return None
