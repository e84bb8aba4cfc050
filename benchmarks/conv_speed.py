"""Speed of gatedrnn's ConvLSTM and ConvGRU against the ConvLSTM / ConvGRU a user would
otherwise copy: one ``conv2d`` of ``cat([x, h])`` per step (the widely used
``ConvLSTMCell`` pattern; for the GRU, three convolutions per step with the reset gate
before the candidate's, the common ``ConvGRUCell``). Both are written here. Training is
forward + backward of one layer; medians of the two timed in alternation.

    python benchmarks/conv_speed.py                     # prints a table, writes JSON
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import gatedrnn
from results_io import write_json
from speed import cpu_name, time_pair

SHAPES = [(8, 10, 64, 16, 3), (8, 10, 32, 64, 3), (8, 10, 64, 16, 5)]  # B, T, channels (in = hidden), size, kernel


class BaselineConvLSTM(nn.Module):
    """The per-step pattern of popular PyTorch ConvLSTMs: conv2d(cat([x, h])), split, gate math."""

    def __init__(self, c_in, c_h, k):
        super().__init__()
        self.c_h = c_h
        self.conv = nn.Conv2d(c_in + c_h, 4 * c_h, k, padding=k // 2)

    def forward(self, x):  # (T, B, C, H, W)
        T, B, _, Hs, Ws = x.shape
        h = c = x.new_zeros(B, self.c_h, Hs, Ws)
        outs = []
        for t in range(T):
            i, f, o, g = torch.split(self.conv(torch.cat([x[t], h], 1)), self.c_h, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs), (h, c)


class BaselineConvGRU(nn.Module):
    """The common ConvGRUCell: reset and update gates from conv2d(cat([x, h])), the candidate
    from conv2d(cat([x, r * h])) (Ballas et al.'s reset-before form)."""

    def __init__(self, c_in, c_h, k):
        super().__init__()
        self.c_h = c_h
        self.reset = nn.Conv2d(c_in + c_h, c_h, k, padding=k // 2)
        self.update = nn.Conv2d(c_in + c_h, c_h, k, padding=k // 2)
        self.out = nn.Conv2d(c_in + c_h, c_h, k, padding=k // 2)

    def forward(self, x):
        T, B, _, Hs, Ws = x.shape
        h = x.new_zeros(B, self.c_h, Hs, Ws)
        outs = []
        for t in range(T):
            xh = torch.cat([x[t], h], 1)
            r, z = torch.sigmoid(self.reset(xh)), torch.sigmoid(self.update(xh))
            n = torch.tanh(self.out(torch.cat([x[t], r * h], 1)))
            h = (1 - z) * n + z * h
            outs.append(h)
        return torch.stack(outs), h


def make_step(module, x, train):
    if not train:

        def step():
            with torch.no_grad():
                module(x)

        return step

    def step():
        module(x)[0].square().mean().backward()

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per measurement")
    parser.add_argument("--json", default="benchmarks/results/conv_speed.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pairs = [
        ("ConvLSTM", BaselineConvLSTM, lambda c, k: gatedrnn.ConvLSTM(c, c, k)),
        ("ConvGRU (reset before)", BaselineConvGRU, lambda c, k: gatedrnn.ConvGRU(c, c, k, reset_after=False)),
        ("ConvGRU (reset after)", BaselineConvGRU, lambda c, k: gatedrnn.ConvGRU(c, c, k)),
    ]
    print(f"CPU: {cpu_name()}, {args.threads} threads, torch {torch.__version__}\n")
    print("| layer | B, T, C, size, k | mode | baseline ms | gatedrnn ms | ratio |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name, baseline, ours in pairs:
        for B, T, C, S, k in SHAPES:
            x = torch.randn(T, B, C, S, S)
            theirs, mine = baseline(C, C, k), ours(C, k)
            for train in (False, True):
                t_theirs, t_ours = time_pair([make_step(theirs, x, train), make_step(mine, x, train)], args.budget)
                row = {"layer": name, "B": B, "T": T, "C": C, "size": S, "kernel": k,
                       "mode": "training" if train else "inference", "baseline_ms": t_theirs * 1e3,
                       "gatedrnn_ms": t_ours * 1e3, "ratio": t_ours / t_theirs}  # fmt: skip
                rows.append(row)
                print(f"| {name} | {B}, {T}, {C}, {S}x{S}, {k} | {row['mode']} | {row['baseline_ms']:.1f} "
                      f"| {row['gatedrnn_ms']:.1f} | {row['ratio']:.2f} |", flush=True)  # fmt: skip
    if args.json:
        write_json(args.json, {"meta": {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__},
                               "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
