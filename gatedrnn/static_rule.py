"""``backend="auto"``'s choice without measuring, read from a table fitted on a grid of shapes.

Where both torch's kernel and the fused loop can run a call (see
:func:`gatedrnn.backends.static_backend`) and autotuning is off, the faster of the two was
measured once on a log grid of ``(B, T, I, H)`` for each plain cell and for inference and
training (``benchmarks/static_grid.py``, which writes the package's ``static_rule.json``).
:func:`decide` answers with the decision at the grid point nearest to the call's shape:

- **nearest** in log space: the least ``sum((log2 v - log2 g)^2)`` over ``B, T, I, H`` among
  the points the table holds (a point whose torch.nn training step was too slow to measure is
  absent; its neighbours answer for it);
- **ties** (a shape exactly halfway in log space, e.g. ``B = 2`` between ``1`` and ``4``) go
  to the smallest of the tied points, in ``(B, T, I, H)`` order;
- **outside the grid** a shape takes the nearest point all the same, on the grid's edge
  (``B = 1000`` reads ``B = 256``'s decision);
- ``RNN_RELU`` reads ``RNN_TANH``'s table (:data:`SHARED`): torch runs both in the same
  generic loop and the fused kernels differ in one pointwise function, so the grid is fitted
  on ``RNN_TANH`` only.

The table was measured on one layer, one direction, at the thread count in its
``"identity"``; a deeper or bidirectional layer takes its first layer's shape. A missing or
unreadable table, or one that lacks a cell or mode, is never an error: :func:`decide` warns
once and answers with :func:`hand_rule`, the rule used before the grid.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
import warnings

FILE = "static_rule.json"  # in the gatedrnn package ([tool.setuptools.package-data] ships it)
CELLS = ("RNN_TANH", "LSTM", "GRU")  # the cells the table is fitted on
SHARED = {"RNN_RELU": "RNN_TANH"}  # a cell that reads another's table
MODES = ("inference", "training")
AXES = ("B", "T", "I", "H")
CHOICES = ("torch", "fused")


def hand_rule(cell: str, train: bool) -> str:
    """The rule before the grid, chosen on ``benchmarks/speed.py``'s shapes: torch's kernel
    (oneDNN's LSTM primitive) for an LSTM in inference, where it ties with ours or wins at
    some shapes; the fused loop everywhere else (faster in training at every one of them).

    Args:
        cell (str): the layer's mode (``"LSTM"``, ``"GRU"``, ``"RNN_TANH"``, ``"RNN_RELU"``).
        train (bool): whether a gradient is wanted.
    """
    return "torch" if cell == "LSTM" and not train else "fused"


def decide(cell: str, train: bool, B: int, T: int, I: int, H: int) -> str:
    """``"torch"`` or ``"fused"``: the table's decision at the grid point nearest to this shape
    (see the module docstring), or :func:`hand_rule`'s where the table cannot answer.

    Args:
        cell (str): the layer's mode (``"LSTM"``, ``"GRU"``, ``"RNN_TANH"``, ``"RNN_RELU"``).
        train (bool): whether a gradient is wanted (training) or not (inference).
        B (int): the batch size.
        T (int): the sequence length.
        I (int): the input features.
        H (int): the hidden size.

    Examples:
        >>> from gatedrnn import static_rule
        >>> static_rule.decide("LSTM", False, 4, 100, 32, 128) in ("torch", "fused")
        True
    """
    return _decide(SHARED.get(cell, cell), bool(train), int(B), int(T), int(I), int(H))


@functools.lru_cache(maxsize=4096)
def _decide(cell, train, B, T, I, H) -> str:
    """The memoized answer: ``auto`` asks on every call of every layer."""
    points = table()
    if points is None or cell not in points:
        return hand_rule(cell, train)
    at = [math.log2(max(v, 1)) for v in (B, T, I, H)]
    # ascending (B, T, I, H) order and a strict "<": a tie keeps the smallest point
    best, choice = math.inf, None
    for where, decided in points[cell][MODES[train]]:
        distance = sum((a - w) ** 2 for a, w in zip(at, where))
        if distance < best:
            best, choice = distance, decided
    return choice


def _read_text() -> str:
    """The table's text from the installed package."""
    return importlib.resources.files("gatedrnn").joinpath(FILE).read_text()


@functools.cache
def table() -> dict | None:
    """The fitted table, read once: ``{cell: {mode: [((log2 B, log2 T, log2 I, log2 H), choice),
    ...]}}`` in ascending ``(B, T, I, H)`` order; None (with a warning) when the file is
    missing or not a table of every cell in :data:`CELLS` and mode in :data:`MODES`."""
    try:
        return parse(json.loads(_read_text()))
    except (OSError, ValueError, TypeError, KeyError) as error:  # (JSONDecodeError is a ValueError)
        warnings.warn(
            f"gatedrnn's static rule table ({FILE}) cannot be read ({type(error).__name__}: {error}): with "
            f"autotuning off, backend='auto' falls back to the hand rule (torch's kernel for an LSTM in "
            f"inference, the fused loop elsewhere); benchmarks/static_grid.py writes the table",
            RuntimeWarning, stacklevel=2,
        )  # fmt: skip
        return None


def parse(data) -> dict:
    """:func:`table`'s form of a table as ``benchmarks/static_grid.py`` writes it:
    ``{"grid": {"B": [...], ...}, "decisions": {cell: {mode: {"B-T-I-H": choice}}}}``. Raises
    ValueError (or TypeError, KeyError) naming what is wrong."""
    grid = data["grid"]
    for axis in AXES:
        values = grid[axis]
        if not values or not all(isinstance(v, int) and v >= 1 for v in values):
            raise ValueError(f"grid {axis} must be a list of positive integers, got {values!r}")
    parsed = {}
    for cell in CELLS:
        parsed[cell] = {}
        for mode in MODES:
            decisions = data["decisions"][cell][mode]
            if not isinstance(decisions, dict) or not decisions:
                raise ValueError(f"decisions for {cell} {mode} must be a non-empty object, got {decisions!r}")
            points = []
            for key, choice in decisions.items():
                shape = tuple(int(v) for v in key.split("-"))
                if len(shape) != 4 or any(v not in grid[a] for v, a in zip(shape, AXES)) or choice not in CHOICES:
                    raise ValueError(f"{cell} {mode}: {key!r}: {choice!r} is not a grid point's 'torch' or 'fused'")
                points.append((shape, choice))
            parsed[cell][mode] = [(tuple(math.log2(v) for v in shape), choice) for shape, choice in sorted(points)]
    return parsed


def reload() -> None:
    """Forgets the table and every answer: the next :func:`decide` reads the file again."""
    table.cache_clear()
    _decide.cache_clear()
