"""The Python a call costs before its kernel, at small shapes where it is a large part of the
call (issue 30: ``auto`` <= 1.05x torch.nn below 0.5 ms).

For RNN (tanh), LSTM and GRU at small shapes, inference (no_grad) and training (forward and the
backward of ``output.sum()``), four sides timed in alternation in one process (rounds of ``n``
calls each, medians of the rounds, after warm-up): torch's kernel called directly
(``torch._VF.<cell>``, the floor), torch.nn's layer, gatedrnn's ``auto`` layer (autotuning on)
and the same layer with what it remembers of its calls switched off (every call checks its
arguments and chooses its backend again: gatedrnn before ``backends.plan_key``). The
generation-like rows (T = 1) pass the state in on every call, as a sampling loop does.

    python benchmarks/call_overhead.py                  # ~3 min on 2 cores
    python benchmarks/call_overhead.py --json /tmp/overhead.json --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import _VF

import gatedrnn
from gatedrnn import autotune
from results_io import write_json

# (B, T, I, H): a sampling step, then short sequences of small layers (calls of 30-500 us)
SHAPES = [(1, 1, 32, 64), (1, 4, 8, 8), (4, 16, 32, 32), (8, 32, 64, 64), (16, 64, 64, 128)]
CELLS = {"RNN": ("RNN", _VF.rnn_tanh), "LSTM": ("LSTM", _VF.lstm), "GRU": ("GRU", _VF.gru)}


def sides(cell: str, shape: tuple[int, int, int, int], training: bool) -> tuple[dict, gatedrnn.RNNBase]:
    """The four calls to time, each a function of no argument, and the auto layer."""
    B, T, I, H = shape  # noqa: E741
    name, kernel = CELLS[cell]
    torch.manual_seed(0)
    reference = getattr(torch.nn, name)(I, H)
    ours, unplanned = getattr(gatedrnn, name)(I, H), getattr(gatedrnn, name)(I, H)
    for layer in (ours, unplanned):
        layer.load_state_dict(reference.state_dict())
    unplanned._remember_plan = lambda plans, key, backend: None
    x = torch.randn(T, B, I)
    h = torch.zeros(1, B, H)
    state = (h, torch.zeros(1, B, H)) if cell == "LSTM" else h
    given = state if T == 1 else None  # a sampling loop passes its state back in

    def call(run):
        if not training:
            def infer():
                with torch.no_grad():
                    run()
            return infer

        def train():
            run()[0].sum().backward()
        return train

    weights = reference._flat_weights
    calls = {
        "kernel": call(lambda: kernel(x, state, weights, True, 1, 0.0, training, False, False)),
        "torch.nn": call(lambda: reference(x, given)),
        "auto": call(lambda: ours(x, given)),
        "auto without plans": call(lambda: unplanned(x, given)),
    }
    return calls, ours


def measure(calls: dict, rounds: int, budget_s: float) -> dict[str, float]:
    """Median seconds per call of each side: ``rounds`` interleaved rounds of ``n`` calls, ``n``
    chosen so that a round of the slowest side takes about ``budget_s``."""
    for run in calls.values():  # warm-up (auto times its candidates here)
        for _ in range(20):
            run()
    started = time.perf_counter()  # ... and confirms its choice at the first call past autotune.CONFIRM_S
    while time.perf_counter() - started < 1.5 * autotune.CONFIRM_S:
        for run in calls.values():
            run()
    slowest = 0.0
    for run in calls.values():
        started = time.perf_counter()
        for _ in range(20):
            run()
        slowest = max(slowest, (time.perf_counter() - started) / 20)
    n = max(5, int(budget_s / slowest))
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, run in calls.items():
            started = time.perf_counter()
            for _ in range(n):
                run()
            times[name].append((time.perf_counter() - started) / n)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--budget", type=float, default=0.05, help="seconds per round of the slowest side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="benchmarks/results/call_overhead.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    gatedrnn.set_autotune(True)
    rows = []
    print("| cell | mode | B, T, I, H | kernel us | torch.nn us | auto us | auto / torch.nn | "
          "without plans / torch.nn | auto's backend |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for cell in CELLS:
        for training in (False, True):
            for shape in SHAPES:
                calls, ours = sides(cell, shape, training)
                us = {k: v * 1e6 for k, v in measure(calls, args.rounds, args.budget).items()}
                (backend,) = set(ours._plans.values())
                row = {"cell": cell, "mode": "training" if training else "inference", "B": shape[0], "T": shape[1],
                       "I": shape[2], "H": shape[3], "us": us, "backend": backend,
                       "auto": us["auto"] / us["torch.nn"],
                       "unplanned": us["auto without plans"] / us["torch.nn"]}  # fmt: skip
                rows.append(row)
                print(f"| {cell} | {row['mode']} | {', '.join(map(str, shape))} | {us['kernel']:.1f} | "
                      f"{us['torch.nn']:.1f} | {us['auto']:.1f} | {row['auto']:.3f} | {row['unplanned']:.3f} | "
                      f"{backend} |", flush=True)  # fmt: skip
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
