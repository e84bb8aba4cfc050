"""The fused loops with their per-step products computed three ways, per cell and shape: plain
GEMM calls, a weight packed once by MKL (``csrc/packed.h``), and a weight laid out once in
panels for our own AVX-512 kernel (``csrc/panels.h``; where the build has it). Whole-loop
times, inference and training, the ways timed in alternation (medians).

    python benchmarks/packed_gemm.py
    python benchmarks/packed_gemm.py --json benchmarks/results/packed_gemm_epyc.json
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
    if not fused.native_available() or not fused.kernels().packed_gemm_available():
        raise SystemExit("packed_gemm.py: needs the native kernels and a torch that exports MKL's packed GEMM")
    kernels = fused.kernels()
    panels = kernels.panel_gemm_available()
    ways = ("plain", "packed", "panels") if panels else ("plain", "packed")
    settings = {"plain": (-1, -1), "packed": (1, -1), "panels": (-1, 1)}  # (MKL packing, panels) modes

    def set_way(way):
        kernels.use_packed_gemm(settings[way][0])
        kernels.use_panel_gemm(settings[way][1])

    print(f"CPU: {cpu_name()}, {args.threads} threads, torch {torch.__version__}, panels: {panels}\n")
    print("| cell | B, T, I, H | mode | plain ms | packed ms | panels ms | packed ÷ plain | panels ÷ packed |\n"
          "|---|---|---|---|---|---|---|---|")
    rows = []
    try:
        for cell in args.cells:
            for index in args.shapes:
                B, T, I, H = GRID[index]
                layer = getattr(gatedrnn, cell)(I, H, backend="fused")
                x = torch.randn(T, B, I)
                for train in (False, True):
                    medians = alternated_medians(step_of(layer, x, train), ways, set_way, args.reps)
                    plain, packed = medians["plain"] * 1e3, medians["packed"] * 1e3
                    row = {"cell": cell, "B": B, "T": T, "I": I, "H": H, "mode": "training" if train else "inference",
                           "plain_ms": plain, "packed_ms": packed, "ratio": packed / plain}  # fmt: skip
                    if panels:
                        row |= {"panels_ms": medians["panels"] * 1e3, "panels_vs_packed": medians["panels"] / medians["packed"]}
                    rows.append(row)
                    print(f"| {cell} | {B}, {T}, {I}, {H} | {row['mode']} | {plain:.2f} | {packed:.2f} "
                          f"| {row.get('panels_ms', float('nan')):.2f} | {packed / plain:.2f} "
                          f"| {row.get('panels_vs_packed', float('nan')):.2f} |", flush=True)  # fmt: skip
    finally:
        kernels.use_packed_gemm(0)
        kernels.use_panel_gemm(0)
    if args.json:
        write_json(args.json, {"meta": {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__},
                               "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
