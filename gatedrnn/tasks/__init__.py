"""Sequence tasks: each module holds one task's data, loss and metric."""

from __future__ import annotations

from gatedrnn.tasks.adding import Adding
from gatedrnn.tasks.base import Task
from gatedrnn.tasks.copy import Copy

TASKS = {"adding": Adding, "copy": Copy}

__all__ = ["TASKS", "Task", "make_task"]


def make_task(name: str, **options) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name](**options)
