"""The fused backend: per cell, the input projections of all steps in one GEMM, then a
native time loop (one recurrent GEMM and one pointwise pass per step) with a hand-written
backward through time, registered as torch.library custom ops."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gatedrnn.fused import gru, lstm, rnn
from gatedrnn.fused._native import kernels, native_available, use_python_loops

RUNS = {"LSTM": lstm.run, "GRU": gru.run, "RNN_TANH": rnn.run_tanh, "RNN_RELU": rnn.run_relu}

__all__ = ["kernels", "native_available", "run_direction", "use_python_loops"]


def run_direction(mode, x, state, weights, lengths, reverse, want_trace):
    """Runs one layer in one direction; same contract as
    :func:`gatedrnn.reference.run_direction`."""
    weight_ih, weight_hh, bias_ih, bias_hh, weight_hr = weights
    xw = F.linear(x, weight_ih, bias_ih)  # (T, B, G*H): every step's input projection at once
    # torch.jit.trace checks its graph by tracing again under no_grad: the graph must not depend on it
    needs_grad = (torch.is_grad_enabled() or torch.jit.is_tracing()) and any(
        t is not None and t.requires_grad for t in (xw, *state, weight_hh, bias_hh, weight_hr)
    )
    save = want_trace or needs_grad  # keep the activations only for a backward or a trace
    return RUNS[mode](xw, state, weight_hh, bias_hh, weight_hr, lengths, reverse, save, want_trace, x, weight_ih, bias_ih)
