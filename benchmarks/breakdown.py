"""Where the time goes: one layer's forward (or forward + backward) split into GEMM time and
the rest (pointwise work, copies, overhead), for torch.nn and gatedrnn's fused backend, and
set against the floor: every multiply-add of the row at the machine's GEMM ceiling for its
shape (speed.py's probe). The fused loops' products run inside one op, which the profiler sees
whole; the floor bounds them instead. A target ratio r is out of reach where r × torch.nn's
time is below the floor.

    python benchmarks/breakdown.py --cell GRU --shape 128 50 512 512
    python benchmarks/breakdown.py --cell LSTM --shape 64 100 256 256 --train
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import gatedrnn
from speed import GATES, ceiling_gflops, forward_flops, target

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
    flops = forward_flops(args.cell, B, T, I, H) * (3 if args.train else 1)
    ceiling = ceiling_gflops(args.cell, B, T, I, H)
    floor = flops / ceiling / 1e6
    print(f"  floor: {flops / 1e9:.2f} GFLOP at the ceiling of {ceiling:.0f} GFLOPS "
          f"((T·B, I + H) x (I + H, {GATES[args.cell]}H)) = {floor:.2f} ms")  # fmt: skip
    totals = {}
    for name, module in (("torch.nn", theirs), ("fused", ours)):
        total, gemm, top = run(module, x, args.train)
        totals[name] = total
        print(f"  {name:9s} total {total:8.2f} ms   GEMM {gemm:8.2f} ms ({100 * gemm / total:.0f}%)   "
              f"other {total - gemm:8.2f} ms")  # fmt: skip
        for key, ms in top:
            print(f"      {key:40s} {ms:8.2f} ms")
    goal = target(args.cell, B, H, args.train)
    allowed = goal * totals["torch.nn"]
    print(f"  target {goal} x torch.nn = {allowed:.2f} ms: "
          + (f"below the floor ({floor:.2f} ms), out of reach" if allowed < floor else
             f"{allowed / floor:.2f}x the floor; fused is at {totals['fused'] / floor:.2f}x"))  # fmt: skip


if __name__ == "__main__":
    main()
