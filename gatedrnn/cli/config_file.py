"""``gatedrnn train --config FILE``: options from a JSON or TOML file, in the form ``train``
writes to a run's ``config.json`` (``TrainConfig``'s fields, the task's own options under
``extra``). Every key and value is checked; a mistake is one line naming the key and the file."""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path

from gatedrnn.cli.errors import UsageError



def _parse(path: Path) -> dict:
    if path.is_dir():
        raise UsageError(f"--config {path} is a folder, expected a .json or .toml file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--config {path}: cannot be read ({error})") from None
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise UsageError(f"--config {path}: not valid TOML ({error})") from None
    elif path.suffix == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise UsageError(f"--config {path}: not valid JSON ({error})") from None
    else:
        raise UsageError(f"--config {path}: expected a .json or .toml file, got {path.suffix or 'no suffix'!r}")
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: expected a table of options, got {type(values).__name__}")
    return values


def _check(value, kind, key: str, path: Path):
    """``value`` as ``kind``, or a one-line error naming ``key`` and ``path``; an integer counts as a number."""
    from gatedrnn.config import checked  # the type check a run's config.json gets too

    try:
        return checked(value, kind, key)
    except ValueError as error:
        raise UsageError(f"--config {path}: {error}") from None


def read(path) -> dict:
    """The options in ``path`` (a ``TrainConfig`` field: value mapping, task options under ``extra``),
    each key known and each value of its field's type; the task options are checked by :func:`check_extra`."""
    from gatedrnn.config import KINDS, TrainConfig

    path = Path(path)
    values = _parse(path)
    fields = {f.name: KINDS[f.type] for f in dataclasses.fields(TrainConfig)}
    for key in values:
        if key in fields:
            continue
        from gatedrnn.tasks import TASKS

        if any(key in task.options for task in TASKS.values()):
            raise UsageError(f"--config {path}: unknown key {key!r}; a task's own options such as {key} go under "
                             "extra ([extra] in TOML)")  # fmt: skip
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"--config {path}: unknown key {key!r}; {hint}the keys are {', '.join(fields)}")
    return {key: _check(value, fields[key], key, path) for key, value in values.items()}


def check_extra(extra: dict, task: str, path) -> None:
    """Each key of ``extra`` (from the file at ``path``) an option of ``task``, of its type."""
    from gatedrnn.tasks import task_class

    try:
        options = task_class(task).options
    except ValueError:
        return  # TrainConfig.validate names the task
    for key, value in extra.items():
        if key not in options:
            known = ", ".join(options) or "none"
            raise UsageError(f"--config {path}: unknown key 'extra.{key}' for the {task} task; its options are {known}")
        _check(value, options[key][0], f"extra.{key}", path)
