"""Speed of gatedrnn against torch.nn, side by side in one process.

For RNN (tanh), LSTM and GRU on a grid of (B, T, I, H): inference (no_grad) and training
(forward + backward) time of torch.nn and of gatedrnn's fused backend, its auto backend, and
fused with return_trace=True. Medians after warm-up, the two timed in alternation, threads
fixed. Prints a markdown table (ms, ratio gatedrnn / torch.nn, GFLOPS) and writes JSON.

    python benchmarks/speed.py                       # the whole grid, ~15 min on 2 cores
    python benchmarks/speed.py --cells GRU --shapes 0 1 --json out.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import gatedrnn
from gatedrnn import fused
from results_io import write_json

GRID = [(1, 1000, 32, 128), (16, 500, 32, 64), (32, 100, 64, 128), (64, 100, 256, 256), (128, 50, 512, 512),
        (256, 35, 650, 650), (32, 200, 128, 512)]  # the last two: issue 13's (Zaremba's medium LM, a wide one)
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
VARIANTS = ("fused", "auto", "trace")


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def forward_flops(cell, B, T, I, H):
    return 2 * T * B * GATES[cell] * H * (I + H)


def make_step(module, x, train, trace=False):
    kwargs = {"return_trace": True} if trace else {}
    if not train:

        def step():
            with torch.no_grad():
                module(x, **kwargs)

        return step
    grad = torch.randn(x.shape[0], x.shape[1], module.hidden_size)

    def step():
        result = module(x, **kwargs)
        loss = (result[0] * grad).sum()
        if trace:  # use the trace too, as a diagnostic would
            loss = loss + sum(v.sum() for v in result[2].values()) * 0
        loss.backward()

    return step


def time_pair(steps, budget_s, min_reps=3, max_reps=50):
    """Median seconds of each step, run in alternation after one warm-up each."""
    for step in steps:
        step()
    t0 = time.perf_counter()
    for step in steps:
        step()
    once = time.perf_counter() - t0
    reps = max(min_reps, min(max_reps, int(budget_s / max(once, 1e-6))))
    times = [[] for _ in steps]
    for _ in range(reps):
        for k, step in enumerate(steps):
            t = time.perf_counter()
            step()
            times[k].append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", default=["RNN", "LSTM", "GRU"], choices=list(GATES))
    parser.add_argument("--shapes", nargs="+", type=int, default=list(range(len(GRID))),
                        help="indices into the grid " + str(GRID))  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=1.5, help="seconds of timing per measurement")
    parser.add_argument("--json", default="benchmarks/results/speed.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    native = fused.native_available()
    rows = []
    print(f"CPU: {cpu_name()}, {args.threads} threads, torch {torch.__version__}, native kernels: {native}\n")
    print("| cell | B, T, I, H | mode | torch.nn ms | fused ms | ratio | auto ratio | trace ratio | torch GFLOPS | fused GFLOPS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cell in args.cells:
        for index in args.shapes:
            B, T, I, H = GRID[index]
            theirs = getattr(torch.nn, cell)(I, H)
            ours = {v: getattr(gatedrnn, cell).from_torch(theirs, backend="auto" if v == "auto" else "fused")
                    for v in VARIANTS}  # fmt: skip
            x = torch.randn(T, B, I)
            for train in (False, True):
                steps = [make_step(theirs, x, train)] + [make_step(ours[v], x, train, v == "trace") for v in VARIANTS]
                t_torch, *t_ours = time_pair(steps, args.budget)
                flops = forward_flops(cell, B, T, I, H) * (3 if train else 1)
                row = {
                    "cell": cell, "B": B, "T": T, "I": I, "H": H, "mode": "training" if train else "inference",
                    "torch_ms": t_torch * 1e3,
                    **{f"{v}_ms": t * 1e3 for v, t in zip(VARIANTS, t_ours)},
                    **{f"{v}_ratio": t / t_torch for v, t in zip(VARIANTS, t_ours)},
                    "torch_gflops": flops / t_torch / 1e9, "fused_gflops": flops / t_ours[0] / 1e9,
                }  # fmt: skip
                rows.append(row)
                print(
                    f"| {cell} | {B}, {T}, {I}, {H} | {row['mode']} | {row['torch_ms']:.2f} | {row['fused_ms']:.2f} "
                    f"| {row['fused_ratio']:.2f} | {row['auto_ratio']:.2f} | {row['trace_ratio']:.2f} "
                    f"| {row['torch_gflops']:.0f} | {row['fused_gflops']:.0f} |",
                    flush=True,
                )
    meta = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__, "native": native}
    if args.json:
        write_json(args.json, {"meta": meta, "rows": rows})


if __name__ == "__main__":
    main()
