"""The adding problem: Hochreiter & Schmidhuber 1997, in the form of Le, Jaitly & Hinton 2015.

Each of T steps carries (a value uniform in [0, 1], a marker in {0, 1}); exactly two steps are
marked, one in each half of the sequence. The target is the sum of the two marked values.
Predicting 1 whatever the input scores MSE = Var(U + U') = 1/6 ≈ 0.167: the baseline. A model
"solves" the task at test MSE < 0.01 (``--solved-mse`` sets another bar: Bai et al. 2018's
GRU reached 5.3e-5 at T = 600), which needs a memory of ~T steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gatedrnn.tasks.base import Task, batch_generator
from gatedrnn.tasks.curriculum import Curriculum, parse_lengths

SOLVED_MSE = 0.01


def adding_batch(batch_size: int, length: int, generator: torch.Generator):
    """inputs (B, T, 2), targets (B, 1)."""
    values = torch.rand(batch_size, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (batch_size,), generator=generator)
    second = torch.randint(half, length, (batch_size,), generator=generator)
    markers = torch.zeros(batch_size, length)
    rows = torch.arange(batch_size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    inputs = torch.stack([values, markers], dim=-1)  # (B, T, 2)
    targets = (values * markers).sum(1, keepdim=True)  # (B, 1)
    return inputs, targets


class Adding(Task):
    """The adding problem (see the module's docstring): regression on the last step, MSE.

    Args:
        length (int): the sequence length ``T``. Default: ``100``.
        test_size (int): sequences in the validation and in the test split. Default: ``2000``.
        solved_mse (float): the validation MSE below which the task counts as solved.
            Default: ``0.01``.
        curriculum (str): shorter lengths to train on first, comma-separated
            (``"100,200,400"``), each until the training MSE is 15% of the baseline; ``""``:
            none. Default: ``""``.

    Examples:
        >>> from gatedrnn.tasks.adding import Adding
        >>> task = Adding(length=50)
        >>> inputs, targets = task.train_batch(step=1, batch_size=4, seed=0)
        >>> inputs.shape, targets.shape  # (B, T, value and marker), (B, 1)
        (torch.Size([4, 50, 2]), torch.Size([4, 1]))
    """
    name = "adding"
    about = "the adding problem: sum the two marked values of a long sequence (Hochreiter & Schmidhuber 1997)"
    input_size = 2
    output_size = 1
    readout = "last"
    metric = "mse"
    lower_is_better = True
    baseline = 1.0 / 6.0
    options = {"solved_mse": (float, SOLVED_MSE, "adding task: the validation MSE below which the task is solved"),
               "curriculum": (str, "", "adding task: train first on these shorter lengths, e.g. 100,200,400, each "
                                       "until the training MSE is 15% of the baseline")}  # fmt: skip

    def __init__(self, length: int = 100, test_size: int = 2000, solved_mse: float = SOLVED_MSE,
                 curriculum: str = ""):  # fmt: skip
        if length < 2:
            raise ValueError(f"length must be at least 2 for the adding problem, got {length}")
        if not 0 < solved_mse < self.baseline:
            raise ValueError(f"--solved-mse must be in (0, {self.baseline:.4f}) (the baseline), got {solved_mse}")
        self.length, self.test_size, self.solved_mse = length, test_size, solved_mse
        if curriculum:
            self.curriculum = Curriculum(parse_lengths(curriculum, length, minimum=2), lambda _: self.baseline)

    @classmethod
    def from_config(cls, config):
        return cls(length=config.length, **cls.option_values(config))

    def train_batch(self, step, batch_size, seed):
        return adding_batch(batch_size, self.train_length, batch_generator(seed, step))

    def split(self, name, seed):
        stream = {"valid": 1, "test": 2}[name]
        size = self.test_size if name == "test" else self.test_size // 2
        return adding_batch(size, self.length, batch_generator(seed, -1, stream))

    def loss(self, output, target):
        return F.mse_loss(output, target)

    def metrics(self, output, target):
        return {"mse": F.mse_loss(output, target).item()}

    def solved(self, metrics):
        return metrics["mse"] < self.solved_mse

    def introduction(self):
        T, half = self.length, self.length // 2
        return [f"The adding problem at T = {T}: each step reads a value in [0, 1] and a marker; two of the {T} steps "
                "are marked, one in each half, and after the last step the model predicts the sum of the two marked "
                "values.",
                f"Predicting 1 whatever the input scores MSE {self.baseline:.3f} = Var(U + U'), the baseline: a model "
                "there has learned nothing of the marked values.",
                f"'Solved' means test MSE < {self.solved_mse:g}; it takes holding the first marked value for "
                f"{T - half} to {T - 1} steps."]  # fmt: skip

    def marked_positions(self, inputs):
        return torch.nonzero(inputs[:, 1] > 0).flatten().tolist()
