"""Language modelling on any UTF-8 text, at the character or the word level.

Splits: a folder holding ``train.txt``, ``valid.txt`` and ``test.txt`` (Penn Treebank's files,
one sentence a line, ``<eos>`` added per line as Mikolov et al. and Zaremba et al. do) is used
as given; a single file keeps nanoGPT's ``shakespeare_char`` validation split, its last 10%,
and gives the 5% before it to the test split: training is the first 85% (so the test loss is
never the validation loss again). Training is truncated backpropagation
through time: the corpus is cut into ``batch_size`` parallel streams, read ``bptt`` tokens at
a time, and the state carries from one batch to the next. Metric: cross-entropy in nats per
token (bits per character = nats / ln 2, perplexity = e^nats).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from gatedrnn.tasks.base import Task
from gatedrnn.tasks.data import DataError, data_path, read_text

EOS, UNK = "<eos>", "<unk>"


def tokenize(text: str, level: str) -> list[str]:
    if level == "char":
        return list(text)
    tokens = []
    for line in text.splitlines():
        words = line.split()
        if words:
            tokens += words + [EOS]
    return tokens


class Vocabulary:
    def __init__(self, tokens: list[str], level: str):
        self.level, self.tokens = level, tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, tokens, level, by_frequency: bool = False):
        """Sorted tokens; by falling frequency (ties alphabetical) for an adaptive softmax."""
        if by_frequency:
            counts = Counter(tokens)
            return cls(sorted(counts, key=lambda t: (-counts[t], t)), level)
        return cls(sorted(set(tokens)), level)

    def encode(self, tokens, source: str = "the text") -> torch.Tensor:
        try:  # every token known: one pass (4x faster on tiny Shakespeare's 1.1M characters)
            return torch.tensor([self.index[token] for token in tokens], dtype=torch.long)
        except KeyError:
            pass
        unk = self.index.get(UNK)
        ids = []
        for position, token in enumerate(tokens):
            i = self.index.get(token, unk)
            if i is None:
                raise DataError(f"{source}: {token!r} (token {position}) is not in the vocabulary "
                                f"of {len(self.tokens)} {self.level} tokens")  # fmt: skip
            ids.append(i)
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids) -> str:
        sep = "" if self.level == "char" else " "
        return sep.join(self.tokens[i] for i in ids)

    def to_json(self):
        return {"level": self.level, "tokens": self.tokens}

    @classmethod
    def from_json(cls, value):
        return cls(value["tokens"], value["level"])


def load_splits(data, level: str, by_frequency: bool = False, vocab: Vocabulary | None = None):
    """(vocabulary, {split: ids}) from a file or a folder of train/valid/test.txt; the vocabulary
    is ``vocab`` when given (a trained run's), else a folder's training split's or the whole
    file's, ordered by frequency when ``by_frequency``."""
    path = Path(data)
    if path.is_dir():
        files = {split: path / f"{split}.txt" for split in ("train", "valid", "test")}
        missing = [str(f) for f in files.values() if not f.exists()]
        if missing:
            raise DataError(f"{path}: a text folder needs train.txt, valid.txt and test.txt; missing {missing}")
        tokens = {split: tokenize(read_text(f), level) for split, f in files.items()}
        vocab = vocab or Vocabulary.build(tokens["train"], level, by_frequency)
        return vocab, {s: vocab.encode(t, str(files[s])) for s, t in tokens.items()}
    text = read_text(path)
    tokens = tokenize(text, level)
    if len(tokens) < 20:
        raise DataError(f"{path}: holds {len(tokens)} {level} tokens, too few to split")
    vocab = vocab or Vocabulary.build(tokens, level, by_frequency)
    ids = vocab.encode(tokens, str(path))
    test_from, valid_from = int(0.85 * len(ids)), int(0.9 * len(ids))
    return vocab, {"train": ids[:test_from], "test": ids[test_from:valid_from], "valid": ids[valid_from:]}


def streams(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(B, N // B): the token sequence cut into B contiguous streams."""
    n = len(ids) // batch_size
    if n < 2:
        raise DataError(f"{len(ids)} tokens cannot fill {batch_size} streams; lower --batch-size")
    return ids[: n * batch_size].view(batch_size, n)


class Text(Task):
    name = "text"
    readout = "all"
    metric = "loss"
    lower_is_better = True
    stateful = True
    options = {
        "level": (str, "char", "text task: 'char' or 'word' tokens"),
        "bptt": (int, 128, "text task: tokens per truncated-BPTT segment"),
    }

    def __init__(self, data: str, batch_size: int, level: str = "char", bptt: int = 128, by_frequency: bool = False,
                 vocab: Vocabulary | None = None):  # fmt: skip
        if level not in ("char", "word"):
            raise ValueError(f"--level must be 'char' or 'word', got {level!r}")
        if bptt < 1:
            raise ValueError(f"--bptt must be a positive integer, got {bptt}")
        self.level, self.bptt, self.batch_size = level, bptt, batch_size
        self.vocab, self.ids = load_splits(data_path(data, self.name), level, by_frequency, vocab)
        self.vocab_size = self.input_size = self.output_size = len(self.vocab.tokens)
        self.train_streams = streams(self.ids["train"], batch_size)  # (B, N)
        self.batches_per_epoch = max(1, (self.train_streams.shape[1] - 1) // bptt)
        counts = torch.bincount(self.ids["train"], minlength=self.vocab_size).double()
        p = counts / counts.sum()
        self.baseline = float(-(p[p > 0] * p[p > 0].log()).sum())  # unigram entropy, nats per token

    @classmethod
    def from_config(cls, config):
        return cls(config.data, config.batch_size, by_frequency=bool(config.adaptive_softmax),
                   **cls.option_values(config))  # fmt: skip

    @classmethod
    def from_run(cls, config, run_dir):
        """A trained run's task with the vocabulary it saved, whatever the data file now holds."""
        path = Path(run_dir) / "vocab.json"
        if not path.exists():
            return cls.from_config(config)
        try:
            vocab = Vocabulary.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise DataError(f"{path}: not a gatedrnn vocabulary ({error})") from None
        return cls(config.data, config.batch_size, by_frequency=bool(config.adaptive_softmax), vocab=vocab,
                   **cls.option_values(config))  # fmt: skip

    def make_model(self, config):
        if not config.embedding_size:
            config = type(config)(**{**config.__dict__, "embedding_size": config.hidden_size})
        return super().make_model(config)

    def artifacts(self):
        return {"vocab.json": self.vocab.to_json()}

    def starts_sequence(self, step):
        return step % self.batches_per_epoch == 0

    def token_labels(self, inputs):
        return [self.vocab.tokens[i] for i in inputs.tolist()]  # (T,) ids: a character or word each

    def train_batch(self, step, batch_size, seed):
        k = step % self.batches_per_epoch
        window = self.train_streams[:, k * self.bptt : k * self.bptt + self.bptt + 1]  # (B, L + 1)
        return window[:, :-1], window[:, 1:]

    def split(self, name, seed):
        """Up to 64 windows of ``bptt`` tokens from a split, for the report's figures (fewer where
        the split is short: a small file's test split may not fill 64)."""
        ids = self.ids[name]
        data = streams(ids, max(1, min(64, (len(ids) - 1) // (self.bptt + 1))))[:, : self.bptt + 1]
        return data[:, :-1], data[:, 1:]

    def loss(self, output, target):
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    def stateful_loss(self, model, inputs, targets, state):
        h, state = model.hidden(inputs, state)
        return model.token_nll(h, targets).mean(), state

    def metrics(self, output, target):
        nats = self.loss(output, target).item()
        return self._named(nats)

    def _named(self, nats):
        out = {"loss": nats, "perplexity": math.exp(min(nats, 50))}
        if self.level == "char":
            out["bpc"] = nats / math.log(2)
        return out

    @torch.no_grad()
    def evaluate(self, model, split, seed, device="cpu", batch_size: int = 32):
        """Cross-entropy over the whole split, read in streams with the state carried."""
        was_training = model.training
        model.eval()
        data = streams(self.ids[split], min(batch_size, max(1, len(self.ids[split]) // (self.bptt + 1))))
        total, count, state = 0.0, 0, None
        for start in range(0, data.shape[1] - 1, self.bptt):
            window = data[:, start : start + self.bptt + 1].to(device)
            h, state = model.hidden(window[:, :-1], state)
            total += model.token_nll(h, window[:, 1:]).sum().item()
            count += window[:, 1:].numel()
        model.train(was_training)
        return self._named(total / count)
