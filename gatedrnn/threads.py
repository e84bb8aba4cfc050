"""Process-wide numeric settings for a block of work, used by the trainer, the report and the
commands alike: how many threads torch uses, and whether subnormal floats flush to zero."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(threads: int):
    """``torch.set_num_threads(threads)`` inside the block (nothing for 0), the previous number after it."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(before)


@contextlib.contextmanager
def flush_denormals():
    """Subnormal floats flushed to zero in the block (``torch.set_flush_denormal``), off after
    it. Gradients vanishing over a long sequence pass through the subnormal range, where each
    operation is many times slower: a GRU training step at T = 600 took 3.4x longer at
    initialization. The native kernels flush on their own; this covers torch's operations
    around them (and torch.nn's LSTM, which ``auto`` calls), and the report's gradient flow (5.5 s
    for the demo's three trained cells without it, 0.2 s with it). Nothing changes where the CPU
    cannot flush."""
    changed = torch.set_flush_denormal(True)  # False where the CPU cannot
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(False)
