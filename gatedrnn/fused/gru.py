"""The fused GRU: the native time loop of ``csrc/gru.cpp`` (or its Python twin in
``loops.py``) as torch.library custom ops with the hand-written backward through time
registered as their autograd formula.

float16 and bfloat16 are computed in float32, and ``x, w_ih, b_ih`` are inputs for double
backward only, as in :mod:`gatedrnn.fused.lstm`."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from gatedrnn.fused._native import kernels
from gatedrnn.fused._ops import call_kernel, compute_dtype, forbid_double_backward, grads_by_recompute, zeros_if_none


@torch.library.custom_op("gatedrnn::gru_forward", mutates_args=())
def gru_forward(
    xw: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
    save: bool, x: Optional[Tensor] = None, w_ih: Optional[Tensor] = None, b_ih: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(out, h_n, hs, gates, hn); see ``csrc/gru.cpp``."""
    dtype = compute_dtype(xw, h0, w_hh)
    out, h_n, hs, gates, hn = call_kernel(kernels(xw.device).gru_forward, dtype, xw, h0, w_hh, b_hh, lengths, reverse, save)
    result = torch.promote_types(xw.dtype, h0.dtype)
    if save and lengths is None and result != dtype:
        hs = out  # the backward reads each h at the compute precision, not the output's
    return out.to(result), h_n.to(result), hs, gates, hn


@gru_forward.register_fake
def _(xw, h0, w_hh, b_hh, lengths, reverse, save, x=None, w_ih=None, b_ih=None):
    T, B, G = xw.shape
    H = h0.shape[1]
    result, dtype = torch.promote_types(xw.dtype, h0.dtype), compute_dtype(xw, h0, w_hh)
    new = lambda *shape: xw.new_empty(shape, dtype=dtype)  # noqa: E731
    return (
        xw.new_empty(T, B, H, dtype=result), xw.new_empty(B, H, dtype=result),
        new(T, B, H) if save and (lengths is not None or result != dtype) else new(0),
        new(T, B, G) if save else new(0),
        new(T, B, H) if save else new(0),
    )  # fmt: skip


@torch.library.custom_op("gatedrnn::gru_backward", mutates_args=())
def gru_backward(
    d_out: Optional[Tensor], d_h_n: Tensor, d_gates: Optional[Tensor], hs: Tensor, gates: Tensor, hn: Tensor,
    h0: Tensor, w_hh: Tensor, lengths: Optional[Tensor], reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d_xw, d_h0, d_w_hh, d_b_hh) in the saved activations' dtype; see ``csrc/gru.cpp``."""
    return tuple(call_kernel(kernels(gates.device).gru_backward, gates.dtype,
                             d_out, d_h_n, d_gates, hs, gates, hn, h0, w_hh, lengths, reverse))  # fmt: skip


@gru_backward.register_fake
def _(d_out, d_h_n, d_gates, hs, gates, hn, h0, w_hh, lengths, reverse):
    new = gates.new_empty
    return new(gates.shape), new(h0.shape), new(w_hh.shape), new(w_hh.shape[0])


def _setup_context(ctx, inputs, output):
    xw, h0, w_hh, b_hh, lengths, reverse, save, x, w_ih, b_ih = inputs
    out, h_n, hs, gates, hn = output
    hs = hs if lengths is not None or hs.dtype != out.dtype else out  # h at every step, for the backward
    ctx.save_for_backward(hs, gates, hn, h0, w_hh, lengths, x, w_ih, b_ih, b_hh)
    ctx.reverse, ctx.has_bias = reverse, b_hh is not None


def _backward(ctx, d_out, d_h_n, d_hs, d_gates, d_hn):
    hs, gates, hn, h0, w_hh, lengths, x, w_ih, b_ih, b_hh = ctx.saved_tensors
    if torch.is_grad_enabled() and x is not None:  # create_graph: differentiable gradients
        def pairs(output, final, trace):
            r, z, n, _ = trace
            return [(output, d_out), (final[0], d_h_n), (torch.cat([r, z, n], dim=2), d_gates)]

        inputs = (x, w_ih, b_ih, (h0,), w_hh, b_hh, None, lengths)
        d_x, d_w_ih, d_b_ih, d_h0, d_w_hh, d_b_hh, _ = grads_by_recompute("GRU", ctx.reverse, inputs, pairs)
        return None, d_h0, d_w_hh, d_b_hh, None, None, None, d_x, d_w_ih, d_b_ih
    d_xw, d_h0, d_w_hh, d_b_hh = gru_backward(
        d_out, zeros_if_none(d_h_n, h0), d_gates, hs, gates, hn, h0, w_hh, lengths, ctx.reverse
    )
    return d_xw, d_h0, d_w_hh, d_b_hh if ctx.has_bias else None, None, None, None, None, None, None


gru_forward.register_autograd(_backward, setup_context=_setup_context)
forbid_double_backward(gru_backward)


def run(xw, state, w_hh, b_hh, w_hr, lengths, reverse, save, want_trace, x=None, w_ih=None, b_ih=None):
    """Output (T, B, H), final (h,), and the trace values when ``want_trace``."""
    (h0,) = state
    out, h_n, _, gates, _ = gru_forward(xw, h0, w_hh, b_hh, lengths, reverse, save, x, w_ih, b_ih)
    if not want_trace:
        return out, (h_n,), None
    r, z, n = gates.to(out.dtype).chunk(3, dim=2)  # (T, B, H) each
    return out, (h_n,), (r, z, n, out)
