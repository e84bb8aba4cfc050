"""Minimal gated unit.

Zhou, Wu, Zhang & Zhou, "Minimal Gated Unit for Recurrent Neural Networks", International
Journal of Automation and Computing, 2016: a GRU whose one gate both resets and updates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatedrnn.cells.base import CellBase
from gatedrnn.trace import Trace


def mgu_step(xw, state, weight_hh, bias_hh, weight_hr=None, recurrent_mask=None):
    """One MGU step from ``xw = W_ih x_t + b_ih`` (B, 2H), blocks ``[f; n]``: returns ``(h,)``
    and ``(f, n, h)``. ``recurrent_mask`` (B, H) multiplies ``h_{t-1}`` in the recurrent products."""
    (h_prev,) = state
    H = h_prev.shape[1]
    h_in = h_prev if recurrent_mask is None else h_prev * recurrent_mask
    x_f, x_n = xw.chunk(2, dim=1)  # 2 x (B, H)
    b_f, b_n = (None, None) if bias_hh is None else (bias_hh[:H], bias_hh[H:])
    f = torch.sigmoid(x_f + F.linear(h_in, weight_hh[:H], b_f))  # eq. 6: the one gate
    n = torch.tanh(x_n + F.linear(f * h_in, weight_hh[H:], b_n))  # eq. 7: f resets h_{t-1} in the candidate
    h = (1 - f) * h_prev + f * n  # eq. 8: and blends it with the candidate
    return (h,), (f, n, h)


class MGUCell(CellBase):
    r"""One step of a minimal gated unit (Zhou et al. 2016).

    .. math::

        \begin{aligned}
        f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        n_t &= \tanh(W_{in} x_t + b_{in} + W_{hn} (f_t \odot h_{t-1}) + b_{hn}) \\
        h_t &= (1 - f_t) \odot h_{t-1} + f_t \odot n_t
        \end{aligned}

    ``weight_ih (2H, I)`` = ``[W_if; W_in]``, ``weight_hh (2H, H)``, biases ``(2H,)``,
    initialized as torch's cells. The paper writes the gate ``f`` for "forget"; it plays the
    GRU's reset gate and its update rate at once. ``forward(input, hx=None,
    return_trace=False)`` returns ``h`` (and a :class:`~gatedrnn.Trace` of ``forget,
    candidate, hidden``). torch.nn has no MGU cell: ``from_torch`` and ``to_torch`` raise.

    Args:
        input_size (int): ``I``, the number of features of the input ``x``.
        hidden_size (int): ``H``, the number of features of the hidden state ``h``.
        bias (bool): if ``False``, the cell has no ``bias_ih`` and ``bias_hh``. Default: ``True``.
        device (torch.device, optional): where the parameters are created. Default: ``None``,
            torch's default device.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default:
            ``None``, torch's default dtype.

    Inputs:
        - **input** (Tensor): ``(B, I)``, or ``(I,)`` unbatched.
        - **hx** (Tensor, optional): ``h_0``, ``(B, H)`` (``(H,)`` unbatched). Default: zeros.
        - **return_trace** (bool): if ``True``, also return the step's gates. Default: ``False``.

    Outputs:
        - **h**: the new hidden state, ``(B, H)`` (``(H,)`` unbatched).
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of
          ``forget, candidate, hidden``, each ``(B, H)`` (``(H,)`` unbatched).

    Examples:
        >>> import torch, gatedrnn
        >>> cell = gatedrnn.MGUCell(4, 8)
        >>> h_prev = torch.randn(2, 8)
        >>> h, trace = cell(torch.randn(2, 4), h_prev, return_trace=True)
        >>> f, n = trace.forget, trace.candidate
        >>> torch.allclose(h, (1 - f) * h_prev + f * n)
        True
    """

    num_gates = 2

    def forward(self, input, hx=None, return_trace=False):
        x, unbatched = self._check_input(input)
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"hx must be a tensor h for an MGU cell, got a {type(hx).__name__}")
        h0 = self._check_state("hx", hx, x.shape[0], unbatched, self.hidden_size, x)
        (h,), values = mgu_step(F.linear(x, self.weight_ih, self.bias_ih), (h0,), self.weight_hh, self.bias_hh)
        if unbatched:
            h, values = h[0], tuple(v[0] for v in values)
        return (h, Trace(dict(zip(("forget", "candidate", "hidden"), values)))) if return_trace else h

    @classmethod
    def from_torch(cls, module: nn.Module):
        raise TypeError("torch.nn has no MGU cell to convert from")

    def to_torch(self):
        raise ValueError("torch.nn has no MGU cell: an MGUCell cannot be converted")
