"""Reading a user's data file: one error type whose message names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A data file that is missing, unreadable, empty or malformed."""


def read_text(path) -> str:
    path = Path(path)
    if not str(path):
        raise DataError("this task needs --data PATH (a data file or folder)")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (byte {error.start}, line {line})") from None
    if not text.strip():
        raise DataError(f"{path}: is empty")
    return text
