"""The scalar-memory LSTM of xLSTM: exponential gating, a normalizer and a stabilizer.

Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter & Hochreiter,
"xLSTM: Extended Long Short-Term Memory", NeurIPS 2024, section 2.2 (eqs. 8-17).

This file is the specification: the readable step every faster path is tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FORGET = ("sigmoid", "exp")  # the forget gate's activation: the paper offers both (eq. 13)


def block_diagonal(weight_hh: torch.Tensor) -> torch.Tensor:
    """The recurrent weights ``(heads, 4d, d)`` as the dense ``(4H, H)`` matrix they stand for.

    Row ``g*H + j*d + r`` (gate ``g`` of i, f, z, o; head ``j``; unit ``r``) is head ``j``'s row
    ``g*d + r`` on the columns of head ``j``, zero elsewhere: the pre-activations come out
    gate-major, like ``weight_ih``'s rows and torch's LSTM.
    """
    K, four_d, d = weight_hh.shape  # heads, 4 * head size, head size
    blocks = weight_hh.reshape(K, 4, d, d).transpose(0, 1)  # (4, K, d, d): gate, head
    eye = torch.eye(K, dtype=weight_hh.dtype, device=weight_hh.device)
    dense = torch.einsum("gjrc,jk->gjrkc", blocks, eye)  # (4, K, d, K, d), zero off the head's block
    return dense.reshape(4 * K * d, K * d)


def recurrent_product(h: torch.Tensor, weight_hh: torch.Tensor) -> torch.Tensor:
    """``R h`` for the block-diagonal ``R``: one product per head. ``h`` (B, H) -> (B, 4H), gate-major."""
    B = h.shape[0]
    K, four_d, d = weight_hh.shape
    per_head = torch.einsum("bjc,jrc->bjr", h.reshape(B, K, d), weight_hh)  # (B, K, 4d)
    return per_head.reshape(B, K, 4, d).transpose(1, 2).reshape(B, 4 * K * d)  # (B, 4H): gate, head, unit


def slstm_step(xw, state, weight_hh, bias_hh=None, forget="sigmoid", recurrent_mask=None):
    """One sLSTM step, given the input projection ``xw = W_ih x_t + b_ih`` (B, 4H), blocks
    ``[i; f; z; o]``, each head's units contiguous inside a block.

    ``state`` is ``(h, c, n, m)``, each (B, H); ``weight_hh`` (heads, 4d, d) is the block-diagonal
    recurrent matrix ``R``, head ``j``'s rows ordered i, f, z, o; ``bias_hh`` (4H,). Returns the new
    state and the step's activations ``(i, f, z, o, c, n, m, h)``: the stabilized gates ``i'``
    and ``f'`` (the factors that enter ``c_t``), the candidate ``tanh(z~)``, the output gate
    ``sigmoid(o~)``, then the states.

    A state whose normalizer is zero holds nothing (the zero initial state): its stabilizer
    starts afresh at ``m_t = i~_t`` and its forget factor is zero, as the official package does
    for an all-zero state. Without this, an input gate of ``exp(-1e4)`` into an empty state
    would give ``h = 0 / 0``.
    """
    if forget not in FORGET:
        raise ValueError(f"forget must be one of {', '.join(FORGET)}, got {forget!r}")
    h_prev, c_prev, n_prev, m_prev = state
    h_in = h_prev if recurrent_mask is None else h_prev * recurrent_mask
    a = xw + recurrent_product(h_in, weight_hh)  # (B, 4H), eq. 14-17: W x + R h + b
    if bias_hh is not None:
        a = a + bias_hh
    i_raw, f_raw, z_raw, o_raw = a.chunk(4, dim=1)  # 4 x (B, H)
    log_f = F.logsigmoid(f_raw) if forget == "sigmoid" else f_raw  # eq. 13: log f_t
    empty = n_prev == 0
    log_f_m = torch.where(empty, float("-inf"), log_f + m_prev)  # log f_t + m_{t-1}
    m = torch.maximum(log_f_m, i_raw)  # eq. 15: the stabilizer
    i = torch.exp(i_raw - m)  # eq. 16: i'_t, at most 1
    f = torch.exp(log_f_m - m)  # eq. 17: f'_t, at most 1 (0 into an empty state)
    z = torch.tanh(z_raw)  # eq. 11: the candidate
    o = torch.sigmoid(o_raw)  # eq. 14: the output gate
    c = f * c_prev + i * z  # eq. 8: the cell state
    n = f * n_prev + i  # eq. 9: the normalizer
    h = o * (c / n)  # eq. 10: the hidden state, c normalized
    return (h, c, n, m), (i, f, z, o, c, n, m, h)
