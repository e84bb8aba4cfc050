"""The vanilla (Elman) recurrent network: the baseline the gated cells fix.

Elman, "Finding Structure in Time", Cognitive Science 1990. Its gradient through time is a
product of ``W_hh^T diag(φ'(.))`` factors, which shrinks (or grows) exponentially with
distance: Bengio, Simard & Frasconi 1994; Pascanu, Mikolov & Bengio 2013.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatedrnn.cells.base import CellBase
from gatedrnn.trace import Trace

NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


def rnn_step(xw, state, weight_hh, bias_hh, weight_hr=None, nonlinearity="tanh", recurrent_mask=None):
    """One vanilla RNN step, given the input projection ``xw = W_ih x_t + b_ih`` (B, H).

    ``state`` is ``(h_prev,)``; returns the new state ``(h,)`` and the activations ``(h,)``.
    ``recurrent_mask`` (B, H) multiplies ``h_prev`` where it enters the recurrent product
    (variational recurrent dropout).
    """
    (h_prev,) = state
    h_in = h_prev if recurrent_mask is None else h_prev * recurrent_mask
    h = NONLINEARITIES[nonlinearity](xw + F.linear(h_in, weight_hh, bias_hh))  # (B, H)
    return (h,), (h,)


def rnn_tanh_step(xw, state, weight_hh, bias_hh, weight_hr=None, recurrent_mask=None):
    return rnn_step(xw, state, weight_hh, bias_hh, nonlinearity="tanh", recurrent_mask=recurrent_mask)


def rnn_relu_step(xw, state, weight_hh, bias_hh, weight_hr=None, recurrent_mask=None):
    return rnn_step(xw, state, weight_hh, bias_hh, nonlinearity="relu", recurrent_mask=recurrent_mask)


class RNNCell(CellBase, nn.RNNCell):
    r"""One step of a vanilla RNN, a drop-in for :class:`torch.nn.RNNCell`.

    .. math::

        h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}),
        \qquad \phi \in \{\tanh, \mathrm{relu}\}

    ============  ==========  ==============================
    symbol        shape       meaning
    ============  ==========  ==============================
    ``x``         (B, I)      input at step t
    ``h``         (B, H)      hidden state, fed back as input
    ``weight_ih`` (H, I)      input weights
    ``weight_hh`` (H, H)      recurrent weights
    ``bias_ih``   (H,)        input bias
    ``bias_hh``   (H,)        recurrent bias
    ============  ==========  ==============================

    Initialization is torch's: every parameter uniform in
    :math:`(-1/\sqrt{H}, 1/\sqrt{H})`.

    ``forward(input, hx=None, return_trace=False)`` returns ``h``, and with
    ``return_trace`` also a :class:`~gatedrnn.Trace` holding ``hidden``.

    Args:
        input_size (int): ``I``, the number of features of the input ``x``.
        hidden_size (int): ``H``, the number of features of the hidden state ``h``.
        bias (bool): if ``False``, the cell has no ``bias_ih`` and ``bias_hh``. Default: ``True``.
        nonlinearity (str): :math:`\phi`, ``"tanh"`` or ``"relu"``. Default: ``"tanh"``.
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
          ``hidden``, each ``(B, H)`` (``(H,)`` unbatched).

    Examples:
        >>> import torch, gatedrnn
        >>> cell = gatedrnn.RNNCell(10, 20, nonlinearity="relu")
        >>> h = cell(torch.randn(3, 10))
        >>> h.shape, bool((h >= 0).all())
        (torch.Size([3, 20]), True)
    """

    num_gates = 1

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None, return_trace=False):
        x, unbatched = self._check_input(input)
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"hx must be a tensor h for an RNN cell, got a {type(hx).__name__}")
        h0 = self._check_state("hx", hx, x.shape[0], unbatched, self.hidden_size, x)
        xw = F.linear(x, self.weight_ih, self.bias_ih)  # (B, H)
        (h,), _ = rnn_step(xw, (h0,), self.weight_hh, self.bias_hh, nonlinearity=self.nonlinearity)
        if unbatched:
            h = h[0]
        if return_trace:
            return h, Trace({"hidden": h})
        return h
