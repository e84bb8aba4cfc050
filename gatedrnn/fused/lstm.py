"""The fused LSTM: the native time loop of ``csrc/loop.h`` with the LSTM's gate math of
``csrc/lstm.cpp`` (or its Python twin in ``loops.py``) as torch.library custom ops, its
hand-written backward through time registered as their autograd formula, and fake
implementations so torch.compile traces through it.

The variants ride along as arguments: ``peephole`` (3, H) rows ``w_ci`` (zeros when coupled),
``w_cf``, ``w_co``; ``coupled`` (CIFG, 3H gate rows f, g, o); ``rmask`` (B, P) the recurrent
dropout mask; ``keep_h`` (T, B, P) and ``keep_c`` (T, B, H) the zoneout masks, or one value
each in eval (the probability: the expectation); layer norm: ``ln_hh`` (4H) the recurrent
product's gain and ``ln_c`` (2, H) the cell state's gain and bias (``xw`` then comes
normalized, ``b_hh`` is added after the norm), ``ln_ih`` (1 or 2, 4H) the input side's gain
and bias, used to rebuild the step for double backward, and in inference (``save`` false,
``raw_input``) by the loop itself, which then takes ``xw`` without the input side's norm and
normalizes each row as it reads it (one pass over all T·B rows fewer).

float16 and bfloat16 tensors are computed in float32 (outputs come back in the inputs'
dtype; the saved activations stay float32). ``x, w_ih, b_ih`` (the operands of ``xw``)
are inputs only so that double backward can rebuild the step graph from them."""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from gatedrnn.cells.layernorm import ln_lstm_step
from gatedrnn.cells.lstm import lstm_step
from gatedrnn.fused._native import kernels
from gatedrnn.fused._ops import (call_kernel, compute_dtype, forbid_double_backward, grads_by_recompute,
                                 projection_grads, reference_zoneout, register_autograd, valid_steps,
                                 zeros_if_none)  # fmt: skip


