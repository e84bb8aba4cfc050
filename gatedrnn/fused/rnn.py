"""The fused vanilla RNN: the native time loop of ``csrc/loop.h`` with the step of
``csrc/rnn.cpp`` (or its Python twin in ``loops.py``) as torch.library custom ops with the
hand-written backward through time registered as their autograd formula. ``rmask`` (B, H) is
the recurrent dropout mask, ``keep_h`` (T, B, H) the zoneout mask (one value in eval).

float16 and bfloat16 are computed in float32, and ``x, w_ih, b_ih`` are inputs for double
backward only, as in :mod:`gatedrnn.fused.lstm`."""

from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from gatedrnn.cells.rnn import rnn_relu_step, rnn_tanh_step
from gatedrnn.fused._native import kernels
from gatedrnn.fused._ops import (call_kernel, compute_dtype, forbid_double_backward, grads_by_recompute,
                                 projection_grads, reference_zoneout, register_autograd, zeros_if_none)  # fmt: skip


@torch.library.custom_op("gatedrnn::rnn_forward", mutates_args=())
def rnn_forward(
    xw: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
    save: bool, relu: bool, rmask: Optional[Tensor] = None, keep_h: Optional[Tensor] = None,
    x: Optional[Tensor] = None, w_ih: Optional[Tensor] = None, b_ih: Optional[Tensor] = None, project: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(out, h_n, hs, hf); see ``csrc/rnn.cpp``. ``project``: ``xw`` holds the input x (T, B, I) and the loop projects each step's
    rows with ``w_ih`` and ``b_ih`` itself (``csrc/input.h``)."""
    dtype = compute_dtype(xw, h0, w_hh)
    out, h_n, hs, hf = call_kernel(kernels(xw.device).rnn_forward, dtype, xw, h0, w_hh, b_hh, relu, rmask, keep_h,
                                   lengths, reverse, save, *((w_ih, b_ih) if project else (None, None)))  # fmt: skip
    result = torch.promote_types(xw.dtype, h0.dtype)
    if save and lengths is None and result != dtype:
        hs = out  # the backward reads each h at the compute precision, not the output's
    return out.to(result), h_n.to(result), hs, hf


@rnn_forward.register_fake
def _(xw, h0, w_hh, b_hh, lengths, reverse, save, relu, rmask=None, keep_h=None, x=None, w_ih=None, b_ih=None,
      project=False):  # fmt: skip
    T, B, H = *xw.shape[:2], h0.shape[1]
    result, dtype = torch.promote_types(xw.dtype, h0.dtype), compute_dtype(xw, h0, w_hh)
    hs = xw.new_empty((T, B, H) if save and (lengths is not None or result != dtype) else (0,), dtype=dtype)
    hf = xw.new_empty((T, B, H) if save and keep_h is not None else (0,), dtype=dtype)
    return xw.new_empty(T, B, H, dtype=result), xw.new_empty(B, H, dtype=result), hs, hf


@torch.library.custom_op("gatedrnn::rnn_backward", mutates_args=())
def rnn_backward(
    d_out: Optional[Tensor], d_h_n: Tensor, hs: Tensor, hf: Tensor, h0: Tensor, w_hh: Tensor, relu: bool,
    rmask: Optional[Tensor], keep_h: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d_xw, d_h0, d_w_hh, d_b_hh) in the saved activations' dtype; see ``csrc/rnn.cpp``."""
    return tuple(call_kernel(kernels(hs.device).rnn_backward, hs.dtype, d_out, d_h_n, hs, hf, h0, w_hh, relu,
                             rmask, keep_h, lengths, reverse))  # fmt: skip


@rnn_backward.register_fake
def _(d_out, d_h_n, hs, hf, h0, w_hh, relu, rmask, keep_h, lengths, reverse):
    new = hs.new_empty
    return new(hs.shape), new(h0.shape), new(w_hh.shape), new(w_hh.shape[0])


def _setup_context(ctx, inputs, output):
    xw, h0, w_hh, b_hh, lengths, reverse, save, relu, rmask, keep_h, x, w_ih, b_ih, project = inputs
    out, h_n, hs, hf = output
    hs = hs if lengths is not None or hs.dtype != out.dtype else out  # h at every step, for the backward
    ctx.save_for_backward(hs, hf, h0, w_hh, rmask, keep_h, lengths, x, w_ih, b_ih, b_hh)
    ctx.reverse, ctx.relu, ctx.has_bias, ctx.project = reverse, relu, b_hh is not None, project
    ctx.set_materialize_grads(False)  # the unused outputs' gradients stay None, not zero-filled (T, B, n) tensors


def _backward(ctx, d_out, d_h_n, d_hs, d_hf):
    hs, hf, h0, w_hh, rmask, keep_h, lengths, x, w_ih, b_ih, b_hh = ctx.saved_tensors
    if torch.is_grad_enabled() and x is not None:  # create_graph: differentiable gradients
        def pairs(output, final, trace):
            return [(output, d_out), (final[0], d_h_n)]

        mode = "RNN_RELU" if ctx.relu else "RNN_TANH"
        step = functools.partial(rnn_relu_step if ctx.relu else rnn_tanh_step, recurrent_mask=rmask)
        inputs = (x, w_ih, b_ih, (h0,), w_hh, b_hh, None, lengths)
        d_x, d_w_ih, d_b_ih, d_h0, d_w_hh, d_b_hh, _ = grads_by_recompute(
            mode, ctx.reverse, inputs, pairs, step=step, zoneout=reference_zoneout(keep_h)
        )  # fmt: skip
        return None, d_h0, d_w_hh, d_b_hh, None, None, None, None, None, None, d_x, d_w_ih, d_b_ih, None
    d_xw, d_h0, d_w_hh, d_b_hh = rnn_backward(d_out, zeros_if_none(d_h_n, h0), hs, hf, h0, w_hh, ctx.relu, rmask,
                                              keep_h, lengths, ctx.reverse)  # fmt: skip
    d_input, d_w_ih, d_b_ih = d_xw, None, None
    if ctx.project:  # xw held x, projected in the loop: xw's gradient goes on to x, W_ih and b_ih
        needs = ctx.needs_input_grad
        d_input, d_w_ih, d_b_ih = projection_grads((needs[0], needs[11], needs[12]), d_xw, x, w_ih, b_ih)
    return (d_input, d_h0, d_w_hh, d_b_hh if ctx.has_bias else None, None, None, None, None, None, None, None, d_w_ih,
            d_b_ih, None)  # fmt: skip


register_autograd(rnn_forward, _backward, _setup_context)
forbid_double_backward(rnn_backward)


def _run(relu, xw, state, w_hh, b_hh, w_hr, lengths, reverse, save, want_trace, x=None, w_ih=None, b_ih=None, *,
         rmask=None, keep=(None,), project=False):  # fmt: skip
    out, h_n, _, _ = rnn_forward(xw, state[0], w_hh, b_hh, lengths, reverse, save, relu, rmask, *keep, x, w_ih, b_ih,
                                 project)  # fmt: skip
    return out, (h_n,), (out,) if want_trace else None


run_tanh = functools.partial(_run, False)
run_relu = functools.partial(_run, True)
