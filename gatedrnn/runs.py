"""A run folder: the files ``gatedrnn train`` writes and everything that reads them back.

::

    RUN/config.json      the TrainConfig (CONFIG)
    RUN/model.json       the task's sizes the model is built from (MODEL, Task.model_spec)
    RUN/<artifacts>      what the task saved to be used without its data (Task.saves: vocab.json, ...)
    RUN/checkpoint.safetensors, RUN/metrics.jsonl, RUN/result.json, RUN/report.html

The engine, ``gatedrnn.load``, ``predict``, the report and the command all open runs through
here, and none of them knows which task a run holds: the task's class does (Task.from_run,
Task.restore). A run of a task of your own (``MODULE:CLASS`` in its config) is only opened
when that import path is given again (``--task``, ``task=``): a run folder never decides on
its own which code to import.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from gatedrnn import checkpoint, init, tasks
from gatedrnn.config import TrainConfig
from gatedrnn.tasks.data import DataError, fingerprint

CONFIG = "config.json"
MODEL = "model.json"  # the task's sizes the model is built from (Task.model_spec)
METRICS = "metrics.jsonl"
RESULT = "result.json"


def load_config(run_dir) -> TrainConfig:
    """The :class:`TrainConfig` a run folder was trained with; ``FileNotFoundError`` or
    ``ValueError`` naming the folder or file for anything else.

    Args:
        run_dir (str or Path): the run folder.
    """
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} holds no run (no {CONFIG}); give the folder a run was trained into")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError, TypeError) as error:
        raise ValueError(f"{path} is not a gatedrnn run config ({error})") from None


def task_class(config: TrainConfig, run_dir, given=None) -> type:
    """The task class of a run. A built-in task's name resolves alone; an import path
    (``MODULE:CLASS``, a task of your own) only when ``given`` (the user's ``--task``, a
    string or the class) names the same task.

    Args:
        config (TrainConfig): the run's config.
        run_dir (str or Path): the run folder, named in errors.
        given (str or type, optional): the task the user names. Default: ``None``.

    Raises:
        ValueError: the run's task is one of your own and ``given`` does not name it.
    """
    spec = config.task
    if not tasks.is_import_path(spec):
        return tasks.task_class(spec)
    if given is not None and not isinstance(given, str):
        given = f"{given.__module__}:{given.__qualname__}" if given.__module__ != "__main__" else None
    if given is None or not _same_task(given, spec):
        raise ValueError(f"{run_dir} was trained on the task {spec}, which is not one of gatedrnn's: give "
                         f"--task {spec} (task= in Python) to import it (its code runs)")  # fmt: skip
    return tasks.task_class(spec)


def _same_task(given: str, spec: str) -> bool:
    def normal(text):
        where, _, name = text.rpartition(":")
        return (str(Path(where).expanduser().resolve()) if where.endswith(".py") else where), name

    return normal(given) == normal(spec)


def read_json(path: Path):
    """A run file's JSON value; ``DataError`` naming the file when it is no JSON.

    Args:
        path (Path): the file.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not JSON ({error}); train the run again") from None


def saved_files(run_dir, cls) -> tuple[dict | None, dict]:
    """(``model.json``'s value or None, ``{name: value}`` of the task's ``saves`` present).

    Args:
        run_dir (str or Path): the run folder.
        cls (type): the run's task class.
    """
    run_dir = Path(run_dir)
    spec = read_json(run_dir / MODEL) if (run_dir / MODEL).exists() else None
    if spec is not None and not isinstance(spec, dict):
        raise DataError(f"{run_dir / MODEL}: expected a JSON object of the task's sizes, got {type(spec).__name__}")
    saved = {name: read_json(run_dir / name) for name in cls.saves if (run_dir / name).exists()}
    return spec, saved


