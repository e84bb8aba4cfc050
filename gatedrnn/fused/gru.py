"""The fused one-state gated cells: the native time loop of ``csrc/loop.h`` with the gate
math of ``csrc/gru.cpp`` (or its Python twin in ``loops.py``) as torch.library custom ops with
the hand-written backward through time registered as their autograd formula.

``form`` picks the cell: ``0`` torch's GRU (reset after the recurrent product), ``1`` Cho et
al.'s original GRU (``reset_after=False``), ``2`` the MGU. ``rmask`` (B, H) is the recurrent
dropout mask, ``keep_h`` (T, B, H) the zoneout mask (one value in eval). Layer norm (torch's
form only): ``ln_hh`` (3H) the recurrent product's gain (``xw`` then comes normalized, ``b_hh``
is added after the norm), ``ln_ih`` (1 or 2, 3H) the input side's gain and bias, used only to
rebuild the step for double backward.

float16 and bfloat16 are computed in float32, and ``x, w_ih, b_ih`` are inputs for double
backward only, as in :mod:`gatedrnn.fused.lstm`."""

from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from gatedrnn.cells.gru import gru_step
from gatedrnn.cells.layernorm import ln_gru_step
from gatedrnn.cells.mgu import mgu_step
from gatedrnn.fused._native import kernels
from gatedrnn.fused._ops import (call_kernel, compute_dtype, forbid_double_backward, grads_by_recompute,
                                 projection_grads, reference_zoneout, register_autograd, zeros_if_none)  # fmt: skip
from gatedrnn.fused.lstm import normalize_input

FORMS = {"GRU": 0, "GRU_reset_before": 1, "MGU": 2}
_SAVED = {0: 4, 1: 4, 2: 3}  # saved activations per step, in units of H (layer norm: 7H + 1)


