"""``gatedrnn.predict(RUN, FILE)``: a trained run applied to a new file, without its training data.

- a forecaster (``timeseries``) reads the CSV's last ``window`` rows and forecasts the
  ``horizon`` steps after its end, normalized and de-normalized with the training rows'
  statistics saved in the run (``normalization.json``), dated when the CSV has a regular time
  axis;
- a classifier (``classify``) labels each sequence (row) of a CSV, scaled by the training
  maximum saved in the run; where the rows also hold a label, the accuracy against it;
- a language model (``text``) scores a text file: the mean cross-entropy per token in nats,
  bits per character and perplexity, in total and, with ``per_line``, for each line. The file is
  read as if it followed a line break (``\\n``, or ``<eos>`` for words), so every token is scored.

The command ``gatedrnn predict`` calls :func:`predict` and writes :class:`Prediction` as CSV
or JSON; bad input raises :class:`gatedrnn.tasks.data.DataError` with a one-line message.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gatedrnn.tasks.data import DataError

SUPPORTED = ("timeseries", "classify", "text")
CHUNK = 1024  # tokens a text model reads per call, its state carried from one call to the next


@dataclass
class Prediction:
    """What :func:`predict` returns: ``rows`` (one dict per line of the CSV output), ``summary``
    (the JSON output's other keys: run, input, totals), ``message`` (one line for a terminal),
    ``notes`` (how the run or the file was read) and, for text, ``total`` (the CSV's last row)."""

    task: str
    rows: list
    summary: dict
    message: str
    notes: list = field(default_factory=list)
    total: dict | None = None

    def to_json(self) -> dict:
        return {**self.summary, "rows": self.rows}

    def to_csv(self) -> str:
        rows = self.rows + ([self.total] if self.total else [])
        columns = list(dict.fromkeys(key for row in rows for key in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def write(self, path, format: str | None = None) -> Path:
        """Writes the prediction to ``path`` atomically, as CSV or JSON (``format``, or the suffix)."""
        from gatedrnn.checkpoint import atomic_write

        path = Path(path)
        format = format or output_format(path)
        text = json.dumps(self.to_json(), indent=2) + "\n" if format == "json" else self.to_csv()
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        return path


def output_format(path) -> str:
    """"csv" or "json" from a file name's suffix, or an error naming the file."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".json"):
        raise DataError(f"{path}: cannot tell the format from the suffix {suffix or '(none)'!r}; name a .csv or "
                        ".json file, or pass --format csv|json")  # fmt: skip
    return suffix[1:]


def predict(run, input, per_line: bool = False) -> Prediction:
    """The prediction of ``run`` (a run folder, or what :func:`gatedrnn.load` returned) for
    the file ``input``: a forecast, labels or a text score, by the run's task::

        forecast = gatedrnn.predict("runs/airline", "passengers.csv")
        forecast.rows      # [{'step': 1, 'Date': '1961-01', 'Passengers': 441.2}]
        forecast.write("forecast.csv")
    """
    from gatedrnn.load import TrainedRun, load

    run = run if isinstance(run, TrainedRun) else load(run)
    if run.task not in SUPPORTED:
        raise DataError(f"{run.run_dir} holds a run of the {run.task} task; predict works on runs of the "
                        f"{', '.join(SUPPORTED)} tasks "
                        "(a forecaster, a classifier of CSV sequences, a language model)")  # fmt: skip
    path = Path(input)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file")
    if run.task == "timeseries":
        return forecast(run, path)
    if run.task == "classify":
        return classify(run, path)
    return score_text(run, path, per_line)


def _normalization(run, name: str):
    """The run's saved input statistics and the notes on how they were got: a run trained
    before they were saved has them refitted from its training data (checked unchanged)."""
    saved = Path(run.run_dir) / name
    if saved.exists():
        try:
            return json.loads(saved.read_text()), []
        except json.JSONDecodeError as error:
            raise DataError(f"{saved}: not JSON ({error}); train the run again") from None
    from gatedrnn import checkpoint
    from gatedrnn.tasks.data import fingerprint
    from gatedrnn.train import build, identity

    config = run.config
    if fingerprint(config.data) is None and config.data not in ("", "digits"):
        raise DataError(f"{run.run_dir} has no {name} (it was trained before gatedrnn saved the training "
                        f"statistics) and its training data {config.data} is not there to refit them; put the data "
                        "back at that path, or train the run again")  # fmt: skip
    task, model = build(config, run.run_dir)
    checkpoint.load_model(run.run_dir, model, expect=identity(config))  # the data it was trained on, unchanged
    return task.artifacts()[name], [f"{run.run_dir} has no {name} (trained before it was saved): the training "
                                    f"statistics were refitted from its training data {config.data}"]  # fmt: skip


@torch.no_grad()
def forecast(run, path: Path) -> Prediction:
    from gatedrnn.tasks.timeseries import NORMALIZATION, TimeSeries, read_series, read_windows, to_units

    options = TimeSeries.option_values(run.config)
    stats, notes = _normalization(run, NORMALIZATION)
    target, features = stats["columns"][0], stats["columns"][1:]
    window, horizon = options["window"], options["horizon"]
    series = read_series(path, target, features, min_rows=1)
    values = series.columns[target]
    if len(values) < window:
        raise DataError(f"{path}: {len(values)} rows; the model reads the last {window} values of {target!r} (the "
                        f"--window it was trained with), so give at least {window} rows")  # fmt: skip
    if options["log"] and bool((values <= 0).any()):
        raise DataError(f"{path}: the model reads the log of {target!r} (trained with --log), so it needs "
                        "positive values")  # fmt: skip
    model_space = values.log() if options["log"] else values
    inputs = torch.stack([model_space] + [series.columns[f] for f in features], dim=1)  # (N, F)
    mean, std = torch.tensor(stats["mean"], dtype=torch.float64), torch.tensor(stats["std"], dtype=torch.float64)
    z = ((inputs - mean) / std).float()  # (N, F), normalized as the training rows were
    origin = torch.tensor([len(values)])  # forecasts for the rows after the last one
    device = run.config.device
    output = run.model(read_windows(z, origin, window, options["difference"]).to(device)).cpu()  # (1, horizon)
    ahead = to_units(output, z[origin - 1, 0], float(mean[0]), float(std[0]), options["log"],
                     options["difference"])[0]  # (horizon,) in the series' units  # fmt: skip
    dates = series.axis.extend(horizon) if series.axis is not None else None
    rows = [{"step": k + 1, **({series.axis.name: series.axis.label(dates[k])} if dates else {}),
             target: float(ahead[k])} for k in range(horizon)]  # fmt: skip
    last = series.axis.label(series.axis.values[-1]) if series.axis is not None else f"row {len(values)}"
    if series.axis is not None and dates is None:
        notes.append(f"{path}: the steps of column {series.axis.name!r} are irregular, so the forecast is not dated")
    summary = {"run": str(run.run_dir), "input": str(path), "task": "timeseries", "target": target,
               "horizon": horizon, "after": last}  # fmt: skip
    shown = ", ".join(f"{row.get(series.axis.name) if dates else 'step ' + str(row['step'])}: {row[target]:.4g}"
                      for row in rows[:6])  # fmt: skip
    message = (f"{target} forecast {horizon} step{'s' if horizon > 1 else ''} past {last} (the end of {path}): "
               f"{shown}{', ...' if horizon > 6 else ''}")  # fmt: skip
    return Prediction("timeseries", rows, summary, message, notes)


@torch.no_grad()
def classify(run, path: Path) -> Prediction:
    from gatedrnn.tasks.classify import NORMALIZATION, Classify, is_number, read_rows, sequences
    from gatedrnn.tasks.data import finite_number

    options = Classify.option_values(run.config)
    stats, notes = _normalization(run, NORMALIZATION)
    V = stats["values"]
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
        label_column = header.index(options["label"]) if header and options["label"] in header else V
    first_line = 2 if header else 1
    values, given = [], []
    for line, row in enumerate(rows, start=first_line):
        if len(row) != width:
            raise DataError(f"{path}, line {line}: {len(row)} columns, the first row has {width}")
        values.append([finite_number(cell.strip(), f"{path}, line {line}: column {c + 1}")
                       for c, cell in enumerate(row) if c != label_column])  # fmt: skip
        if label_column is not None:
            given.append(row[label_column].strip())
    x = sequences(torch.tensor(values, dtype=torch.float32), stats["scale"], options["mode"], options["permute"])
    probabilities = torch.cat([torch.softmax(run.model(x[i : i + 500].to(run.config.device)).cpu(), -1)
                               for i in range(0, len(x), 500)])  # (N, K)  # fmt: skip
    confidence, predicted = probabilities.max(-1)
    names = run.classes  # a run trained on named labels predicts names
    out = []
    for i, (k, p) in enumerate(zip(predicted.tolist(), confidence.tolist())):
        out.append({"line": first_line + i, "predicted": names[k] if names else k, "probability": round(p, 6),
                    **({"label": given[i]} if given else {})})  # fmt: skip
    summary = {"run": str(run.run_dir), "input": str(path), "task": "classify", "sequences": len(out),
               "classes": probabilities.shape[1]}  # fmt: skip
    message = f"{path}: {len(out)} sequences labelled"
    if given:
        correct = sum(_same_label(row["predicted"], row["label"]) for row in out)
        summary["accuracy"] = correct / len(out)
        message += f"; accuracy {summary['accuracy']:.4f} against its label column"
    counts = torch.bincount(predicted, minlength=probabilities.shape[1]).tolist()
    message += " (predicted per class: " + ", ".join(f"{names[k] if names else k}: {n}"
                                                     for k, n in enumerate(counts) if n) + ")"  # fmt: skip
    return Prediction("classify", out, summary, message, notes)


def _same_label(predicted, given: str) -> bool:
    if isinstance(predicted, str):  # a class name
        return given == predicted
    try:
        return float(given) == predicted
    except ValueError:
        return given == str(predicted)


@torch.no_grad()
def score_text(run, path: Path, per_line: bool = False) -> Prediction:
    from gatedrnn.tasks.data import read_text
    from gatedrnn.tasks.text import EOS, UNK

    vocab = run.vocab
    if vocab is None:
        raise DataError(f"{run.run_dir} has no vocab.json; was it written by gatedrnn train --task text?")
    text = read_text(path)
    tokens, lines, unknown = [], [], 0  # each token, the line it is on
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if vocab.level == "char":
            for column, char in enumerate(line, start=1):
                if char not in vocab.index:
                    raise DataError(f"{path}, line {number}, column {column}: {char!r} is not among the "
                                    f"{len(vocab.tokens)} characters the model was trained on")  # fmt: skip
                tokens.append(vocab.index[char])
            lines += [number] * len(line)
        else:
            words = line.split()
            for word in words:
                if word not in vocab.index and UNK not in vocab.index:
                    raise DataError(f"{path}, line {number}: the word {word!r} is not in the model's vocabulary "
                                    f"of {len(vocab.tokens)} words, which has no {UNK}")  # fmt: skip
                unknown += word not in vocab.index
                tokens.append(vocab.index.get(word, vocab.index.get(UNK)))
            if words:
                tokens.append(vocab.index[EOS])
                lines += [number] * (len(words) + 1)
    start = vocab.index.get("\n" if vocab.level == "char" else EOS)  # what the file is read as following
    ids = torch.tensor(([start] if start is not None else []) + tokens, dtype=torch.long)
    lines = torch.tensor(lines[len(lines) - (len(ids) - 1) :], dtype=torch.long)  # the lines of the scored tokens
    if len(ids) < 2:
        raise DataError(f"{path}: holds {len(tokens)} {vocab.level} token, too few to score")
    nll, state = [], None
    model, device = run.model, run.config.device
    for a in range(0, len(ids) - 1, CHUNK):
        window = ids[a : a + CHUNK + 1][None].to(device)  # (1, L + 1)
        h, state = model.hidden(window[:, :-1], state)
        nll.append(model.token_nll(h, window[:, 1:])[0].double().cpu())
    nll = torch.cat(nll)  # (N,) nats per scored token
    totals = _named(float(nll.mean()), len(nll), vocab.level)
    rows = []
    if per_line:
        count = torch.bincount(lines)
        summed = torch.zeros(len(count), dtype=torch.float64).index_add_(0, lines, nll)
        rows = [{"line": number, **_named(float(summed[number] / count[number]), int(count[number]), vocab.level)}
                for number in range(len(count)) if count[number]]  # fmt: skip
    summary = {"run": str(run.run_dir), "input": str(path), "task": "text", **totals,
               **({"unknown words": unknown} if vocab.level == "word" else {})}  # fmt: skip
    unit = "bits per character" if vocab.level == "char" else "perplexity"
    shown = totals["bpc"] if vocab.level == "char" else totals["perplexity"]
    message = (f"{path}: {len(nll)} {vocab.level} tokens scored, {totals['loss']:.4f} nats per token "
               f"({unit} {shown:.4f})" + (f"; {unknown} unknown word{'s' if unknown > 1 else ''} read as {UNK}" if unknown else ""))  # fmt: skip
    return Prediction("text", rows, summary, message, total={"line": "all", **totals})


def _named(nats: float, tokens: int, level: str) -> dict:
    out = {"tokens": tokens, "loss": nats}
    if level == "char":
        out["bpc"] = nats / math.log(2)
    out["perplexity"] = math.exp(min(nats, 50))
    return out
