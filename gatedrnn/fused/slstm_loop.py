"""The sLSTM's time loop of ``csrc/slstm.cpp`` in Python, same signatures, same saved values and
same math: what :mod:`gatedrnn.fused.slstm` runs where the native loops cannot be built (and on
devices they do not serve).

The forward runs one recurrent GEMM (the block-diagonal ``R`` as its dense ``(4H, H)`` matrix)
and the gate math per step; the backward is derived by hand, its names ``d_`` plus the
forward's, and ends with one weight-gradient GEMM over all steps. The states ``c, n, m`` travel
as one ``(B, 3H)`` tensor ``s = [c; n; m]``; the saved activations per row are
``i', f', tanh(z~), sigmoid(o~), d log f / d f~, w`` (6H), ``w`` being the share of the
stabilizer's gradient that ``max`` sends to ``log f + m_{t-1}`` (1, 1/2 at a tie, 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _order(T, reverse):
    """(t, t_prev) in reading order; t_prev is None at the first step."""
    order = list(range(T - 1, -1, -1)) if reverse else list(range(T))
    return [(t, order[k - 1] if k else None) for k, t in enumerate(order)]


def _valid(lengths, T, like):
    """(T, B, 1) booleans: step t of row b is valid when t < lengths[b]; None when all are."""
    if lengths is None:
        return None
    return (torch.arange(T, device=lengths.device)[:, None] < lengths[None, :]).to(like.device)[..., None]


def _gates(a, s_prev, exp_forget):
    """One step's gate math from the pre-activations ``a`` (B, 4H) and ``s_prev`` (B, 3H):
    the new h, s and the saved activations (B, 6H)."""
    i_raw, f_raw, z_raw, o_raw = a.chunk(4, dim=1)  # 4 x (B, H)
    c_prev, n_prev, m_prev = s_prev.chunk(3, dim=1)
    if exp_forget:
        log_f, d_log_f = f_raw, torch.ones_like(f_raw)
    else:
        log_f, d_log_f = F.logsigmoid(f_raw), torch.sigmoid(-f_raw)  # eq. 13 and its derivative
    empty = n_prev == 0  # an empty state: m afresh from i~, f' = 0
    log_f_m = log_f + m_prev
    m = torch.where(empty, i_raw, torch.maximum(log_f_m, i_raw))  # eq. 15
    i = torch.exp(i_raw - m)  # eq. 16
    f = torch.where(empty, 0.0, torch.exp(log_f_m - m))  # eq. 17
    z, o = torch.tanh(z_raw), torch.sigmoid(o_raw)  # eqs. 11, 14
    c = f * c_prev + i * z  # eq. 8
    n = f * n_prev + i  # eq. 9
    h = o * (c / n)  # eq. 10
    w = torch.where(log_f_m > i_raw, 1.0, torch.where(log_f_m == i_raw, 0.5, 0.0))
    w = torch.where(empty, 0.0, w)
    return h, torch.cat([c, n, m], dim=1), torch.cat([i, f, z, o, d_log_f, w], dim=1)


def slstm_forward(xw, h0, s0, w_hh, b_hh, lengths, reverse, save, exp_forget):
    """(out, h_n, s_n, hs, ss, act); see ``csrc/slstm.cpp``."""
    T = xw.shape[0]
    valid = _valid(lengths, T, xw)
    w_t = w_hh.t()
    hs, ss, acts = [None] * T, [None] * T, [None] * T
    h, s = h0, s0
    for t, _ in _order(T, reverse):
        a = xw[t] + (h @ w_t if b_hh is None else torch.addmm(b_hh, h, w_t))  # (B, 4H)
        h_new, s_new, act = _gates(a, s, exp_forget)
        if valid is not None:  # past a sequence's end: carried, activations zero
            h_new = torch.where(valid[t], h_new, h)
            s_new = torch.where(valid[t], s_new, s)
            act = torch.where(valid[t], act, 0.0)
        h, s = h_new, s_new
        hs[t], ss[t], acts[t] = h, s, act
    hs_t = torch.stack(hs)  # (T, B, H)
    out = hs_t if valid is None else torch.where(valid, hs_t, 0.0)
    if not save:  # three tensors, not one three times: a custom op's outputs may not alias one another
        return out, h, s, xw.new_empty(0), xw.new_empty(0), xw.new_empty(0)
    return out, h, s, hs_t if valid is not None else xw.new_empty(0), torch.stack(ss), torch.stack(acts)


def slstm_backward(d_out, d_h_n, d_s_n, d_act, d_ss, hs, ss, act, h0, s0, w_hh, lengths, reverse, exp_forget):
    """(d_xw, d_h0, d_s0, d_w_hh, d_b_hh); see ``csrc/slstm.cpp``."""
    T, B, _ = act.shape
    H = h0.shape[1]
    valid = _valid(lengths, T, act)
    d_xw = act.new_empty(T, B, 4 * H)
    d_h, d_s = d_h_n.clone(), d_s_n.clone()
    for t, t_prev in reversed(_order(T, reverse)):
        s_prev = s0 if t_prev is None else ss[t_prev]
        if d_out is not None:
            d_h = d_h + (d_out[t] if valid is None else torch.where(valid[t], d_out[t], 0.0))
        if d_ss is not None:
            d_s = d_s + d_ss[t]
        i, f, z, o, d_log_f, w = act[t].chunk(6, dim=1)
        c, n, _ = ss[t].chunk(3, dim=1)
        c_prev, n_prev, _ = s_prev.chunk(3, dim=1)
        d_c_in, d_n_in, d_m_in = d_s.chunk(3, dim=1)
        q = c / n  # h = o q
        d_o = d_h * q
        d_q = d_h * o
        d_c = d_c_in + d_q / n
        d_n = d_n_in - d_q * q / n
        d_i, d_f, d_z = d_c * z + d_n, d_c * c_prev + d_n * n_prev, d_c * i
        if d_act is not None:
            tr_i, tr_f, tr_z, tr_o, _, _ = d_act[t].chunk(6, dim=1)
            d_i, d_f, d_z, d_o = d_i + tr_i, d_f + tr_f, d_z + tr_z, d_o + tr_o
        g_i, g_f = d_i * i, d_f * f  # through i' = exp(i~ - m), f' = exp(log f + m_{t-1} - m)
        d_m = d_m_in - g_i - g_f
        d_log_f_m = torch.where(n_prev == 0, 0.0, g_f + d_m * w)  # max(): w to log f + m_{t-1}, 1 - w to i~
        d_a = torch.cat(
            [g_i + d_m * (1 - w), d_log_f_m * d_log_f, d_z * (1 - z * z), d_o * o * (1 - o)], dim=1
        )
        d_s_prev = torch.cat([d_c * f, d_n * f, d_log_f_m], dim=1)
        d_h_prev = d_a @ w_hh  # (B, H)
        if valid is not None:  # no step here: the gradients pass unchanged
            d_a = torch.where(valid[t], d_a, 0.0)
            d_h_prev = torch.where(valid[t], d_h_prev, d_h)
            d_s_prev = torch.where(valid[t], d_s_prev, d_s)
        d_xw[t] = d_a
        d_h, d_s = d_h_prev, d_s_prev
    first = T - 1 if reverse else 0
    d_w = d_xw[first].t() @ h0
    if T > 1:
        later, before = (d_xw[:-1], hs[1:]) if reverse else (d_xw[1:], hs[:-1])
        d_w = d_w + later.reshape(-1, 4 * H).t() @ before.reshape(-1, H)
    return d_xw, d_h, d_s, d_w, d_xw.sum((0, 1))
