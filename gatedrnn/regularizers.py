"""The regularizers of the recurrent layers, drawn by the layer outside every loop from
torch's generator (so ``torch.manual_seed`` reproduces them) and handed to the loop: dropout
between layers as torch.nn draws it, DropConnect on ``W_hh`` (Merity et al. 2017),
variational dropout on ``h_{t-1}`` in the recurrent product (Gal & Ghahramani 2016) and
zoneout (Krueger et al. 2017)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from gatedrnn import _checks


def zoneout_probabilities(mode: str, zoneout) -> tuple[float, ...]:
    """Zoneout probabilities per state, in the states' order: ``(p_h, p_c)`` for an LSTM
    (given as ``p`` or ``(p_c, p_h)``), ``(p_h,)`` otherwise."""
    if mode == "LSTM" and isinstance(zoneout, (tuple, list)):
        if len(zoneout) != 2:
            raise ValueError(f"zoneout must be a probability or a pair (p_c, p_h) for an LSTM, got {zoneout!r}")
        p_c, p_h = (_checks.probability("zoneout", p) for p in zoneout)
        return (p_h, p_c)
    p = _checks.probability("zoneout", zoneout)
    return (p, p) if mode == "LSTM" else (p,)


def draw(layer, weights, step, x, state):
    """The weights, step function and loop options (``zoneout``) of one layer and direction
    with this forward's masks drawn; nothing drawn in eval mode (zoneout then passes its
    probabilities: the expectation)."""
    options = {}
    if layer.training and layer.weight_dropout:
        w_ih, w_hh, *rest = weights
        weights = (w_ih, F.dropout(w_hh, layer.weight_dropout, training=True), *rest)
    if layer.training and layer.recurrent_dropout:
        h = state[0]  # (B, P)
        mask = F.dropout(torch.ones_like(h), layer.recurrent_dropout, training=True)  # 0 or 1/(1-p)
        step = functools.partial(step, recurrent_mask=mask)
    if any(layer.zoneout):
        T = x.shape[0]
        # a uniform draw compared with p: the same Bernoulli(p) masks, and on this project's Xeon
        # 1.6 ms where torch.bernoulli took 2.2 for a (500, 16, 64) mask
        options["zoneout"] = tuple(
            None if not p else ((torch.rand((T, *s.shape), device=s.device) < p).to(s.dtype) if layer.training else p)
            for s, p in zip(state, layer.zoneout)
        )  # fmt: skip
    return weights, step, options


def between_layers(x: torch.Tensor, p: float, lengths: torch.Tensor | None) -> torch.Tensor:
    """Dropout between layers on ``x`` (T, B, F), with the masks torch.nn draws.

    torch.nn drops out a PackedSequence's ``data``: one row per valid step, time-major,
    the sequences of each step by decreasing length. So with ``lengths`` the mask is
    drawn in that shape and order (ties in batch order: forward has put a packed batch
    in its packing's order), and padding draws nothing.
    """
    if lengths is None:
        return F.dropout(x, p, training=True)
    order = torch.sort(lengths, descending=True, stable=True).indices
    packed = pack_padded_sequence(x.index_select(1, order), lengths[order].cpu())  # data: (sum(lengths), F)
    data = F.dropout(packed.data, p, training=True)
    dropped = PackedSequence(data, packed.batch_sizes, order, torch.argsort(order))
    return pad_packed_sequence(dropped, total_length=x.shape[0])[0]  # (T, B, F) in x's batch order
