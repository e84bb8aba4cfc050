"""Gated recurrent unit.

Cho, van Merriënboer, Gulcehre, Bahdanau, Bougares, Schwenk & Bengio, "Learning Phrase
Representations using RNN Encoder-Decoder for Statistical Machine Translation", EMNLP
2014; in the "reset after" form of cuDNN and torch.nn.GRU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatedrnn import _checks
from gatedrnn.cells.base import CellBase
from gatedrnn.trace import Trace


def gru_step(xw, state, weight_hh, bias_hh, weight_hr=None, reset_after=True, recurrent_mask=None):
    """One GRU step, given the input projection ``xw = W_ih x_t + b_ih`` (B, 3H).

    ``state`` is ``(h_prev,)``; returns the new state ``(h,)`` and the step's
    activations ``(r, z, n, h)``. ``reset_after=False`` is Cho et al.'s original candidate,
    ``n = tanh(W_in x + b_in + W_hn (r * h_prev) + b_hn)``: a second product per step.
    ``recurrent_mask`` (B, H) multiplies ``h_prev`` where it enters the recurrent products
    (variational recurrent dropout, as Keras applies it); the blend keeps ``h_prev`` whole.
    """
    (h_prev,) = state
    h_in = h_prev if recurrent_mask is None else h_prev * recurrent_mask
    x_r, x_z, x_n = xw.chunk(3, dim=1)  # 3 x (B, H)
    if reset_after:
        h_r, h_z, h_n = F.linear(h_in, weight_hh, bias_hh).chunk(3, dim=1)  # 3 x (B, H)
    else:
        H = h_prev.shape[1]
        b_rz, b_n = (None, None) if bias_hh is None else (bias_hh[: 2 * H], bias_hh[2 * H :])
        h_r, h_z = F.linear(h_in, weight_hh[: 2 * H], b_rz).chunk(2, dim=1)  # 2 x (B, H)
    r = torch.sigmoid(x_r + h_r)  # reset gate
    z = torch.sigmoid(x_z + h_z)  # update gate
    if reset_after:
        n = torch.tanh(x_n + r * h_n)  # candidate; r scales W_hn h + b_hn (reset after)
    else:
        n = torch.tanh(x_n + F.linear(r * h_in, weight_hh[2 * H :], b_n))  # Cho et al.: r gates h first
    h = (1 - z) * n + z * h_prev  # a moving average of candidates at rate 1 - z
    return (h,), (r, z, n, h)


class GRUCell(CellBase, nn.GRUCell):
    r"""One step of a gated recurrent unit, a drop-in for :class:`torch.nn.GRUCell`.

    .. math::

        \begin{aligned}
        r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t &= \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}
        \end{aligned}

    ============  ==========  =================================================
    symbol        shape       meaning
    ============  ==========  =================================================
    ``x``         (B, I)      input at step t
    ``h``         (B, H)      hidden state, the only state a GRU carries
    ``r``         (B, H)      reset gate: how much of ``h_{t-1}`` enters ``n``
    ``z``         (B, H)      update gate: how much of ``h_{t-1}`` is kept
    ``n``         (B, H)      candidate
    ``weight_ih`` (3H, I)     ``[W_ir; W_iz; W_in]``, torch's order r, z, n
    ``weight_hh`` (3H, H)     ``[W_hr; W_hz; W_hn]``
    ``bias_ih``   (3H,)       ``[b_ir; b_iz; b_in]``
    ``bias_hh``   (3H,)       ``[b_hr; b_hz; b_hn]``
    ============  ==========  =================================================

    Initialization is torch's: every parameter uniform in
    :math:`(-1/\sqrt{H}, 1/\sqrt{H})`.

    **Reset after, as torch and cuDNN.** Cho et al. 2014 apply the reset gate before
    the recurrent matrix, :math:`n_t = \tanh(W_{in} x_t + W_{hn}(r_t \odot h_{t-1}))`.
    torch.nn.GRU (and cuDNN, and Keras with ``reset_after=True``) apply it after:
    :math:`r_t \odot (W_{hn} h_{t-1} + b_{hn})`, which lets one matrix product
    :math:`W_{hh} h_{t-1}` serve all three gates. The two are different functions of
    the same parameters; this cell computes torch's by default, so weights move between
    the two libraries unchanged. ``reset_after=False`` computes Cho et al.'s,
    :math:`n_t = \tanh(W_{in} x_t + b_{in} + W_{hn}(r_t \odot h_{t-1}) + b_{hn})`, with the
    same parameter names and shapes (a state_dict loads either way); Keras' GRU with
    ``reset_after=False`` is this cell, its gates reordered (Keras: z, r, h).

    **An exponentially weighted moving average.** With :math:`\alpha_t = 1 - z_t`,
    :math:`h_t = \alpha_t n_t + (1 - \alpha_t) h_{t-1}`: each unit is an EWMA of its
    candidates whose rate is learned and input-dependent. A unit holding
    :math:`z` steady keeps a memory of about :math:`1 / (1 - z)` steps (its time
    constant); :math:`z \to 1` carries :math:`h` unchanged, :math:`z \to 0` replaces it.

    ``forward(input, hx=None, return_trace=False)`` takes ``input`` of shape ``(B, I)``
    or ``(I,)``; it returns ``h``, and with ``return_trace`` also a
    :class:`~gatedrnn.Trace` of ``reset, update, candidate, hidden``.

    Args:
        input_size (int): ``I``, the number of features of the input ``x``.
        hidden_size (int): ``H``, the number of features of the hidden state ``h``.
        bias (bool): if ``False``, the cell has no ``bias_ih`` and ``bias_hh``. Default: ``True``.
        device (torch.device, optional): where the parameters are created. Default: ``None``,
            torch's default device.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default:
            ``None``, torch's default dtype.
        reset_after (bool): ``True`` applies ``r`` after the recurrent product (torch's form);
            ``False`` before it (Cho et al.'s). Keyword only. Default: ``True``.

    Inputs:
        - **input** (Tensor): ``(B, I)``, or ``(I,)`` unbatched.
        - **hx** (Tensor, optional): ``h_0``, ``(B, H)`` (``(H,)`` unbatched). Default: zeros.
        - **return_trace** (bool): if ``True``, also return the step's gates. Default: ``False``.

    Outputs:
        - **h**: the new hidden state, ``(B, H)`` (``(H,)`` unbatched).
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of
          ``reset, update, candidate, hidden``, each ``(B, H)`` (``(H,)`` unbatched).

    Examples:
        >>> import torch, gatedrnn
        >>> cell = gatedrnn.GRUCell(10, 20)
        >>> h_prev = torch.randn(3, 20)
        >>> h, trace = cell(torch.randn(3, 10), h_prev, return_trace=True)
        >>> z, n = trace.update, trace.candidate
        >>> torch.allclose(h, (1 - z) * n + z * h_prev)
        True
    """

    num_gates = 3

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, reset_after=True):
        self.reset_after = _checks.boolean("reset_after", reset_after)
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)

    def _defaults(self) -> dict:
        return {"reset_after": True}

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.reset_after else ", reset_after=False")

    def to_torch(self):
        """A :class:`torch.nn.GRUCell` with a copy of this cell's weights (``reset_after=False``
        is a ``ValueError``: torch.nn computes only the reset-after form)."""
        if not self.reset_after:
            raise ValueError("torch.nn.GRUCell has no reset_after=False (Cho et al.'s form); it cannot be converted")
        return super().to_torch()

    def forward(self, input, hx=None, return_trace=False):
        x, unbatched = self._check_input(input)
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"hx must be a tensor h for a GRU cell, got a {type(hx).__name__}")
        h0 = self._check_state("hx", hx, x.shape[0], unbatched, self.hidden_size, x)
        xw = F.linear(x, self.weight_ih, self.bias_ih)  # (B, 3H)
        (h,), values = gru_step(xw, (h0,), self.weight_hh, self.bias_hh, reset_after=self.reset_after)
        if unbatched:
            h, values = h[0], tuple(v[0] for v in values)
        if return_trace:
            return h, Trace(dict(zip(("reset", "update", "candidate", "hidden"), values)))
        return h
