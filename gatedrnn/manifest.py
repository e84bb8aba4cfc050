"""A run's manifest: the files beside a checkpoint that a trained run is used through
(``config.json``, ``model.json``, the task's saved files such as ``vocab.json``), each with
the SHA-256 it had when the checkpoint was written.

Every checkpoint records its manifest in its own metadata, where the checkpoint's checksums
cover it: the two are written by one atomic rename, so a run killed at any moment leaves a
checkpoint and a manifest that belong together. Whatever reads a run checks the files
against it before using them: a file edited since, or a checkpoint copied into another run's
folder, is refused with one line naming the file, unless the user says the edit is meant
(``--trust-edited``, ``trust_edited=True``).

A file's digest is that of its JSON value (keys sorted, no spaces), so re-indenting a file is
no edit while changing a value is. ``without`` names keys left out of the digest: those of
``config.json`` that ``gatedrnn train --resume`` may change (``steps``, ``max_minutes``,
``threads``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

TRUST = "--trust-edited (trust_edited=True in Python)"  # how a user says an edit is meant


class ManifestError(ValueError):
    """A file of a run that is not the one its checkpoint was written with."""


def digest(path, without=()) -> str | None:
    """The SHA-256 of the JSON value in ``path``, less the keys ``without`` of an object; of
    its bytes where it holds no JSON (then it matches no recorded digest); None where there
    is no file.

    Args:
        path (str or Path): the file.
        without (tuple[str, ...]): keys of a JSON object left out. Default: ``()``.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return hashlib.sha256(raw).hexdigest()
    if isinstance(value, dict):
        value = {key: item for key, item in value.items() if key not in without}
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def record(run_dir, files: dict) -> dict:
    """The manifest of the files of ``files`` present in ``run_dir``: ``{name: {"sha256": ...,
    "without": [...]}}``.

    Args:
        run_dir (str or Path): the run folder.
        files (dict): file name to the keys left out of its digest (a list, often empty).
    """
    entries = {}
    for name, without in files.items():
        sha = digest(Path(run_dir) / name, tuple(without))
        if sha is not None:
            entries[name] = {"sha256": sha, **({"without": list(without)} if without else {})}
    return entries


def check(run_dir, recorded: dict, trust_edited: bool = False) -> list[str]:
    """Each file of the manifest ``recorded``, as it is now in ``run_dir``; returns the names
    of those that differ, which only ``trust_edited`` lets through.

    Args:
        run_dir (str or Path): the run folder.
        recorded (dict): the manifest the checkpoint holds (:func:`record`'s value).
        trust_edited (bool): use edited or missing files as they are. Default: ``False``.

    Raises:
        ManifestError: one line naming the first file that differs (without ``trust_edited``).
    """
    differ = []
    for name, entry in recorded.items():
        path = Path(run_dir) / name
        now = digest(path, tuple(entry.get("without", ())))
        if now == entry.get("sha256"):
            continue
        if not trust_edited:
            if now is None:
                raise ManifestError(f"{path} is missing, but the run's checkpoint was written with it; put it back, "
                                    f"or pass {TRUST} to use the run without it")  # fmt: skip
            raise ManifestError(f"{path} is not the file the run's checkpoint was written with (it was edited since, "
                                f"or the checkpoint comes from another run); put the original back, or pass {TRUST} "
                                "to use it as it is")  # fmt: skip
        differ.append(name)
    return differ
