"""``auto``'s static rule (gatedrnn/static_rule.py, read by backends.static_backend): at every
point of the fitted grid the rule answers with the table's decision, through a real layer and
an input of that shape; between points the nearest one in log space answers (expectations
computed by hand on a small table); a missing or corrupt table falls back to the hand rule,
with a warning; the table covers every mode auto tunes. Nothing is timed."""

import functools
import json
import math

import pytest
import torch

import gatedrnn
from gatedrnn import backends, fused, static_rule

pytestmark = pytest.mark.skipif(not fused.native_available(), reason="native kernels not built on this machine")

CLASSES = {"LSTM": gatedrnn.LSTM, "GRU": gatedrnn.GRU, "RNN_TANH": gatedrnn.RNN,
           "RNN_RELU": functools.partial(gatedrnn.RNN, nonlinearity="relu")}  # fmt: skip


def shipped() -> dict:
    """The package's table as JSON, read directly (not through the module under test)."""
    return json.loads(static_rule._read_text())


@functools.lru_cache(maxsize=1)
def _layer(cell, I, H):  # noqa: E741
    return CLASSES[cell](I, H)


def chosen(cell, train, B, T, I, H, **options):  # noqa: E741
    """static_backend's answer for a real layer and a (T, B, I) float32 input of this shape: a
    zero expanded to it (no memory; static_backend reads the shape, dtype and device only)."""
    layer = CLASSES[cell](I, H, **options) if options else _layer(cell, I, H)
    x = torch.zeros(()).expand(T, B, I)
    with torch.set_grad_enabled(train):
        return backends.static_backend(layer, x, None, False)


@pytest.fixture
def table(monkeypatch):
    """Installs a table given as an object, as JSON text, or as an exception its reading raises."""

    def install(content):
        def read():
            if isinstance(content, BaseException):
                raise content
            return content if isinstance(content, str) else json.dumps(content)

        monkeypatch.setattr(static_rule, "_read_text", read)
        static_rule.reload()

    yield install
    static_rule.reload()  # the next test reads the shipped file again


def test_the_shipped_table_is_read_and_covers_every_tunable_mode():
    data = shipped()
    assert static_rule.table() is not None  # it parses: every key a grid point, every value torch or fused
    assert set(data["identity"]) >= {"cpu", "threads", "torch", "command", "date"}
    assert set(data["grid"]) == set(static_rule.AXES)
    for mode in backends._TORCH_KERNELS:  # every cell auto chooses a kernel for
        cell = static_rule.SHARED.get(mode, mode)
        assert set(data["decisions"][cell]) == set(static_rule.MODES), mode
        assert all(data["decisions"][cell][m] for m in static_rule.MODES), mode


@pytest.mark.parametrize("cell", list(CLASSES))
def test_every_grid_point_answers_with_the_table(cell):
    data = shipped()
    decisions = data["decisions"][static_rule.SHARED.get(cell, cell)]
    for train, mode in enumerate(static_rule.MODES):
        points = sorted((tuple(map(int, key.split("-"))), choice) for key, choice in decisions[mode].items())
        for (B, T, I, H), choice in sorted(points, key=lambda p: (p[0][2], p[0][3])):  # noqa: E741
            assert chosen(cell, bool(train), B, T, I, H) == choice, (cell, mode, B, T, I, H)


# A small table: LSTM inference is "torch" everywhere but at (4, 8, 16, 16); (16, 8, 16, 16) is
# absent (as a point too slow to measure). RNN_TANH training is "torch" everywhere, GRU's "fused".
GRID = {"B": [1, 4, 16], "T": [8, 64], "I": [16], "H": [16, 256]}
ALL = [f"{B}-{T}-{I}-{H}" for B in GRID["B"] for T in GRID["T"] for I in GRID["I"] for H in GRID["H"]]  # noqa: E741
SMALL = {
    "identity": {"cpu": "test", "threads": 2, "torch": "test", "command": "by hand", "date": "today"},
    "grid": GRID,
    "decisions": {
        "LSTM": {"inference": {k: "fused" if k == "4-8-16-16" else "torch" for k in ALL if k != "16-8-16-16"},
                 "training": dict.fromkeys(ALL, "fused")},
        "GRU": {"inference": dict.fromkeys(ALL, "fused"), "training": dict.fromkeys(ALL, "fused")},
        "RNN_TANH": {"inference": dict.fromkeys(ALL, "fused"), "training": dict.fromkeys(ALL, "torch")},
    },
}  # fmt: skip


@pytest.mark.parametrize(
    ("B", "T", "expected", "why"),
    [
        (4, 8, "fused", "on the grid"),
        (3, 8, "fused", "log2 3 = 1.58: nearer log2 4 = 2 than log2 1 = 0"),
        (2, 8, "torch", "log2 2 = 1, halfway between B = 1 and 4: the tie goes to the smaller point"),
        (5, 8, "fused", "log2 5 = 2.32: nearer 2 (B = 4) than 4 (B = 16)"),
        (8, 8, "fused", "log2 8 = 3, halfway between B = 4 and 16, but (16, 8) is absent: (4, 8) at 1 wins"),
        (16, 8, "fused", "(16, 8) absent: (4, 8) at distance 2^2 = 4, (16, 64) at 3^2 = 9"),
        (4, 22, "fused", "log2 22 = 4.46: nearer 3 (T = 8) than 6 (T = 64)"),
        (4, 23, "torch", "log2 23 = 4.52: nearer 6 (T = 64)"),
        (1000, 8, "torch", "past the edge, (16, 8) absent: (16, 64) at 5.97^2 + 3^2 = 44.6, (4, 8) at 7.97^2 = 63.5"),
        (4, 5000, "torch", "past the grid's edge: T = 64"),
    ],
)  # fmt: skip
def test_between_points_the_nearest_in_log_space_answers(table, B, T, expected, why):
    table(SMALL)
    assert static_rule.decide("LSTM", False, B, T, 16, 16) == expected, why
    assert chosen("LSTM", False, B, T, 16, 16) == expected, why  # the same through a layer
    # I = 20 and H = 40 round to the grid's I = 16 (the only one) and H = 16 (log2 40 = 5.32 vs 4 and 8)
    assert static_rule.decide("LSTM", False, B, T, 20, 40) == expected, why


