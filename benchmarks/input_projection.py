"""The fused loops with each step's input projection computed inside the loop (``csrc/input.h``:
x's rows times a packed W_ih, per block of rows) against one GEMM for all steps before it, per
cell and shape: inference (plain and traced) and training (forward + backward), the two ways
timed in alternation (medians). The rule in ``input.h`` is read off this table.

    python benchmarks/input_projection.py
"""

from __future__ import annotations

import argparse
import torch

import gatedrnn
from gatedrnn import fused
from results_io import write_json
from speed import GRID, cpu_name
from timing import alternated_medians


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", default=["RNN", "LSTM", "GRU"])
    parser.add_argument("--shapes", nargs="+", type=int, default=list(range(len(GRID))),
                        help="indices into speed.py's grid")  # fmt: skip
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="benchmarks/results/input_projection.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    kernels = fused.kernels()
    if not fused.native_available():
        raise SystemExit("input_projection.py: needs the native kernels")
    print(f"CPU: {cpu_name()}, {args.threads} threads, torch {torch.__version__}\n")
    print("| cell | B, T, I, H | mode | before ms | in loop ms | in loop ÷ before | rule |\n|---|---|---|---|---|---|---|")
    rows = []
    try:
        for cell in args.cells:
            for index in args.shapes:
                B, T, I, H = GRID[index]
                layer = getattr(gatedrnn, cell)(I, H, backend="fused")
                x = torch.randn(T, B, I)
                G = {"RNN": 1, "GRU": 3, "LSTM": 4}[cell] * H
                for mode_name in ("inference", "traced inference", "training"):
                    def step(trace=mode_name == "traced inference", train=mode_name == "training"):
                        if train:
                            layer(x)[0].sum().backward()
                            return
                        with torch.no_grad():
                            layer(x, return_trace=trace)

                    medians = alternated_medians(step, (-1, 1), kernels.use_input_projection_in_loop, args.reps)
                    kernels.use_input_projection_in_loop(0)
                    rule = "in loop" if kernels.input_projection_in_loop(B, I, G, T) else "before"
                    before, inside = medians[-1] * 1e3, medians[1] * 1e3
                    row = {"cell": cell, "B": B, "T": T, "I": I, "H": H, "mode": mode_name, "before_ms": before,
                           "in_loop_ms": inside, "ratio": inside / before, "rule": rule}  # fmt: skip
                    rows.append(row)
                    print(f"| {cell} | {B}, {T}, {I}, {H} | {mode_name} | {before:.2f} | {inside:.2f} "
                          f"| {inside / before:.2f} | {rule} |", flush=True)  # fmt: skip
    finally:
        kernels.use_input_projection_in_loop(0)
    if args.json:
        write_json(args.json, {"meta": {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__},
                               "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
