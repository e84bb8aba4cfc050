"""Question answering on bAbI (Weston et al. 2015, "Towards AI-Complete Question Answering").

The bAbI format: numbered lines, numbering restarting at 1 with each story; a question line
is ``question<TAB>answer<TAB>supporting fact ids``. Each question is paired with every
statement of its story before it; the model reads ``story <q> question`` as one token
sequence with a gated encoder and classifies the answer (a word, or a comma-joined list in
tasks 8 and 19) from its last state. The 1k protocol trains on the first 1,000 questions of
the training file, the 10k protocol on all; in both, the last 10% of those are held out for
validation. The test file is the training file's name with ``_train`` replaced by ``_test``.
Metric: accuracy on the test questions.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F

from gatedrnn.tasks.base import Task, batch_generator
from gatedrnn.tasks.data import DataError, read_text

PAD, UNK, QUESTION = "<pad>", "<unk>", "<q>"


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
    name = "qa"
    readout = "last"
    metric = "accuracy"
    lower_is_better = False
    options = {"protocol": (str, "1k", "qa task: '1k' (first 1,000 training questions) or '10k' (all)")}

    def __init__(self, data, protocol="1k"):
        if protocol not in ("1k", "10k"):
            raise ValueError(f"--protocol must be '1k' or '10k', got {protocol!r}")
        train_path = Path(data)
        if not train_path.exists():
            raise DataError(f"{train_path}: no such file")
        train = parse_babi(train_path)
        if protocol == "1k":
            train = train[:1000]
        test = parse_babi(test_file(train_path))
        cut = len(train) - max(1, len(train) // 10)
        splits = {"train": train[:cut], "valid": train[cut:], "test": test}
        tokens = sorted({w for story, question, _ in train for w in story + question})
        self.vocab = [PAD, UNK, QUESTION] + tokens
        self.answers = sorted({answer for _, _, answer in train})
        index, answer_index = {w: i for i, w in enumerate(self.vocab)}, {a: i for i, a in enumerate(self.answers)}
        self.data = {}
        for split, examples in splits.items():
            seqs = [[index.get(w, 1) for w in story + [QUESTION] + question] for story, question, _ in examples]
            labels = torch.tensor([answer_index.get(a, -1) for _, _, a in examples])  # -1: unseen, always wrong
            self.data[split] = (seqs, labels)
        self.vocab_size, self.input_size, self.output_size = len(self.vocab), 64, len(self.answers)
        test_labels = self.data["test"][1]
        known = test_labels[test_labels >= 0]
        self.baseline = float(torch.bincount(known).max()) / len(test_labels) if len(known) else 0.0

    @classmethod
    def from_config(cls, config):
        return cls(config.data, **{k: config.extra.get(k, d) for k, (_, d, _) in cls.options.items()})

    @staticmethod
    def _pad(seqs):
        lengths = torch.tensor([len(s) for s in seqs])
        x = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
        for b, s in enumerate(seqs):
            x[b, : len(s)] = torch.tensor(s)
        return x, lengths

    def train_batch(self, step, batch_size, seed):
        seqs, labels = self.data["train"]
        pick = torch.randint(0, len(seqs), (batch_size,), generator=batch_generator(seed, step)).tolist()
        return self._pad([seqs[k] for k in pick]), labels[pick]

    def split(self, name, seed):
        seqs, labels = self.data[name]
        return self._pad(seqs), labels

    def forward(self, model, inputs):
        x, lengths = inputs
        return model(x, lengths=lengths)

    def loss(self, output, target):
        return F.cross_entropy(output, target.clamp_min(0))

    def metrics(self, output, target):
        return {"accuracy": (output.argmax(-1) == target).float().mean().item()}

    @torch.no_grad()
    def evaluate(self, model, split, seed, device="cpu", batch_size: int = 256):
        was_training = model.training
        model.eval()
        seqs, labels = self.data[split]
        outputs = []
        for i in range(0, len(seqs), batch_size):
            x, lengths = self._pad(seqs[i : i + batch_size])
            outputs.append(model(x.to(device), lengths=lengths.to(device)).cpu())
        model.train(was_training)
        return self.metrics(torch.cat(outputs), labels)
