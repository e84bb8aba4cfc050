"""The fused LSTM: the native time loop of ``csrc/lstm.cpp`` (or its Python twin in
``loops.py``) as torch.library custom ops, its hand-written backward through time registered
as their autograd formula, and fake implementations so torch.compile traces through it.

float16 and bfloat16 tensors are computed in float32 (outputs come back in the inputs'
dtype; the saved activations stay float32). ``x, w_ih, b_ih`` (the operands of ``xw``)
are inputs only so that double backward can rebuild the step graph from them."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from gatedrnn.fused._native import kernels
from gatedrnn.fused._ops import (call_kernel, compute_dtype, forbid_double_backward, grads_by_recompute,
                                 valid_steps, zeros_if_none)  # fmt: skip


@torch.library.custom_op("gatedrnn::lstm_forward", mutates_args=())
def lstm_forward(
    xw: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, b_hh: Optional[Tensor], w_hr: Optional[Tensor],
    lengths: Optional[Tensor], reverse: bool, save: bool, x: Optional[Tensor] = None,
    w_ih: Optional[Tensor] = None, b_ih: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(out, h_n, c_n, hs, cs, gates); see ``csrc/lstm.cpp``."""
    dtype = compute_dtype(xw, h0, c0, w_hh)
    out, h_n, c_n, hs, cs, gates = call_kernel(
        kernels(xw.device).lstm_forward, dtype, xw, h0, c0, w_hh, b_hh, w_hr, lengths, reverse, save
    )
    result = torch.promote_types(xw.dtype, h0.dtype)
    if save and lengths is None and result != dtype:
        hs = out  # the backward reads each h at the compute precision, not the output's
    return out.to(result), h_n.to(result), c_n.to(result), hs, cs, gates


@lstm_forward.register_fake
def _(xw, h0, c0, w_hh, b_hh, w_hr, lengths, reverse, save, x=None, w_ih=None, b_ih=None):
    T, B, G = xw.shape
    P, H = h0.shape[1], c0.shape[1]
    result = torch.promote_types(xw.dtype, h0.dtype)
    new = lambda *shape: xw.new_empty(shape, dtype=compute_dtype(xw, h0, c0, w_hh))  # noqa: E731
    return (
        xw.new_empty(T, B, P, dtype=result), xw.new_empty(B, P, dtype=result), xw.new_empty(B, H, dtype=result),
        new(T, B, P) if save and (lengths is not None or result != compute_dtype(xw, h0, c0, w_hh)) else new(0),
        new(T, B, H) if save else new(0),
        new(T, B, G) if save else new(0),
    )  # fmt: skip


@torch.library.custom_op("gatedrnn::lstm_backward", mutates_args=())
def lstm_backward(
    d_out: Optional[Tensor], d_h_n: Tensor, d_c_n: Tensor, d_gates: Optional[Tensor], d_cs: Optional[Tensor],
    hs: Tensor, cs: Tensor, gates: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Optional[Tensor],
    lengths: Optional[Tensor], reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d_xw, d_h0, d_c0, d_w_hh, d_b_hh, d_w_hr) in the saved activations' dtype; see
    ``csrc/lstm.cpp``."""
    return tuple(call_kernel(
        kernels(gates.device).lstm_backward, gates.dtype,
        d_out, d_h_n, d_c_n, d_gates, d_cs, hs, cs, gates, h0, c0, w_hh, w_hr, lengths, reverse,
    ))  # fmt: skip


@lstm_backward.register_fake
def _(d_out, d_h_n, d_c_n, d_gates, d_cs, hs, cs, gates, h0, c0, w_hh, w_hr, lengths, reverse):
    new = gates.new_empty
    d_w_hr = new(w_hr.shape) if w_hr is not None else new(0)
    return new(gates.shape), new(h0.shape), new(c0.shape), new(w_hh.shape), new(w_hh.shape[0]), d_w_hr


def _setup_context(ctx, inputs, output):
    xw, h0, c0, w_hh, b_hh, w_hr, lengths, reverse, save, x, w_ih, b_ih = inputs
    out, h_n, c_n, hs, cs, gates = output
    hs = hs if lengths is not None or hs.dtype != out.dtype else out  # h at every step, for the backward
    ctx.save_for_backward(hs, cs, gates, h0, c0, w_hh, w_hr, lengths, x, w_ih, b_ih, b_hh)
    ctx.reverse, ctx.has_bias = reverse, b_hh is not None


def _backward(ctx, d_out, d_h_n, d_c_n, d_hs, d_cs, d_gates):
    hs, cs, gates, h0, c0, w_hh, w_hr, lengths, x, w_ih, b_ih, b_hh = ctx.saved_tensors
    if torch.is_grad_enabled() and x is not None:  # create_graph: differentiable gradients
        def pairs(output, final, trace):
            i, f, g, o, cell, _ = trace
            return [(output, d_out), (final[0], d_h_n), (final[1], d_c_n), (cell, d_cs),
                    (torch.cat([i, f, g, o], dim=2), d_gates)]  # fmt: skip

        inputs = (x, w_ih, b_ih, (h0, c0), w_hh, b_hh, w_hr, lengths)
        d_x, d_w_ih, d_b_ih, d_h0, d_c0, d_w_hh, d_b_hh, d_w_hr = grads_by_recompute("LSTM", ctx.reverse, inputs, pairs)
        return None, d_h0, d_c0, d_w_hh, d_b_hh, d_w_hr, None, None, None, d_x, d_w_ih, d_b_ih
    d_xw, d_h0, d_c0, d_w_hh, d_b_hh, d_w_hr = lstm_backward(
        d_out, zeros_if_none(d_h_n, h0), zeros_if_none(d_c_n, c0), d_gates, d_cs,
        hs, cs, gates, h0, c0, w_hh, w_hr, lengths, ctx.reverse,
    )  # fmt: skip
    return (d_xw, d_h0, d_c0, d_w_hh, d_b_hh if ctx.has_bias else None,
            d_w_hr if w_hr is not None else None, None, None, None, None, None, None)  # fmt: skip


lstm_forward.register_autograd(_backward, setup_context=_setup_context)
forbid_double_backward(lstm_backward)


def run(xw, state, w_hh, b_hh, w_hr, lengths, reverse, save, want_trace, x=None, w_ih=None, b_ih=None):
    """Output (T, B, P), final (h, c), and the trace values when ``want_trace``."""
    h0, c0 = state
    out, h_n, c_n, _, cs, gates = lstm_forward(xw, h0, c0, w_hh, b_hh, w_hr, lengths, reverse, save, x, w_ih, b_ih)
    if not want_trace:
        return out, (h_n, c_n), None
    gates, cs = gates.to(out.dtype), cs.to(out.dtype)
    i, f, g, o = gates.chunk(4, dim=2)  # (T, B, H) each: the kernel saved them anyway
    cell = cs if lengths is None else torch.where(valid_steps(lengths, xw.shape[0], xw.device), cs, 0.0)
    return out, (h_n, c_n), (i, f, g, o, cell, out)
