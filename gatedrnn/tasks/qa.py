"""Question answering on bAbI (Weston et al. 2015, "Towards AI-Complete Question Answering").

The bAbI format: numbered lines, numbering restarting at 1 with each story; a question line
is ``question<TAB>answer<TAB>supporting fact ids``. Each question is paired with every
statement of its story before it. The model follows Keras' ``babi_rnn`` example: one
recurrent layer encodes the question; its final state is added to the embedding of every
story word, so a second recurrent layer reads the story knowing what is asked; its last
state classifies the answer (a word, or a comma-joined list in tasks 8 and 19). The 1k protocol trains on the first 1,000 questions of
the training file, the 10k protocol on all; in both, the last 10% of those are held out for
validation. The test file is the training file's name with ``_train`` replaced by ``_test``.
Metric: accuracy on the test questions.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gatedrnn.models import CELLS
from gatedrnn.tasks.base import Task, batch_generator
from gatedrnn.tasks.data import DataError, data_path, read_text

PAD, UNK = "<pad>", "<unk>"


class QAModel(nn.Module):
    """Question encoder + question-conditioned story reader + answer classifier."""

    def __init__(self, cell, vocab_size, embedding_size, hidden_size, answers, backend="auto", forget_bias=1.0,
                 dropout=0.0, cell_options=None):  # fmt: skip
        super().__init__()
        kwargs = ({"forget_bias": forget_bias} if cell == "lstm" else {}) | (cell_options or {})  # variants
        self.embed = nn.Embedding(vocab_size, embedding_size)
        self.question_rnn = CELLS[cell](embedding_size, embedding_size, batch_first=True, backend=backend, **kwargs)
        self.rnn = CELLS[cell](embedding_size, hidden_size, batch_first=True, backend=backend, **kwargs)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, answers)

    @staticmethod
    def _last(output, lengths):
        return output[torch.arange(output.shape[0]), lengths - 1]  # (B, H): each sequence's last valid step

    def forward(self, story, story_lengths, question, question_lengths):
        q = self._last(self.question_rnn(self.drop(self.embed(question)), lengths=question_lengths)[0],
                       question_lengths)  # (B, E)  # fmt: skip
        x = self.drop(self.embed(story)) + q[:, None]  # (B, T, E): every word sees the question
        return self.head(self.drop(self._last(self.rnn(x, lengths=story_lengths)[0], story_lengths)))


def words(text: str) -> list[str]:
    return re.findall(r"[\w']+|[.?,!]", text.lower())


def parse_babi(path) -> list[tuple[list[str], list[str], str]]:
    """(story tokens, question tokens, answer) for every question in a bAbI file."""
    examples, story = [], []
    for line_number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        number, _, text = line.strip().partition(" ")
        if not number.isdigit():
            raise DataError(f"{path}, line {line_number}: expected a line number, got {number!r}")
        if int(number) == 1:
            story = []
        if "\t" in text:
            parts = text.split("\t")
            if len(parts) < 2 or not parts[1].strip():
                raise DataError(f"{path}, line {line_number}: a question needs 'question<TAB>answer'")
            examples.append(([w for s in story for w in s], words(parts[0]), parts[1].strip().lower()))
        else:
            story.append(words(text))
    if not examples:
        raise DataError(f"{path}: holds no question (no line with a tab), so it is not a bAbI file")
    return examples


def test_file(train_path: Path) -> Path:
    name = train_path.name
    if "_train" not in name:
        raise DataError(f"{train_path}: expected a bAbI training file (its name holding '_train')")
    return train_path.with_name(name.replace("_train", "_test"))


class QA(Task):
    """bAbI question answering (see the module's docstring): accuracy.

    Args:
        data (str): a bAbI training file (``..._train.txt``; its ``_test`` twin is read too).
        protocol (str): ``"1k"`` (the first 1,000 training questions) or ``"10k"`` (all).
            Default: ``"1k"``.
    """
    name = "qa"
    about = "question answering on the bAbI stories (Weston et al. 2015)"
    readout = "last"
    metric = "accuracy"
    lower_is_better = False
    options = {"protocol": (str, "1k", "qa task: '1k' (first 1,000 training questions) or '10k' (all)")}

    def __init__(self, data, protocol="1k"):
        if protocol not in ("1k", "10k"):
            raise ValueError(f"--protocol must be '1k' or '10k', got {protocol!r}")
        train_path = data_path(data, self.name, "a bAbI training file")
        if not train_path.exists():
            raise DataError(f"{train_path}: no such file")
        train = parse_babi(train_path)
        if protocol == "1k":
            train = train[:1000]
        test = parse_babi(test_file(train_path))
        cut = len(train) - max(1, len(train) // 10)
        splits = {"train": train[:cut], "valid": train[cut:], "test": test}
        tokens = sorted({w for story, question, _ in train for w in story + question})
        self.vocab = [PAD, UNK] + tokens
        self.answers = sorted({answer for _, _, answer in train})
        index, answer_index = {w: i for i, w in enumerate(self.vocab)}, {a: i for i, a in enumerate(self.answers)}
        self.data = {}
        for split, examples in splits.items():
            stories = [[index.get(w, 1) for w in story] or [0] for story, _, _ in examples]
            questions = [[index.get(w, 1) for w in question] for _, question, _ in examples]
            labels = torch.tensor([answer_index.get(a, -1) for _, _, a in examples])  # -1: unseen, always wrong
            self.data[split] = (stories, questions, labels)
        self.vocab_size, self.input_size, self.output_size = len(self.vocab), 64, len(self.answers)
        test_labels = self.data["test"][2]
        known = test_labels[test_labels >= 0]
        self.baseline = float(torch.bincount(known).max()) / len(test_labels) if len(known) else 0.0

    def introduction(self):
        count = {split: len(labels) for split, (_, _, labels) in self.data.items()}
        return [f"Question answering on bAbI: the model reads a story and a question about it, and answers with one "
                f"of the {self.output_size} answers seen in training (a word, or a comma-joined list). It trains on "
                f"{count['train']} questions, validates on {count['valid']} and is tested on {count['test']}.",
                f"The metric is the accuracy on the test questions. The baseline {self.baseline:.3f} is always giving "
                "the most frequent test answer. There is no 'solved' bar in the task; Weston et al. (2015) count a "
                "task as passed at 95% accuracy."]  # fmt: skip

    def make_model(self, config):
        return QAModel(config.cell, self.vocab_size, config.embedding_size or self.input_size, config.hidden_size,
                       self.output_size, config.backend, config.forget_bias, config.dropout,
                       config.cell_options())  # fmt: skip

    def diagnostic_batch(self, seed, size=64):
        return None  # two encoders: the single-layer figures do not apply

    @staticmethod
    def _pad(seqs):
        lengths = torch.tensor([len(s) for s in seqs])
        x = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
        for b, s in enumerate(seqs):
            x[b, : len(s)] = torch.tensor(s)
        return x, lengths

    def _batch(self, split, rows):
        stories, questions, labels = self.data[split]
        return (self._pad([stories[k] for k in rows]), self._pad([questions[k] for k in rows])), labels[rows]

    def train_batch(self, step, batch_size, seed):
        n = len(self.data["train"][2])
        return self._batch("train", torch.randint(0, n, (batch_size,), generator=batch_generator(seed, step)).tolist())

    def split(self, name, seed):
        return self._batch(name, list(range(len(self.data[name][2]))))

    def forward(self, model, inputs):
        (story, story_lengths), (question, question_lengths) = inputs
        return model(story, story_lengths, question, question_lengths)

    def loss(self, output, target):
        return F.cross_entropy(output, target.clamp_min(0))

    def metrics(self, output, target):
        return {"accuracy": (output.argmax(-1) == target).float().mean().item()}

    @torch.no_grad()
    def evaluate(self, model, split, seed, device="cpu", batch_size: int = 256):
        was_training = model.training
        model.eval()
        n, outputs = len(self.data[split][2]), []
        for i in range(0, n, batch_size):
            inputs, _ = self._batch(split, list(range(i, min(n, i + batch_size))))
            inputs = tuple(tuple(t.to(device) for t in pair) for pair in inputs)
            outputs.append(self.forward(model, inputs).cpu())
        model.train(was_training)
        return self.metrics(torch.cat(outputs), self.data[split][2])
