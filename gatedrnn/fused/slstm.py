"""The fused sLSTM: the native time loop of ``csrc/loop.h`` with the sLSTM's gate math of
``csrc/slstm.cpp`` (or its Python twin in :mod:`gatedrnn.fused.slstm_loop`) as torch.library
custom ops, its hand-written backward through time registered as their autograd formula, and
fake implementations so torch.compile traces through it.

Beck et al., "xLSTM: Extended Long Short-Term Memory", NeurIPS 2024, section 2.2 (eqs. 8-17);
the specification is :func:`gatedrnn.cells.slstm.slstm_step`.

How the cell rides the loop the LSTM runs in: the block-diagonal recurrent matrix ``R``
(heads, 4d, d) enters as its dense ``(4H, H)`` matrix (:func:`~gatedrnn.cells.slstm.block_diagonal`),
so each step's recurrent product is one GEMM of ``torch.nn.LSTM``'s size; autograd through
``block_diagonal`` takes ``R``'s gradient as the dense gradient's diagonal blocks. The three
states ``c, n, m`` travel as one ``(B, 3H)`` state ``s = [c; n; m]`` (the loop's second state).

float16 and bfloat16 tensors are computed in float32 (outputs come back in the inputs' dtype).
Double backward (``create_graph=True``) differentiates the reference step's loop, rebuilt
from the op's saved inputs.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from gatedrnn import _checks
from gatedrnn.cells.slstm import FORGET, block_diagonal, slstm_step
from gatedrnn.fused import slstm_loop
from gatedrnn.fused._native import kernels
from gatedrnn.fused._ops import (call_kernel, compute_dtype, differentiable_grads, forbid_double_backward,
                                 register_autograd, zeros_if_none)  # fmt: skip

__all__ = ["slstm_sequence"]


def _loops(device):
    """The module holding ``slstm_forward`` and ``slstm_backward`` for tensors on ``device``: the
    native loops where they are built, else :mod:`gatedrnn.fused.slstm_loop`."""
    module = kernels(device)
    return module if hasattr(module, "slstm_forward") else slstm_loop


@torch.library.custom_op("gatedrnn::slstm_forward", mutates_args=())
def slstm_forward(
    xw: Tensor, h0: Tensor, s0: Tensor, w_hh: Tensor, b_hh: Optional[Tensor], lengths: Optional[Tensor],
    reverse: bool, save: bool, exp_forget: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(out, h_n, s_n, hs, ss, act); see ``csrc/slstm.cpp``. ``s0`` (B, 3H) is ``[c0; n0; m0]``,
    ``w_hh`` (4H, H) the block-diagonal ``R`` as a dense matrix."""
    dtype = compute_dtype(xw, h0, s0, w_hh)
    out, h_n, s_n, hs, ss, act = call_kernel(
        _loops(xw.device).slstm_forward, dtype, xw, h0, s0, w_hh, b_hh, lengths, reverse, save, exp_forget
    )
    result = torch.promote_types(xw.dtype, h0.dtype)
    if save and lengths is None and result != dtype:
        hs = out  # the backward reads each h at the compute precision, not the output's
    return out.to(result), h_n.to(result), s_n.to(result), hs, ss, act


@slstm_forward.register_fake
def _(xw, h0, s0, w_hh, b_hh, lengths, reverse, save, exp_forget):
    T, B, _ = xw.shape
    H = h0.shape[1]
    result, dtype = torch.promote_types(xw.dtype, h0.dtype), compute_dtype(xw, h0, s0, w_hh)
    new = lambda *shape: xw.new_empty(shape, dtype=dtype)
    return (
        xw.new_empty(T, B, H, dtype=result), xw.new_empty(B, H, dtype=result), xw.new_empty(B, 3 * H, dtype=result),
        new(T, B, H) if save and (lengths is not None or result != dtype) else new(0),
        new(T, B, 3 * H) if save else new(0), new(T, B, 6 * H) if save else new(0),
    )  # fmt: skip


