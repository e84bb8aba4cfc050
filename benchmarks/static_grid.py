"""Fits ``backend="auto"``'s static rule (autotuning off) on a log grid of shapes.

For each plain cell (``RNN_TANH``, ``LSTM``, ``GRU``; ``RNN_RELU`` reads ``RNN_TANH``'s table,
see :mod:`gatedrnn.static_rule`), in inference and in training, float32, at every point
(B, T, I, H) of the grid: the two candidates ``auto`` chooses between, torch's kernel and the
fused loop, each forced on one gatedrnn layer (autotuning off), timed interleaved after
warm-up; the decision is the fused loop where the median over rounds of its time over torch's
in the same round is below 1, torch's kernel otherwise. A point whose torch.nn training step
for that cell takes more than ``--max-ms`` (timed once, after one warm-up call) is left out
of that cell's table; its neighbours answer for it.

Writes the decisions to the package's table, ``gatedrnn/static_rule.json`` (a temporary file
renamed over it), and the measured ratios to ``benchmarks/results/static_grid.json``.

    python benchmarks/static_grid.py                  # the full grid, ~7-11 min on 2 quiet cores (modelled)
    python benchmarks/static_grid.py --estimate       # the points kept and the rest's time, then stop
    python benchmarks/static_grid.py --quick          # a tiny grid, a smoke run (~2 min on a loaded machine)

Run it on a quiet machine: nothing else on its cores meanwhile (PERF_NOTES: a loaded 2-core
machine moved a true 1.0 ratio to 1.5-2.2).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from random_shapes import Forced
from results_io import command, cpu_name, write_json
from speed import make_step, time_pair

import gatedrnn
from gatedrnn import static_rule

ROOT = Path(__file__).resolve().parents[1]
GRID = {"B": [1, 4, 16, 64, 256], "T": [8, 64, 512], "I": [16, 64, 256, 1024], "H": [16, 64, 256, 1024]}
QUICK = {"B": [1, 16], "T": [8, 64], "I": [16, 64], "H": [16, 64]}
LAYERS = {"RNN_TANH": "RNN", "LSTM": "LSTM", "GRU": "GRU"}  # the table's cell -> the class that runs it
CELLS = static_rule.CELLS  # all of them in every run: the package reads no table that lacks one
GATES = {"RNN_TANH": 1, "LSTM": 4, "GRU": 3}
FAR_PAST_GFLOP = 75.0  # the training GEMMs' GFLOP past which no step fits --max-ms (150 ms at ~500 GFLOPS)


def points(grid: dict) -> list[tuple[int, int, int, int]]:
    return [(B, T, I, H) for B in grid["B"] for T in grid["T"] for I in grid["I"] for H in grid["H"]]


def train_gflop(cell: str, B: int, T: int, I: int, H: int) -> float:
    """The training step's GEMMs: forward, and the backward's two products of the same size."""
    return 3 * 2 * B * T * GATES[cell] * H * (I + H) / 1e9


def torch_nn(cell: str, I: int, H: int) -> torch.nn.Module:
    return getattr(torch.nn, LAYERS[cell])(I, H)


def train_ms(cell: str, B: int, T: int, I: int, H: int, max_ms: float) -> float:  # noqa: E741
    """torch.nn's training step at this shape after one warm-up call: the least of up to three
    timed calls, stopping at the first within ``max_ms`` (a load spike on a shared machine
    leaves a point out only if it lasts all three)."""
    layer, x = torch_nn(cell, I, H), torch.randn(T, B, I)
    step = make_step(layer, x.requires_grad_(), True)
    step()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        step()
        best = min(best, 1e3 * (time.perf_counter() - started))
        if best <= max_ms:
            break
    return best


def kept(cells, grid, max_ms):
    """For each cell, the points whose torch.nn training step takes at most ``max_ms``, with that
    time; and the points left out, with theirs (None: too many FLOPs to time)."""
    keep, out = {}, {}
    for cell in cells:
        keep[cell], out[cell] = {}, {}
        for at in points(grid):
            ms = None if train_gflop(cell, *at) > FAR_PAST_GFLOP else train_ms(cell, *at, max_ms)
            (keep if ms is not None and ms <= max_ms else out)[cell][at] = ms
    return keep, out


def estimate_s(keep: dict, budget: float) -> float:
    """The measuring phase's seconds, as ``speed.time_pair`` spends them: per kept point and mode,
    two warm-up rounds of the two candidates, then ``max(3, min(50, budget / round))`` timed
    rounds; each candidate taken as fast as torch.nn (inference as a third of training)."""
    total = 0.0
    for found in keep.values():
        for ms in found.values():
            for step_s in (ms / 3e3, ms / 1e3):  # inference, training
                rounds = max(3, min(50, int(budget / (2 * step_s))))
                total += (2 + rounds) * 2 * step_s
    return total


@functools.lru_cache(maxsize=1)
def layer_of(cell: str, I: int, H: int):
    return getattr(gatedrnn, LAYERS[cell])(I, H)


def measure(cell, B, T, I, H, train, budget):
    """Median ms of torch's kernel and of the fused loop, and the median over rounds of fused
    over torch in the same round."""
    layer = layer_of(cell, I, H)
    x = torch.randn(T, B, I).requires_grad_(train)
    steps = [make_step(Forced(layer, "torch"), x, train), make_step(Forced(layer, "fused"), x, train)]
    medians, ratios = time_pair(steps, budget, ratios=True)
    return 1e3 * medians[0], 1e3 * medians[1], ratios[1]


def write_table(path: Path, table: dict) -> None:
    """``table`` as JSON, written whole to a temporary file beside ``path`` and renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(table, f, indent=1)
            f.write("\n")
        os.chmod(tmp, 0o644)  # package data, read by every user (mkstemp makes it 0600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-ms", type=float, default=150.0, help="torch.nn training step above which a point is left out")
    parser.add_argument("--budget", type=float, default=0.25, help="seconds of timing per measurement")
    parser.add_argument("--quick", action="store_true", help=f"the tiny grid {QUICK}, budget 0.05 s")
    parser.add_argument("--estimate", action="store_true", help="time torch.nn once per point, print the estimate, stop")
    parser.add_argument("--table", default=str(ROOT / "gatedrnn" / static_rule.FILE))
    parser.add_argument("--json", default="benchmarks/results/static_grid.json")
    args = parser.parse_args(argv)
    grid, budget = (QUICK, 0.05) if args.quick else (GRID, args.budget)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gatedrnn.set_autotune(False)  # the candidates are forced; nothing else may time
    print(f"CPU: {cpu_name()}, {args.threads} threads, torch {torch.__version__}, grid {grid}\n", flush=True)
    started = time.perf_counter()
    keep, out = kept(CELLS, grid, args.max_ms)
    for cell in CELLS:
        print(f"{cell}: {len(keep[cell])} of {len(points(grid))} points kept (torch.nn training ≤ {args.max_ms:g} ms)")
    print(f"kept in {time.perf_counter() - started:.0f} s; measuring them: about "
          f"{estimate_s(keep, budget) / 60:.1f} min\n", flush=True)  # fmt: skip
    if args.estimate:
        return
    print("| cell | B, T, I, H | mode | torch ms | fused ms | fused / torch | decision |")
    print("|---|---|---|---|---|---|---|")
    rows, decisions = [], {cell: {mode: {} for mode in static_rule.MODES} for cell in CELLS}
    for cell in CELLS:
        for at in sorted(keep[cell], key=lambda at: (at[2], at[3], at[0], at[1])):  # one layer per (I, H)
            for train, mode in enumerate(static_rule.MODES):
                kernel_ms, fused_ms, ratio = measure(cell, *at, bool(train), budget)
                decision = "fused" if ratio < 1 else "torch"
                decisions[cell][mode]["-".join(map(str, at))] = decision
                rows.append({"cell": cell, **dict(zip(static_rule.AXES, at)), "mode": mode, "torch_ms": kernel_ms,
                             "fused_ms": fused_ms, "ratio": ratio, "decision": decision})  # fmt: skip
                print(f"| {cell} | {', '.join(map(str, at))} | {mode} | {kernel_ms:.3f} | {fused_ms:.3f} | {ratio:.2f} "
                      f"| {decision} |", flush=True)
    identity = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__, "command": command(),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    for cell in CELLS:  # each mode's points in (B, T, I, H) order, for a reader of the file
        for mode, found in decisions[cell].items():
            decisions[cell][mode] = dict(sorted(found.items(), key=lambda item: tuple(map(int, item[0].split("-")))))
    table = {"identity": identity, "grid": grid, "decisions": decisions}
    static_rule.parse(table)  # a table the package can read, or no file written
    write_table(Path(args.table), table)
    left_out = [{"cell": cell, **dict(zip(static_rule.AXES, at)), "torch.nn training ms": ms}
                for cell in CELLS for at, ms in out[cell].items()]  # fmt: skip
    write_json(args.json, {"grid": grid, "max_ms": args.max_ms, "budget_s": budget, "rows": rows, "left_out": left_out,
                           "seconds": time.perf_counter() - started})  # fmt: skip
    print(f"\n{args.table} and {args.json} written in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
