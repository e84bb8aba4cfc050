"""A trained run, used without its training data: ``gatedrnn.load(RUN)`` gives its model, ready
to use, in one call; ``gatedrnn.predict(RUN, FILE)`` applies it to a new file.

The model is rebuilt from the run's ``config.json`` and ``model.json`` (the task's sizes,
saved when the run was trained) and its checkpoint, without reading the training data; the
checkpoint must belong to that run (task and cell) and pass its checksums, and the files
beside it must be those it was written with (its manifest) unless ``trust_edited``.

What a run predicts is its task's to say (:meth:`gatedrnn.tasks.base.Task.predict`):

- a forecaster (``timeseries``) reads the CSV's last ``window`` rows and forecasts the
  ``horizon`` steps after its end, with the training rows' statistics saved in the run
  (``normalization.json``), dated when the CSV has a regular time axis;
- a classifier (``classify``) labels each sequence (row) of a CSV, scaled by the training
  maximum saved in the run; where the rows also hold a label, the accuracy against it;
- a language model (``text``) scores a text file: the mean cross-entropy per token in nats,
  bits per character and perplexity, in total and, with ``per_line``, for each line;
- a video predictor (``video``) predicts the frames after a clip (.npy or .gif).

The command ``gatedrnn predict`` calls :func:`predict` and writes the
:class:`~gatedrnn.tasks.prediction.Prediction` as CSV or JSON (or what the task offers beside
them, such as a GIF); bad input raises :class:`gatedrnn.tasks.data.DataError` with a one-line
message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from gatedrnn import checkpoint, runs
from gatedrnn.tasks.data import DataError
from gatedrnn.tasks.prediction import Prediction


@dataclass
class TrainedRun:
    """What :func:`load` returns.

    Attributes:
        model: the trained model, in eval mode.
        config: its :class:`gatedrnn.config.TrainConfig`.
        task: the task's name (``"adding"``), or the import path of a task of your own.
        result: ``result.json`` (test metrics, status); None for a run still training.
        vocab: a text run's vocabulary (to encode and decode tokens), else None.
        run_dir: the folder it was loaded from.
        classes: for a classifier trained on named labels, the name of each output in id order.
        restored_task: the task object as the run saved it, without its data
            (:meth:`gatedrnn.tasks.base.Task.restore`): what ``predict`` and ``generate`` run on.
        notes: how the run was read (a run from an earlier version rebuilt from its data).

    Examples:
        >>> import torch, gatedrnn
        >>> from gatedrnn.config import TrainConfig
        >>> from gatedrnn.models import SequenceModel
        >>> run = gatedrnn.TrainedRun(SequenceModel("gru", 2, 8, 1).eval(), TrainConfig(cell="gru"), "adding")
        >>> run.model(torch.rand(1, 20, 2)).shape, run.result is None  # (B, T, O): readout "all"
        (torch.Size([1, 20, 1]), True)
    """

    model: torch.nn.Module
    config: object
    task: str
    result: dict | None = None
    vocab: object = None
    run_dir: Path | None = None
    classes: list | None = None
    restored_task: object = None
    notes: list = field(default_factory=list)


def load(run_dir, task=None, trust_edited: bool = False) -> TrainedRun:
    """The trained model of the run in ``run_dir`` (a folder ``gatedrnn train`` wrote)::

        run = gatedrnn.load("runs/adding-lstm")
        prediction = run.model(torch.rand(1, 100, 2))  # the task's inputs: (B, T, 2) for adding
        run.result["test"], run.config.cell

    ``task``: for a run of a task of your own, its import path (``"my_tasks:Parity"``) or
    class, which must be the one the run names: a run folder never picks the code to import.
    ``trust_edited``: use the run although a file beside its checkpoint changed since the
    checkpoint was written (an edit you made on purpose); each field is still checked.

    Args:
        run_dir (str or Path): the run folder.
        task (str or type, optional): the import path (``"MODULE:CLASS"``) or the class of
            the run's task, needed (and checked against the run) only for a task of your
            own. Default: ``None``.
        trust_edited (bool): accept ``config.json``, ``model.json`` or a saved file that
            differs from the checkpoint's manifest. Default: ``False``.

    Returns:
        A :class:`TrainedRun`: the model in eval mode on the run's device, its config, result
        and what its task saved. The model's weights are float32 whatever the run's
        ``precision``; called directly it computes in float32, and ``with
        run.config.mixed_precision(run.model):`` computes as a bfloat16 run trained.

    Raises:
        FileNotFoundError: ``run_dir`` holds no run.
        ValueError: the run's config cannot be read, or its task is one of your own and
            ``task`` does not name it.
        gatedrnn.manifest.ManifestError: a file beside the checkpoint is not the one it was
            written with (edited, missing, or the checkpoint comes from another run), and
            ``trust_edited`` is not set (one line naming the file).
        gatedrnn.tasks.data.DataError: a file of the run is damaged, or the checkpoint
            belongs to another run or fails its checksums (one line naming the file).

    Examples:
        A run of the adding problem, trained for a few steps:

        >>> import subprocess, torch, gatedrnn
        >>> _ = subprocess.run(["gatedrnn", "train", "--task", "adding", "--length", "20",
        ...                     "--hidden-size", "8", "--steps", "10", "--eval-every", "10",
        ...                     "--out", "runs/adding-lstm", "--no-report"],
        ...                    check=True, capture_output=True)
        >>> run = gatedrnn.load("runs/adding-lstm")
        >>> run.model(torch.rand(1, 20, 2)).shape  # the task's inputs: (B, T, 2)
        torch.Size([1, 1])
        >>> run.config.cell, run.task, "mse" in run.result["test"]
        ('lstm', 'adding', True)
    """
    run_dir = Path(run_dir)
    config = runs.load_config(run_dir, trust_edited)
    restored, notes, read_data = runs.restore(config, run_dir, task)
    try:
        model = restored.make_model(config).to(config.device)
    except AttributeError as error:  # a size the model needs that model.json does not hold
        raise DataError(f"{run_dir / runs.MODEL}: does not hold every size of the task's model ({error})") from None
    # A task rebuilt from its data is checked against the data it was trained on.
    checkpoint.load_model(run_dir, model, expect=runs.identity(config, data=read_data))
    result_path = run_dir / runs.RESULT
    result = runs.read_json(result_path) if result_path.exists() else None
    return TrainedRun(model.eval(), config, config.task, result, getattr(restored, "vocab", None), run_dir,
                      getattr(restored, "classes", None), restored, notes)  # fmt: skip


def predict(run, input, per_line: bool = False, task=None, trust_edited: bool = False) -> Prediction:
    """The prediction of ``run`` (a run folder, or what :func:`gatedrnn.load` returned) for
    the file ``input``: a forecast, labels, a text score or frames, by the run's task::

        forecast = gatedrnn.predict("runs/airline", "passengers.csv")
        forecast.rows      # [{'step': 1, 'Date': '1961-01', 'Passengers': 441.2}]
        forecast.write("forecast.csv")

    ``per_line``: a row per line of a text file. ``task``: for a run of a task of your own,
    its import path or class; ``trust_edited``: accept edited run files (see
    :func:`gatedrnn.load`). The model computes in the run's precision (``--precision
    bfloat16``: under autocast, as it trained; :meth:`gatedrnn.config.TrainConfig.mixed_precision`).

    Args:
        run (str, Path or TrainedRun): a run folder, or what :func:`load` returned.
        input (str or Path): the new file: a CSV for a forecaster or a classifier, a text
            file for a language model, a clip (``.npy``, ``.gif``) for a video predictor.
        per_line (bool): a language model: a row per line of the text. Default: ``False``.
        task (str or type, optional): the import path or class of a task of your own (see
            :func:`load`). Default: ``None``.
        trust_edited (bool): accept run files edited since the checkpoint was written (see
            :func:`load`). Default: ``False``.

    Returns:
        A :class:`~gatedrnn.tasks.prediction.Prediction`: ``rows``, ``summary``,
        ``message``, ``notes``; ``write(path)`` saves it as CSV or JSON.

    Raises:
        gatedrnn.tasks.data.DataError: the run's task does not predict from files, or the
            file is missing or does not hold what the task reads (one line naming the file).

    Examples:
        A forecaster of a sine wave, trained for a few steps, forecasts the step after the
        file's end:

        >>> import math, subprocess, gatedrnn
        >>> rows = [f"{t},{10 + math.sin(t / 3):.3f}" for t in range(120)]
        >>> _ = open("sine.csv", "w").write("t,value\\n" + "\\n".join(rows) + "\\n")
        >>> _ = subprocess.run(["gatedrnn", "train", "--task", "timeseries", "--data", "sine.csv",
        ...                     "--target", "value", "--window", "12", "--hidden-size", "8",
        ...                     "--steps", "10", "--eval-every", "10", "--out", "runs/sine",
        ...                     "--no-report"], check=True, capture_output=True)
        >>> forecast = gatedrnn.predict("runs/sine", "sine.csv")
        >>> forecast.rows[0]["step"], forecast.rows[0]["t"]
        (1, '120')
        >>> forecast.write("forecast.csv").name
        'forecast.csv'
    """
    run = run if isinstance(run, TrainedRun) else load(run, task, trust_edited)
    restored = run.restored_task
    if not restored.defines("predict"):
        raise DataError(f"{run.run_dir} holds a run of the {run.task} task; predict works on runs of tasks that read "
                        "new input (a forecaster, a classifier of CSV sequences, a language model, a video "
                        "predictor)")  # fmt: skip
    path = Path(input)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file")
    with run.config.mixed_precision(run.model):  # as it trained and was evaluated (float32, or bfloat16 autocast)
        prediction = restored.predict(run.model, path, device=run.config.device, per_line=per_line)
    prediction.task = run.task
    prediction.summary = {"run": str(run.run_dir), "input": str(path), "task": run.task, **prediction.summary}
    prediction.notes = run.notes + prediction.notes
    return prediction
