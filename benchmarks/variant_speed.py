"""Speed of gatedrnn's cell variants and regularizers against the plain torch.nn layer of
their family (nn.LSTM for the LSTM variants and MinLSTM, nn.GRU for the GRU variants, MGU and
MinGRU), one layer, side by side in one process: inference (eval mode, no_grad) and training
(train mode, forward + backward). Variants run where ``backend="auto"`` puts them: the native
loops of the fused backend (``gatedrnn/fused/csrc/loop.h``); MinGRU's scan as a row of its own.
Prints a markdown table, writes JSON.

    python benchmarks/variant_speed.py
"""

from __future__ import annotations

import argparse

import torch
from results_io import write_json
from speed import cpu_name, make_step, time_pair

import gatedrnn

SHAPES = [(64, 100, 256, 256), (16, 500, 32, 64)]  # B, T, I, H: issue 11's two shapes
VARIANTS = [  # (name, family, constructor)
    ("LSTM peephole", "LSTM", lambda I, H: gatedrnn.LSTM(I, H, peephole=True)),
    ("LSTM coupled (CIFG)", "LSTM", lambda I, H: gatedrnn.LSTM(I, H, coupled=True)),
    ("LSTM layer norm", "LSTM", lambda I, H: gatedrnn.LSTM(I, H, layer_norm=True)),
    ("LSTM zoneout 0.1", "LSTM", lambda I, H: gatedrnn.LSTM(I, H, zoneout=0.1)),
    ("LSTM recurrent dropout 0.25", "LSTM", lambda I, H: gatedrnn.LSTM(I, H, recurrent_dropout=0.25)),
    ("LSTM weight dropout 0.25", "LSTM", lambda I, H: gatedrnn.LSTM(I, H, weight_dropout=0.25)),
    ("GRU reset before (Cho)", "GRU", lambda I, H: gatedrnn.GRU(I, H, reset_after=False)),
    ("GRU layer norm", "GRU", lambda I, H: gatedrnn.GRU(I, H, layer_norm=True)),
    ("GRU zoneout 0.1", "GRU", lambda I, H: gatedrnn.GRU(I, H, zoneout=0.1)),
    ("GRU weight dropout 0.25", "GRU", lambda I, H: gatedrnn.GRU(I, H, weight_dropout=0.25)),
    ("MGU", "GRU", lambda I, H: gatedrnn.MGU(I, H)),
    ("MinGRU (native loop)", "GRU", lambda I, H: gatedrnn.MinGRU(I, H)),
    ("MinGRU (scan)", "GRU", lambda I, H: gatedrnn.MinGRU(I, H, backend="scan")),
    ("MinLSTM (native loop)", "LSTM", lambda I, H: gatedrnn.MinLSTM(I, H)),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of timing per measurement")
    parser.add_argument("--json", default="benchmarks/results/variant_speed.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"CPU: {cpu_name()}, {args.threads} threads, torch {torch.__version__}\n")
    print("| variant | B, T, I, H | torch.nn (plain) inference ms | variant ms | ratio | training: torch.nn ms "
          "| variant ms | ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for name, family, make in VARIANTS:
        for B, T, I, H in SHAPES:
            theirs, ours = getattr(torch.nn, family)(I, H), make(I, H)
            x = torch.randn(T, B, I)
            row = {"variant": name, "family": family, "B": B, "T": T, "I": I, "H": H}
            for mode, train in (("inference", False), ("training", True)):
                theirs.train(train)
                ours.train(train)
                t_theirs, t_ours = time_pair([make_step(theirs, x, train), make_step(ours, x, train)], args.budget)
                row |= {f"{mode}_torch_ms": t_theirs * 1e3, f"{mode}_ms": t_ours * 1e3, f"{mode}_ratio": t_ours / t_theirs}
            rows.append(row)
            print(f"| {name} | {B}, {T}, {I}, {H} | {row['inference_torch_ms']:.1f} | {row['inference_ms']:.1f} "
                  f"| {row['inference_ratio']:.2f} | {row['training_torch_ms']:.1f} | {row['training_ms']:.1f} "
                  f"| {row['training_ratio']:.2f} |", flush=True)  # fmt: skip
    if args.json:
        write_json(args.json, {"meta": {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__},
                               "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
