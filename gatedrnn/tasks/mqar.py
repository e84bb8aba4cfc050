"""Multi-query associative recall (MQAR): Arora et al. 2023 ("Zoology: Measuring and Improving
Recall in Efficient Language Models"), the recall task the xLSTM paper reports (Beck et al.
2024, Figure 5 and Appendix).

A sequence of ``T`` tokens opens with ``D`` key-value pairs ``k_1 v_1 k_2 v_2 ... k_D v_D``
(keys drawn without replacement from the lower half of the vocabulary, values likewise from the
upper half); the remaining ``T - 2D`` steps are blanks among which each of the ``D`` keys
reappears once, in a random order at random steps: a query. At each query the model predicts the
value that followed that key. The metric is the accuracy over the queries. A model that keeps
no association but knows which values were shown guesses one of them: ``1 / D``, the baseline.

Each step shows its token and, beside it, the token before (``features``: two one-hot vectors,
a token shift). The xLSTM and Zoology blocks get that from a short causal convolution before the
layer; a bare layer without it cannot bind a key to the value that follows it wherever its write
at a step is a function of that step's input alone, as the mLSTM's ``v_t k_t^T`` is
(``--no-shift`` gives the tokens alone, through an embedding).

Recall takes a memory of ``D`` associations. The xLSTM paper's claim is that the mLSTM's matrix
memory ``C`` (``d x d`` per head) holds them where a scalar memory of the same width does not.

Differences from Zoology, for a CPU budget: a small vocabulary (default 64, Zoology 8,192) and
short sequences (default 64); the non-query steps are a blank token (Zoology can fill them with
random tokens) and the queries' steps are uniform in the query segment (Zoology draws the gaps
from a power law, favouring queries close to the pairs).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from gatedrnn.models import XLSTM_CELLS, XLSTM_OPTIONS, SequenceModel, xlstm_task_options
from gatedrnn.tasks.base import Task, batch_generator
from gatedrnn.tasks.data import DataError, read_text
from gatedrnn.tasks.prediction import Prediction

BLANK = 0  # the token between queries
IGNORE = -100  # the target of a step that is not a query
SOLVED_ACCURACY = 0.99


def features(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """The model's input of a batch of tokens ``(B, T)``: at each step the token and the token before
    it (the blank before the first), one-hot, ``(B, T, 2 * vocab)``.

    Args:
        tokens (Tensor): ``(B, T)`` token ids in ``[0, vocab)``.
        vocab (int): the vocabulary size.
    """
    before = F.pad(tokens, (1, 0), value=BLANK)[:, :-1]  # (B, T)
    return torch.cat([F.one_hot(tokens, vocab), F.one_hot(before, vocab)], -1).float()  # (B, T, 2V)


def mqar_batch(batch_size: int, length: int, kv_pairs: int, vocab: int, generator: torch.Generator):
    """``batch_size`` MQAR sequences of ``length`` tokens with ``kv_pairs`` pairs each.

    Keys are ``1 .. vocab/2 - 1``, values ``vocab/2 .. vocab - 1``, the blank ``0``.

    Args:
        batch_size (int): sequences.
        length (int): tokens per sequence, at least ``3 * kv_pairs`` (pairs, then queries).
        kv_pairs (int): key-value pairs per sequence, ``D``.
        vocab (int): the vocabulary, even, with ``vocab / 2 - 1 >= kv_pairs``.
        generator (torch.Generator): the source of every draw.

    Returns:
        inputs ``(B, T)`` tokens and targets ``(B, T)``: the value at each query, ``-100``
        elsewhere.

    Examples:
        >>> import torch
        >>> from gatedrnn.tasks.mqar import mqar_batch
        >>> inputs, targets = mqar_batch(2, 12, 4, 16, torch.Generator().manual_seed(0))
        >>> inputs.shape, (targets != -100).sum(1).tolist()  # four queries each
        (torch.Size([2, 12]), [4, 4])
    """
    B, D, half = batch_size, kv_pairs, vocab // 2
    keys = torch.rand(B, half - 1, generator=generator).argsort(1)[:, :D] + 1  # (B, D) distinct, in 1..half-1
    values = torch.rand(B, half, generator=generator).argsort(1)[:, :D] + half  # (B, D) distinct, in half..vocab-1
    inputs = torch.full((B, length), BLANK, dtype=torch.long)
    inputs[:, 0 : 2 * D : 2], inputs[:, 1 : 2 * D : 2] = keys, values  # (B, 2D): k_1 v_1 ... k_D v_D
    slots = length - 2 * D
    where = torch.rand(B, slots, generator=generator).argsort(1)[:, :D] + 2 * D  # (B, D) query steps
    order = torch.rand(B, D, generator=generator).argsort(1)  # (B, D) which pair each query asks
    targets = torch.full((B, length), IGNORE, dtype=torch.long)
    inputs.scatter_(1, where, keys.gather(1, order))
    targets.scatter_(1, where, values.gather(1, order))
    return inputs, targets  # (B, T), (B, T)


class MQAR(Task):
    """Multi-query associative recall (see the module's docstring): a value at every query.

    Args:
        length (int): tokens per sequence ``T``. Default: ``64``.
        kv_pairs (int): key-value pairs per sequence ``D``; ``T >= 3 D``. Default: ``4``.
        vocab (int): the vocabulary: keys below ``vocab / 2``, values from it. Default: ``64``.
        test_size (int): sequences in the test split (half as many in validation).
            Default: ``1000``.
        no_shift (bool): tokens alone through an embedding, without the previous token beside
            each step. Default: ``False``.
        num_heads (int): the xLSTM cells' heads. Default: ``4``.
        slstm_at (str): the xlstm cell's sLSTM blocks, ``"1"`` or ``"0,2"``. Default: ``""``.

    Examples:
        >>> from gatedrnn.tasks.mqar import MQAR
        >>> task = MQAR(length=32, kv_pairs=8)
        >>> inputs, targets = task.train_batch(step=1, batch_size=4, seed=0)
        >>> inputs.shape, targets.shape, task.baseline  # a token and the one before, one-hot, at each step
        (torch.Size([4, 32, 128]), torch.Size([4, 32]), 0.125)
    """

    name = "mqar"
    about = "multi-query associative recall: the values of keys shown earlier (Arora et al. 2023, Zoology)"
    readout = "all"
    metric = "accuracy"
    lower_is_better = False
    cells = (*Task.cells, *XLSTM_CELLS)
    options = {"kv_pairs": (int, 4, "mqar task: key-value pairs per sequence (--length at least 3 times it)"),
               "vocab": (int, 64, "mqar task: the vocabulary, keys in its lower half and values in its upper"),
               "test_size": (int, 1000, "mqar task: test sequences (half as many in validation)"),
               "no_shift": (bool, False, "mqar task: each step shows its token alone, through an embedding, "
                                         "without the token before it beside"),
               **XLSTM_OPTIONS}  # fmt: skip

    def __init__(self, length: int = 64, kv_pairs: int = 4, vocab: int = 64, test_size: int = 1000,
                 no_shift: bool = False, num_heads: int = 4, slstm_at: str = ""):  # fmt: skip
        if kv_pairs < 1:
            raise ValueError(f"--kv-pairs must be a positive integer, got {kv_pairs}")
        if length < 3 * kv_pairs:
            raise ValueError(f"--length must be at least 3 x --kv-pairs = {3 * kv_pairs} (the pairs, then a query "
                             f"for each among blanks), got {length}")  # fmt: skip
        if vocab % 2 or vocab // 2 - 1 < kv_pairs:
            raise ValueError(f"--vocab must be even and hold {kv_pairs} keys below its half (at least "
                             f"{2 * kv_pairs + 2}), got {vocab}")  # fmt: skip
        if test_size < 2:
            raise ValueError(f"--test-size must be at least 2, got {test_size}")
        self.length, self.kv_pairs, self.vocab, self.test_size = length, kv_pairs, vocab, test_size
        self.num_heads, self.slstm_at, self.no_shift = num_heads, slstm_at, bool(no_shift)
        self.output_size = vocab
        # the shift's two one-hot vectors, or tokens through an embedding (--embedding-size sets its size)
        self.vocab_size, self.input_size = (vocab, 64) if self.no_shift else (None, 2 * vocab)
        self.baseline = 1.0 / kv_pairs

    @classmethod
    def from_config(cls, config):
        return cls(length=config.length, **cls.option_values(config))

    def make_model(self, config):
        options = xlstm_task_options(config.cell, config.extra)  # --num-heads, --slstm-at
        return SequenceModel(
            config.cell, (config.embedding_size or self.input_size) if self.vocab_size else self.input_size,
            config.hidden_size, self.output_size, config.layers, vocab_size=self.vocab_size, readout=self.readout, backend=config.backend,
            forget_bias=config.forget_bias, dropout=config.dropout, cell_options=config.cell_options() | options,
        )  # fmt: skip

    def model_spec(self):
        return {**super().model_spec(), "kv_pairs": self.kv_pairs, "vocab": self.vocab, "length": self.length,
                "no_shift": self.no_shift}  # fmt: skip

    def inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """What the model reads of tokens ``(B, T)``: :func:`features` (``(B, T, 2V)``), or the
        tokens themselves with ``no_shift``.

        Args:
            tokens (Tensor): ``(B, T)`` token ids.
        """
        return tokens if self.no_shift else features(tokens, self.vocab)

    def tokens(self, inputs: torch.Tensor) -> torch.Tensor:
        """The token ids of a batch of model inputs (the inverse of :meth:`inputs`)."""
        return inputs if self.no_shift else inputs[..., : self.vocab].argmax(-1)

    @classmethod
    def restore(cls, config, spec, saved):
        task = super().restore(config, spec, saved)
        for name, value in cls.option_values(config).items():
            setattr(task, name, spec.get(name, value))
        task.no_shift, task.baseline = bool(task.no_shift), 1.0 / task.kv_pairs
        return task

    # -- data ---------------------------------------------------------------------------------

    def train_batch(self, step, batch_size, seed):
        tokens, targets = mqar_batch(batch_size, self.length, self.kv_pairs, self.vocab, batch_generator(seed, step))
        return self.inputs(tokens), targets

    def split(self, name, seed):
        stream = {"valid": 1, "test": 2}[name]
        size = self.test_size if name == "test" else max(1, self.test_size // 2)
        tokens, targets = mqar_batch(size, self.length, self.kv_pairs, self.vocab, batch_generator(seed, -1, stream))
        return self.inputs(tokens), targets

    def loss(self, output, target):
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), ignore_index=IGNORE)

    def metrics(self, output, target):
        asked = target != IGNORE  # (B, T)
        right = (output.argmax(-1) == target)[asked]
        return {"accuracy": right.float().mean().item(), "loss": self.loss(output, target).item()}

    def solved(self, metrics):
        return metrics["accuracy"] >= SOLVED_ACCURACY

    def marked_positions(self, inputs):
        return [2 * self.kv_pairs - 1]  # the last value shown: the queries follow

    # -- used ---------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, model, path, device="cpu", per_line=False):
        """Recall on sequences written one a line as token ids separated by spaces (keys below
        ``vocab / 2``, values from it, blanks 0), the pairs first: a row per query with the
        key, the predicted value and, where the key was shown in a pair, the right one."""
        rows = []
        for number, line in enumerate(read_text(Path(path)).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                tokens = [int(word) for word in line.split()]
            except ValueError:
                raise DataError(f"{path}, line {number}: expected token ids separated by spaces") from None
            if any(not 0 <= t < self.vocab for t in tokens):
                raise DataError(f"{path}, line {number}: token ids must be in [0, {self.vocab}), got "
                                f"{[t for t in tokens if not 0 <= t < self.vocab][0]}")  # fmt: skip
            logits = model(self.inputs(torch.tensor([tokens])).to(device)).cpu()[0]  # (T, V)
            shown = {}
            for step, token in enumerate(tokens):
                key = 0 < token < self.vocab // 2
                if key and step + 1 < len(tokens) and tokens[step + 1] >= self.vocab // 2 and token not in shown:
                    shown[token] = tokens[step + 1]  # a pair
                elif key and token in shown:
                    predicted = int(logits[step, self.vocab // 2 :].argmax()) + self.vocab // 2
                    rows.append({"line": number, "step": step + 1, "key": token, "value": predicted,
                                 "right": predicted == shown[token]})  # fmt: skip
        if not rows:
            raise DataError(f"{path}: holds no query (a key shown again after its pair)")
        accuracy = sum(row["right"] for row in rows) / len(rows)
        summary = {"task": self.name, "input": str(path), "queries": len(rows), "accuracy": accuracy}
        return Prediction(self.name, rows, summary, f"{len(rows)} queries, {accuracy:.1%} recalled")

    def describe(self, data=""):
        return f"mqar, T = {self.length}, {self.kv_pairs} pairs"

    def introduction(self):
        T, D = self.length, self.kv_pairs
        return [f"Multi-query associative recall at T = {T}: the model reads {D} key-value pairs, then {T - 2 * D} "
                f"steps of blanks among which each key reappears once; at each of those queries it predicts "
                f"the value that followed the key, among the {self.vocab} tokens.",
                f"The accuracy counts the queries recalled. Guessing one of the {D} values shown scores "
                f"1/{D} = {self.baseline:.4g}, the baseline.",
                f"'Solved' means {SOLVED_ACCURACY:.0%} of the queries, which takes holding {D} associations "
                "until asked (Arora et al. 2023; xLSTM, Beck et al. 2024)."]  # fmt: skip

    def token_labels(self, inputs):
        half = self.vocab // 2
        return ["·" if t == BLANK else (f"k{t}" if t < half else f"v{t - half}") for t in self.tokens(inputs).tolist()]
