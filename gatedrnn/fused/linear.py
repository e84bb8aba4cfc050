"""The minimal cells' time loop as a custom op: ``h_t = a_t ⊙ h_{t-1} + b_t`` over T steps
(``csrc/linear.cpp``, or its Python twin in ``loops.py``).

Its gradient is the same recurrence run the other way: with ``g_t`` the gradient reaching
``h_t`` (from the output and from ``h_{t+1}``), ``g_t = d_h_t + a_{t+1} ⊙ g_{t+1}``, and then
``d_b_t = g_t``, ``d_a_t = g_t ⊙ h_{t-1}``, ``d_h_0 = a_first ⊙ g_first``. The backward calls
the op itself, so double backward differentiates it like any other op."""

from __future__ import annotations

import torch
from torch import Tensor

from gatedrnn.fused._native import kernels
from gatedrnn.fused._ops import call_kernel, compute_dtype


@torch.library.custom_op("gatedrnn::linear_recurrence", mutates_args=())
def linear_recurrence(a: Tensor, b: Tensor, h0: Tensor, reverse: bool) -> Tensor:
    """h (T, B, H) from a, b (T, B, H) and h0 (B, H); ``reverse`` reads from the last step."""
    dtype = compute_dtype(a, b, h0)
    (h,) = call_kernel(kernels(a.device).linear_recurrence, dtype, a, b, h0, reverse)
    return h.to(torch.promote_types(torch.promote_types(a.dtype, b.dtype), h0.dtype))


@linear_recurrence.register_fake
def _(a, b, h0, reverse):
    return torch.empty_like(b, dtype=torch.promote_types(torch.promote_types(a.dtype, b.dtype), h0.dtype))


def _setup_context(ctx, inputs, output):
    a, b, h0, reverse = inputs
    ctx.save_for_backward(a, h0, output)
    ctx.reverse = reverse


def _backward(ctx, d_h):
    a, h0, h = ctx.saved_tensors
    one = torch.ones_like(a[:1])
    if ctx.reverse:  # step t follows t + 1: the next step read is t - 1
        a_next, h_prev, first = torch.cat([one, a[:-1]]), torch.cat([h[1:], h0[None]]), -1
    else:
        a_next, h_prev, first = torch.cat([a[1:], one]), torch.cat([h0[None], h[:-1]]), 0
    g = linear_recurrence(a_next, d_h, torch.zeros_like(h0), not ctx.reverse)  # the gradient reaching each h_t
    return g * h_prev, g, a[first] * g[first], None


linear_recurrence.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("gatedrnn::min_gru_inference", mutates_args=())
def min_gru_inference(xw: Tensor, h0: Tensor, reverse: bool) -> Tensor:
    """The MinGRU's h (T, B, H) from its input projection ``xw`` (T, B, 2H) = [k | x_n] in one
    pass, for calls that need no gradient (``csrc/linear.cpp``); it has no autograd formula."""
    dtype = compute_dtype(xw, h0)
    (h,) = call_kernel(kernels(xw.device).min_gru_inference, dtype, xw, h0, reverse)
    return h.to(torch.promote_types(xw.dtype, h0.dtype))


@min_gru_inference.register_fake
def _(xw, h0, reverse):
    return xw.new_empty((*xw.shape[:2], h0.shape[1]), dtype=torch.promote_types(xw.dtype, h0.dtype))
