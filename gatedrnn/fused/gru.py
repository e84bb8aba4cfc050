"""The fused GRU: the native time loop of ``csrc/gru.cpp`` (or its Python twin in
``loops.py``) as torch.library custom ops with the hand-written backward through time
registered as their autograd formula."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from gatedrnn.fused._native import kernels
from gatedrnn.fused._ops import forbid_double_backward, zeros_if_none


@torch.library.custom_op("gatedrnn::gru_forward", mutates_args=())
def gru_forward(
    xw: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
    save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(out, h_n, hs, gates, hn); see ``csrc/gru.cpp``."""
    return tuple(kernels(xw.device).gru_forward(xw, h0, w_hh, b_hh, lengths, reverse, save))


@gru_forward.register_fake
def _(xw, h0, w_hh, b_hh, lengths, reverse, save):
    T, B, G = xw.shape
    H = h0.shape[1]
    new = xw.new_empty
    return (
        new(T, B, H), new(B, H),
        new(T, B, H) if save and lengths is not None else new(0),
        new(T, B, G) if save else new(0),
        new(T, B, H) if save else new(0),
    )  # fmt: skip


@torch.library.custom_op("gatedrnn::gru_backward", mutates_args=())
def gru_backward(
    d_out: Optional[Tensor], d_h_n: Tensor, d_gates: Optional[Tensor], hs: Tensor, gates: Tensor, hn: Tensor,
    h0: Tensor, w_hh: Tensor, lengths: Optional[Tensor], reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d_xw, d_h0, d_w_hh, d_b_hh); see ``csrc/gru.cpp``."""
    return tuple(kernels(gates.device).gru_backward(d_out, d_h_n, d_gates, hs, gates, hn, h0, w_hh, lengths, reverse))


@gru_backward.register_fake
def _(d_out, d_h_n, d_gates, hs, gates, hn, h0, w_hh, lengths, reverse):
    new = gates.new_empty
    return new(gates.shape), new(h0.shape), new(w_hh.shape), new(w_hh.shape[0])


def _setup_context(ctx, inputs, output):
    xw, h0, w_hh, b_hh, lengths, reverse, save = inputs
    out, h_n, hs, gates, hn = output
    ctx.save_for_backward(out if lengths is None else hs, gates, hn, h0, w_hh, lengths)
    ctx.reverse, ctx.has_bias = reverse, b_hh is not None


def _backward(ctx, d_out, d_h_n, d_hs, d_gates, d_hn):
    hs, gates, hn, h0, w_hh, lengths = ctx.saved_tensors
    d_xw, d_h0, d_w_hh, d_b_hh = gru_backward(
        d_out, zeros_if_none(d_h_n, h0), d_gates, hs, gates, hn, h0, w_hh, lengths, ctx.reverse
    )
    return d_xw, d_h0, d_w_hh, d_b_hh if ctx.has_bias else None, None, None, None


gru_forward.register_autograd(_backward, setup_context=_setup_context)
forbid_double_backward(gru_backward)


def run(xw, state, w_hh, b_hh, w_hr, lengths, reverse, save, want_trace):
    """Output (T, B, H), final (h,), and the trace values when ``want_trace``."""
    (h0,) = state
    out, h_n, _, gates, _ = gru_forward(xw, h0, w_hh, b_hh, lengths, reverse, save)
    if not want_trace:
        return out, (h_n,), None
    r, z, n = gates.chunk(3, dim=2)  # (T, B, H) each
    return out, (h_n,), (r, z, n, out)
