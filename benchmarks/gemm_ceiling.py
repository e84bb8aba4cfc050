"""The machine's GEMM ceiling for the products the loops run: GFLOPS of torch.mm (MKL on x86
builds), addmm, F.linear and oneDNN with a pre-packed weight, for per-step shapes (B, K, N)
and the all-steps shapes (T·B rows). Medians of 30 calls after 3 warm-up calls, 2 threads.

    python benchmarks/gemm_ceiling.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timing import median_seconds

SHAPES = [(16, 64, 192), (64, 256, 768), (64, 256, 1024), (128, 512, 1536), (256, 650, 1950), (256, 650, 2600),
          (6400, 256, 1024), (8960, 650, 2600)]  # fmt: skip


def main():
    torch.set_num_threads(2)
    print("| M × K × N | torch.mm GFLOPS | addmm | F.linear | oneDNN, packed weight |")
    print("|---|---|---|---|---|")
    for M, K, N in SHAPES:
        a, w, b, out = torch.randn(M, K), torch.randn(N, K), torch.randn(N), torch.empty(M, N)
        flops = 2 * M * K * N / 1e9
        mm = median_seconds(lambda: torch.mm(a, w.t(), out=out))
        addmm = median_seconds(lambda: torch.addmm(b, a, w.t(), out=out))
        linear = median_seconds(lambda: F.linear(a, w, b))
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(w, M)
            onednn = f"{flops / median_seconds(lambda: torch.ops.mkldnn._linear_pointwise(a, packed, b, 'none', [], '')):.0f}"
        except (RuntimeError, AttributeError) as error:  # a build without oneDNN
            onednn = f"n/a ({type(error).__name__})"
        print(f"| {M} × {K} × {N} | {flops / mm:.0f} | {flops / addmm:.0f} | {flops / linear:.0f} | {onednn} |")


if __name__ == "__main__":
    main()
