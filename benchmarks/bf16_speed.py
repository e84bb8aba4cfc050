"""Speed of the products in bfloat16 (issue 30), side by side in one process.

For RNN (tanh), LSTM and GRU at speed.py's GEMM-bound shapes and one small one, inference
(no_grad) and training (forward + backward), six sides timed in alternation (medians after
warm-up, threads fixed): gatedrnn's fused float32 layer; the same layer converted with
``.to(torch.bfloat16)``; the float32 layer under ``torch.autocast("cpu", torch.bfloat16)``;
torch.nn's float32 layer under the same autocast; torch.nn's float32 layer; the bfloat16
layer with its products kept in float32 (mode -1: how a bfloat16 layer ran before); the
bfloat16 layer with its per-step products on oneDNN instead of our bfloat16 panels
(csrc/panels.h off); and the default ``backend="auto"`` layer under autocast. Prints a
markdown table (ms, and the ratios: our bfloat16 ÷ our float32, issue 30's target <= 0.67 (1.5x
faster) at the GEMM-bound shapes; ours under autocast ÷ torch.nn under autocast, target < 1;
bfloat16 ÷ bfloat16 with float32 products, which should stay ~1 at the small shape, where the
rule keeps the products in float32) and writes JSON. "bf16 products" counts the products one inference call of the bfloat16 layer
computed in bfloat16 (0: the rule of csrc/lowp.h kept them all float32).

On a CPU without native bfloat16 GEMMs (no AVX-512 BF16 or AMX) the bfloat16 sides run
today's float32 products: the table then shows what such a machine gets.

    python benchmarks/bf16_speed.py                         # the whole set, ~10 min on 2 cores
    python benchmarks/bf16_speed.py --cells GRU --shapes 0 --json /tmp/bf16.json
"""

from __future__ import annotations

import argparse
import contextlib

import torch

import gatedrnn
from gatedrnn import fused
from gatedrnn.fused._ops import native_bf16
from results_io import cpu_name, write_json
from speed import forward_flops, time_pair

# speed.py's GEMM-bound shapes (B·H >= 64 x 256), then a small one where the rule keeps float32
GRID = [(64, 100, 256, 256), (128, 50, 512, 512), (256, 35, 650, 650), (32, 200, 128, 512), (16, 500, 32, 64)]
SIDES = ("ours_f32", "ours_bf16", "ours_bf16_f32_products", "ours_autocast", "torch_autocast", "torch_f32",
         "ours_bf16_onednn", "auto_autocast")
SPEEDUP_TARGET = 1 / 1.5  # our bfloat16 ÷ our float32 at the GEMM-bound shapes