@torch.library.custom_op("gatedrnn::gru_forward", mutates_args=())
def gru_forward(
    xw: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
    save: bool, form: int = 0, rmask: Optional[Tensor] = None, keep_h: Optional[Tensor] = None,
    ln_ih: Optional[Tensor] = None, ln_hh: Optional[Tensor] = None, x: Optional[Tensor] = None,
    w_ih: Optional[Tensor] = None, b_ih: Optional[Tensor] = None, raw_input: bool = False, project: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(out, h_n, hs, act); see ``csrc/gru.cpp``. ``raw_input`` (inference, layer norm): ``xw``
    comes without the input side's norm, which the loop applies with ``ln_ih``. ``project``:
    ``xw`` holds the input x (T, B, I) and the loop projects each step's rows with ``w_ih`` and
    ``b_ih`` itself (``csrc/input.h``)."""
    dtype = compute_dtype(xw, h0, w_hh)
    out, h_n, hs, act = call_kernel(kernels(xw.device).gru_forward, dtype, xw, h0, w_hh, b_hh, form, rmask, keep_h,
                                    ln_hh, ln_ih if raw_input else None, lengths, reverse, save,
                                    *((w_ih, b_ih) if project else (None, None)))  # fmt: skip
    result = torch.promote_types(xw.dtype, h0.dtype)
    if save and lengths is None and result != dtype:
        hs = out  # the backward reads each h at the compute precision, not the output's
    return out.to(result), h_n.to(result), hs, act


@gru_forward.register_fake
def _(xw, h0, w_hh, b_hh, lengths, reverse, save, form=0, rmask=None, keep_h=None, ln_ih=None, ln_hh=None, x=None,
      w_ih=None, b_ih=None, raw_input=False, project=False):  # fmt: skip
    T, B, _ = xw.shape
    H = h0.shape[1]
    result, dtype = torch.promote_types(xw.dtype, h0.dtype), compute_dtype(xw, h0, w_hh)
    new = lambda *shape: xw.new_empty(shape, dtype=dtype)  # noqa: E731
    return (
        xw.new_empty(T, B, H, dtype=result), xw.new_empty(B, H, dtype=result),
        new(T, B, H) if save and (lengths is not None or result != dtype) else new(0),
        new(T, B, _SAVED[form] * H if ln_hh is None else 7 * H + 1) if save else new(0),
    )  # fmt: skip


@torch.library.custom_op("gatedrnn::gru_backward", mutates_args=())
def gru_backward(
    d_out: Optional[Tensor], d_h_n: Tensor, d_act: Optional[Tensor], hs: Tensor, act: Tensor, h0: Tensor,
    w_hh: Tensor, b_hh: Optional[Tensor], form: int, rmask: Optional[Tensor], keep_h: Optional[Tensor],
    ln_hh: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d_xw, d_h0, d_w_hh, d_b_hh, d_ln_hh) in the saved activations' dtype; see ``csrc/gru.cpp``."""
    return tuple(call_kernel(kernels(act.device).gru_backward, act.dtype, d_out, d_h_n, d_act, hs, act, h0, w_hh,
                             b_hh, form, rmask, keep_h, ln_hh, lengths, reverse))  # fmt: skip


@gru_backward.register_fake
def _(d_out, d_h_n, d_act, hs, act, h0, w_hh, b_hh, form, rmask, keep_h, ln_hh, lengths, reverse):
    new = act.new_empty
    T, B, _ = act.shape
    return (new(T, B, w_hh.shape[0]), new(h0.shape), new(w_hh.shape), new(w_hh.shape[0]),
            new(ln_hh.shape) if ln_hh is not None else new(0))  # fmt: skip


def _setup_context(ctx, inputs, output):
    xw, h0, w_hh, b_hh, lengths, reverse, save, form, rmask, keep_h, ln_ih, ln_hh, x, w_ih, b_ih, _, project = inputs
    out, h_n, hs, act = output
    hs = hs if lengths is not None or hs.dtype != out.dtype else out  # h at every step, for the backward
    ctx.save_for_backward(hs, act, h0, w_hh, rmask, keep_h, ln_ih, ln_hh, lengths, x, w_ih, b_ih, b_hh)
    ctx.reverse, ctx.form, ctx.has_bias, ctx.project = reverse, form, b_hh is not None, project
    ctx.set_materialize_grads(False)  # the unused outputs' gradients stay None, not zero-filled (T, B, n) tensors


def _backward(ctx, d_out, d_h_n, d_hs, d_act):
    hs, act, h0, w_hh, rmask, keep_h, ln_ih, ln_hh, lengths, x, w_ih, b_ih, b_hh = ctx.saved_tensors
    if torch.is_grad_enabled() and x is not None:  # create_graph: differentiable gradients
        H = h0.shape[1]
        gates = 2 if ctx.form == 2 else 3

        def pairs(output, final, trace):
            d_trace = None if d_act is None else d_act[..., : gates * H]  # the saved extras are no trace values
            return [(output, d_out), (final[0], d_h_n), (torch.cat(trace[:gates], dim=2), d_trace)]

        mode = "MGU" if ctx.form == 2 else "GRU"
        if ln_hh is not None:
            step = functools.partial(ln_gru_step, bias_ih=ln_ih[1] if len(ln_ih) == 2 else None, gain_ih=ln_ih[0],
                                     gain_hh=ln_hh, recurrent_mask=rmask)  # fmt: skip
        else:
            step = step_of(ctx.form, rmask)
        inputs = (x, w_ih, b_ih, (h0,), w_hh, b_hh, None, lengths)
        d_x, d_w_ih, d_b_ih, d_h0, d_w_hh, d_b_hh, _, d_ln_ih, d_ln_hh = grads_by_recompute(
            mode, ctx.reverse, inputs, pairs, step=step, zoneout=reference_zoneout(keep_h), extra=(ln_ih, ln_hh)
        )  # fmt: skip
        return (None, d_h0, d_w_hh, d_b_hh, None, None, None, None, None, None, d_ln_ih, d_ln_hh, d_x, d_w_ih, d_b_ih,
                None, None)  # fmt: skip
    d_xw, d_h0, d_w_hh, d_b_hh, d_ln_hh = gru_backward(
        d_out, zeros_if_none(d_h_n, h0), d_act, hs, act, h0, w_hh, b_hh, ctx.form, rmask, keep_h, ln_hh, lengths,
        ctx.reverse,
    )  # fmt: skip
    d_ln_hh = d_ln_hh if ln_hh is not None else None  # ln_ih's gradient reaches it through xw
    d_input, d_w_ih, d_b_ih = d_xw, None, None
    if ctx.project:  # xw held x, projected in the loop: xw's gradient goes on to x, W_ih and b_ih
        needs = ctx.needs_input_grad
        d_input, d_w_ih, d_b_ih = projection_grads((needs[0], needs[13], needs[14]), d_xw, x, w_ih, b_ih)
    return (d_input, d_h0, d_w_hh, d_b_hh if ctx.has_bias else None, None, None, None, None, None, None, None,
            d_ln_hh, None, d_w_ih, d_b_ih, None, None)  # fmt: skip


register_autograd(gru_forward, _backward, _setup_context)
forbid_double_backward(gru_backward)


def step_of(form: int, rmask):
    """The reference step of a form, the recurrent dropout mask bound in."""
    step = {0: gru_step, 1: functools.partial(gru_step, reset_after=False), 2: mgu_step}[form]
    return functools.partial(step, recurrent_mask=rmask)


def run(xw, state, w_hh, b_hh, w_hr, lengths, reverse, save, want_trace, x=None, w_ih=None, b_ih=None, *,
        form=0, rmask=None, keep=(None,), layer_norm=None, project=False):  # fmt: skip
    """Output (T, B, H), final (h,), and the trace values when ``want_trace``: r, z, n, h
    (f, n, h for the MGU). ``layer_norm``: the keywords
    :func:`~gatedrnn.cells.layernorm.ln_gru_step` binds (``xw`` then comes without ``b_ih``).
    ``project``: ``xw`` is the input x, projected in the loop (not with layer norm where activations
    are kept)."""
    (h0,) = state
    ln_ih = ln_hh = None
    if layer_norm is not None:
        xw, ln_ih = normalize_input(xw, layer_norm["gain_ih"], layer_norm["bias_ih"], in_loop=not save)
        ln_hh = layer_norm["gain_hh"]
    out, h_n, _, act = gru_forward(xw, h0, w_hh, b_hh, lengths, reverse, save, form, rmask, *keep, ln_ih, ln_hh, x,
                                   w_ih, b_ih, raw_input=layer_norm is not None and not save,
                                   project=project)  # fmt: skip
    if not want_trace:
        return out, (h_n,), None
    gates = act.to(out.dtype).split(h0.shape[1], dim=2)[: 2 if form == 2 else 3]  # (T, B, H) each
    return out, (h_n,), (*gates, out)
