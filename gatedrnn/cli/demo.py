"""``gatedrnn demo``: runs an RNN, an LSTM and a GRU on a tiny batch and checks each
against torch.nn with the same weights."""

from __future__ import annotations

import argparse

import torch

import gatedrnn

EXAMPLES = """examples:
  gatedrnn demo
  gatedrnn demo --seed 3
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run RNN, LSTM and GRU on a tiny batch and check them against torch.nn",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(run=run)


def run(args) -> int:
    torch.manual_seed(args.seed)
    T, B, I, H = 12, 4, 8, 16
    x = torch.randn(T, B, I)
    print(f"input (T, B, I) = {tuple(x.shape)}")
    print(f"{'cell':<6} {'output':<14} {'h_n':<12} {'max |ours - torch.nn|':>22}  gates traced")
    worst = 0.0
    for name in ("RNN", "LSTM", "GRU"):
        theirs = getattr(torch.nn, name)(I, H, num_layers=2)
        ours = getattr(gatedrnn, name).from_torch(theirs)
        out, state, trace = ours(x, return_trace=True)
        expected_out, expected_state = theirs(x)
        h_n = state[0] if name == "LSTM" else state
        expected_h = expected_state[0] if name == "LSTM" else expected_state
        diff = max((out - expected_out).abs().max().item(), (h_n - expected_h).abs().max().item())
        worst = max(worst, diff)
        print(f"{name:<6} {str(tuple(out.shape)):<14} {str(tuple(h_n.shape)):<12} {diff:>22.2e}  {', '.join(trace)}")
    ok = worst < 1e-5
    print("parity with torch.nn:", "ok" if ok else f"FAILED (max difference {worst:.2e})")
    return 0 if ok else 1