def autocast(on: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()


@contextlib.contextmanager
def float32_products(on: bool):
    """The native loops' products kept in float32 (mode -1 of csrc/lowp.h): a bfloat16 layer as
    it ran before issue 30, for the "nothing gets slower" comparison."""
    if not on or not fused.native_available():
        yield
        return
    kernels = fused.kernels()
    mode = kernels.bf16_gemm_mode()
    kernels.use_bf16_gemm(-1)
    try:
        yield
    finally:
        kernels.use_bf16_gemm(mode)


@contextlib.contextmanager
def without_panels(on: bool):
    """The per-step products on BLAS and oneDNN, not on our panels (csrc/panels.h, mode -1)."""
    if not on or not fused.native_available():
        yield
        return
    fused.kernels().use_panel_gemm(-1)
    try:
        yield
    finally:
        fused.kernels().use_panel_gemm(0)


def make_step(module, x, train, bf16_autocast=False, f32_products=False, no_panels=False):
    """One inference or training call of ``module`` on ``x`` (under bfloat16 autocast when asked,
    with the products kept in float32 when asked, with the panels off when asked); training
    backpropagates a fixed random gradient of the output."""
    grad = torch.randn(x.shape[0], x.shape[1], module.hidden_size)
    if not train:

        def step():
            with torch.no_grad(), autocast(bf16_autocast), float32_products(f32_products), without_panels(no_panels):
                module(x)

        return step

    def step():
        with float32_products(f32_products), without_panels(no_panels):
            with autocast(bf16_autocast):
                out = module(x)[0]
            (out.float() * grad).sum().backward()

    return step


def bf16_products(module, x) -> int | None:
    """How many products one inference call computes in bfloat16 (None without the native loops)."""
    if not fused.native_available():
        return None
    kernels = fused.kernels()
    kernels.reset_bf16_product_count()
    with torch.no_grad():
        module(x)
    return kernels.bf16_product_count()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", default=["RNN", "LSTM", "GRU"], choices=["RNN", "LSTM", "GRU"])
    parser.add_argument("--shapes", nargs="+", type=int, default=list(range(len(GRID))),
                        help="indices into the grid " + str(GRID))  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=1.5, help="seconds of timing per measurement")
    parser.add_argument("--max-reps", type=int, default=50, help="timed rounds at most per measurement")
    parser.add_argument("--json", default="benchmarks/results/bf16_speed.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    native, bf16 = fused.native_available(), native_bf16()
    rows = []
    print(f"CPU: {cpu_name()}, {args.threads} threads, torch {torch.__version__}, native kernels: {native}, "
          f"native bfloat16 GEMMs: {bf16}\n")  # fmt: skip
    print("| cell | B, T, I, H | mode | ours f32 ms | ours bf16 ms | bf16 ÷ f32 | bf16 ÷ bf16 with f32 products "
          "| ours autocast ms | autocast ÷ f32 | torch autocast ms | ours ÷ torch (autocast) | torch f32 ms "
          "| bf16 products | panels ÷ oneDNN | auto ÷ torch (autocast) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cell in args.cells:
        for index in args.shapes:
            B, T, I, H = GRID[index]
            theirs = getattr(torch.nn, cell)(I, H)
            ours = getattr(gatedrnn, cell).from_torch(theirs, backend="fused")
            ours_bf16 = getattr(gatedrnn, cell).from_torch(theirs, backend="fused").to(torch.bfloat16)
            ours_auto = getattr(gatedrnn, cell).from_torch(theirs)  # backend="auto", the default
            x = torch.randn(T, B, I)
            x_bf16 = x.to(torch.bfloat16)
            products = bf16_products(ours_bf16, x_bf16)
            for train in (False, True):
                steps = [make_step(ours, x, train), make_step(ours_bf16, x_bf16, train),
                         make_step(ours_bf16, x_bf16, train, f32_products=True),
                         make_step(ours, x, train, bf16_autocast=True), make_step(theirs, x, train, bf16_autocast=True),
                         make_step(theirs, x, train), make_step(ours_bf16, x_bf16, train, no_panels=True),
                         make_step(ours_auto, x, train, bf16_autocast=True)]  # fmt: skip
                times, ratios = time_pair(steps, args.budget, max_reps=args.max_reps, ratios=True)
                row = {
                    "cell": cell, "B": B, "T": T, "I": I, "H": H, "mode": "training" if train else "inference",
                    **{f"{side}_ms": t * 1e3 for side, t in zip(SIDES, times)},
                    "bf16_ratio": ratios[1], "bf16_vs_f32_products": ratios[1] / ratios[2],
                    "autocast_ratio": ratios[3],
                    "autocast_vs_torch": ratios[3] / ratios[4],  # ours ÷ torch.nn, both under autocast
                    "panels_vs_onednn": ratios[1] / ratios[6],  # the bfloat16 layer: our panels ÷ oneDNN
                    "auto_vs_torch": ratios[7] / ratios[4],  # auto ÷ torch.nn, both under autocast
                    "gemm_bound": B * H >= 64 * 256, "bf16_products": products,
                    "forward_gflop": forward_flops(cell, B, T, I, H) / 1e9,
                }  # fmt: skip
                rows.append(row)
                print(
                    f"| {cell} | {B}, {T}, {I}, {H} | {row['mode']} | {row['ours_f32_ms']:.2f} "
                    f"| {row['ours_bf16_ms']:.2f} | {row['bf16_ratio']:.2f} | {row['bf16_vs_f32_products']:.2f} "
                    f"| {row['ours_autocast_ms']:.2f} "
                    f"| {row['autocast_ratio']:.2f} | {row['torch_autocast_ms']:.2f} | {row['autocast_vs_torch']:.2f} "
                    f"| {row['torch_f32_ms']:.2f} | {products} | {row['panels_vs_onednn']:.2f} "
                    f"| {row['auto_vs_torch']:.2f} |",
                    flush=True,
                )
    bound = [r for r in rows if r["gemm_bound"]]
    if bound:
        met = sum(r["bf16_ratio"] <= SPEEDUP_TARGET for r in bound)
        print(f"\nGEMM-bound rows with bfloat16 ÷ float32 <= {SPEEDUP_TARGET:.2f} (1.5x): {met} of {len(bound)}")
    meta = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__, "native": native,
            "native_bf16": bf16}  # fmt: skip
    if args.json:
        write_json(args.json, {"meta": meta, "rows": rows})


if __name__ == "__main__":
    main()
