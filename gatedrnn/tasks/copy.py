"""The copy task: Arjovsky, Shah & Bengio 2016 ("Unitary Evolution Recurrent Neural Networks").

The input is 10 symbols drawn from 8, then T blanks of which the last is replaced by a
delimiter, then 10 more blanks: T + 20 steps. The target is blank for the first T + 10 steps,
then the 10 symbols. A memoryless model predicts blanks, then a uniform guess among 8: its
cross-entropy is 10 ln 8 / (T + 20) per step, the baseline. Accuracy is measured on the 10
recalled symbols; the task counts as solved at 99% of them right (and, with ``--solved-loss``,
a cross-entropy below that too: Bai et al. 2018's recurrent rows at T = 1000 sit at the
baseline, 0.02).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gatedrnn.tasks.base import Task, batch_generator
from gatedrnn.tasks.curriculum import Curriculum, parse_lengths

BLANK, DELIMITER = 0, 9  # symbols are 1..8
NUM_SYMBOLS, RECALL = 8, 10
SOLVED_ACCURACY = 0.99


def copy_batch(batch_size: int, length: int, generator: torch.Generator):
    """inputs (B, T + 20) integer tokens, targets (B, T + 20) integer tokens."""
    total = length + 2 * RECALL
    symbols = torch.randint(1, NUM_SYMBOLS + 1, (batch_size, RECALL), generator=generator)
    inputs = torch.full((batch_size, total), BLANK, dtype=torch.long)
    inputs[:, :RECALL] = symbols
    inputs[:, length + RECALL - 1] = DELIMITER
    targets = torch.full((batch_size, total), BLANK, dtype=torch.long)
    targets[:, -RECALL:] = symbols
    return inputs, targets


class Copy(Task):
    """The copy task (see the module's docstring): recall 10 symbols after ``T`` blanks.

    Args:
        length (int): the delay ``T``; sequences are ``T + 20`` steps. Default: ``100``.
        test_size (int): sequences in the validation and in the test split. Default: ``1000``.
        solved_loss (float): solved also needs a validation cross-entropy below this; ``0``:
            99% recall alone. Default: ``0.0``.
        curriculum (str): shorter delays to train on first, comma-separated; ``""``: none.
            Default: ``""``.
    """
    name = "copy"
    about = "the copy memory task: recall a sequence of symbols after a long delay (Hochreiter & Schmidhuber 1997)"
    vocab_size = 10
    input_size = 10
    output_size = 10
    readout = "all"
    metric = "loss"
    lower_is_better = True
    options = {"solved_loss": (float, 0.0, "copy task: solved also needs a validation cross-entropy below this "
                                           "(0: 99% recall alone)"),
               "curriculum": (str, "", "copy task: train first on these shorter delays, e.g. 100,200,400, each until "
                                       "the training loss is 15% of that length's baseline; validation and test use "
                                       "--length")}  # fmt: skip

    def __init__(self, length: int = 100, test_size: int = 1000, solved_loss: float = 0.0, curriculum: str = ""):
        if length < 1:
            raise ValueError(f"length must be at least 1 for the copy task, got {length}")
        self.length, self.test_size = length, test_size
        self.baseline = self.baseline_at(length)
        if not 0 <= solved_loss < self.baseline:
            raise ValueError(f"--solved-loss must be in [0, {self.baseline:.4f}) (the baseline), got {solved_loss}")
        self.solved_loss = solved_loss
        if curriculum:
            self.curriculum = Curriculum(parse_lengths(curriculum, length), self.baseline_at)

    @staticmethod
    def baseline_at(length: int) -> float:
        """The memoryless predictor's cross-entropy at delay ``length``."""
        return RECALL * math.log(NUM_SYMBOLS) / (length + 2 * RECALL)

    @classmethod
    def from_config(cls, config):
        return cls(length=config.length, **cls.option_values(config))

    def train_batch(self, step, batch_size, seed):
        return copy_batch(batch_size, self.train_length, batch_generator(seed, step))

    def split(self, name, seed):
        stream = {"valid": 1, "test": 2}[name]
        size = self.test_size if name == "test" else self.test_size // 2
        return copy_batch(size, self.length, batch_generator(seed, -1, stream))

    def loss(self, output, target):
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    def metrics(self, output, target):
        recalled = output[:, -RECALL:].argmax(-1) == target[:, -RECALL:]
        return {"loss": self.loss(output, target).item(), "accuracy": recalled.float().mean().item()}

    def solved(self, metrics):
        low = not self.solved_loss or metrics["loss"] < self.solved_loss
        return metrics["accuracy"] >= SOLVED_ACCURACY and low

    def introduction(self):
        T, total = self.length, self.length + 2 * RECALL
        solved = f"{SOLVED_ACCURACY:.0%} of them right" + (f" and a loss below {self.solved_loss:g}" if self.solved_loss
                                                             else "")  # fmt: skip
        return [f"The copy task at T = {T}: the model reads {RECALL} symbols drawn from {NUM_SYMBOLS}, then {T} blanks "
                f"whose last is a delimiter, then {RECALL} more blanks ({total} steps); it must output blanks until "
                f"the delimiter, then the {RECALL} symbols in order.",
                f"The loss is the cross-entropy per step over all {total} steps. A model that remembers nothing "
                f"predicts blanks, then guesses among {NUM_SYMBOLS}: loss {RECALL} ln {NUM_SYMBOLS} / {total} = "
                f"{self.baseline:.4f}, the baseline.",
                f"Accuracy counts the {RECALL} recalled symbols; 'solved' means {solved}, which takes holding the "
                f"symbols for {T + RECALL} steps."]  # fmt: skip

    def marked_positions(self, inputs):
        return [RECALL - 1, self.length + RECALL - 1]  # last symbol shown, delimiter
