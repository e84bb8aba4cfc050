"""Sequence tasks: each module holds one task, a subclass of :class:`gatedrnn.tasks.base.Task`
that owns its data end to end (the protocol is written down there, the video task its worked
example).

``TASKS`` maps the built-in tasks' names to their classes. It is read without importing
them (so ``gatedrnn --help`` starts without torch): a class is imported when first looked up.
A task of your own is named by its import path, ``MODULE:CLASS`` or ``FILE.py:CLASS``
(``gatedrnn train --task my_tasks:Parity``); :func:`task_class` resolves either form.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path

BUILT_IN = {  # name: where its class lives
    "adding": "gatedrnn.tasks.adding:Adding",
    "copy": "gatedrnn.tasks.copy:Copy",
    "text": "gatedrnn.tasks.text:Text",
    "timeseries": "gatedrnn.tasks.timeseries:TimeSeries",
    "classify": "gatedrnn.tasks.classify:Classify",
    "music": "gatedrnn.tasks.music:Music",
    "qa": "gatedrnn.tasks.qa:QA",
    "video": "gatedrnn.tasks.video:Video",
    "parity": "gatedrnn.tasks.parity:Parity",
    "mqar": "gatedrnn.tasks.mqar:MQAR",
}

DEFAULT = "adding"  # the task of a run that names none

__all__ = ["BUILT_IN", "DEFAULT", "TASKS", "Task", "is_import_path", "make_task", "task_class", "task_from_config"]


def __getattr__(name):  # ``from gatedrnn.tasks import Task``: the protocol, imported when asked for
    if name == "Task":
        from gatedrnn.tasks.base import Task

        return Task
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_import_path(spec: str) -> bool:
    """Whether ``spec`` names a task by import path (``MODULE:CLASS``, ``FILE.py:CLASS``), not by a
    built-in name.

    Args:
        spec (str): a task's name or import path.
    """
    return ":" in str(spec)


def _import(spec: str) -> type:
    """The class at ``MODULE:CLASS`` or ``FILE.py:CLASS``."""
    from gatedrnn.tasks.base import Task

    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise ValueError(f"--task {spec!r}: expected a built-in task ({', '.join(BUILT_IN)}) or MODULE:CLASS")
    if where.endswith(".py"):
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"--task {spec!r}: no such file {where}")
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
        module_name = f"gatedrnn_task_{path.stem}_{digest}"  # one module per file, however it is spelled
        module = sys.modules.get(module_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module  # before running it: dataclasses and pickling look it up
            try:
                loader_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as error:
            raise ValueError(f"--task {spec!r}: cannot import {where} ({error})") from None
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ValueError(f"--task {spec!r}: {where} has no Task subclass named {name} "
                         "(a task subclasses gatedrnn.tasks.base.Task)")  # fmt: skip
    return cls


def task_class(spec: str) -> type:
    """The task class a name or import path gives: ``"adding"`` → :class:`~gatedrnn.tasks.adding.Adding`,
    ``"my_tasks:Parity"`` → that class. An unknown name is a ``ValueError`` listing the built-in ones.

    Args:
        spec (str): a built-in task's name, or ``MODULE:CLASS`` / ``FILE.py:CLASS`` (the module
            is imported: its code runs).

    Examples:
        >>> from gatedrnn.tasks import task_class
        >>> task_class("adding").__name__, task_class("gatedrnn.tasks.copy:Copy").name
        ('Adding', 'copy')
        >>> task_class("addition")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: --task must be one of adding, copy, ... got 'addition'
    """
    if spec in BUILT_IN:
        return _import(BUILT_IN[spec])
    if is_import_path(spec):
        return _import(spec)
    raise ValueError(f"--task must be one of {', '.join(BUILT_IN)} (or MODULE:CLASS for a task of your own), "
                     f"got {spec!r}")  # fmt: skip


class _Registry(Mapping):
    """The built-in tasks, name → class, each class imported at its first lookup."""

    def __getitem__(self, name):
        if name not in BUILT_IN:
            raise KeyError(name)
        return task_class(name)

    def __iter__(self):
        return iter(BUILT_IN)

    def __len__(self):
        return len(BUILT_IN)


TASKS: Mapping = _Registry()


def make_task(name: str, **options):
    """A task built from its name (or import path) and its constructor's options.

    Args:
        name (str): a built-in task's name or an import path (see :func:`task_class`).
        **options: the task class's constructor arguments.

    Examples:
        >>> from gatedrnn.tasks import make_task
        >>> task = make_task("adding", length=50)
        >>> task.describe(), task.input_size, task.readout
        ('adding, T = 50', 2, 'last')
    """
    return task_class(name)(**options)


def task_from_config(config, spec=None, saved=None):
    """The task of ``config`` with its data; with ``saved`` (a trained run's files, see
    :func:`gatedrnn.runs.saved_files`), rebuilt reusing them (``Task.from_run``).

    Args:
        config (TrainConfig): the run's config.
        spec (dict, optional): the run's ``model.json``. Default: ``None``.
        saved (dict, optional): the run's saved files by name. Default: ``None``.
    """
    cls = task_class(config.task)
    return cls.from_config(config) if saved is None else cls.from_run(config, spec, saved)
