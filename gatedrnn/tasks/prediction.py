"""What a task's ``predict`` returns: rows for a CSV, a summary for JSON, a line for a terminal."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from gatedrnn.checkpoint import atomic_write
from gatedrnn.tasks.data import DataError


@dataclass
class Prediction:
    """What :func:`gatedrnn.predict` returns: ``rows`` (one dict per line of the CSV output), ``summary``
    (the JSON output's other keys: run, input, totals), ``message`` (one line for a terminal),
    ``notes`` (how the run or the file was read) and, for text, ``total`` (the CSV's last row).
    A task whose predictions are not rows (the video task's frames) subclasses it with more
    ``formats`` and a ``write`` of its own.

    Args:
        task (str): the run's task.
        rows (list[dict]): the CSV output, one dict per line (column: value).
        summary (dict): the JSON output's other keys.
        message (str): one line for a terminal.
        notes (list[str]): how the run or the file was read. Default: ``[]``.
        total (dict, optional): a last CSV row of totals (text). Default: ``None``.

    Examples:
        >>> from gatedrnn.tasks.prediction import Prediction
        >>> p = Prediction("timeseries", [{"step": 1, "value": 441.2}], {"input": "air.csv"}, "1 step")
        >>> print(p.to_csv(), end="")
        step,value
        1,441.2
        >>> p.to_json()
        {'input': 'air.csv', 'rows': [{'step': 1, 'value': 441.2}]}
    """

    task: str
    rows: list
    summary: dict
    message: str
    notes: list = field(default_factory=list)
    total: dict | None = None
    formats = ("csv", "json")  # the files write() makes, by suffix

    def to_json(self) -> dict:
        """The JSON output: ``summary`` with ``rows``."""
        return {**self.summary, "rows": self.rows}

    def to_csv(self) -> str:
        """The CSV output: a header of every column, ``rows``, then ``total`` if any."""
        rows = self.rows + ([self.total] if self.total else [])
        columns = list(dict.fromkeys(key for row in rows for key in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def write(self, path, format: str | None = None) -> Path:
        """Writes the prediction to ``path`` atomically, as CSV or JSON (``format``, or the suffix).

        Args:
            path (str or Path): the file to write.
            format (str, optional): one of ``formats``; ``None`` reads it from the suffix
                (``.csv``, ``.json``), an unknown suffix being a ``DataError``. Default: ``None``.

        Returns:
            The path written.
        """
        path = Path(path)
        format = format or output_format(path, self.formats)
        text = json.dumps(self.to_json(), indent=2) + "\n" if format == "json" else self.to_csv()
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        return path


def output_format(path, formats=Prediction.formats) -> str:
    """The format a file name's suffix asks for, one of ``formats``, or an error naming the file.

    Args:
        path (str or Path): the file name.
        formats (tuple[str, ...]): the formats offered. Default: ``("csv", "json")``.
    """
    suffix = Path(path).suffix.lower()
    if suffix[1:] not in formats:
        names = " or ".join(f".{f}" for f in formats)
        raise DataError(f"{path}: cannot tell the format from the suffix {suffix or '(none)'!r}; name a {names} "
                        f"file, or pass --format {'|'.join(formats)}")  # fmt: skip
    return suffix[1:]