@torch.library.custom_op("gatedrnn::lstm_forward", mutates_args=())
def lstm_forward(
    xw: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, b_hh: Optional[Tensor], w_hr: Optional[Tensor],
    lengths: Optional[Tensor], reverse: bool, save: bool, peephole: Optional[Tensor] = None,
    coupled: bool = False, rmask: Optional[Tensor] = None, keep_h: Optional[Tensor] = None,
    keep_c: Optional[Tensor] = None, ln_ih: Optional[Tensor] = None, ln_hh: Optional[Tensor] = None,
    ln_c: Optional[Tensor] = None, x: Optional[Tensor] = None, w_ih: Optional[Tensor] = None,
    b_ih: Optional[Tensor] = None, raw_input: bool = False, project: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(out, h_n, c_n, hs, cs, gates, cf); see ``csrc/lstm.cpp``. ``project``: ``xw`` holds the input x (T, B, I) and the loop projects each step's
    rows with ``w_ih`` and ``b_ih`` itself (``csrc/input.h``)."""
    dtype = compute_dtype(xw, h0, c0, w_hh)
    out, h_n, c_n, hs, cs, gates, cf = call_kernel(
        kernels(xw.device).lstm_forward, dtype, xw, h0, c0, w_hh, b_hh, w_hr, peephole, coupled, rmask, keep_h,
        keep_c, ln_hh, ln_c, ln_ih if raw_input else None, lengths, reverse, save,
        *((w_ih, b_ih) if project else (None, None)),
    )  # fmt: skip
    result = torch.promote_types(xw.dtype, h0.dtype)
    if save and lengths is None and result != dtype:
        hs = out  # the backward reads each h at the compute precision, not the output's
    return out.to(result), h_n.to(result), c_n.to(result), hs, cs, gates, cf


@lstm_forward.register_fake
def _(xw, h0, c0, w_hh, b_hh, w_hr, lengths, reverse, save, peephole=None, coupled=False, rmask=None, keep_h=None,
      keep_c=None, ln_ih=None, ln_hh=None, ln_c=None, x=None, w_ih=None, b_ih=None, raw_input=False,
      project=False):  # fmt: skip
    T, B, _ = xw.shape
    P, H = h0.shape[1], c0.shape[1]
    result = torch.promote_types(xw.dtype, h0.dtype)
    new = lambda *shape: xw.new_empty(shape, dtype=compute_dtype(xw, h0, c0, w_hh))  # noqa: E731
    return (
        xw.new_empty(T, B, P, dtype=result), xw.new_empty(B, P, dtype=result), xw.new_empty(B, H, dtype=result),
        new(T, B, P) if save and (lengths is not None or result != compute_dtype(xw, h0, c0, w_hh)) else new(0),
        new(T, B, H) if save else new(0),
        new(T, B, 4 * H if ln_hh is None else 9 * H + 2) if save else new(0),
        new(T, B, H) if save and keep_c is not None else new(0),
    )  # fmt: skip


@torch.library.custom_op("gatedrnn::lstm_backward", mutates_args=())
def lstm_backward(
    d_out: Optional[Tensor], d_h_n: Tensor, d_c_n: Tensor, d_gates: Optional[Tensor], d_cs: Optional[Tensor],
    hs: Tensor, cs: Tensor, gates: Tensor, cf: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor,
    w_hr: Optional[Tensor], peephole: Optional[Tensor], coupled: bool, rmask: Optional[Tensor],
    keep_h: Optional[Tensor], keep_c: Optional[Tensor], ln_hh: Optional[Tensor], ln_c: Optional[Tensor],
    b_hh: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d_xw, d_h0, d_c0, d_w_hh, d_b_hh, d_w_hr, d_peephole, d_ln_hh, d_ln_c) in the saved
    activations' dtype; see ``csrc/lstm.cpp``."""
    return tuple(call_kernel(
        kernels(gates.device).lstm_backward, gates.dtype, d_out, d_h_n, d_c_n, d_gates, d_cs, hs, cs, gates, cf,
        h0, c0, w_hh, w_hr, peephole, coupled, rmask, keep_h, keep_c, ln_hh, ln_c, b_hh, lengths, reverse,
    ))  # fmt: skip


@lstm_backward.register_fake
def _(d_out, d_h_n, d_c_n, d_gates, d_cs, hs, cs, gates, cf, h0, c0, w_hh, w_hr, peephole, coupled, rmask, keep_h,
      keep_c, ln_hh, ln_c, b_hh, lengths, reverse):  # fmt: skip
    new = gates.new_empty
    T, B, _ = gates.shape
    like = lambda t: new(t.shape) if t is not None else new(0)  # noqa: E731
    return (new(T, B, w_hh.shape[0]), new(h0.shape), new(c0.shape), new(w_hh.shape), new(w_hh.shape[0]),
            like(w_hr), like(peephole), like(ln_hh), like(ln_c))  # fmt: skip


def _setup_context(ctx, inputs, output):
    (xw, h0, c0, w_hh, b_hh, w_hr, lengths, reverse, save, peephole, coupled, rmask, keep_h, keep_c, ln_ih, ln_hh,
     ln_c, x, w_ih, b_ih, _, project) = inputs  # fmt: skip
    out, h_n, c_n, hs, cs, gates, cf = output
    hs = hs if lengths is not None or hs.dtype != out.dtype else out  # h at every step, for the backward
    ctx.save_for_backward(hs, cs, gates, cf, h0, c0, w_hh, w_hr, peephole, rmask, keep_h, keep_c, ln_ih, ln_hh, ln_c,
                          lengths, x, w_ih, b_ih, b_hh)  # fmt: skip
    ctx.reverse, ctx.coupled, ctx.has_bias, ctx.project = reverse, coupled, b_hh is not None, project
    ctx.set_materialize_grads(False)  # the unused outputs' gradients stay None, not zero-filled (T, B, n) tensors


def _backward(ctx, d_out, d_h_n, d_c_n, d_hs, d_cs, d_gates, d_cf):
    (hs, cs, gates, cf, h0, c0, w_hh, w_hr, peephole, rmask, keep_h, keep_c, ln_ih, ln_hh, ln_c, lengths, x, w_ih,
     b_ih, b_hh) = ctx.saved_tensors  # fmt: skip
    if torch.is_grad_enabled() and x is not None:  # create_graph: differentiable gradients
        def pairs(output, final, trace):
            i, f, g, o, cell, _ = trace
            d_trace = None if d_gates is None else d_gates[..., : 4 * c0.shape[1]]  # layer norm saves more
            return [(output, d_out), (final[0], d_h_n), (final[1], d_c_n), (cell, d_cs),
                    (torch.cat([i, f, g, o], dim=2), d_trace)]  # fmt: skip

        if ln_hh is not None:
            step = functools.partial(ln_lstm_step, bias_ih=ln_ih[1] if len(ln_ih) == 2 else None, gain_ih=ln_ih[0],
                                     gain_hh=ln_hh, gain_c=ln_c[0], bias_c=ln_c[1], recurrent_mask=rmask)  # fmt: skip
        else:
            step = functools.partial(lstm_step, peephole=_peephole_tuple(peephole, ctx.coupled), coupled=ctx.coupled,
                                     recurrent_mask=rmask)  # fmt: skip
        inputs = (x, w_ih, b_ih, (h0, c0), w_hh, b_hh, w_hr, lengths)
        d_x, d_w_ih, d_b_ih, d_h0, d_c0, d_w_hh, d_b_hh, d_w_hr, d_peephole, d_ln_ih, d_ln_hh, d_ln_c = (
            grads_by_recompute("LSTM", ctx.reverse, inputs, pairs, step=step, zoneout=reference_zoneout(keep_h, keep_c),
                               extra=(peephole, ln_ih, ln_hh, ln_c))
        )  # fmt: skip
        return (None, d_h0, d_c0, d_w_hh, d_b_hh, d_w_hr, None, None, None, d_peephole, None, None, None, None,
                d_ln_ih, d_ln_hh, d_ln_c, d_x, d_w_ih, d_b_ih, None, None)  # fmt: skip
    d_xw, d_h0, d_c0, d_w_hh, d_b_hh, d_w_hr, d_peephole, d_ln_hh, d_ln_c = lstm_backward(
        d_out, zeros_if_none(d_h_n, h0), zeros_if_none(d_c_n, c0), d_gates, d_cs, hs, cs, gates, cf, h0, c0, w_hh,
        w_hr, peephole, ctx.coupled, rmask, keep_h, keep_c, ln_hh, ln_c, b_hh, lengths, ctx.reverse,
    )  # fmt: skip
    ln = ln_hh is not None  # ln_ih's gradient reaches it through xw, which it normalized
    d_input, d_w_ih, d_b_ih = d_xw, None, None
    if ctx.project:  # xw held x, projected in the loop: xw's gradient goes on to x, W_ih and b_ih
        needs = ctx.needs_input_grad
        d_input, d_w_ih, d_b_ih = projection_grads((needs[0], needs[18], needs[19]), d_xw, x, w_ih, b_ih)
    return (d_input, d_h0, d_c0, d_w_hh, d_b_hh if ctx.has_bias else None, d_w_hr if w_hr is not None else None,
            None, None, None, d_peephole if peephole is not None else None, None, None, None, None,
            None, d_ln_hh if ln else None, d_ln_c if ln else None, None, d_w_ih, d_b_ih, None, None)  # fmt: skip


register_autograd(lstm_forward, _backward, _setup_context)
forbid_double_backward(lstm_backward)


def _peephole_tuple(peephole, coupled):
    """``(w_ci, w_cf, w_co)`` as :func:`~gatedrnn.cells.lstm.lstm_step` takes them, or None."""
    if peephole is None:
        return None
    w_ci, w_cf, w_co = peephole.unbind(0)
    return (None if coupled else w_ci, w_cf, w_co)


def run(xw, state, w_hh, b_hh, w_hr, lengths, reverse, save, want_trace, x=None, w_ih=None, b_ih=None, *,
        peephole=None, coupled=False, rmask=None, keep=(None, None), layer_norm=None, project=False):  # fmt: skip
    """Output (T, B, P), final (h, c), and the trace values when ``want_trace``. ``peephole``
    is ``(w_ci, w_cf, w_co)`` (``w_ci`` None when coupled); ``keep`` the zoneout of h and c;
    ``layer_norm`` the keywords :func:`~gatedrnn.cells.layernorm.ln_lstm_step` binds (``xw``
    then comes without ``b_ih``, which is added after the input side's norm here); ``project``:
    ``xw`` is the input x, projected in the loop (not with layer norm where activations are kept)."""
    h0, c0 = state
    if peephole is not None:
        w_ci, w_cf, w_co = peephole
        peephole = torch.stack([torch.zeros_like(w_cf) if w_ci is None else w_ci, w_cf, w_co])
    ln_ih = ln_hh = ln_c = None
    if layer_norm is not None:
        xw, ln_ih = normalize_input(xw, layer_norm["gain_ih"], layer_norm["bias_ih"], in_loop=not save)
        ln_hh, ln_c = layer_norm["gain_hh"], torch.stack([layer_norm["gain_c"], layer_norm["bias_c"]])
    out, h_n, c_n, _, cs, gates, _ = lstm_forward(xw, h0, c0, w_hh, b_hh, w_hr, lengths, reverse, save, peephole,
                                                  coupled, rmask, *keep, ln_ih, ln_hh, ln_c, x, w_ih, b_ih,
                                                  raw_input=layer_norm is not None and not save,
                                                  project=project)  # fmt: skip
    if not want_trace:
        return out, (h_n, c_n), None
    gates, cs = gates.to(out.dtype), cs.to(out.dtype)
    i, f, g, o = gates[..., : 4 * c0.shape[1]].chunk(4, dim=2)  # (T, B, H) each: the kernel saved them anyway
    cell = cs if lengths is None else torch.where(valid_steps(lengths, xw.shape[0], xw.device), cs, 0.0)
    return out, (h_n, c_n), (i, f, g, o, cell, out)


def normalize_input(xw, gain_ih, bias_ih, in_loop=False):
    """The layer-norm cells' input side for all steps at once, ``γ_x LN(W_ih x) + b_ih``, and
    ``(γ_x[, b_ih])`` stacked as the ops take them (to rebuild the step, or, ``in_loop``, for
    the loop to normalize each row of ``xw`` itself: ``xw`` then comes back as it is)."""
    stacked = gain_ih[None] if bias_ih is None else torch.stack([gain_ih, bias_ih])
    if in_loop:
        return xw, stacked
    return F.layer_norm(xw, xw.shape[-1:], gain_ih, bias_ih, eps=1e-5), stacked  # + b_ih inside: no pass of its own
