"""Where the time goes: one layer's forward (or forward + backward) split into GEMM time and
the rest (pointwise work, copies, overhead), for torch.nn and gatedrnn's fused backend.

    python benchmarks/breakdown.py --cell GRU --shape 128 50 512 512
    python benchmarks/breakdown.py --cell LSTM --shape 64 100 256 256 --train
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import gatedrnn

GEMMS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::linear", "aten::matmul", "aten::mkldnn_rnn_layer",
         "aten::mkldnn_rnn_layer_backward")  # fmt: skip


def run(module, x, train, reps=5):
    for _ in range(2):  # warm-up
        step(module, x, train)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            step(module, x, train)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / reps / 1e3
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMMS) / reps / 1e3
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]
    return total, gemm, [(e.key, e.self_cpu_time_total / reps / 1e3) for e in top]


def step(module, x, train):
    if train:
        out = module(x)[0]
        out.sum().backward()
    else:
        with torch.no_grad():
            module(x)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", default="GRU", choices=["RNN", "LSTM", "GRU"])
    parser.add_argument("--shape", nargs=4, type=int, default=[128, 50, 512, 512], metavar=("B", "T", "I", "H"))
    parser.add_argument("--train", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    B, T, I, H = args.shape
    theirs = getattr(torch.nn, args.cell)(I, H)
    ours = getattr(gatedrnn, args.cell).from_torch(theirs, backend="fused")
    x = torch.randn(T, B, I)
    print(f"{args.cell} B={B} T={T} I={I} H={H} {'training' if args.train else 'inference'}")
    for name, module in (("torch.nn", theirs), ("fused", ours)):
        total, gemm, top = run(module, x, args.train)
        print(f"  {name:9s} total {total:8.2f} ms   GEMM {gemm:8.2f} ms ({100 * gemm / total:.0f}%)   "
              f"other {total - gemm:8.2f} ms")  # fmt: skip
        for key, ms in top:
            print(f"      {key:40s} {ms:8.2f} ms")


if __name__ == "__main__":
    main()
