"""The fused loops with their per-step products computed from a weight packed once
(``csrc/packed.h``, MKL's packed GEMM) against plain GEMM calls, per cell and shape:
whole-loop times, inference and training, the two timed in alternation (medians).

    python benchmarks/packed_gemm.py
"""

from __future__ import annotations

import argparse
import torch

import gatedrnn
from gatedrnn import fused
from results_io import write_json
from speed import GRID, cpu_name
from timing import alternated_medians


def step_of(layer, x, train):
    def inference():
        with torch.no_grad():
            layer(x)

    def training():
        layer(x)[0].sum().backward()

    return training if train else inference


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", default=["RNN", "LSTM", "GRU"])
    parser.add_argument("--shapes", nargs="+", type=int, default=[1, 2, 3, 4], help="indices into speed.py's grid")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="benchmarks/results/packed_gemm.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    kernels = fused.kernels()
    if not fused.native_available() or not kernels.packed_gemm_available():
        raise SystemExit("packed_gemm.py: needs the native kernels and a torch that exports MKL's packed GEMM")
    print(f"CPU: {cpu_name()}, {args.threads} threads, torch {torch.__version__}\n")
    print("| cell | B, T, I, H | mode | plain ms | packed ms | packed ÷ plain |\n|---|---|---|---|---|---|")
    rows = []
    try:
        for cell in args.cells:
            for index in args.shapes:
                B, T, I, H = GRID[index]
                layer = getattr(gatedrnn, cell)(I, H, backend="fused")
                x = torch.randn(T, B, I)
                for train in (False, True):
                    medians = alternated_medians(step_of(layer, x, train), (-1, 1), kernels.use_packed_gemm, args.reps)
                    plain, packed = medians[-1] * 1e3, medians[1] * 1e3
                    row = {"cell": cell, "B": B, "T": T, "I": I, "H": H, "mode": "training" if train else "inference",
                           "plain_ms": plain, "packed_ms": packed, "ratio": packed / plain}  # fmt: skip
                    rows.append(row)
                    print(f"| {cell} | {B}, {T}, {I}, {H} | {row['mode']} | {plain:.2f} | {packed:.2f} "
                          f"| {packed / plain:.2f} |", flush=True)  # fmt: skip
    finally:
        kernels.use_packed_gemm(0)
    if args.json:
        write_json(args.json, {"meta": {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__},
                               "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
