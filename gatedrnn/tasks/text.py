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

from gatedrnn.diagnostics import explore
from gatedrnn.models import XLSTM_CELLS, XLSTM_OPTIONS, SequenceModel, xlstm_task_options
from gatedrnn.tasks.base import Task
from gatedrnn.tasks.data import DataError, data_path, read_text
from gatedrnn.tasks.prediction import Prediction

EOS, UNK = "<eos>", "<unk>"
VOCAB = "vocab.json"
CHUNK = 1024  # tokens a model scores per call when it predicts, its state carried from one call to the next


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
        """The vocabulary ``to_json`` wrote; ``ValueError`` naming the field for anything else."""
        tokens, level = (value.get(k) if isinstance(value, dict) else None for k in ("tokens", "level"))
        if level not in ("char", "word"):
            raise ValueError(f"'level' must be 'char' or 'word', got {level!r}")
        if not (isinstance(tokens, list) and tokens and all(isinstance(t, str) for t in tokens)):
            raise ValueError("'tokens' must be a non-empty list of strings")
        if len(set(tokens)) != len(tokens):
            raise ValueError("'tokens' holds a token twice")
        return cls(tokens, level)


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


SPLITS = {"train": "training", "valid": "validation", "test": "test"}
SHARES = {"train": "the first 85%", "valid": "the last 10%", "test": "the 5% before the last 10%"}  # of a single file


def check_lengths(data, ids: dict, batch_size: int, level: str) -> None:
    """Each split long enough to be read: the training split ``batch_size`` streams of 2 tokens
    or more (an input and its next token), the others one stream; else an error naming the
    file, what it holds and what it needs."""
    path = Path(data)
    for split, held in ids.items():
        needs = 2 * batch_size if split == "train" else 2
        if len(held) >= needs:
            continue
        where = f"{path / (split + '.txt')}:"  # a folder's file, or a single file's share
        if not path.is_dir():
            where = f"{path}: its {SPLITS[split]} split ({SHARES[split]})"
        tokens = f"{len(held)} {level} token{'' if len(held) == 1 else 's'}"
        if split == "train":
            why = f"--batch-size {batch_size} needs {needs} ({batch_size} streams of 2 tokens or more)"
            lower = f"lower --batch-size to {len(held) // 2} or " if len(held) >= 2 else ""
        else:
            why, lower = "scoring needs 2 (a token and the one after it)", ""
        raise DataError(f"{where} holds {tokens}; {why}: {lower}give a longer text")


