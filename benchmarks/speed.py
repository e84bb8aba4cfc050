"""Speed of gatedrnn against torch.nn, side by side in one process.

For RNN (tanh), LSTM and GRU on a grid of (B, T, I, H): inference (no_grad) and training
(forward + backward) time of torch.nn and of gatedrnn's fused backend, its auto backend, and
fused with return_trace=True. Medians after warm-up, every step once per round in an order
drawn afresh each round (``timing.shuffled_ratios``), at least 5 rounds, threads fixed. Prints
a markdown table (ms, ratio gatedrnn / torch.nn, GFLOPS) and writes JSON.

Each row also gets the machine's GEMM ceiling for its shape: the GFLOPS of one product with the
forward's multiply-adds, (T·B, I + H) x (I + H, G), the fastest of torch.mm, oneDNN with a
packed weight and gatedrnn's own panels. The recurrence splits that product into T dependent
ones, never faster than the one, so no float32 implementation doing these FLOPs beats the
ceiling. Against issue 13's target
ratio for the row, "needs" is the GFLOPS gatedrnn would have to reach; above the ceiling, the
target is out of this machine's reach ("beyond ceiling").

    python benchmarks/speed.py                       # the whole grid, ~15 min on 2 cores
    python benchmarks/speed.py --cells GRU --shapes 0 1 --json out.json
"""

from __future__ import annotations

import argparse

import torch

import gatedrnn
from gatedrnn import fused
from results_io import cpu_name, write_json
from timing import shuffled_ratios

GRID = [(1, 1000, 32, 128), (16, 500, 32, 64), (32, 100, 64, 128), (64, 100, 256, 256), (128, 50, 512, 512),
        (256, 35, 650, 650), (32, 200, 128, 512)]  # the last two: issue 13's (Zaremba's medium LM, a wide one)
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
VARIANTS = ("fused", "auto", "trace")


def forward_flops(cell, B, T, I, H):
    return 2 * T * B * GATES[cell] * H * (I + H)


# issue 13's targets, gatedrnn ÷ torch.nn for (inference, training): the LSTM's on our own kernel
TARGETS = {"GRU": (0.6, 0.5), "RNN": (0.7, 0.6)}
LSTM_TARGETS = {"large": (1.0, 0.9), "small": (1.5, 1.3)}  # large: B·H >= 64 x 256
TRACE_TARGET, AUTO_TARGET, TIE = 1.1, 1.0, 0.05  # within TIE of a target: a tie on this noisy machine


def target(cell, B, H, train):
    if cell == "LSTM":
        return LSTM_TARGETS["large" if B * H >= 64 * 256 else "small"][train]
    return TARGETS[cell][train]


def verdict(ratio, goal, needs, ceiling):
    if ratio <= goal:
        return "met"
    if ratio <= goal + TIE:
        return "tie"
    return "missed, beyond ceiling" if needs > ceiling else "missed"


def ceiling_gflops(cell, B, T, I, H, reps=10):
    """GFLOPS of one (T·B, I + H) x (I + H, G) product, the fastest of torch.mm, oneDNN with a
    pre-packed weight (where this torch has it) and gatedrnn's panels (``panel_matmul``, where
    the build has them: on this project's AMD EPYC, MKL takes an AVX2 path and the panels
    beat both)."""
    M, K, N = T * B, I + H, GATES[cell] * H
    a, w, out = torch.randn(M, K), torch.randn(N, K), torch.empty(M, N)
    ways = [lambda: torch.mm(a, w.t(), out=out)]
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(w, M)
        ways.append(lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], ""))
        ways[-1]()
    except (RuntimeError, AttributeError):  # a build without oneDNN
        ways = ways[:1]
    if fused.native_available() and fused.kernels().panel_gemm_available():  # gatedrnn's own, laying w out each call
        ways.append(lambda: fused.kernels().panel_matmul(a, w.t(), None))
    best = min(time_pair([way], 0.0, min_reps=reps, max_reps=reps)[0] for way in ways)
    return 2 * M * K * N / best / 1e9


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


def time_pair(steps, budget_s, min_reps=3, max_reps=50, ratios=False):
    """Median seconds of each step, run in alternation (in the order given) after warm-up;
    ``ratios``: also the median over rounds of each step's time over the first step's in the
    same round (a drift in the machine's speed moves both sides of a round alike: steadier than
    a ratio of medians). ``timing.shuffled_ratios`` draws each round's order instead."""
    medians, over_first = shuffled_ratios(steps, budget_s, min_reps, max_reps, seed=None)
    return (medians, over_first) if ratios else medians


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
    print("| cell | B, T, I, H | mode | torch.nn ms | fused ms | ratio | auto ratio | trace ratio | torch GFLOPS "
          "| fused GFLOPS | ceiling GFLOPS | target | needs GFLOPS | verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cell in args.cells:
        for index in args.shapes:
            B, T, I, H = GRID[index]
            theirs = getattr(torch.nn, cell)(I, H)
            ours = {v: getattr(gatedrnn, cell).from_torch(theirs, backend="auto" if v == "auto" else "fused")
                    for v in VARIANTS}  # fmt: skip
            x = torch.randn(T, B, I)
            ceiling = ceiling_gflops(cell, B, T, I, H)
            for train in (False, True):
                steps = [make_step(theirs, x, train)] + [make_step(ours[v], x, train, v == "trace") for v in VARIANTS]
                (t_torch, *t_ours), (_, *r_ours) = shuffled_ratios(steps, args.budget, min_rounds=5, max_rounds=50)
                flops = forward_flops(cell, B, T, I, H) * (3 if train else 1)
                row = {
                    "cell": cell, "B": B, "T": T, "I": I, "H": H, "mode": "training" if train else "inference",
                    "torch_ms": t_torch * 1e3,
                    **{f"{v}_ms": t * 1e3 for v, t in zip(VARIANTS, t_ours)},
                    **{f"{v}_ratio": r for v, r in zip(VARIANTS, r_ours)},
                    "torch_gflops": flops / t_torch / 1e9, "fused_gflops": flops / t_ours[0] / 1e9,
                    "ceiling_gflops": ceiling, "target": target(cell, B, H, train),
                }  # fmt: skip
                row["needs_gflops"] = flops / (row["target"] * t_torch) / 1e9
                row["verdict"] = verdict(row["fused_ratio"], row["target"], row["needs_gflops"], ceiling)
                rows.append(row)
                print(
                    f"| {cell} | {B}, {T}, {I}, {H} | {row['mode']} | {row['torch_ms']:.2f} | {row['fused_ms']:.2f} "
                    f"| {row['fused_ratio']:.2f} | {row['auto_ratio']:.2f} | {row['trace_ratio']:.2f} "
                    f"| {row['torch_gflops']:.0f} | {row['fused_gflops']:.0f} | {ceiling:.0f} | {row['target']} "
                    f"| {row['needs_gflops']:.0f} | {row['verdict']} |",
                    flush=True,
                )
    lstm = [r for r in rows if r["cell"] == "LSTM"]
    if lstm:
        trace = [r["trace_ratio"] / r["fused_ratio"] for r in lstm if r["mode"] == "inference"]
        auto = [r["auto_ratio"] for r in lstm]
        print(f"\nLSTM trace ÷ fused, inference (target <= {TRACE_TARGET}): " + ", ".join(f"{v:.2f}" for v in trace))
        print(f"LSTM auto ratio, every row (target <= {AUTO_TARGET}): " + ", ".join(f"{v:.2f}" for v in auto))
    meta = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__, "native": native}
    if args.json:
        write_json(args.json, {"meta": meta, "rows": rows})


if __name__ == "__main__":
    main()
