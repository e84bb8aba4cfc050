"""Parity: Delétang et al. 2023 ("Neural Networks and the Chomsky Hierarchy", ICLR; the
"Parity Check" of its regular tasks), as the xLSTM paper runs it (Beck et al. 2024, Figure 4
and Appendix: formal languages).

A sequence is ``n`` bits followed by a query token; at the query the model says whether the
number of ones is odd (class 1) or even (class 0). Training draws ``n`` uniformly from
``[min_length, length]`` (default 1 to 40, Delétang et al.'s ``U(1, N)``); the test reads every
``n`` from ``min_length`` to ``test_max`` (default 256), the same number of sequences at each,
and the reported ``accuracy`` is the mean over the lengths ``length`` to ``test_max`` (40 to
256): a length the model never trained on must be read as well as a short one.
``accuracy_train_lengths`` is the same over the training lengths; ``accuracy_T{a}-{b}`` over
buckets of lengths. Guessing scores 0.5, the baseline.

A fixed-size recurrent state solves parity at every length by flipping one bit of state on each
one; the paper reports that the LSTM and the sLSTM learn it and length-generalize, and that the
mLSTM (whose state update is linear, without memory mixing) and the minimal cells do not.

Differences from the papers, for a CPU budget: lengths here count the bits (the xLSTM code's
``3..40`` counts the answer slot too, so ``2..39`` bits; the shortest strings, which Delétang et
al. also train on, are what gets gradient descent off the 0.5 plateau in a few hundred steps);
the query is a token of its own (the xLSTM code gives a padding token there, Delétang et al. an
empty step); training is 2,000 steps at most rather than 20,000 (xLSTM) or 1,000,000 (Delétang
et al.); tokens go through an embedding (Delétang et al. one-hot them).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from gatedrnn.models import XLSTM_CELLS, XLSTM_OPTIONS, SequenceModel, xlstm_task_options
from gatedrnn.tasks.base import Task, batch_generator, to_device
from gatedrnn.tasks.data import DataError, read_text
from gatedrnn.tasks.prediction import Prediction

PAD, ZERO, ONE, QUERY = 0, 1, 2, 3  # tokens: padding after the query, the bits, the query
SYMBOLS = {ZERO: "0", ONE: "1", QUERY: "?"}
SOLVED_ACCURACY = 0.99
BUCKETS = (64, 128)  # test-length buckets start at length, then at these lengths


def parity_batch(lengths: torch.Tensor, generator: torch.Generator):
    """Sequences of ``lengths[b]`` random bits, each followed by the query token and padded.

    Args:
        lengths (Tensor): ``(B,)`` integers ``>= 1``, the bits in each sequence.
        generator (torch.Generator): the random bits' source.

    Returns:
        inputs ``(B, max(lengths) + 1)`` tokens (bits as 1 and 2, the query 3, padding 0) and
        targets ``(B,)``, the number of ones modulo 2.

    Examples:
        >>> import torch
        >>> from gatedrnn.tasks.parity import parity_batch
        >>> inputs, targets = parity_batch(torch.tensor([3, 1]), torch.Generator().manual_seed(0))
        >>> inputs.shape, targets.shape
        (torch.Size([2, 4]), torch.Size([2]))
    """
    B, T = len(lengths), int(lengths.max()) + 1
    bits = torch.randint(0, 2, (B, T - 1), generator=generator)  # (B, T - 1)
    valid = torch.arange(T - 1)[None, :] < lengths[:, None]  # (B, T - 1)
    bits = bits * valid
    inputs = torch.full((B, T), PAD, dtype=torch.long)
    inputs[:, :-1] = torch.where(valid, bits + ZERO, PAD)
    inputs[torch.arange(B), lengths] = QUERY
    return inputs, bits.sum(1) % 2  # (B, T), (B,)


def sequence_lengths(inputs: torch.Tensor) -> torch.Tensor:
    """The steps each sequence of a padded batch holds (its bits and its query), ``(B,)``."""
    return (inputs != PAD).sum(1)


class Parity(Task):
    """Parity with length generalization (see the module's docstring): classify the last step.

    Args:
        length (int): the longest training sequence, in bits (the papers' 40). Default: ``40``.
        min_length (int): the shortest sequence, in training and in the test. Default: ``1``.
        test_max (int): the longest test sequence; the test lengths are ``length`` to
            ``test_max``. Default: ``256``.
        per_length (int): test sequences at each length (half as many in validation).
            Default: ``8``.
        num_heads (int): the xLSTM cells' heads. Default: ``4``.
        slstm_at (str): the xlstm cell's sLSTM blocks, ``"1"`` or ``"0,2"``. Default: ``""``.

    Examples:
        >>> from gatedrnn.tasks.parity import Parity
        >>> task = Parity(length=10, test_max=20)
        >>> inputs, targets = task.train_batch(step=1, batch_size=4, seed=0)
        >>> inputs.shape[0], targets.shape  # (B, longest + query) tokens, (B,) classes
        (4, torch.Size([4]))
    """

    name = "parity"
    about = "parity of a bit string, trained on short strings and tested on longer ones (Deletang et al. 2023)"
    vocab_size = 4
    input_size = 16  # the embedding size (--embedding-size sets another)
    output_size = 2
    readout = "last"
    metric = "accuracy"
    lower_is_better = False
    baseline = 0.5
    cells = (*Task.cells, *XLSTM_CELLS)
    options = {"min_length": (int, 1, "parity task: the shortest sequence in bits, in training and test"),
               "test_max": (int, 256, "parity task: the longest test sequence in bits; the test lengths run from "
                                      "--length to it"),
               "per_length": (int, 8, "parity task: test sequences at each length (half as many in validation)"),
               **XLSTM_OPTIONS}  # fmt: skip

    def __init__(self, length: int = 40, min_length: int = 1, test_max: int = 256, per_length: int = 8,
                 num_heads: int = 4, slstm_at: str = ""):  # fmt: skip
        if not 1 <= min_length <= length:
            raise ValueError(f"--min-length must be in [1, --length {length}], got {min_length}")
        if test_max < length:
            raise ValueError(f"--test-max must be at least --length {length}, got {test_max}")
        if per_length < 2:
            raise ValueError(f"--per-length must be at least 2 (validation holds half), got {per_length}")
        self.length, self.min_length, self.test_max, self.per_length = length, min_length, test_max, per_length
        self.num_heads, self.slstm_at = num_heads, slstm_at

    @classmethod
    def from_config(cls, config):
        return cls(length=config.length, **cls.option_values(config))

    def make_model(self, config):
        options = xlstm_task_options(config.cell, config.extra)  # --num-heads, --slstm-at
        return SequenceModel(
            config.cell, config.embedding_size or self.input_size, config.hidden_size, self.output_size,
            config.layers, vocab_size=self.vocab_size, readout=self.readout, backend=config.backend,
            forget_bias=config.forget_bias, dropout=config.dropout, cell_options=config.cell_options() | options,
        )  # fmt: skip

    @classmethod
    def restore(cls, config, spec, saved):
        task = super().restore(config, spec, saved)
        for name, value in cls.option_values(config).items():  # the test lengths and the model's options
            setattr(task, name, value)
        task.length = config.length
        return task

    # -- data ---------------------------------------------------------------------------------

    def train_batch(self, step, batch_size, seed):
        generator = batch_generator(seed, step)
        lengths = torch.randint(self.min_length, self.length + 1, (batch_size,), generator=generator)  # (B,)
        return parity_batch(lengths, generator)

    def split_lengths(self, name: str) -> torch.Tensor:
        """The bits of each sequence of a split, ascending: every length from ``min_length`` to
        ``test_max``, ``per_length`` times in the test and half as often in validation.

        Args:
            name (str): ``"valid"`` or ``"test"``.
        """
        repeats = self.per_length if name == "test" else self.per_length // 2
        return torch.arange(self.min_length, self.test_max + 1).repeat_interleave(repeats)  # (N,)

    def split(self, name, seed):
        stream = {"valid": 1, "test": 2}[name]
        return parity_batch(self.split_lengths(name), batch_generator(seed, -1, stream))

    def forward(self, model, inputs):
        lengths = sequence_lengths(inputs).cpu()  # (B,)
        return model(inputs[:, : int(lengths.max())], lengths=lengths)  # the batch cut to its longest

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def metrics(self, output, target):
        return {"accuracy": (output.argmax(-1) == target).float().mean().item(),
                "loss": self.loss(output, target).item()}  # fmt: skip

    def buckets(self) -> list[tuple[int, int]]:
        """The test-length buckets, ``[(first, last), ...]``: ``length`` to 63, 64 to 127, 128 to
        ``test_max`` (those that hold a length)."""
        edges = [self.length] + [b for b in BUCKETS if self.length < b <= self.test_max] + [self.test_max + 1]
        return [(a, b - 1) for a, b in zip(edges, edges[1:])]

    @torch.no_grad()
    def evaluate(self, model, split, seed, device="cpu", batch_size: int = 256):
        """Accuracy over the test lengths (``accuracy``: each length weighs the same), over the
        training lengths (``accuracy_train_lengths``) and over buckets of test lengths
        (``accuracy_T40-63`` ...), and the cross-entropy over the test lengths."""
        was_training = model.training
        model.eval()
        inputs, targets = self.split(split, seed)  # ascending lengths: each chunk is cut to its longest
        outputs = torch.cat([self.forward(model, to_device(inputs[i : i + batch_size], device)).cpu()
                             for i in range(0, len(inputs), batch_size)])  # (N, 2)  # fmt: skip
        model.train(was_training)
        bits = sequence_lengths(inputs) - 1  # (N,)
        right = (outputs.argmax(-1) == targets).float()  # (N,)
        test = (bits >= self.length) & (bits <= self.test_max)
        trained = bits <= self.length
        out = {"accuracy": right[test].mean().item(), "loss": self.loss(outputs[test], targets[test]).item(),
               "accuracy_train_lengths": right[trained].mean().item()}  # fmt: skip
        for a, b in self.buckets():
            out[f"accuracy_T{a}-{b}"] = right[(bits >= a) & (bits <= b)].mean().item()
        return out

    def solved(self, metrics):
        return metrics["accuracy"] >= SOLVED_ACCURACY

    def diagnostic_batch(self, seed, size=64):
        inputs, targets = self.split("test", seed)
        keep = sequence_lengths(inputs) - 1 <= self.length  # training lengths: the figures' batch is one tensor
        pick = torch.linspace(0, int(keep.sum()) - 1, min(size, int(keep.sum()))).long()
        inputs, targets = inputs[keep][pick], targets[keep][pick]
        return inputs[:, : int(sequence_lengths(inputs).max())], targets

    # -- used ---------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, model, path, device="cpu", per_line=False):
        """The parity of each line of a text file of 0s and 1s (spaces ignored): a row per
        line with its bits, the predicted class (1: odd), its probability, and whether it is
        right."""
        lines = [line.replace(" ", "").strip() for line in read_text(Path(path)).splitlines()]
        rows, sequences = [], []
        for number, line in enumerate(lines, start=1):
            if not line:
                continue
            if set(line) - {"0", "1"}:
                bad = sorted(set(line) - {"0", "1"})[0]
                raise DataError(f"{path}, line {number}: holds {bad!r}; each line is a string of 0s and 1s")
            sequences.append((number, line))
        if not sequences:
            raise DataError(f"{path}: holds no line of bits")
        longest = max(len(bits) for _, bits in sequences)
        inputs = torch.full((len(sequences), longest + 1), PAD, dtype=torch.long)
        for row, (_, bits) in enumerate(sequences):
            inputs[row, : len(bits)] = torch.tensor([ONE if c == "1" else ZERO for c in bits])
            inputs[row, len(bits)] = QUERY
        probabilities = torch.cat([torch.softmax(self.forward(model, inputs[i : i + 256].to(device)).cpu(), -1)
                                   for i in range(0, len(inputs), 256)])  # (N, 2)  # fmt: skip
        right = 0
        for (number, bits), p in zip(sequences, probabilities):
            predicted, odd = int(p.argmax()), bits.count("1") % 2
            right += predicted == odd
            rows.append({"line": number, "bits": bits, "length": len(bits), "odd": predicted,
                         "probability": round(float(p[predicted]), 4), "right": predicted == odd})  # fmt: skip
        accuracy = right / len(rows)
        summary = {"task": self.name, "input": str(path), "sequences": len(rows), "accuracy": accuracy}
        return Prediction(self.name, rows, summary, f"{len(rows)} sequences, {accuracy:.1%} right")

    def describe(self, data=""):
        return f"parity, T = {self.length} (test to {self.test_max})"

    def introduction(self):
        return [f"Parity at T = {self.length}: the model reads a string of bits, then a query token, and says "
                f"whether it holds an odd number of ones. Training strings have {self.min_length} to {self.length} "
                f"bits; the test reads every length from {self.min_length} to {self.test_max}, {self.per_length} "
                "strings at each.",
                f"The accuracy is measured on the lengths {self.length} to {self.test_max}, longer than any it "
                f"trained on: guessing scores {self.baseline:.2f}, the baseline.",
                f"'Solved' means {SOLVED_ACCURACY:.0%} accuracy there, which takes a state that flips with "
                "each one, whatever the length (Deletang et al. 2023; xLSTM, Beck et al. 2024)."]  # fmt: skip

    def token_labels(self, inputs):
        return [SYMBOLS.get(int(i), "") for i in inputs.tolist()]

    def marked_positions(self, inputs):
        return torch.nonzero(inputs == QUERY).flatten().tolist()
