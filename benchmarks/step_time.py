"""Per-step time of the fused kernels (µs a step: inference, training, training with zoneout
0.1), as JSON on stdout. Run it under two checkouts, alternately, to compare kernel builds:

    for i in 1 2 3; do PYTHONPATH=../old python benchmarks/step_time.py > old_$i.json
                       PYTHONPATH=. python benchmarks/step_time.py > new_$i.json; done
"""

from __future__ import annotations

import json

import torch
from timing import median_seconds

import gatedrnn

SHAPES = [(1, 500, 8, 64), (16, 500, 32, 64), (64, 100, 256, 256)]  # B, T, I, H


def main():
    torch.set_num_threads(2)
    result = {}
    for cell in ("LSTM", "GRU"):
        for B, T, I, H in SHAPES:
            torch.manual_seed(0)
            layer = getattr(gatedrnn, cell)(I, H, backend="fused")
            zoned = getattr(gatedrnn, cell)(I, H, backend="fused", zoneout=0.1)
            x = torch.randn(T, B, I)
            x_grad = x.clone().requires_grad_()
            with torch.no_grad():
                inference = median_seconds(lambda: layer(x), repeats=20)
            training = median_seconds(lambda: layer(x_grad)[0].sum().backward(), repeats=20)
            zoneout = median_seconds(lambda: zoned(x_grad)[0].sum().backward(), repeats=20)
            result[f"{cell} {B},{T},{I},{H}"] = [1e6 * s / T for s in (inference, training, zoneout)]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
