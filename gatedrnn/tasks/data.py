"""Reading a user's data file: one error type whose message names the file and the problem."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path


class DataError(ValueError):
    """A data file that is missing, unreadable, empty or malformed."""


def data_path(data, task: str, what: str = "a data file or folder") -> Path:
    """``--data`` as a path, or an error saying the task needs it (``Path("")`` would be ".")."""
    if not str(data).strip():
        raise DataError(f"the {task} task needs --data PATH ({what})")
    return Path(data)


def finite_number(text: str, where: str) -> float:
    """``text`` as a finite float, or an error naming ``where`` (file, line and column)."""
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where} holds {text!r}, not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where} holds {text!r}, not a finite number")
    return value


def read_text(path) -> str:
    if not str(path).strip():
        raise DataError("this task needs --data PATH (a data file or folder)")
    path = Path(path)
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


def fingerprint(data) -> dict | None:
    """Size and SHA-256 of a data file, or of the files directly in a data folder (by name);
    None where ``data`` names no file (a synthetic task, or a built-in set such as digits)."""
    path = Path(str(data)) if str(data).strip() else None
    if path is None or not path.exists():
        return None
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    digest, size = hashlib.sha256(), 0
    for file in files:
        if path.is_dir():
            digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}
