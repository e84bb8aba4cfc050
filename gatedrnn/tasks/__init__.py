"""Sequence tasks: each module holds one task's data, loss and metric."""

from __future__ import annotations

from gatedrnn.tasks.adding import Adding
from gatedrnn.tasks.base import Task
from gatedrnn.tasks.classify import Classify
from gatedrnn.tasks.copy import Copy
from gatedrnn.tasks.music import Music
from gatedrnn.tasks.qa import QA
from gatedrnn.tasks.text import Text
from gatedrnn.tasks.timeseries import TimeSeries
from gatedrnn.tasks.video import Video

TASKS = {"adding": Adding, "copy": Copy, "text": Text, "timeseries": TimeSeries, "classify": Classify, "music": Music,
         "qa": QA, "video": Video}  # fmt: skip
ALL_CELLS = tuple(dict.fromkeys(cell for task in TASKS.values() for cell in task.cells))

__all__ = ["TASKS", "Task", "make_task"]


def make_task(name: str, **options) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name](**options)


def task_from_config(config, run_dir=None) -> Task:
    """The task of ``config``; with ``run_dir``, rebuilt from what that run saved beside its
    checkpoint (``Task.from_run``)."""
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; choose from {', '.join(TASKS)}")
    cls = TASKS[config.task]
    return cls.from_config(config) if run_dir is None else cls.from_run(config, run_dir)