def test_the_cell_and_mode_choose_the_column(table):
    table(SMALL)
    assert chosen("LSTM", True, 4, 8, 16, 16) == "fused"  # training: all fused
    assert chosen("LSTM", False, 1, 8, 16, 256) == "torch"
    assert chosen("RNN_TANH", True, 4, 8, 16, 16) == "torch" and chosen("RNN_TANH", False, 4, 8, 16, 16) == "fused"
    assert chosen("RNN_RELU", True, 4, 8, 16, 16) == "torch"  # RNN_TANH's table
    assert chosen("GRU", True, 4, 8, 16, 16) == "fused"


def test_where_the_table_does_not_apply_the_hand_rule_answers(table):
    """Everywhere static_backend gives no table a say, the rule as it was: an all-"torch" table
    must not turn these into torch's kernel."""
    table(SMALL | {"decisions": {c: dict.fromkeys(static_rule.MODES, dict.fromkeys(ALL, "torch"))
                                 for c in static_rule.CELLS}})  # fmt: skip
    assert chosen("GRU", False, 4, 8, 16, 16) == "torch"  # the table answers for a plain call ...
    x = torch.zeros(()).expand(8, 4, 16)
    for layer in (gatedrnn.GRU(16, 16, zoneout=0.1), gatedrnn.LSTM(16, 16, peephole=True),
                  gatedrnn.LSTM(16, 16, proj_size=8), gatedrnn.MGU(16, 16)):  # fmt: skip
        assert backends.static_backend(layer, x, None, False) == "fused", layer  # ... not for these
    gru = gatedrnn.GRU(16, 16)
    assert backends.static_backend(gru, x.bfloat16(), None, False) == "fused"
    assert backends.static_backend(gru, x, torch.tensor([8, 5, 3, 1]), False) == "fused"
    assert backends.static_backend(gru, x, None, True) == "fused"
    assert backends.static_backend(gru, torch.empty(8, 4, 16, device="meta"), None, False) == "torch"  # not the CPU


CORRUPT = {
    "missing": FileNotFoundError("static_rule.json"),
    "not JSON": "{not json",
    "a list": json.dumps([1, 2]),
    "no GRU": SMALL | {"decisions": {k: v for k, v in SMALL["decisions"].items() if k != "GRU"}},
    "no training": SMALL | {"decisions": SMALL["decisions"] | {"GRU": {"inference": {"1-8-16-16": "fused"}}}},
    "a choice not torch or fused": SMALL | {"decisions": SMALL["decisions"] | {
        "GRU": {"inference": {"1-8-16-16": "maybe"}, "training": {"1-8-16-16": "fused"}}}},
    "a point off the grid": SMALL | {"decisions": SMALL["decisions"] | {
        "GRU": {"inference": {"2-8-16-16": "torch"}, "training": {"1-8-16-16": "fused"}}}},
    "a grid of zeros": SMALL | {"grid": GRID | {"B": [0, 4]}},
}  # fmt: skip


@pytest.mark.parametrize("content", list(CORRUPT.values()), ids=list(CORRUPT))
def test_a_missing_or_corrupt_table_falls_back_to_the_hand_rule(table, content):
    table(content)
    with pytest.warns(RuntimeWarning, match="falls back to the hand rule"):
        assert static_rule.table() is None
    for cell in CLASSES:
        for train in (False, True):
            expected = "torch" if cell == "LSTM" and not train else "fused"  # the hand rule, written out
            assert static_rule.hand_rule(cell, train) == expected
            assert chosen(cell, train, 4, 8, 16, 16) == expected, (cell, train)
    x = torch.randn(8, 4, 16)
    with torch.no_grad():  # and a layer runs, with torch's kernel, and agrees with torch.nn
        theirs = torch.nn.LSTM(16, 16)
        ours = gatedrnn.LSTM.from_torch(theirs)
        torch.testing.assert_close(ours(x)[0], theirs(x)[0])


def test_the_lookup_distance_is_the_log_space_one(table):
    """One more hand computation, off every axis at once: (B, T, I, H) = (2, 16, 32, 128) against
    (1, 8, 16, 16) (distance 1 + 1 + 1 + 9 = 12) and (4, 64, 16, 256) (1 + 4 + 1 + 1 = 7)."""
    only = {"1-8-16-16": "torch", "4-64-16-256": "fused"}
    table(SMALL | {"decisions": SMALL["decisions"] | {"GRU": {"inference": only, "training": only}}})
    near = [sum((math.log2(a) - math.log2(b)) ** 2 for a, b in zip((2, 16, 32, 128), p)) for p in
            ((1, 8, 16, 16), (4, 64, 16, 256))]  # fmt: skip
    assert near == [12, 7]
    assert static_rule.decide("GRU", False, 2, 16, 32, 128) == "fused"
    assert static_rule.decide("GRU", True, 1, 4, 8, 8) == "torch"  # below the grid: its corner
