"""The fused vanilla RNN: the native time loop of ``csrc/rnn.cpp`` (or its Python twin in
``loops.py``) as torch.library custom ops with the hand-written backward through time
registered as their autograd formula."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from gatedrnn.fused._native import kernels
from gatedrnn.fused._ops import forbid_double_backward, zeros_if_none


@torch.library.custom_op("gatedrnn::rnn_forward", mutates_args=())
def rnn_forward(
    xw: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
    save: bool, relu: bool,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """(out, h_n, hs); see ``csrc/rnn.cpp``."""
    return tuple(kernels(xw.device).rnn_forward(xw, h0, w_hh, b_hh, lengths, reverse, save, relu))


@rnn_forward.register_fake
def _(xw, h0, w_hh, b_hh, lengths, reverse, save, relu):
    T, B, H = xw.shape
    new = xw.new_empty
    return new(T, B, H), new(B, H), new(T, B, H) if save and lengths is not None else new(0)


@torch.library.custom_op("gatedrnn::rnn_backward", mutates_args=())
def rnn_backward(
    d_out: Optional[Tensor], d_h_n: Tensor, hs: Tensor, h0: Tensor, w_hh: Tensor, lengths: Optional[Tensor],
    reverse: bool, relu: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d_xw, d_h0, d_w_hh, d_b_hh); see ``csrc/rnn.cpp``."""
    return tuple(kernels(hs.device).rnn_backward(d_out, d_h_n, hs, h0, w_hh, lengths, reverse, relu))


@rnn_backward.register_fake
def _(d_out, d_h_n, hs, h0, w_hh, lengths, reverse, relu):
    new = hs.new_empty
    return new(hs.shape), new(h0.shape), new(w_hh.shape), new(w_hh.shape[0])


def _setup_context(ctx, inputs, output):
    xw, h0, w_hh, b_hh, lengths, reverse, save, relu = inputs
    out, h_n, hs = output
    ctx.save_for_backward(out if lengths is None else hs, h0, w_hh, lengths)
    ctx.reverse, ctx.relu, ctx.has_bias = reverse, relu, b_hh is not None


def _backward(ctx, d_out, d_h_n, d_hs):
    hs, h0, w_hh, lengths = ctx.saved_tensors
    d_xw, d_h0, d_w_hh, d_b_hh = rnn_backward(d_out, zeros_if_none(d_h_n, h0), hs, h0, w_hh, lengths,
                                              ctx.reverse, ctx.relu)  # fmt: skip
    return d_xw, d_h0, d_w_hh, d_b_hh if ctx.has_bias else None, None, None, None, None


rnn_forward.register_autograd(_backward, setup_context=_setup_context)
forbid_double_backward(rnn_backward)


def run_tanh(xw, state, w_hh, b_hh, w_hr, lengths, reverse, save, want_trace):
    out, h_n, _ = rnn_forward(xw, state[0], w_hh, b_hh, lengths, reverse, save, False)
    return out, (h_n,), (out,) if want_trace else None


def run_relu(xw, state, w_hh, b_hh, w_hr, lengths, reverse, save, want_trace):
    out, h_n, _ = rnn_forward(xw, state[0], w_hh, b_hh, lengths, reverse, save, True)
    return out, (h_n,), (out,) if want_trace else None
