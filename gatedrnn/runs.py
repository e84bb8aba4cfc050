"""A run folder: the files ``gatedrnn train`` writes and everything that reads them back.

::

    RUN/config.json      the TrainConfig (CONFIG)
    RUN/model.json       the task's sizes the model is built from (MODEL, Task.model_spec)
    RUN/<artifacts>      what the task saved to be used without its data (Task.saves: vocab.json, ...)
    RUN/checkpoint.safetensors, RUN/metrics.jsonl, RUN/result.json, RUN/report.html

The engine, ``gatedrnn.load``, ``predict``, the report and the command all open runs through
here, and none of them knows which task a run holds: the task's class does (Task.from_run,
Task.restore). A run folder is checked as a whole before it is used: its files against the
manifest its checkpoint holds (``gatedrnn/manifest.py``), then every field read from them.

A run folder never decides on its own which code runs or which of your files are read: a
run of a task of your own (``MODULE:CLASS`` in its config) is only opened when that import
path is given again (``--task``, ``task=``), and a data path outside the data directory and
the run folder only when given again (``--data``). Nothing is written through a symbolic
link in it.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from pathlib import Path

import torch

from gatedrnn import checkpoint, init, manifest, tasks
from gatedrnn.config import TrainConfig, checked
from gatedrnn.tasks import presets
from gatedrnn.tasks.data import DataError, fingerprint

CONFIG = "config.json"
MODEL = "model.json"  # the task's sizes the model is built from (Task.model_spec)
METRICS = "metrics.jsonl"
RESULT = "result.json"
RESUMABLE = ("steps", "max_minutes", "threads")  # config.json's fields --resume may change: not in its digest


def load_config(run_dir, trust_edited: bool = False) -> TrainConfig:
    """The :class:`TrainConfig` a run folder was trained with, once the folder's files are
    checked against its checkpoint's manifest (:func:`check_files`) and each of its values
    against its field; ``FileNotFoundError`` or ``ValueError`` naming the folder or file for
    anything else.

    Args:
        run_dir (str or Path): the run folder.
        trust_edited (bool): use files edited since the checkpoint was written as they are
            (still checked field by field). Default: ``False``.
    """
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} holds no run (no {CONFIG}); give the folder a run was trained into")
    check_files(run_dir, trust_edited)
    try:
        config = TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
        config.validate(task=False)  # the task is looked up (and checked) by task_class
    except (UnicodeDecodeError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not a gatedrnn run config ({error})") from None
    return config


def check_files(run_dir, trust_edited: bool = False) -> None:
    """Refuses a file of the run that is not the one its checkpoint was written with
    (``config.json``, ``model.json``, the task's saved files: the checkpoint's manifest),
    unless ``trust_edited``; then each such file is named in a note. A run whose checkpoint
    carries no manifest (written by an earlier version) is used with a note saying so.

    Args:
        run_dir (str or Path): the run folder.
        trust_edited (bool): use edited files as they are. Default: ``False``.

    Raises:
        gatedrnn.manifest.ManifestError: one line naming the file.
        gatedrnn.checkpoint.CheckpointError: the checkpoint's own metadata is damaged.
    """
    recorded = checkpoint.recorded_manifest(run_dir)
    for name in manifest.check(run_dir, recorded or {}, trust_edited):
        checkpoint.note_once(f"{Path(run_dir) / name} is not the file the run's checkpoint was written with; "
                             "used as it is (--trust-edited)")  # fmt: skip




def data_to_read(config: TrainConfig, run_dir, given=None) -> str:
    """The data path a command reads for a run: ``given`` (the command line's ``--data``)
    where there is one, else the run's own (``config.data``), which must lie in the data
    directory (:func:`gatedrnn.tasks.presets.data_dir`) or in the run folder: a run folder
    does not choose which of your files are read.

    Args:
        config (TrainConfig): the run's config.
        run_dir (str or Path): the run folder.
        given (str, optional): the data path the user gave. Default: ``None``.

    Raises:
        gatedrnn.tasks.data.DataError: the run's data path lies elsewhere (one line that
            quotes the path, never the file).
    """
    if given:
        return str(given)
    data = config.data
    if not data or data in presets.BUILT_IN:
        return data
    where = Path(data).expanduser().resolve()  # links followed: a link in the run folder may point anywhere
    roots = [presets.data_dir().resolve(), Path(run_dir).resolve()]
    if any(where == root or root in where.parents for root in roots):
        return data
    raise DataError(f"{Path(run_dir) / CONFIG} names the data {data}, which lies outside the data directory "
                    f"{roots[0]} and the run folder; a run folder does not choose which files are read: give the "
                    f"data on the command line (--data {data}) to read it")  # fmt: skip


def task_class(config: TrainConfig, run_dir, given=None) -> type:
    """The task class of a run. A built-in task's name resolves alone; an import path
    (``MODULE:CLASS``, a task of your own) only when ``given`` (the user's ``--task``, a
    string or the class) names the same task.

    Args:
        config (TrainConfig): the run's config.
        run_dir (str or Path): the run folder, named in errors.
        given (str or type, optional): the task the user names. Default: ``None``.

    Raises:
        ValueError: the run's task is one of your own and ``given`` does not name it; or the
            config's cell or task options do not fit the task (naming the field).
    """
    spec = config.task
    if tasks.is_import_path(spec):
        if given is not None and not isinstance(given, str):
            given = f"{given.__module__}:{given.__qualname__}" if given.__module__ != "__main__" else None
        if given is None or not _same_task(given, spec):
            raise ValueError(f"{run_dir} was trained on the task {spec}, which is not one of gatedrnn's: give "
                             f"--task {spec} (task= in Python) to import it (its code runs)")  # fmt: skip
    cls = tasks.task_class(spec)
    _check_task_fields(config, cls, run_dir)
    return cls


def _check_task_fields(config: TrainConfig, cls: type, run_dir) -> None:
    """The config's cell one of the task's, and each task option in ``extra`` of its type."""
    where = Path(run_dir) / CONFIG if Path(run_dir).is_dir() else run_dir  # a run folder, or "the config"
    if config.cell not in cls.cells:
        raise ValueError(f"{where}: cell {config.cell!r} is not one of the {cls.name} task's cells "
                         f"({', '.join(cls.cells)})")  # fmt: skip
    for name, (kind, _, _) in cls.options.items():
        if name in config.extra:
            try:
                config.extra[name] = checked(config.extra[name], kind, f"extra.{name}")
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None


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
    data_to_read(config, run_dir)  # rebuilt from the data its config names: only where a run may point
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
    """What a checkpoint belongs to: task, cell, the run's files it records in its manifest
    (``files``: name to the keys left out of its digest) and, with ``data``, the data's
    fingerprint. Called once the run's task class is known (a task of your own imported).

    Args:
        config (TrainConfig): the run's config.
        data (bool): include the data file's fingerprint and path. Default: ``True``.
    """
    saves = tasks.task_class(config.task).saves
    files = {CONFIG: list(RESUMABLE), MODEL: [], **{name: [] for name in saves}}
    run = {"task": config.task, "cell": config.cell, "files": files}
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


# Fields added to TrainConfig after runs were first written, with the value every earlier run
# had: config.json leaves such a field out at that value, so a run folder written before the
# field existed, resumed, keeps a config.json equal to the one its checkpoint's manifest
# recorded (adding "precision": "float32" would read as an edit).
ADDED_FIELDS = {"precision": "float32"}


def config_dict(config: TrainConfig) -> dict:
    """``config`` as the dict ``config.json`` holds (less any of :data:`ADDED_FIELDS` at the
    value runs had before it existed; reading fills it back in as the field's default).

    Args:
        config (TrainConfig): a config.
    """
    values = dataclasses.asdict(config)
    return {key: value for key, value in values.items() if ADDED_FIELDS.get(key, object()) != value}


def empty_log(path: Path) -> None:
    """Creates or empties a new run's ``metrics.jsonl``, never through a symbolic link.

    Args:
        path (Path): the log file.
    """
    os.close(_open_unlinked(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))


def append_log(path: Path):
    """``metrics.jsonl`` opened to append rows to, never through a symbolic link.

    Args:
        path (Path): the log file.
    """
    return os.fdopen(_open_unlinked(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a")


def _open_unlinked(path: Path, flags: int) -> int:
    """``os.open`` that does not follow a symbolic link at ``path``, refusing it in one line."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EMLINK) and Path(path).is_symlink():  # EMLINK: the BSDs' word
            checkpoint.refuse_link(path)
        raise


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
