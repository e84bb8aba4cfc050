"""The time axis of a CSV series: a column of dates (or of increasing numbers such as years)
beside the values, used for the x axis of the forecast figure and to date a forecast.

A column is a time axis when every cell parses with one of ``DATE_FORMATS`` (the first that
fits all cells), or is a number, and the values increase strictly. A forecast past the end is
dated when the steps are regular: a constant difference (days, hours, years as numbers) or a
constant number of calendar months on the same day of the month (monthly, quarterly data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

DATE_FORMATS = ("%Y-%m-%d", "%Y-%m", "%Y/%m/%d", "%Y/%m", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%d %H:%M", "%Y%m%d", "%d.%m.%Y")  # fmt: skip


@dataclass
class TimeAxis:
    """``name`` of the column, its ``values`` (datetimes, or floats for a numeric column) and
    the ``format`` its dates were written in (None for numbers)."""

    name: str
    values: list
    format: str | None = None

    def label(self, value) -> str:
        """A value as the file writes it: a date in its format, a whole number without '.0'."""
        if self.format is not None:
            return value.strftime(self.format)
        return str(int(value)) if float(value).is_integer() else f"{value:g}"

    def extend(self, steps: int) -> list | None:
        """The ``steps`` values after the last one, or None where the spacing is irregular."""
        values = self.values
        if len(values) < 2:
            return None
        if self.format is None:
            step = values[-1] - values[-2]
            if all(math.isclose(b - a, step, rel_tol=1e-9, abs_tol=1e-9) for a, b in zip(values, values[1:])):
                return [values[-1] + step * k for k in range(1, steps + 1)]
            return None
        delta = values[-1] - values[-2]
        if all(b - a == delta for a, b in zip(values, values[1:])):  # days, hours, weeks
            return [values[-1] + delta * k for k in range(1, steps + 1)]
        months = _months(values[-2], values[-1])
        if months and all(_months(a, b) == months for a, b in zip(values, values[1:])):  # calendar months
            return [_add_months(values[-1], months * k) for k in range(1, steps + 1)]
        return None


def _months(a: datetime, b: datetime) -> int | None:
    """Whole calendar months from ``a`` to ``b`` (same day and time of day), else None."""
    if (a.day, a.time()) != (b.day, b.time()):
        return None
    return (b.year - a.year) * 12 + b.month - a.month


def _add_months(date: datetime, months: int) -> datetime:
    total = date.month - 1 + months
    return date.replace(year=date.year + total // 12, month=total % 12 + 1)


def parse_dates(cells: list[str]) -> tuple[list[datetime], str] | None:
    """(dates, format) of the first format in ``DATE_FORMATS`` that reads every cell, or None."""
    for fmt in DATE_FORMATS:
        try:
            return [datetime.strptime(cell, fmt) for cell in cells], fmt
        except ValueError:
            continue
    return None


def time_axis(name: str, cells: list[str]) -> TimeAxis | None:
    """The column as a time axis (dates or numbers, strictly increasing), or None."""
    dates = parse_dates(cells)
    if dates is not None:
        values, fmt = dates
    else:
        try:
            values, fmt = [float(cell) for cell in cells], None
        except ValueError:
            return None
        if not all(math.isfinite(v) for v in values):
            return None
    if len(values) < 2 or not all(a < b for a, b in zip(values, values[1:])):
        return None
    return TimeAxis(name, values, fmt)
