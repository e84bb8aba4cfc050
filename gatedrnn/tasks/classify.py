"""Sequence classification: an image read row by row or pixel by pixel (optionally in a fixed
random order of pixels, the "permuted" variant of Le et al. 2015), or any CSV of sequences.

``--data digits`` uses scikit-learn's 8×8 digits (1,797 images, shipped with scikit-learn);
``--data FILE.csv[.gz]`` reads one example per row, the values then the label (the last
column, or ``--label NAME`` when the file has a header). Labels are class numbers 0, 1, 2, ...
or names (strings): names are mapped to ids in sorted order, and the run keeps the names in
its ``model.json`` (``classes``), so evaluating and loading it later use the same ids. The
examples are split 80/10/10 into train, valid and test in an order fixed once (the same for
every run and cell). Metric: accuracy; the baseline is the most frequent class's share of
the test set.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from gatedrnn.diagnostics import confusion
from gatedrnn.tasks.base import Task, batch_generator
from gatedrnn.tasks.data import DataError, finite_number
from gatedrnn.tasks.prediction import Prediction

SPLIT_SEED = 1234  # the example order behind the splits: fixed, whatever the run's seed
NORMALIZATION = "normalization.json"  # the training maximum the values are divided by, and their count


def load_digits():
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataError("--data digits needs scikit-learn: pip install scikit-learn") from None
    digits = sklearn_digits()
    return torch.tensor(digits.data, dtype=torch.float32), torch.tensor(digits.target, dtype=torch.long)


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _has_header(rows: list[list[str]], label: str) -> bool:
    """Whether the first row names the columns: with ``--label``, or when it holds no number, or
    when its last cell is a word above a column of numbers (numbered classes)."""
    first = [cell.strip() for cell in rows[0]]
    if label or not any(map(is_number, first)):
        return True
    return not is_number(first[-1]) and all(is_number(r[-1].strip()) for r in rows[1:] if r)


def class_ids(cells: list[str], lines: list[int], path, column: str, classes: list[str] | None = None):
    """The label cells as class ids (N,), and the class names behind them (None for numbered classes).

    Labels are class numbers 0, 1, 2, ... or names, mapped to ids in sorted order (``classes``: a
    trained run's names, in its order); a column that mixes the two is taken for a typo."""
    where = f"the label ({column})"
    numbers = [is_number(cell) for cell in cells]
    if classes is None and all(numbers):
        labels = [float(cell) for cell in cells]
        for line, cell, value in zip(lines, cells, labels):
            if not (value.is_integer() and value >= 0):
                raise DataError(f"{path}, line {line}: {where} is {cell!r}; expected a class number 0, 1, 2, ... "
                                "or a class name")  # fmt: skip
        top = max(range(len(labels)), key=labels.__getitem__)
        if labels[top] >= len(labels):  # more classes than examples: a column that holds no class number
            raise DataError(f"{path}, line {lines[top]}: {where} is {cells[top]!r}; expected a class number "
                            f"below the {len(labels)} examples")  # fmt: skip
        return torch.tensor(labels, dtype=torch.long), None
    for line, cell in zip(lines, cells):
        if not cell:
            raise DataError(f"{path}, line {line}: {where} is empty")
    if classes is None:
        if any(numbers):
            word, number = numbers.index(False), numbers.index(True)
            raise DataError(f"{path}, line {lines[word]}: {where} is {cells[word]!r}, but line {lines[number]}'s is "
                            f"the class number {cells[number]!r}; use class names or numbers throughout")  # fmt: skip
        classes = sorted(set(cells))
    index = {name: i for i, name in enumerate(classes)}
    for line, cell in zip(lines, cells):
        if cell not in index:
            shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
            raise DataError(f"{path}, line {line}: {where} is {cell!r}, not one of the run's {len(classes)} classes "
                            f"({shown})")  # fmt: skip
    return torch.tensor([index[cell] for cell in cells], dtype=torch.long), list(classes)


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


def load_csv(path, label: str = "", classes: list[str] | None = None):
    """(values (N, V), class ids (N,), class names or None) from a CSV of one example per row:
    the values, and the label in the last column or the column ``label`` names (a header needed)."""
    path = Path(path)
    rows = read_rows(path)
    header = None
    if _has_header(rows, label):
        header, rows = [name.strip() for name in rows[0]], rows[1:]
    width = len(header) if header is not None else len(rows[0])
    column = width - 1
    if label:
        if label not in header:
            raise DataError(f"{path}: no column {label!r}; the columns are {', '.join(header)}")
        column = header.index(label)
    name = (lambda c: f"column {header[c]!r}") if header else (lambda c: f"column {c + 1}")  # noqa: E731
    values, cells, lines = [], [], []
    for line, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:
            raise DataError(f"{path}, line {line}: {len(row)} columns, " +
                            ("the header has" if header else "the first row has") + f" {width}")  # fmt: skip
        values.append([finite_number(x, f"{path}, line {line}: {name(c)}") for c, x in enumerate(row) if c != column])
        cells.append(row[column].strip())
        lines.append(line)
    if len(values) < 10:
        raise DataError(f"{path}: {len(values)} examples are too few to split")
    y, classes = class_ids(cells, lines, path, name(column), classes)
    return torch.tensor(values, dtype=torch.float32), y, classes


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
    """Sequence classification (see the module's docstring): accuracy.

    Args:
        data (str): ``"digits"`` (scikit-learn's 8x8 digits) or a CSV of sequences, one per
            row with its label. Default: ``"digits"``.
        mode (str): read images ``"row"`` by row or ``"pixel"`` by pixel. Default: ``"row"``.
        permute (bool): read the pixels in a fixed random order (permuted). Default: ``False``.
        label (str): the label column of a CSV with a header; ``""``: the last. Default: ``""``.
        classes (list[str], optional): the class names of a trained run, to map names to the
            same ids; ``None`` sorts the names found. Default: ``None``.
    """
    name = "classify"
    about = "label sequences: the rows of a CSV, or images read row by row or pixel by pixel"
    saves = (NORMALIZATION,)
    readout = "last"
    metric = "accuracy"
    lower_is_better = False
    options = {
        "mode": (str, "row", "classify task: read images 'row' by row or 'pixel' by pixel"),
        "permute": (bool, False, "classify task: read the pixels in a fixed random order"),
        "label": (str, "", "classify task: the label column of a CSV with a header (default: the last); labels "
                           "are class numbers 0, 1, 2, ... or names"),
    }

    def __init__(self, data="digits", mode="row", permute=False, label="", classes=None):
        if mode not in ("row", "pixel"):
            raise ValueError(f"--mode must be 'row' or 'pixel', got {mode!r}")
        self.classes = None  # the class names of a CSV labelled by name, in id order
        self.mode, self.permute, self.label = mode, permute, label
        if data in ("", "digits"):
            x, y = load_digits()
        else:
            x, y, self.classes = load_csv(data, label, classes)
        if y.min() < 0:
            raise DataError(f"{data}: labels must be 0, 1, 2, ...; found {int(y.min())}")
        N, features = x.shape
        if mode == "row" and math.isqrt(features) ** 2 != features:
            raise DataError(f"{data}: {features} values per example are not a square image; use --mode pixel")
        order = torch.randperm(N, generator=torch.Generator().manual_seed(SPLIT_SEED))
        x, y = x[order], y[order]
        self.scale = float(x[: int(0.8 * N)].max().clamp_min(1e-12))  # the training maximum
        self.x = sequences(x, self.scale, mode, permute)  # (N, T, I)
        self.values = self.x.shape[1] * self.x.shape[2]  # per sequence
        self.y = y
        self.input_size, self.output_size = self.x.shape[2], len(self.classes) if self.classes else int(y.max()) + 1
        cut1, cut2 = int(0.8 * N), int(0.9 * N)
        self.index = {"train": torch.arange(cut1), "valid": torch.arange(cut1, cut2), "test": torch.arange(cut2, N)}
        test = self.y[self.index["test"]]
        self.baseline = float(torch.bincount(test).max()) / len(test)

    def introduction(self):
        T, I = self.x.shape[1], self.x.shape[2]  # steps, values per step
        read = f"row by row, {T} rows of {I} values" if self.mode == "row" else f"one value a step, {T} steps"
        order = ", its values in a fixed random order (the permuted variant)" if self.permute else ""
        return [f"Sequence classification: each example is read {read}{order}, and the state after the last step "
                f"picks one of {self.output_size} classes.",
                f"The metric is the accuracy on the {len(self.index['test'])} test examples (an 80/10/10 split fixed "
                f"once). The baseline {self.baseline:.3f} is the test share of the most frequent class, what always "
                "predicting it scores. There is no 'solved' bar: higher is better."]  # fmt: skip

    def artifacts(self):
        return {NORMALIZATION: {"scale": self.scale, "values": self.values}}

    @classmethod
    def from_run(cls, config, spec, saved):
        """A trained run's task, its class names mapped to the ids the run was trained with."""
        classes = spec.get("classes") if isinstance(spec, dict) else None
        if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise ValueError(f"model.json: 'classes' must be a list of class names, got {classes!r}")
        return cls(config.data, classes=classes, **cls.option_values(config))

    @classmethod
    def restore(cls, config, spec, saved):
        """A classifier as a trained run keeps it: the scale of its values, their count, its class names."""
        task = super().restore(config, spec, saved)
        options = cls.option_values(config)
        task.mode, task.permute, task.label = options["mode"], options["permute"], options["label"]
        if task.mode not in ("row", "pixel"):
            raise ValueError(f"config.json: extra.mode must be 'row' or 'pixel', got {task.mode!r}")
        stats = saved[NORMALIZATION]
        scale, values = (stats.get(k) if isinstance(stats, dict) else None for k in ("scale", "values"))
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0):
            raise ValueError(f"{NORMALIZATION}: 'scale' must be a positive number, got {scale!r}")
        if not (isinstance(values, int) and not isinstance(values, bool) and values > 0):
            raise ValueError(f"{NORMALIZATION}: 'values' must be a positive integer, got {values!r}")
        if task.classes is not None and not (isinstance(task.classes, list) and
                                             all(isinstance(c, str) for c in task.classes)):  # fmt: skip
            raise ValueError(f"model.json: 'classes' must be a list of class names, got {task.classes!r}")
        task.scale, task.values = float(scale), values
        return task

    def model_spec(self):
        return {**super().model_spec(), "classes": self.classes}

    def figures(self):
        return confusion.FIGURES

    @torch.no_grad()
    def predict(self, model, path, device="cpu", per_line=False):
        """Labels each sequence (row) of a CSV, scaled by the training maximum; where the rows
        also hold a label, the accuracy against it."""
        V = self.values
        rows = read_rows(path)
        header = None
        if sum(not is_number(cell) for cell in rows[0]) > len(rows[0]) / 2:  # mostly names, not values: a header
            header, rows = [h.strip() for h in rows[0]], rows[1:]
        if not rows:
            raise DataError(f"{path}: holds a header and no sequence")
        width = len(rows[0])
        if width not in (V, V + 1):
            raise DataError(f"{path}: {width} columns; the model reads {V} values per sequence (and optionally a "
                            "label column)")  # fmt: skip
        label_column = None
        if width == V + 1:  # a label column: the trained --label, else the last
            label_column = header.index(self.label) if header and self.label in header else V
        first_line = 2 if header else 1
        values, given = [], []
        for line, row in enumerate(rows, start=first_line):
            if len(row) != width:
                raise DataError(f"{path}, line {line}: {len(row)} columns, the first row has {width}")
            values.append([finite_number(cell.strip(), f"{path}, line {line}: column {c + 1}")
                           for c, cell in enumerate(row) if c != label_column])  # fmt: skip
            if label_column is not None:
                given.append(row[label_column].strip())
        x = sequences(torch.tensor(values, dtype=torch.float32), self.scale, self.mode, self.permute)
        probabilities = torch.cat([torch.softmax(model(x[i : i + 500].to(device)).cpu(), -1)
                                   for i in range(0, len(x), 500)])  # (N, K)  # fmt: skip
        confidence, predicted = probabilities.max(-1)
        names = self.classes  # a run trained on named labels predicts names
        out = []
        for i, (k, p) in enumerate(zip(predicted.tolist(), confidence.tolist())):
            out.append({"line": first_line + i, "predicted": names[k] if names else k, "probability": round(p, 6),
                        **({"label": given[i]} if given else {})})  # fmt: skip
        summary = {"sequences": len(out), "classes": probabilities.shape[1]}
        message = f"{path}: {len(out)} sequences labelled"
        if given:
            correct = sum(_same_label(row["predicted"], row["label"]) for row in out)
            summary["accuracy"] = correct / len(out)
            message += f"; accuracy {summary['accuracy']:.4f} against its label column"
        counts = torch.bincount(predicted, minlength=probabilities.shape[1]).tolist()
        message += " (predicted per class: " + ", ".join(f"{names[k] if names else k}: {n}"
                                                         for k, n in enumerate(counts) if n) + ")"  # fmt: skip
        return Prediction(self.name, out, summary, message)

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


def _same_label(predicted, given: str) -> bool:
    if isinstance(predicted, str):  # a class name
        return given == predicted
    try:
        return float(given) == predicted
    except ValueError:
        return given == str(predicted)
