"""torch.compile (inductor, the default backend) against eager on models holding gatedrnn layers.

A two-layer GRU and a bidirectional LSTM under a linear head, trained (forward + backward) and
run in inference; the compiled and the eager model alternate, and the ratio is the median of
the per-pair ratios after warm-up (compiled ÷ eager: below 1 is faster compiled). The fused
native loops stay one custom op each in the compiled graph; inductor generates code for what
lies around them.

    python benchmarks/compile_speed.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from results_io import write_json

import gatedrnn


class Model(torch.nn.Module):
    def __init__(self, cell, input_size, hidden_size):
        super().__init__()
        options = {"bidirectional": True} if cell == "LSTM" else {"num_layers": 2}
        self.rnn = getattr(gatedrnn, cell)(input_size, hidden_size, batch_first=True, **options)
        self.head = torch.nn.Linear(hidden_size * (2 if cell == "LSTM" else 1), 10)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(torch.relu(y)).log_softmax(-1).mean()


def timed(fn, x, train):
    started = time.perf_counter()
    if train:
        fn(x).backward()
    else:
        with torch.no_grad():
            fn(x)
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["16,100,32,64", "64,50,256,256"], help="B,T,I,H")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="benchmarks/results/compile_speed.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print("| model | (B, T, I, H) | inference: compiled ÷ eager | training |")
    print("|---|---|---|---|")
    for cell in ("GRU", "LSTM"):
        for shape in args.shapes:
            B, T, I, H = map(int, shape.split(","))
            torch.manual_seed(0)
            model = Model(cell, I, H)
            torch._dynamo.reset()
            compiled = torch.compile(model, fullgraph=True)
            x = torch.randn(B, T, I)
            ratios = {}
            for train in (False, True):
                for _ in range(3):  # compile and warm up both
                    timed(compiled, x, train), timed(model, x, train)
                pairs = [timed(compiled, x, train) / timed(model, x, train) for _ in range(args.repeats)]
                ratios["training" if train else "inference"] = statistics.median(pairs)
            rows.append({"model": cell, "shape": [B, T, I, H], **ratios})
            print(f"| {'2-layer GRU' if cell == 'GRU' else 'bidirectional LSTM'} | ({B}, {T}, {I}, {H}) "
                  f"| {ratios['inference']:.2f} | {ratios['training']:.2f} |", flush=True)  # fmt: skip
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