def streams(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(B, N // B): the token sequence cut into B contiguous streams."""
    n = len(ids) // batch_size
    if n < 2:
        raise DataError(f"{len(ids)} tokens cannot fill {batch_size} streams; lower --batch-size")
    return ids[: n * batch_size].view(batch_size, n)


def _flatten(state):
    """A state nested in lists and tuples (the xLSTM stack's: a list of each block's tuple) as a
    flat tuple of its tensors, and its layout for :func:`_unflatten`."""
    if torch.is_tensor(state):
        return (state,), None
    leaves, parts = [], []
    for part in state:
        sub, layout = _flatten(part)
        leaves += sub
        parts.append((len(sub), layout))
    return tuple(leaves), (list if isinstance(state, list) else tuple, parts)


def _unflatten(leaves, layout):
    """The nested state of ``leaves`` (a flat tuple of tensors) laid out as :func:`_flatten` said."""
    if layout is None:
        return leaves[0]
    kind, parts = layout
    out, start = [], 0
    for count, sub in parts:
        out.append(_unflatten(leaves[start : start + count], sub))
        start += count
    return kind(out)


class Text(Task):
    """Language modelling (see the module's docstring): the next token's cross-entropy.

    Args:
        data (str): a text file, or a folder holding ``train.txt``, ``valid.txt`` and
            ``test.txt``.
        batch_size (int): the parallel streams the training text is cut into.
        level (str): ``"char"`` or ``"word"`` tokens. Default: ``"char"``.
        bptt (int): tokens per truncated-backpropagation segment. Default: ``128``.
        by_frequency (bool): number the vocabulary by frequency (an adaptive softmax needs
            it). Default: ``False``.
        vocab (Vocabulary, optional): a saved vocabulary to reuse (a trained run's); ``None``
            builds one from the training text. Default: ``None``.
    """
    name = "text"
    about = "a language model of characters or words: learn a text file, score and generate text"
    saves = (VOCAB,)
    readout = "all"
    metric = "loss"
    lower_is_better = True
    stateful = True
    cells = (*Task.cells, *XLSTM_CELLS)  # the xlstm cell: the paper's stack of blocks (--slstm-at 1 --layers 2)
    options = {
        "level": (str, "char", "text task: 'char' or 'word' tokens"),
        "bptt": (int, 128, "text task: tokens per truncated-BPTT segment"),
        **XLSTM_OPTIONS,  # the model's, read by make_model
    }

    def __init__(self, data: str, batch_size: int, level: str = "char", bptt: int = 128, by_frequency: bool = False,
                 vocab: Vocabulary | None = None):  # fmt: skip
        if level not in ("char", "word"):
            raise ValueError(f"--level must be 'char' or 'word', got {level!r}")
        if bptt < 1:
            raise ValueError(f"--bptt must be a positive integer, got {bptt}")
        self.level, self.bptt, self.batch_size = level, bptt, batch_size
        self.vocab, self.ids = load_splits(data_path(data, self.name), level, by_frequency, vocab)
        check_lengths(data, self.ids, batch_size, level)
        self.vocab_size = self.input_size = self.output_size = len(self.vocab.tokens)
        self.train_streams = streams(self.ids["train"], batch_size)  # (B, N)
        self.batches_per_epoch = max(1, (self.train_streams.shape[1] - 1) // bptt)
        counts = torch.bincount(self.ids["train"], minlength=self.vocab_size).double()
        p = counts / counts.sum()
        self.baseline = float(-(p[p > 0] * p[p > 0].log()).sum())  # unigram entropy, nats per token

    @classmethod
    def option_values(cls, config) -> dict:
        """The task's own options; the xLSTM layers' (``num_heads``, ``slstm_at``) are the
        model's, which :meth:`make_model` reads from the config."""
        return {k: v for k, v in super().option_values(config).items() if k not in XLSTM_OPTIONS}

    @classmethod
    def from_config(cls, config):
        return cls(config.data, config.batch_size, by_frequency=bool(config.adaptive_softmax),
                   **cls.option_values(config))  # fmt: skip

    @classmethod
    def from_run(cls, config, spec, saved):
        """A trained run's task with the vocabulary it saved, whatever the data file now holds."""
        if VOCAB not in saved:
            return cls.from_config(config)
        return cls(config.data, config.batch_size, by_frequency=bool(config.adaptive_softmax),
                   vocab=_vocabulary(saved[VOCAB]), **cls.option_values(config))  # fmt: skip

    @classmethod
    def restore(cls, config, spec, saved):
        """A language model as a trained run keeps it: its vocabulary."""
        task = super().restore(config, spec, saved)
        task.vocab = _vocabulary(saved[VOCAB])
        task.level = task.vocab.level
        return task

    def make_model(self, config):
        if config.cell in XLSTM_CELLS:  # the xLSTM layers' own options (--num-heads, --slstm-at) join the variants'
            return SequenceModel(
                config.cell, config.embedding_size or config.hidden_size, config.hidden_size, self.output_size,
                config.layers, vocab_size=self.vocab_size, readout=self.readout, backend=config.backend,
                dropout=config.dropout, tie_weights=config.tie_weights, adaptive_softmax=tuple(config.adaptive_softmax),
                cell_options=config.cell_options() | xlstm_task_options(config.cell, config.extra),
            )  # fmt: skip
        xlstm_task_options(config.cell, config.extra)  # --slstm-at with another cell: an error naming it
        if not config.embedding_size:
            config = type(config)(**{**config.__dict__, "embedding_size": config.hidden_size})
        return super().make_model(config)

    def artifacts(self):
        return {VOCAB: self.vocab.to_json()}

    def starts_sequence(self, step):
        return step % self.batches_per_epoch == 0

    def figures(self):
        """The gate explorer (``diagnostics/explore.py``) of the first run, on the start of the test
        split: an HTML page of its own, which the report embeds. Characters only."""
        if self.level != "char":
            return []
        text = self.explorer_text()
        return [(explore.FILENAME, lambda runs, path: explore.draw(runs, path, text), explore.caption)]

    def explorer_text(self) -> str:
        """What the gate explorer reads by default: about 1000 characters of the test split,
        from a line start."""
        return explore.sample(self.vocab.decode(self.ids["test"][: 2 * explore.LENGTH].tolist()))

    def introduction(self):
        unit = "character" if self.level == "char" else "word"
        lines = [f"A language model of {unit}s: at every step the model reads a {unit} and predicts the next one, "
                 f"among the {self.vocab_size} {unit}s of its vocabulary. Training reads {self.bptt} {unit}s at a "
                 "time, the state carried from one segment to the next (truncated backpropagation through time).",
                 f"The loss is the cross-entropy in nats per {unit} ("
                 + ("bits per character = nats / ln 2; " if unit == "character" else "")
                 + "perplexity = e^nats)."]  # fmt: skip
        if self.baseline is not None:
            lines.append(f"The baseline {self.baseline:.3f} nats is the unigram entropy of the training text: "
                         f"predicting every {unit} by its frequency alone, blind to context. There is no 'solved' "
                         "bar: lower is better, and the gap below the baseline is what the model gains from "
                         "context.")  # fmt: skip
        return lines

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
        nested = getattr(getattr(model, "module", model), "cell", None) == "xlstm"  # (under DDP: .module)
        if nested and state is not None:  # the trainer carries and checkpoints a flat tuple of tensors
            state = _unflatten(state if isinstance(state, tuple) else (state,), self._state_layout(model, inputs))
        h, state = model.hidden(inputs, state)
        if nested:  # the xLSTM stack's state: a list of each block's own
            state, self._layout = _flatten(state)
        return model.token_nll(h, targets).mean(), state

    def _state_layout(self, model, inputs):
        """How the xLSTM stack's state nests, from a one-step forward where no batch has given it
        yet (a resumed run's first)."""
        if getattr(self, "_layout", None) is None:
            with torch.no_grad():
                self._layout = _flatten(model.hidden(inputs[:, :1])[1])[1]
        return self._layout

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

    @torch.no_grad()
    def predict(self, model, path, device="cpu", per_line=False):
        """Scores a text file: the mean cross-entropy per token in nats, bits per character and
        perplexity, in total and, with ``per_line``, for each line. The file is read as if it
        followed a line break (``\\n``, or ``<eos>`` for words), so every token is scored.

        A token not in the vocabulary is read and scored as ``<unk>`` where the vocabulary
        has one (Penn Treebank's word models do). Where it has none (a character model's
        vocabulary is the characters of its training text), the token is left out: the
        model reads the file as if it were not there, and the score covers the other
        tokens. No honest score exists for it: the model spreads all its probability over
        the tokens it knows, so its loss would be infinite. Either way the unknown tokens
        are counted (the summary's ``unknown characters`` or ``unknown words``) and the
        message says how many, and how they were read; where left out, the first one and
        where it is."""
        vocab, char = self.vocab, self.vocab.level == "char"
        unk = vocab.index.get(UNK)
        text = read_text(path)
        tokens, lines, unknown, first = [], [], 0, None  # each token read, the line it is on
        for number, line in enumerate(text.splitlines(keepends=True), start=1):
            words = list(line) if char else line.split()
            for column, token in enumerate(words, start=1):
                if token not in vocab.index:
                    unknown += 1
                    first = first or f"{token!r} at line {number}, {'column' if char else 'word'} {column}"
                    if unk is None:
                        continue  # left out: neither read nor scored
                tokens.append(vocab.index.get(token, unk))
                lines.append(number)
            if words and not char:
                tokens.append(vocab.index[EOS])
                lines.append(number)
        start = vocab.index.get("\n" if vocab.level == "char" else EOS)  # what the file is read as following
        ids = torch.tensor(([start] if start is not None else []) + tokens, dtype=torch.long)
        lines = torch.tensor(lines[len(lines) - (len(ids) - 1) :], dtype=torch.long)  # the lines of the scored tokens
        if len(ids) < 2:
            left_out = f" ({unknown} not in the vocabulary left out)" if unknown and unk is None else ""
            plural = "" if len(tokens) == 1 else "s"
            raise DataError(f"{path}: holds {len(tokens)} {vocab.level} token{plural}{left_out}, too few to score")
        nll, state = [], None
        for a in range(0, len(ids) - 1, CHUNK):
            window = ids[a : a + CHUNK + 1][None].to(device)  # (1, L + 1)
            h, state = model.hidden(window[:, :-1], state)
            nll.append(model.token_nll(h, window[:, 1:])[0].double().cpu())
        nll = torch.cat(nll)  # (N,) nats per scored token
        totals = _scores(float(nll.mean()), len(nll), vocab.level)
        rows = []
        if per_line:
            count = torch.bincount(lines)
            summed = torch.zeros(len(count), dtype=torch.float64).index_add_(0, lines, nll)
            rows = [{"line": number, **_scores(float(summed[number] / count[number]), int(count[number]), vocab.level)}
                    for number in range(len(count)) if count[number]]  # fmt: skip
        kind = "character" if char else "word"
        summary = {**totals, f"unknown {kind}s": unknown}
        unit = "bits per character" if char else "perplexity"
        shown = totals["bpc"] if char else totals["perplexity"]
        message = (f"{path}: {len(nll)} {vocab.level} tokens scored, {totals['loss']:.4f} nats per token "
                   f"({unit} {shown:.4f})")  # fmt: skip
        if unknown:
            some = f"{unknown} unknown {kind}{'s' if unknown > 1 else ''}"
            message += (f"; {some} read as {UNK}" if unk is not None else
                        f"; {some} not in the model's vocabulary (the first: {first}) left out, neither read nor "
                        "scored")  # fmt: skip
        return Prediction(self.name, rows, summary, message, total={"line": "all", **totals})

    def generate(self, model, out, *, run_dir, prompt="\n", length=500, temperature=1.0, top_k=0, seed=0,
                 stream=None):  # fmt: skip
        """Streams ``length`` tokens sampled after ``prompt`` to ``stream``."""
        vocab = self.vocab
        tokens = tokenize(prompt, vocab.level) if vocab.level == "word" else list(prompt)
        if not tokens:
            raise ValueError("--prompt holds no token")
        for position, token in enumerate(tokens):
            if token not in vocab.index and UNK not in vocab.index:
                raise ValueError(f"--prompt: {token!r} (position {position}) is not in the model's vocabulary")
        if vocab.level == "word" and tokens[-1] == EOS and not prompt.endswith("\n"):
            tokens = tokens[:-1]
        prompt_ids = vocab.encode(tokens, "--prompt")
        stream.write(prompt)
        for token_id in sample(model, prompt_ids, length, temperature, top_k, seed):
            token = vocab.tokens[token_id]
            stream.write(token if vocab.level == "char" else ("\n" if token == EOS else " " + token))
            stream.flush()
        stream.write("\n")
        return None


def sample(model, prompt_ids, length, temperature=1.0, top_k=0, seed=0):
    """Yields ``length`` token ids sampled after the prompt (ids (L,)), at ``temperature``,
    among the ``top_k`` likeliest (0: all)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        logits, state = model(prompt_ids[None], return_state=True)
        logits = logits[0, -1]
        for _ in range(length):
            scaled = logits / max(temperature, 1e-6)
            if top_k:
                kth = torch.topk(scaled, min(top_k, scaled.numel())).values[-1]
                scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            token = torch.multinomial(torch.softmax(scaled, -1), 1, generator=generator)
            yield int(token)
            logits, state = model(token[None], state, return_state=True)
            logits = logits[0, -1]


def _vocabulary(value) -> Vocabulary:
    try:
        return Vocabulary.from_json(value)
    except ValueError as error:
        raise DataError(f"{VOCAB}: not a gatedrnn vocabulary ({error})") from None


def _scores(nats: float, tokens: int, level: str) -> dict:
    out = {"tokens": tokens, "loss": nats}
    if level == "char":
        out["bpc"] = nats / math.log(2)
    out["perplexity"] = math.exp(min(nats, 50))
    return out