def build(config: TrainConfig, run_dir=None, task=None):
    """The task (with its data) and a freshly initialized model (seeded) for a config; with
    ``run_dir``, the task reuses what the run saved (a text run's vocab.json) instead of
    rebuilding it. ``task``: the import path of a task of your own, as in :func:`task_class`.

    Args:
        config (TrainConfig): the run's config.
        run_dir (str or Path, optional): a run folder whose saved files the task reuses.
            Default: ``None``.
        task (str or type, optional): the task of your own the config names. Default: ``None``.

    Returns:
        ``(task, model)``, the model on ``config.device``.
    """
    if run_dir is None:
        cls = task_class(config, "the config", task or config.task)
        task = cls.from_config(config)
    else:
        cls = task_class(config, run_dir, task)
        task = cls.from_run(config, *saved_files(run_dir, cls))
    torch.manual_seed(config.seed)
    model = task.make_model(config)
    if config.chrono:  # after the layers' own initialization, from the same seeded generator
        init.chrono_(model, config.chrono)
    return task, model.to(config.device)


def restore(config: TrainConfig, run_dir, task=None):
    """(the run's task without its data (``Task.restore``), notes, whether the data was read).
    A run trained before gatedrnn saved all its task needs (``model.json``, a task's
    ``saves``) has its task rebuilt from its training data instead, with a note saying so.

    Args:
        config (TrainConfig): the run's config.
        run_dir (str or Path): the run folder.
        task (str or type, optional): the task of your own the run names. Default: ``None``.
    """
    run_dir = Path(run_dir)
    cls = task_class(config, run_dir, task)
    spec, saved = saved_files(run_dir, cls)
    missing = ([MODEL] if spec is None else []) + [name for name in cls.saves if name not in saved]
    if not missing:
        try:
            return cls.restore(config, spec, saved), [], False
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"{run_dir}: {error}") from None
    if not _data_present(config):
        raise DataError(f"{run_dir} has no {missing[-1]} (it was trained before gatedrnn saved it) and its "
                        f"training data {config.data} is not there to refit them; put the data back at that path, "
                        "or train the run again")  # fmt: skip
    notes = [f"{run_dir} has no {name} (trained before it was saved): it was rebuilt from the run's training "
             f"data {config.data}" for name in missing if name != MODEL]  # fmt: skip
    return cls.from_run(config, spec, saved), notes, True


def _data_present(config: TrainConfig) -> bool:
    """Whether the run's data can be read again: a file or folder that is there, or none needed."""
    return not config.data or config.data == "digits" or fingerprint(config.data) is not None


def identity(config: TrainConfig, data: bool = True) -> dict:
    """What a checkpoint belongs to: task, cell and, with ``data``, the data's fingerprint.

    Args:
        config (TrainConfig): the run's config.
        data (bool): include the data file's fingerprint and path. Default: ``True``.
    """
    run = {"task": config.task, "cell": config.cell}
    if data:
        run.update(data=fingerprint(config.data), data_path=config.data)
    return run


def write_files(run_dir: Path, config: TrainConfig, task=None) -> None:
    """The run's config and, for a new run (``task``), what its task saves and its sizes.

    Args:
        run_dir (Path): the run folder.
        config (TrainConfig): the config to write as ``config.json``.
        task (Task, optional): a new run's task: its :meth:`~gatedrnn.tasks.base.Task.artifacts`
            and ``model.json`` are written too. Default: ``None``.
    """
    checkpoint.write_json(run_dir / CONFIG, config_dict(config))
    if task is not None:
        for name, value in {**task.artifacts(), MODEL: task.model_spec()}.items():
            checkpoint.write_json(run_dir / name, value)


def config_dict(config: TrainConfig) -> dict:
    """``config`` as the dict ``config.json`` holds.

    Args:
        config (TrainConfig): a config.
    """
    return dataclasses.asdict(config)


def read_log(path: Path) -> list:
    """The rows of a run's ``metrics.jsonl``, up to a line cut by a kill.

    Args:
        path (Path): the log file; an absent file gives ``[]``.
    """
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill: drop it and what follows
    return rows


def truncate_log(path: Path, step: int) -> None:
    """Keeps the log rows up to the checkpoint's step, so a resumed run logs no step twice.

    Args:
        path (Path): the log file, rewritten atomically.
        step (int): the last step to keep.
    """
    rows = [r for r in read_log(path) if r["step"] <= step]
    checkpoint.atomic_write(path, lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in rows)))