@torch.library.custom_op("gatedrnn::slstm_backward", mutates_args=())
def slstm_backward(
    d_out: Optional[Tensor], d_h_n: Tensor, d_s_n: Tensor, d_act: Optional[Tensor], d_ss: Optional[Tensor],
    hs: Tensor, ss: Tensor, act: Tensor, h0: Tensor, s0: Tensor, w_hh: Tensor, lengths: Optional[Tensor],
    reverse: bool, exp_forget: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(d_xw, d_h0, d_s0, d_w_hh, d_b_hh) in the saved activations' dtype; see ``csrc/slstm.cpp``."""
    return tuple(call_kernel(
        _loops(act.device).slstm_backward, act.dtype, d_out, d_h_n, d_s_n, d_act, d_ss, hs, ss, act, h0, s0, w_hh,
        lengths, reverse, exp_forget,
    ))  # fmt: skip


@slstm_backward.register_fake
def _(d_out, d_h_n, d_s_n, d_act, d_ss, hs, ss, act, h0, s0, w_hh, lengths, reverse, exp_forget):
    new = act.new_empty
    T, B, _ = act.shape
    return new(T, B, w_hh.shape[0]), new(h0.shape), new(s0.shape), new(w_hh.shape), new(w_hh.shape[0])


def _setup_context(ctx, inputs, output):
    xw, h0, s0, w_hh, b_hh, lengths, reverse, _, exp_forget = inputs
    out, _, _, hs, ss, act = output
    hs = hs if lengths is not None or hs.dtype != out.dtype else out  # h at every step, for the backward
    ctx.save_for_backward(hs, ss, act, xw, h0, s0, w_hh, b_hh, lengths)
    ctx.reverse, ctx.exp_forget, ctx.has_bias = reverse, exp_forget, b_hh is not None
    # the unused outputs' gradients stay None, not zero-filled (T, B, n) tensors
    ctx.set_materialize_grads(False)


def _backward(ctx, d_out, d_h_n, d_s_n, d_hs, d_ss, d_act):
    hs, ss, act, xw, h0, s0, w_hh, b_hh, lengths = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: differentiable gradients, from the reference loop
        return _grads_by_recompute(ctx, (xw, h0, s0, w_hh, b_hh, lengths), d_out, d_h_n, d_s_n, d_ss, d_act)
    d_xw, d_h0, d_s0, d_w_hh, d_b_hh = slstm_backward(
        d_out, zeros_if_none(d_h_n, h0), zeros_if_none(d_s_n, s0), d_act, d_ss, hs, ss, act, h0, s0, w_hh, lengths,
        ctx.reverse, ctx.exp_forget,
    )  # fmt: skip
    return d_xw, d_h0, d_s0, d_w_hh, d_b_hh if ctx.has_bias else None, None, None, None, None


register_autograd(slstm_forward, _backward, _setup_context)
forbid_double_backward(slstm_backward)


def reference_loop(xw, h0, s0, w_hh, b_hh, lengths, reverse, exp_forget):
    """The op's outputs ``(out, h_n, s_n, ss, act)`` (``act`` the four gates only, (T, B, 4H))
    from :func:`~gatedrnn.cells.slstm.slstm_step` step by step, differentiable by autograd: the
    dense ``w_hh`` (4H, H) is one head's ``R``, ``(1, 4H, H)``."""
    T = xw.shape[0]
    forget = "exp" if exp_forget else "sigmoid"
    valid = None if lengths is None else torch.arange(T)[:, None] < lengths[None, :]  # (T, B)
    state = (h0, *s0.chunk(3, dim=1))
    outs, carried, gates = [None] * T, [None] * T, [None] * T
    for t in range(T - 1, -1, -1) if reverse else range(T):
        new, (i, f, z, o, *_) = slstm_step(xw[t], state, w_hh[None], b_hh, forget=forget)
        act = torch.cat([i, f, z, o], dim=1)
        if valid is not None:  # past a sequence's end: carried, outputs and activations zero
            keep = valid[t, :, None].to(xw.device)
            new = tuple(torch.where(keep, a, b) for a, b in zip(new, state))
            act = torch.where(keep, act, 0.0)
            outs[t] = torch.where(keep, new[0], 0.0)
        else:
            outs[t] = new[0]
        state = new
        carried[t], gates[t] = torch.cat(state[1:], dim=1), act
    return torch.stack(outs), state[0], torch.cat(state[1:], dim=1), torch.stack(carried), torch.stack(gates)


def _grads_by_recompute(ctx, inputs, d_out, d_h_n, d_s_n, d_ss, d_act):
    """The op's first-order gradients as differentiable tensors (double backward): the
    reference loop rebuilt from the saved inputs, differentiated with ``create_graph``."""
    xw, h0, s0, w_hh, b_hh, lengths = inputs
    H = h0.shape[1]
    with torch.enable_grad():
        out, h_n, s_n, ss, act = reference_loop(xw, h0, s0, w_hh, b_hh, lengths, ctx.reverse, ctx.exp_forget)
        d_gates = None if d_act is None else d_act[..., : 4 * H]
        pairs = [(v, g) for v, g in ((out, d_out), (h_n, d_h_n), (s_n, d_s_n), (ss, d_ss), (act, d_gates))
                 if g is not None]  # fmt: skip
        return (*differentiable_grads(pairs, [xw, h0, s0, w_hh, b_hh]), None, None, None, None)


def _float_like(name, value, xw):
    """A floating-point tensor on ``xw``'s device (dtypes may differ: the ops compute in their
    common precision, half types in float32)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise _checks.DTypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if value.device != xw.device:
        raise _checks.DeviceError(f"{name} is on device {value.device}, but xw is on {xw.device}")


def slstm_sequence(xw, h0, c0, n0, m0, weight_hh, bias_hh, *, forget="sigmoid", lengths=None, reverse=False,
                   want_acts=False):  # fmt: skip
    r"""The sLSTM over a whole sequence, one layer and direction, from the input projections.

    Per step (Beck et al. 2024, eqs. 8-17), with ``a = xw_t + R h_{t-1} + b_hh`` split into
    ``ĩ, f̃, z̃, õ`` and ``R`` block-diagonal over the heads:

    .. math::

        m_t &= \max(\log f_t + m_{t-1},\ \tilde\imath_t), \quad \log f_t = \log\sigma(\tilde f_t)
               \text{ or } \tilde f_t \\
        i'_t &= \exp(\tilde\imath_t - m_t), \quad f'_t = \exp(\log f_t + m_{t-1} - m_t) \\
        c_t &= f'_t c_{t-1} + i'_t \tanh(\tilde z_t), \quad n_t = f'_t n_{t-1} + i'_t \\
        h_t &= \sigma(\tilde o_t) \odot c_t / n_t

    A state with ``n_{t-1} = 0`` is empty: there ``m_t = ĩ_t`` and ``f'_t = 0``.

    Args:
        xw (Tensor): ``(T, B, 4H)`` time-major input projections ``W_ih x_t + b_ih``, blocks
            ``ĩ, f̃, z̃, õ``, head ``j``'s units at ``j*d:(j+1)*d`` inside each block.
        h0 (Tensor): ``(B, H)`` each, the initial states.
        c0 (Tensor): as ``h0``.
        n0 (Tensor): as ``h0``.
        m0 (Tensor): as ``h0``.
        weight_hh (Tensor): ``(heads, 4d, d)``, ``d = H / heads``; head ``j``'s rows ordered i, f, z, o.
        bias_hh (Tensor or None): ``(4H,)``.
        forget (str): ``"sigmoid"`` (``log f = log σ(f̃)``) or ``"exp"`` (``log f = f̃``).
        lengths (Tensor or None): ``(B,)`` integers in ``[1, T]``; past a sequence's end its
            state is carried, its outputs and activations are zero.
        reverse (bool): read the steps from the last to the first.
        want_acts (bool): also return the activations.

    Outputs:
        ``(out, h_n, c_n, n_n, m_n, acts)``: ``out`` ``(T, B, H)``, the final states ``(B, H)``
        each, ``acts`` ``(T, B, 8, H)`` in the order ``i', f', tanh(z̃), σ(õ), c, n, m, h``, or None.
        Everything is differentiable with respect to ``xw``, the four initial states,
        ``weight_hh`` and ``bias_hh`` (a hand-written backward through time).

    Examples:
        >>> T, B, H = 5, 2, 8
        >>> xw = torch.randn(T, B, 4 * H)
        >>> zeros = torch.zeros(B, H)
        >>> out, h, c, n, m, _ = slstm_sequence(xw, zeros, zeros, zeros, zeros, torch.randn(2, 16, 4), None)
        >>> out.shape, m.shape
        (torch.Size([5, 2, 8]), torch.Size([2, 8]))
    """
    if forget not in FORGET:
        raise ValueError(f"forget must be one of {', '.join(FORGET)}, got {forget!r}")
    _checks.boolean("reverse", reverse)
    _checks.boolean("want_acts", want_acts)
    if not isinstance(xw, torch.Tensor) or not xw.is_floating_point() or xw.dim() != 3:
        got = f"{tuple(xw.shape)} {xw.dtype}" if isinstance(xw, torch.Tensor) else type(xw).__name__
        raise _checks.ShapeError(f"xw must be a floating-point tensor (T, B, 4H), got {got}")
    if not isinstance(weight_hh, torch.Tensor) or weight_hh.dim() != 3:
        got = tuple(weight_hh.shape) if isinstance(weight_hh, torch.Tensor) else type(weight_hh).__name__
        raise _checks.ShapeError(f"weight_hh must have shape (heads, 4d, d), got {got}")
    T, B, _ = xw.shape
    K, _, d = weight_hh.shape
    H = K * d
    _checks.shape("weight_hh", weight_hh, (K, 4 * d, d), "(heads, 4d, d): 4d rows i, f, z, o of head size d")
    _checks.shape("xw", xw, (T, B, 4 * H), f"(T, B, 4H) with H = heads * d = {K} * {d} from weight_hh")
    for name, value in (("h0", h0), ("c0", c0), ("n0", n0), ("m0", m0)):
        _float_like(name, value, xw)
        _checks.shape(name, value, (B, H), "(B, H), one row per sequence")
    if bias_hh is not None:
        _float_like("bias_hh", bias_hh, xw)
        _checks.shape("bias_hh", bias_hh, (4 * H,), "(4H,)")
    _float_like("weight_hh", weight_hh, xw)
    lengths = None if lengths is None else _checks.lengths(lengths, T, B, xw.device)
    if lengths is not None:
        lengths = lengths.cpu()  # the loops read it on the CPU
    if T == 0:
        return xw.new_zeros(0, B, H), h0, c0, n0, m0, (xw.new_zeros(0, B, 8, H) if want_acts else None)
    w_hh = block_diagonal(weight_hh)  # (4H, H): one GEMM a step; autograd takes R's blocks of its gradient
    s0 = torch.cat([c0, n0, m0], dim=1)  # (B, 3H)
    # torch.jit.trace checks its graph by tracing again under no_grad: the graph must not depend on it
    needs_grad = (torch.is_grad_enabled() or torch.jit.is_tracing()) and any(
        t is not None and t.requires_grad for t in (xw, h0, s0, weight_hh, bias_hh)
    )
    save = want_acts or needs_grad  # keep the activations only for a backward or a trace
    out, h_n, s_n, _, ss, act = slstm_forward(
        xw, h0, s0, w_hh, bias_hh, lengths, reverse, save, forget == "exp"
    )
    c_n, n_n, m_n = s_n.chunk(3, dim=1)
    if not want_acts:
        return out, h_n, c_n, n_n, m_n, None
    if lengths is not None:  # the carried states past each end are no activations
        ss = torch.where((torch.arange(T)[:, None] < lengths[None, :])[..., None].to(ss.device), ss, 0.0)
    acts = torch.cat([act[..., : 4 * H].to(out.dtype), ss.to(out.dtype), out], dim=2)  # (T, B, 8H)
    return out, h_n, c_n, n_n, m_n, acts.view(T, B, 8, H)
