"""The fused path of the convolutional layers: frames and states kept channels last, so that
each pixel's gate pre-activations are one contiguous row, and the dense cells' gate math
(``csrc/lstm.cpp``, ``csrc/gru.cpp``, or their Python twins in ``loops.py``) run over those rows
as one pass per step, forward and backward, in place of a dozen elementwise ops on maps.

Per step the layer runs two convolutions, the input's and the recurrent one, channels last
(oneDNN's fast layout on a CPU: 5.5 ms against 15.5 ms in NCHW for 8 frames of 32 channels at
64×64 here), then the gate op. The input convolutions run per step, not as one over all
frames: that one's output (T·B frames of 4C maps) is written and read back from memory once
more, which cost more than it saved at 64×64. Convolutions are differentiated by autograd;
the gate ops carry their hand-written backward. Ballas et al.'s reset-before ConvGRU, whose
second convolution sits inside the gate math, runs the reference step on the same
channels-last tensors.

Double backward (``create_graph=True``) through the gate ops is not offered: they save the
gates, not the pre-activations it would need (``backend="reference"`` has it)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from gatedrnn.cells.conv import conv_gru_step
from gatedrnn.fused._native import kernels
from gatedrnn.fused._ops import call_kernel, compute_dtype, zeros_if_none

CHANNELS_LAST = torch.channels_last


def rows(maps: Tensor) -> Tensor:
    """(B, C, H, W) maps as (B·H·W, C) rows, one per pixel (a view when channels last)."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def maps(values: Tensor, like: Tensor) -> Tensor:
    """(B·H·W, C) rows back as (B, C, H, W) maps, channels last, shaped as ``like``'s frames."""
    B, _, H, W = like.shape
    return values.view(B, H, W, -1).permute(0, 3, 1, 2)


def _no_double_backward(what: str) -> None:
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"double backward (create_graph=True) through the fused {what} gate op is not supported: it saves the "
            f"gates, not the pre-activations; build the layer with backend='reference' for higher derivatives"
        )


# -- LSTM rows -----------------------------------------------------------------------------


@torch.library.custom_op("gatedrnn::lstm_rows", mutates_args=())
def lstm_rows(xg: Tensor, hg: Optional[Tensor], c_prev: Tensor, save: bool) -> tuple[Tensor, Tensor, Tensor]:
    """h, c (N, H) and, when ``save``, the gates i, f, g, o (N, 4H) from the pre-activations
    xg (+ hg when given) (N, 4H)."""
    dtype = compute_dtype(xg, c_prev)
    h, c, act = call_kernel(kernels(xg.device).lstm_rows_forward, dtype, xg, hg, c_prev, save)
    result = torch.promote_types(xg.dtype, c_prev.dtype)
    return h.to(result), c.to(result), act


@lstm_rows.register_fake
def _(xg, hg, c_prev, save):
    result, dtype = torch.promote_types(xg.dtype, c_prev.dtype), compute_dtype(xg, c_prev)
    return c_prev.new_empty(c_prev.shape, dtype=result), c_prev.new_empty(c_prev.shape, dtype=result), \
        xg.new_empty(xg.shape if save else (0,), dtype=dtype)  # fmt: skip


