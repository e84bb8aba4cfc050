"""A parallel scan over time for the linear recurrence ``h_t = a_t ⊙ h_{t-1} + b_t`` with
positive ``a`` and ``b``, in log space (Heinsen 2023, "Efficient Parallelization of a
Ubiquitous Sequential Computation"): the path MinGRU and MinLSTM take on many-core hardware.

    h_t = A_t ⊙ h_0 + exp(log A_t + logcumsumexp_{s<=t}(log b_s - log A_s)),   A_t = a_1 ⋯ a_t.

``h_0`` enters linearly, so it may be any real (and its gradient is exact at 0). On two
CPU cores the sequential loop is faster (``../shared/PERF_NOTES.md``); the scan is tested
against it.
"""

from __future__ import annotations

import torch


def log_linear_scan(log_a: torch.Tensor, log_b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """``h`` (T, B, H) of ``h_t = a_t h_{t-1} + b_t`` from ``log a``, ``log b`` (T, B, H) and
    ``h_0`` (B, H). A ``log b`` of ``-inf`` (a zero ``b``) is allowed after the first step."""
    log_A = torch.cumsum(log_a, dim=0)  # (T, B, H): log of a_1 ... a_t
    return torch.exp(log_A) * h0 + torch.exp(log_A + torch.logcumsumexp(log_b - log_A, dim=0))  # (T, B, H)
