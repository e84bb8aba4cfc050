"""Layer-normalized LSTM and GRU steps.

Ba, Kiros & Hinton, "Layer Normalization", 2016, in the form of haste's LayerNormLSTM and
LayerNormGRU: the input and the recurrent pre-activations are normalized separately (over all
gate blocks together, with learned gains; the biases are added after), and the LSTM's cell
state is normalized (gain and bias) before its tanh:

    a_t = γ_x ⊙ LN(W_ih x_t) + γ_h ⊙ LN(W_hh h_{t-1}) + b_ih + b_hh
    LSTM: i, f, g, o from a_t as usual;  c_t = f ⊙ c_{t-1} + i ⊙ g;  h_t = o ⊙ tanh(γ_c ⊙ LN(c_t) + β_c)
    GRU:  r, z from a_t;  n_t = tanh(x-part of a_t + r ⊙ (h-part of a_t));  h_t = (1 - z) ⊙ n_t + z ⊙ h_{t-1}

The loop hands the step ``xw = W_ih x_t`` without its bias (the layer's ``weights`` give
``bias_ih = None`` for a layer-norm layer, and ``b_ih`` is bound into the step); the step adds
both biases after normalizing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _ln(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return F.layer_norm(x, gain.shape, gain, bias, eps=1e-5)  # gain: (F,), x: (B, F)


def ln_lstm_step(xw, state, weight_hh, bias_hh, weight_hr=None, *, bias_ih, gain_ih, gain_hh, gain_c, bias_c,
                 recurrent_mask=None):  # fmt: skip
    """One layer-norm LSTM step from ``xw = W_ih x_t`` (B, 4H): ``(h, c)`` and
    ``(i, f, g, o, c, h)``. ``bias_ih``/``bias_hh`` may be None (``bias=False``)."""
    h_prev, c_prev = state
    h_in = h_prev if recurrent_mask is None else h_prev * recurrent_mask
    a = _ln(xw, gain_ih) + _ln(F.linear(h_in, weight_hh), gain_hh)  # (B, 4H)
    for b in (bias_ih, bias_hh):
        a = a if b is None else a + b
    i, f, g, o = a.chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c_prev + i * g  # the cell state itself is not normalized: only what h reads of it
    h = o * torch.tanh(_ln(c, gain_c, bias_c))  # (B, H)
    if weight_hr is not None:
        h = F.linear(h, weight_hr)  # (B, P)
    return (h, c), (i, f, g, o, c, h)


def ln_gru_step(xw, state, weight_hh, bias_hh, weight_hr=None, *, bias_ih, gain_ih, gain_hh, recurrent_mask=None):
    """One layer-norm GRU step from ``xw = W_ih x_t`` (B, 3H): ``(h,)`` and ``(r, z, n, h)``."""
    (h_prev,) = state
    h_in = h_prev if recurrent_mask is None else h_prev * recurrent_mask
    a_x = _ln(xw, gain_ih) + (0 if bias_ih is None else bias_ih)  # (B, 3H)
    a_h = _ln(F.linear(h_in, weight_hh), gain_hh) + (0 if bias_hh is None else bias_hh)
    x_r, x_z, x_n = a_x.chunk(3, dim=1)
    h_r, h_z, h_n = a_h.chunk(3, dim=1)
    r = torch.sigmoid(x_r + h_r)  # reset gate
    z = torch.sigmoid(x_z + h_z)  # update gate
    n = torch.tanh(x_n + r * h_n)  # candidate, reset after (as torch and haste)
    h = (1 - z) * n + z * h_prev
    return (h,), (r, z, n, h)


# -- a layer-norm layer's own parameters (gatedrnn.LSTM / GRU with layer_norm=True) --------


def add_parameters(layer, sizes: dict, kw: dict) -> None:
    """Registers a layer-norm layer's gains and biases, ``layer_norm_{name}_l{k}[_reverse]`` of
    ``sizes[name] * H`` values, after torch's parameters (set by ``reset_parameters``)."""
    for k in range(layer.num_layers):
        for suffix in ("", "_reverse")[: layer.num_directions]:
            for name, blocks in sizes.items():
                setattr(layer, f"layer_norm_{name}_l{k}{suffix}",
                        nn.Parameter(torch.empty(blocks * layer.hidden_size, **kw)))  # fmt: skip


def reset_parameters(layer) -> None:
    """Gains to 1, biases to 0: layer normalization's initialization."""
    with torch.no_grad():
        for name, value in layer.named_parameters():
            if name.startswith("layer_norm_"):
                value.fill_(0.0 if "_bias_" in name else 1.0)


def loop_weights(layer, weights: tuple) -> tuple:
    """A layer-norm layer's weights for the loop: the loop's input projection takes no bias,
    since the step normalizes ``W_ih x`` first and adds ``b_ih`` (bound in it) and ``b_hh`` after."""
    if not getattr(layer, "layer_norm", False):
        return weights
    weight_ih, weight_hh, bias_ih, bias_hh, weight_hr = weights
    return weight_ih, weight_hh, None, bias_hh, weight_hr