@torch.library.custom_op("gatedrnn::lstm_rows_backward", mutates_args=())
def lstm_rows_backward(d_h: Tensor, d_c: Tensor, d_act: Optional[Tensor], act: Tensor, c: Tensor,
                       c_prev: Tensor) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The pre-activations' gradient (N, 4H) and c_prev's (N, H)."""
    return tuple(call_kernel(kernels(act.device).lstm_rows_backward, act.dtype, d_h, d_c, d_act, act, c, c_prev))


@lstm_rows_backward.register_fake
def _(d_h, d_c, d_act, act, c, c_prev):
    return act.new_empty(act.shape), act.new_empty(c_prev.shape)


def _lstm_setup(ctx, inputs, output):
    xg, hg, c_prev, save = inputs
    _, c, act = output
    ctx.save_for_backward(act, c, c_prev)
    ctx.dtypes = xg.dtype, None if hg is None else hg.dtype, c_prev.dtype
    ctx.saved = save
    ctx.set_materialize_grads(False)  # an unused gate output's gradient stays None, not a zero-filled tensor


def _lstm_backward(ctx, d_h, d_c, d_act):
    _no_double_backward("ConvLSTM")
    if not ctx.saved:
        raise RuntimeError("gatedrnn::lstm_rows ran with save=False: it kept no gates to differentiate")
    act, c, c_prev = ctx.saved_tensors
    d_pre, d_c_prev = lstm_rows_backward(zeros_if_none(d_h, c), zeros_if_none(d_c, c), d_act, act, c, c_prev)
    xg_dtype, hg_dtype, c_dtype = ctx.dtypes
    return d_pre.to(xg_dtype), None if hg_dtype is None else d_pre.to(hg_dtype), d_c_prev.to(c_dtype), None


lstm_rows.register_autograd(_lstm_backward, setup_context=_lstm_setup)


# -- GRU rows ------------------------------------------------------------------------------


@torch.library.custom_op("gatedrnn::gru_rows", mutates_args=())
def gru_rows(xg: Tensor, hg: Tensor, h_prev: Tensor, save: bool) -> tuple[Tensor, Tensor]:
    """h (N, H) and, when ``save``, r, z, n and hg's n block (N, 4H) from xg, hg (N, 3H)
    (torch's GRU, reset after)."""
    dtype = compute_dtype(xg, hg, h_prev)
    h, act = call_kernel(kernels(xg.device).gru_rows_forward, dtype, xg, hg, h_prev, save)
    return h.to(torch.promote_types(xg.dtype, h_prev.dtype)), act


@gru_rows.register_fake
def _(xg, hg, h_prev, save):
    N, H = h_prev.shape
    return (h_prev.new_empty((N, H), dtype=torch.promote_types(xg.dtype, h_prev.dtype)),
            xg.new_empty((N, 4 * H) if save else (0,), dtype=compute_dtype(xg, hg, h_prev)))  # fmt: skip


@torch.library.custom_op("gatedrnn::gru_rows_backward", mutates_args=())
def gru_rows_backward(d_h: Tensor, d_act: Optional[Tensor], act: Tensor, h_prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """xg's (N, 3H), hg's (N, 3H) and h_prev's gradient other than through hg (N, H)."""
    return tuple(call_kernel(kernels(act.device).gru_rows_backward, act.dtype, d_h, d_act, act, h_prev))


@gru_rows_backward.register_fake
def _(d_h, d_act, act, h_prev):
    N, H = h_prev.shape
    return act.new_empty((N, 3 * H)), act.new_empty((N, 3 * H)), act.new_empty((N, H))


def _gru_setup(ctx, inputs, output):
    xg, hg, h_prev, save = inputs
    ctx.save_for_backward(output[1], h_prev)
    ctx.dtypes = xg.dtype, hg.dtype, h_prev.dtype
    ctx.saved = save
    ctx.set_materialize_grads(False)  # an unused gate output's gradient stays None, not a zero-filled tensor


def _gru_backward(ctx, d_h, d_act):
    _no_double_backward("ConvGRU")
    if not ctx.saved:
        raise RuntimeError("gatedrnn::gru_rows ran with save=False: it kept no gates to differentiate")
    act, h_prev = ctx.saved_tensors
    d_x, d_g, d_h_prev = gru_rows_backward(zeros_if_none(d_h, h_prev), d_act, act, h_prev)
    xg_dtype, hg_dtype, h_dtype = ctx.dtypes
    return d_x.to(xg_dtype), d_g.to(hg_dtype), d_h_prev.to(h_dtype), None


gru_rows.register_autograd(_gru_backward, setup_context=_gru_setup)


# -- the time loop ---------------------------------------------------------------------------


def run_layer(mode, x, state, weights, padding, masks, want_trace, reset_after=True):
    """One layer over time, as :meth:`gatedrnn.conv.ConvRNNBase._run_layer` returns it: the
    output (T, B, C, H, W), the final state and, when ``want_trace``, the step values
    ((i, f, g, o, c, h) or (r, z, n, h)) stacked over time.

    Without gradients the ConvLSTM's two convolutions run as one, of ``[x_t, h]`` with the two
    weights side by side: one pre-activation map written and read instead of two (inference
    at 32 channels, 64×64: 1.35× the baseline's time with two, 1.00× with one). With
    gradients they stay apart: the joint convolution's backward would compute x_t's gradient
    too, wanted or not (training 0.86–0.97× with two, 0.99–1.03× with one). The ConvGRU's stay
    apart, as its candidate needs the recurrent one alone."""
    weight_ih, weight_hh, bias_ih, bias_hh = weights
    state = tuple(s.contiguous(memory_format=CHANNELS_LAST) for s in state)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, *state, *weights)
    )  # fmt: skip
    save = needs_grad or want_trace
    C = state[0].shape[1]
    joint = mode == "LSTM" and not needs_grad
    if joint:
        weight = torch.cat([weight_ih, weight_hh], dim=1).contiguous(memory_format=CHANNELS_LAST)
        bias = None if bias_ih is None else bias_ih + bias_hh
    else:
        weight_ih = weight_ih.contiguous(memory_format=CHANNELS_LAST)
        weight_hh = weight_hh.contiguous(memory_format=CHANNELS_LAST)
    values = []
    for t in range(x.shape[0]):
        x_t = x[t].contiguous(memory_format=CHANNELS_LAST)
        if mode == "LSTM":
            if joint:
                pre, hg = F.conv2d(torch.cat([x_t, state[0]], dim=1), weight, bias, padding=padding), None
            else:
                pre = F.conv2d(x_t, weight_ih, bias_ih, padding=padding)
                hg = rows(F.conv2d(state[0], weight_hh, bias_hh, padding=padding))
            h, c, act = lstm_rows(rows(pre), hg, rows(state[1]), save)
            new_state = (maps(h, pre), maps(c, pre))
            v = (*maps(act, pre).split(C, dim=1), new_state[1], new_state[0]) if want_trace else new_state[:1]
        elif reset_after:
            xg = F.conv2d(x_t, weight_ih, bias_ih, padding=padding)
            hg = F.conv2d(state[0], weight_hh, bias_hh, padding=padding)
            h, act = gru_rows(rows(xg), rows(hg), rows(state[0]), save)
            new_state = (maps(h, xg),)
            v = (*maps(act, xg).split(C, dim=1)[:3], new_state[0]) if want_trace else new_state
        else:  # Ballas et al.'s: the second convolution inside the gate math
            xg = F.conv2d(x_t, weight_ih, bias_ih, padding=padding)
            new_state, v = conv_gru_step(xg, state, weight_hh, bias_hh, padding, reset_after=False)
        v = tuple(a.to(new_state[0].dtype) for a in v) if want_trace else v[-1:]
        if masks is not None:  # past a sequence's end: keep its state, output zeros
            new_state = tuple(torch.where(masks[t], new, old) for new, old in zip(new_state, state))
            v = tuple(torch.where(masks[t], a, 0.0) for a in v)
        state = new_state
        values.append(v)
    output = torch.stack([v[-1] for v in values])  # (T, B, C, H, W)
    trace = tuple(torch.stack(seq) for seq in zip(*values)) if want_trace else None
    return output, tuple(s.contiguous() for s in state), trace
