"""The time loops of ``csrc/*.cpp`` in Python, same signatures and same math: what the fused
backend runs where the native ones cannot be built (and on devices they do not serve).

Each forward takes the input projections ``xw = W_ih x + b_ih`` of all steps at once and runs
one recurrent GEMM and the pointwise gate math per step; each backward is derived by hand,
its names ``d_`` plus the forward's, and ends with one weight-gradient GEMM over all steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _steps(T, reverse):
    """(t, t_prev) in reading order; t_prev is None at the first step."""
    order = list(range(T - 1, -1, -1)) if reverse else list(range(T))
    return [(t, order[k - 1] if k else None) for k, t in enumerate(order)]


def _valid(lengths, T, like):
    """(T, B, 1) booleans: step t of row b is valid when t < lengths[b]; None when all are."""
    if lengths is None:
        return None
    return (torch.arange(T, device=lengths.device)[:, None] < lengths[None, :]).to(like.device)[..., None]


def _carry(valid, t, new, old):
    return new if valid is None else torch.where(valid[t], new, old)


def _zero_invalid(valid, t, value):
    return value if valid is None else torch.where(valid[t], value, torch.zeros((), dtype=value.dtype))


def _addmm(bias, a, w_t):
    return a @ w_t if bias is None else torch.addmm(bias, a, w_t)


def _empty(like):
    return like.new_empty(0)


def _plain_only(**variant):
    """The Python loops serve the plain cells; a variant or regularizer runs the reference loop
    instead (:func:`gatedrnn.fused.run_direction` sends it there), so reaching here is a defect."""
    given = [name for name, value in variant.items() if value is not None and value is not False and value != 0]
    if given:
        raise NotImplementedError(f"the Python loops have no {', '.join(given)}; the reference loop runs them")


def _projected(xw, w_ih, b_ih):
    """The input projections: ``xw`` itself, or ``W_ih x + b_ih`` when ``w_ih`` is given (``xw``
    then holds the input x, as the native loops take it to project in the loop)."""
    return xw if w_ih is None else F.linear(xw, w_ih, b_ih)


def _weight_grad(d_pre, hs, h0, reverse):
    """sum_t d_pre[t]^T h_prev[t], h_prev being h0 then the carried states before t."""
    T = d_pre.shape[0]
    first = T - 1 if reverse else 0
    d_w = d_pre[first].t() @ h0
    if T > 1:
        later, before = (d_pre[:-1], hs[1:]) if reverse else (d_pre[1:], hs[:-1])
        d_w = d_w + later.reshape(-1, later.shape[-1]).t() @ before.reshape(-1, before.shape[-1])
    return d_w


# -- LSTM ------------------------------------------------------------------------------


def lstm_forward(xw, h0, c0, w_hh, b_hh, w_hr, peephole, coupled, rmask, keep_h, keep_c, ln_hh, ln_c, ln_ih, lengths,
                 reverse, save, w_ih=None, b_ih=None):  # fmt: skip
    _plain_only(peephole=peephole, coupled=coupled, rmask=rmask, keep_h=keep_h, keep_c=keep_c, layer_norm=ln_hh)
    xw = _projected(xw, w_ih, b_ih)
    T = xw.shape[0]
    H = c0.shape[1]
    valid = _valid(lengths, T, xw)
    w_hh_t = w_hh.t()
    hs, cs, gates = [None] * T, [None] * T, [None] * T
    h, c = h0, c0
    for t, _ in _steps(T, reverse):
        a = xw[t] + _addmm(b_hh, h, w_hh_t)  # (B, 4H)
        i, f, o = (torch.sigmoid(a[:, k * H : (k + 1) * H]) for k in (0, 1, 3))
        g = torch.tanh(a[:, 2 * H : 3 * H])
        c_new = f * c + i * g
        h_new = o * torch.tanh(c_new)
        if w_hr is not None:
            h_new = h_new @ w_hr.t()
        h, c = _carry(valid, t, h_new, h), _carry(valid, t, c_new, c)
        hs[t], cs[t], gates[t] = h, c, _zero_invalid(valid, t, torch.cat([i, f, g, o], 1))
    hs = torch.stack(hs)
    out = hs if valid is None else torch.where(valid, hs, 0.0)
    h_n, c_n = h.clone(), c.clone()
    if not save:
        return out, h_n, c_n, _empty(xw), _empty(xw), _empty(xw), _empty(xw)
    return out, h_n, c_n, (hs if valid is not None else _empty(xw)), torch.stack(cs), torch.stack(gates), _empty(xw)


def lstm_backward(d_out, d_h_n, d_c_n, d_gates, d_cs, hs, cs, gates, cf, h0, c0, w_hh, w_hr, peephole, coupled, rmask,
                  keep_h, keep_c, ln_hh, ln_c, b_hh, lengths, reverse):  # fmt: skip
    _plain_only(peephole=peephole, coupled=coupled, rmask=rmask, keep_h=keep_h, keep_c=keep_c, layer_norm=ln_hh)
    T = gates.shape[0]
    H = cs.shape[2]
    valid = _valid(lengths, T, gates)
    d_xw = torch.empty_like(gates)
    d_hs = torch.zeros_like(hs) if w_hr is not None else None
    d_h, d_c = d_h_n.clone(), d_c_n.clone()
    for t, t_prev in reversed(_steps(T, reverse)):
        c_prev = c0 if t_prev is None else cs[t_prev]
        if d_out is not None:
            d_h = d_h + _zero_invalid(valid, t, d_out[t])
        d_m = d_h
        if w_hr is not None:
            d_hs[t] = _zero_invalid(valid, t, d_h)
            d_m = d_h @ w_hr
        i, f, g, o = gates[t].split(H, dim=1)
        tc = torch.tanh(cs[t])
        d_o = d_m * tc
        d_c_t = d_c + d_m * o * (1 - tc * tc)
        if d_cs is not None:
            d_c_t = d_c_t + d_cs[t]
        d_i, d_f, d_g = d_c_t * g, d_c_t * c_prev, d_c_t * i
        if d_gates is not None:
            dg_i, dg_f, dg_g, dg_o = d_gates[t].split(H, dim=1)
            d_i, d_f, d_g, d_o = d_i + dg_i, d_f + dg_f, d_g + dg_g, d_o + dg_o
        d_pre = torch.cat([d_i * i * (1 - i), d_f * f * (1 - f), d_g * (1 - g * g), d_o * o * (1 - o)], 1)
        d_xw[t] = _zero_invalid(valid, t, d_pre)
        d_c = _carry(valid, t, d_c_t * f, d_c if d_cs is None else d_c + d_cs[t])  # cs is carried past the end
        d_h = _carry(valid, t, d_xw[t] @ w_hh, d_h)
    hs_prev = hs
    d_w_hh = _weight_grad(d_xw, hs_prev, h0, reverse)
    d_w_hr = _empty(gates)
    if w_hr is not None:
        m = gates[..., 3 * H :] * torch.tanh(cs)  # o * tanh(c), (T, B, H)
        d_w_hr = d_hs.reshape(-1, d_hs.shape[-1]).t() @ m.reshape(-1, H)
    return d_xw, d_h, d_c, d_w_hh, d_xw.sum((0, 1)), d_w_hr, _empty(gates), _empty(gates), _empty(gates)


# -- GRU -------------------------------------------------------------------------------


def gru_forward(xw, h0, w_hh, b_hh, form, rmask, keep_h, ln_hh, ln_ih, lengths, reverse, save, w_ih=None, b_ih=None):
    _plain_only(form=form, rmask=rmask, keep_h=keep_h, layer_norm=ln_hh)
    xw = _projected(xw, w_ih, b_ih)
    T = xw.shape[0]
    H = h0.shape[1]
    valid = _valid(lengths, T, xw)
    w_hh_t = w_hh.t()
    hs, gates, hns = [None] * T, [None] * T, [None] * T
    h = h0
    for t, _ in _steps(T, reverse):
        x_r, x_z, x_n = xw[t].split(H, dim=1)
        h_r, h_z, h_n = _addmm(b_hh, h, w_hh_t).split(H, dim=1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        h = _carry(valid, t, (1 - z) * n + z * h, h)
        hs[t] = h
        gates[t] = _zero_invalid(valid, t, torch.cat([r, z, n], 1))
        hns[t] = _zero_invalid(valid, t, h_n)
    hs = torch.stack(hs)
    out = hs if valid is None else torch.where(valid, hs, 0.0)
    if not save:
        return out, h.clone(), _empty(xw), _empty(xw)
    act = torch.cat([torch.stack(gates), torch.stack(hns)], 2)  # r, z, n, W_hn h + b_hn
    return out, h.clone(), (hs if valid is not None else _empty(xw)), act


def gru_backward(d_out, d_h_n, d_act, hs, act, h0, w_hh, b_hh, form, rmask, keep_h, ln_hh, lengths, reverse):
    _plain_only(form=form, rmask=rmask, keep_h=keep_h, layer_norm=ln_hh)
    T = act.shape[0]
    H = hs.shape[2]
    gates, hn = act[..., : 3 * H], act[..., 3 * H :]
    d_gates = None if d_act is None else d_act[..., : 3 * H]
    valid = _valid(lengths, T, gates)
    d_xw, d_gh = torch.empty_like(gates), torch.empty_like(gates)
    d_h = d_h_n.clone()
    for t, t_prev in reversed(_steps(T, reverse)):
        h_prev = h0 if t_prev is None else hs[t_prev]
        r, z, n = gates[t].split(H, dim=1)
        d_h_t = d_h if d_out is None else d_h + d_out[t]
        d_n, d_z = d_h_t * (1 - z), d_h_t * (h_prev - n)
        d_r = 0
        if d_gates is not None:
            dg_r, dg_z, dg_n = d_gates[t].split(H, dim=1)
            d_r, d_z, d_n = dg_r, d_z + dg_z, d_n + dg_n
        d_an = d_n * (1 - n * n)
        d_r = d_r + d_an * hn[t]
        d_ar, d_az = d_r * r * (1 - r), d_z * z * (1 - z)
        d_xw[t] = _zero_invalid(valid, t, torch.cat([d_ar, d_az, d_an], 1))
        d_gh[t] = _zero_invalid(valid, t, torch.cat([d_ar, d_az, d_an * r], 1))
        d_h = _carry(valid, t, d_h_t * z + d_gh[t] @ w_hh, d_h)
    return d_xw, d_h, _weight_grad(d_gh, hs, h0, reverse), d_gh.sum((0, 1)), _empty(act)


# -- vanilla RNN -------------------------------------------------------------------------


def rnn_forward(xw, h0, w_hh, b_hh, relu, rmask, keep_h, lengths, reverse, save, w_ih=None, b_ih=None):
    _plain_only(rmask=rmask, keep_h=keep_h)
    xw = _projected(xw, w_ih, b_ih)
    T = xw.shape[0]
    valid = _valid(lengths, T, xw)
    w_hh_t = w_hh.t()
    act = torch.relu if relu else torch.tanh
    hs = [None] * T
    h = h0
    for t, _ in _steps(T, reverse):
        h = _carry(valid, t, act(xw[t] + _addmm(b_hh, h, w_hh_t)), h)
        hs[t] = h
    hs = torch.stack(hs)
    out = hs if valid is None else torch.where(valid, hs, 0.0)
    return out, h.clone(), (hs if (save and valid is not None) else _empty(xw)), _empty(xw)


def rnn_backward(d_out, d_h_n, hs, hf, h0, w_hh, relu, rmask, keep_h, lengths, reverse):
    _plain_only(rmask=rmask, keep_h=keep_h)
    T = hs.shape[0]
    valid = _valid(lengths, T, hs)
    d_xw = torch.empty_like(hs)
    d_h = d_h_n.clone()
    for t, _ in reversed(_steps(T, reverse)):
        d_h_t = d_h if d_out is None else d_h + d_out[t]
        h = hs[t]
        d_a = d_h_t * (h > 0) if relu else d_h_t * (1 - h * h)
        d_xw[t] = _zero_invalid(valid, t, d_a)
        d_h = _carry(valid, t, d_xw[t] @ w_hh, d_h)
    return d_xw, d_h, _weight_grad(d_xw, hs, h0, reverse), d_xw.sum((0, 1))


# -- the minimal cells' linear recurrence ------------------------------------------------


def linear_recurrence(a, b, h0, reverse):
    h, out = h0, [None] * a.shape[0]
    for t, _ in _steps(a.shape[0], reverse):
        h = a[t] * h + b[t]
        out[t] = h
    return [torch.stack(out)]


def min_gru_inference(xw, h0, reverse):
    k, x_n = xw.chunk(2, dim=-1)
    z = torch.sigmoid(k)
    cand = torch.where(x_n >= 0, x_n + 0.5, torch.sigmoid(x_n))
    return (linear_recurrence(1 - z, z * cand, h0, reverse)[0],)

# -- the gate math alone over rows (the convolutional layers' pixels) ---------------------


def lstm_rows_forward(xg, hg, c_prev, save):
    i, f, g, o = (xg if hg is None else xg + hg).chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c_prev + i * g
    return o * torch.tanh(c), c, torch.cat([i, f, g, o], 1) if save else _empty(xg)


def lstm_rows_backward(d_h, d_c, d_act, act, c, c_prev):
    i, f, g, o = act.chunk(4, dim=1)
    tc = torch.tanh(c)
    d_c = d_c + d_h * o * (1 - tc * tc)
    d_i, d_f, d_g, d_o = d_c * g, d_c * c_prev, d_c * i, d_h * tc
    if d_act is not None:
        dg_i, dg_f, dg_g, dg_o = d_act.chunk(4, dim=1)
        d_i, d_f, d_g, d_o = d_i + dg_i, d_f + dg_f, d_g + dg_g, d_o + dg_o
    d_pre = torch.cat([d_i * i * (1 - i), d_f * f * (1 - f), d_g * (1 - g * g), d_o * o * (1 - o)], 1)
    return d_pre, d_c * f


def gru_rows_forward(xg, hg, h_prev, save):
    x_r, x_z, x_n = xg.chunk(3, dim=1)
    h_r, h_z, h_n = hg.chunk(3, dim=1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h_prev, torch.cat([r, z, n, h_n], 1) if save else _empty(xg)


def gru_rows_backward(d_h, d_act, act, h_prev):
    r, z, n, h_n = act.chunk(4, dim=1)
    d_n, d_z, d_r = d_h * (1 - z), d_h * (h_prev - n), 0
    if d_act is not None:
        dg_r, dg_z, dg_n, _ = d_act.chunk(4, dim=1)
        d_r, d_z, d_n = dg_r, d_z + dg_z, d_n + dg_n
    d_an = d_n * (1 - n * n)
    d_r = d_r + d_an * h_n
    d_ar, d_az = d_r * r * (1 - r), d_z * z * (1 - z)
    return torch.cat([d_ar, d_az, d_an], 1), torch.cat([d_ar, d_az, d_an * r], 1), d_h * z
