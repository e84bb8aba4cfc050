"""Sequence classification: an image read row by row or pixel by pixel (optionally in a fixed
random order of pixels, the "permuted" variant of Le et al. 2015), or any CSV of sequences.

``--data digits`` uses scikit-learn's 8×8 digits (1,797 images, shipped with scikit-learn);
``--data FILE.csv[.gz]`` reads one example per row, the values then the label (the last
column, or ``--label NAME`` when the file has a header). The examples are split 80/10/10 into
train, valid and test in an order fixed once (the same for every run and cell). Metric:
accuracy; the baseline is the most frequent class's share of the test set.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from gatedrnn.tasks.base import Task, batch_generator
from gatedrnn.tasks.data import DataError, finite_number

SPLIT_SEED = 1234  # the example order behind the splits: fixed, whatever the run's seed
NORMALIZATION = "normalization.json"  # the training maximum the values are divided by, and their count


def load_digits():
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataError("--data digits needs scikit-learn: pip install scikit-learn") from None
    digits = sklearn_digits()
    return torch.tensor(digits.data, dtype=torch.float32), torch.tensor(digits.target, dtype=torch.long)


def read_rows(path) -> list[list[str]]:
    """The non-empty rows of a (gzipped) UTF-8 CSV file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a CSV file")
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot be read as (gzipped) UTF-8 CSV ({error})") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if not rows:
        raise DataError(f"{path}: is empty")
    return rows


def load_csv(path, label: str = ""):
    path = Path(path)
    rows = read_rows(path)
    header = None
    try:
        float(rows[0][-1])
    except ValueError:
        header, rows = rows[0], rows[1:]
    column = len(rows[0]) - 1 if rows else 0
    if label:
        if header is None or label not in header:
            raise DataError(f"{path}: no column {label!r}" + (f"; the columns are {', '.join(header)}" if header else
                            " (the file has no header)"))  # fmt: skip
        column = header.index(label)
    values, labels = [], []
    for line, row in enumerate(rows, start=2 if header else 1):
        if len(row) != len(rows[0]):
            raise DataError(f"{path}, line {line}: {len(row)} columns, the first row has {len(rows[0])}")
        cell = row[column].strip()
        try:
            label = float(cell)
        except ValueError:
            label = math.nan
        values.append([finite_number(x, f"{path}, line {line}: column {c + 1}")
                       for c, x in enumerate(row) if c != column])  # fmt: skip
        if not (label.is_integer() and label >= 0):
            raise DataError(f"{path}, line {line}: the label (column {column + 1}) is {cell!r}; expected a class "
                            "number 0, 1, 2, ...")  # fmt: skip
        labels.append(int(label))
    if len(values) < 10:
        raise DataError(f"{path}: {len(values)} examples are too few to split")
    top = max(range(len(labels)), key=labels.__getitem__)
    if labels[top] >= len(labels):  # more classes than examples: a column that holds no class number
        line = top + (2 if header else 1)
        raise DataError(f"{path}, line {line}: the label (column {column + 1}) is {rows[top][column].strip()!r}; "
                        f"expected a class number below the {len(labels)} examples")  # fmt: skip
    return torch.tensor(values, dtype=torch.float32), torch.tensor(labels, dtype=torch.long)


def sequences(x: torch.Tensor, scale: float, mode: str, permute: bool) -> torch.Tensor:
    """Examples (N, V) as the model reads them, (N, T, I): divided by the training maximum
    ``scale``, the values in the task's fixed random order with ``permute``, then cut into rows
    of a square image (``mode`` row) or single values (pixel)."""
    N, features = x.shape
    x = x / scale
    if permute:
        x = x[:, torch.randperm(features, generator=torch.Generator().manual_seed(SPLIT_SEED + 1))]
    width = math.isqrt(features) if mode == "row" else 1
    return x.reshape(N, features // width, width)  # (N, T, I)


class Classify(Task):
    name = "classify"
    readout = "last"
    metric = "accuracy"
    lower_is_better = False
    options = {
        "mode": (str, "row", "classify task: read images 'row' by row or 'pixel' by pixel"),
        "permute": (bool, False, "classify task: read the pixels in a fixed random order"),
        "label": (str, "", "classify task: the label column of a CSV with a header (default: the last)"),
    }

    def __init__(self, data="digits", mode="row", permute=False, label=""):
        if mode not in ("row", "pixel"):
            raise ValueError(f"--mode must be 'row' or 'pixel', got {mode!r}")
        x, y = load_digits() if data in ("", "digits") else load_csv(data, label)
        if y.min() < 0:
            raise DataError(f"{data}: labels must be 0, 1, 2, ...; found {int(y.min())}")
        N, features = x.shape
        if mode == "row" and math.isqrt(features) ** 2 != features:
            raise DataError(f"{data}: {features} values per example are not a square image; use --mode pixel")
        order = torch.randperm(N, generator=torch.Generator().manual_seed(SPLIT_SEED))
        x, y = x[order], y[order]
        self.scale = float(x[: int(0.8 * N)].max().clamp_min(1e-12))  # the training maximum
        self.x = sequences(x, self.scale, mode, permute)  # (N, T, I)
        self.y = y
        self.input_size, self.output_size = self.x.shape[2], int(y.max()) + 1
        cut1, cut2 = int(0.8 * N), int(0.9 * N)
        self.index = {"train": torch.arange(cut1), "valid": torch.arange(cut1, cut2), "test": torch.arange(cut2, N)}
        test = self.y[self.index["test"]]
        self.baseline = float(torch.bincount(test).max()) / len(test)

    def artifacts(self):
        return {NORMALIZATION: {"scale": self.scale, "values": self.x.shape[1] * self.x.shape[2]}}

    def train_batch(self, step, batch_size, seed):
        train = self.index["train"]
        pick = train[torch.randint(0, len(train), (batch_size,), generator=batch_generator(seed, step))]
        return self.x[pick], self.y[pick]

    def split(self, name, seed):
        return self.x[self.index[name]], self.y[self.index[name]]

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def metrics(self, output, target):
        return {"accuracy": (output.argmax(-1) == target).float().mean().item(), "loss": self.loss(output, target).item()}
