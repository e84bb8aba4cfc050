"""Long short-term memory.

Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural Computation 1997; the forget
gate from Gers, Schmidhuber & Cummins, "Learning to Forget", 2000; the projection from
Sak, Senior & Beaufays, "Long Short-Term Memory Recurrent Neural Network Architectures
for Large Scale Acoustic Modeling", 2014; peepholes from Gers & Schmidhuber, "Recurrent Nets
that Time and Count", IJCNN 2000.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatedrnn import _checks
from gatedrnn.cells.base import CellBase
from gatedrnn.trace import Trace

PEEPHOLES = ("weight_ci", "weight_cf", "weight_co")  # a peephole cell's extra parameters, each (H,)


def peephole_names(coupled: bool) -> tuple[str, ...]:
    """The peephole parameters a cell has: a coupled (CIFG) cell has no input gate to feed."""
    return PEEPHOLES[1:] if coupled else PEEPHOLES


def forget_block(coupled: bool) -> int:
    """Which block of the gate weights is the forget gate's: i f g o, or f g o coupled."""
    return 0 if coupled else 1


def lstm_step(xw, state, weight_hh, bias_hh, weight_hr=None, peephole=None, coupled=False, recurrent_mask=None):
    """One LSTM step, given the input projection ``xw = W_ih x_t + b_ih`` (B, 4H).

    ``state`` is ``(h_prev, c_prev)``; returns the new state ``(h, c)`` and the step's
    activations ``(i, f, g, o, c, h)``. ``peephole`` is ``(w_ci, w_cf, w_co)``, each (H,):
    Gers & Schmidhuber's diagonal connections from the cell state into the gates
    (``w_ci`` None when coupled). ``coupled``: Greff et al.'s CIFG, ``i = 1 - f``, with
    ``xw`` and the weights holding only the f, g, o blocks (B, 3H). ``recurrent_mask`` (B, P)
    multiplies ``h_prev`` where it enters the recurrent product (variational recurrent dropout).
    """
    h_prev, c_prev = state
    h_in = h_prev if recurrent_mask is None else h_prev * recurrent_mask
    a = xw + F.linear(h_in, weight_hh, bias_hh)  # (B, 4H), or (B, 3H) coupled
    if coupled:
        (f, g, o), i = a.chunk(3, dim=1), None  # CIFG: no input-gate weights
    else:
        i, f, g, o = a.chunk(4, dim=1)  # 4 x (B, H), torch's gate order
    if peephole is not None:
        w_ci, w_cf, w_co = peephole
        f = f + w_cf * c_prev  # f (and i) look at c_{t-1}
        i = None if coupled else i + w_ci * c_prev
    f = torch.sigmoid(f)  # forget gate
    i = 1 - f if coupled else torch.sigmoid(i)  # input gate, coupled to f in a CIFG
    g = torch.tanh(g)  # candidate
    c = f * c_prev + i * g  # the cell state: the conveyor belt
    o = torch.sigmoid(o if peephole is None else o + w_co * c)  # output gate; a peephole looks at c_t
    h = o * torch.tanh(c)  # (B, H)
    if weight_hr is not None:
        h = F.linear(h, weight_hr)  # (B, P)
    return (h, c), (i, f, g, o, c, h)


class LSTMCell(CellBase, nn.LSTMCell):
    r"""One step of a long short-term memory, a drop-in for :class:`torch.nn.LSTMCell`.

    .. math::

        \begin{aligned}
        i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
        f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        g_t &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
        o_t &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t &= o_t \odot \tanh(c_t)
        \end{aligned}

    ============  ==========  =================================================
    symbol        shape       meaning
    ============  ==========  =================================================
    ``x``         (B, I)      input at step t
    ``h``         (B, H)      hidden state, the cell's output
    ``c``         (B, H)      cell state, scaled by ``f`` and added to by ``i*g``
    ``i f g o``   (B, H)      input gate, forget gate, candidate, output gate
    ``weight_ih`` (4H, I)     ``[W_ii; W_if; W_ig; W_io]``, torch's order i, f, g, o
    ``weight_hh`` (4H, H)     ``[W_hi; W_hf; W_hg; W_ho]``
    ``bias_ih``   (4H,)       ``[b_ii; b_if; b_ig; b_io]``
    ``bias_hh``   (4H,)       ``[b_hi; b_hf; b_hg; b_ho]``
    ============  ==========  =================================================

    Initialization is torch's: every parameter uniform in
    :math:`(-1/\sqrt{H}, 1/\sqrt{H})`. ``forget_bias`` adds a constant to the forget
    gate's ``b_if`` after that (Jozefowicz et al. 2015 recommend 1.0), so that at the
    start the cell keeps what it holds.

    **Peepholes** (``peephole=True``; Gers & Schmidhuber 2000): the gates also see the cell
    state through diagonal weights, ``i`` and ``f`` the previous one and ``o`` the new one,

    .. math::

        i_t = \sigma(\dots + w_{ci} \odot c_{t-1}), \quad
        f_t = \sigma(\dots + w_{cf} \odot c_{t-1}), \quad
        o_t = \sigma(\dots + w_{co} \odot c_t),

    with parameters ``weight_ci``, ``weight_cf``, ``weight_co`` of shape ``(H,)``,
    initialized to zero so that a peephole cell starts as the plain one.

    **Coupled input and forget gates** (``coupled=True``; CIFG, Greff et al. 2017, "LSTM: A
    Search Space Odyssey"): :math:`i_t = 1 - f_t`, so the cell writes exactly as much as it
    forgets. The input gate has no weights: ``weight_ih (3H, I)``, ``weight_hh (3H, H)`` and
    the biases ``(3H,)`` hold the blocks in the order **f, g, o** (and a coupled peephole
    cell has no ``weight_ci``). The trace's ``input`` is :math:`1 - f_t`.

    ``forward(input, hx=None, return_trace=False)`` takes ``input`` of shape ``(B, I)``
    or ``(I,)`` and ``hx = (h, c)``; it returns ``(h, c)``, and with ``return_trace`` a
    third value, a :class:`~gatedrnn.Trace` of ``input, forget, candidate, output,
    cell, hidden`` (with peepholes, each gate with its peephole term inside).

    Args:
        input_size (int): ``I``, the number of features of the input ``x``.
        hidden_size (int): ``H``, the number of features of the hidden state ``h`` and of the
            cell state ``c``.
        bias (bool): if ``False``, the cell has no ``bias_ih`` and ``bias_hh``. Default: ``True``.
        device (torch.device, optional): where the parameters are created. Default: ``None``,
            torch's default device.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default:
            ``None``, torch's default dtype.
        forget_bias (float): a constant added to the forget gate's ``b_if`` after torch's
            initialization; needs ``bias=True``. Keyword only. Default: ``0.0``.
        peephole (bool): add the peepholes ``weight_ci``, ``weight_cf``, ``weight_co``
            ``(H,)``, zero at the start. Keyword only. Default: ``False``.
        coupled (bool): couple the input gate to the forget gate, ``i_t = 1 - f_t`` (CIFG),
            with 3H gate rows (f, g, o). Keyword only. Default: ``False``.

    Inputs:
        - **input** (Tensor): ``(B, I)``, or ``(I,)`` unbatched.
        - **hx** (tuple of two Tensors, optional): ``(h_0, c_0)``, each ``(B, H)`` (``(H,)``
          unbatched). Default: zeros.
        - **return_trace** (bool): if ``True``, also return the step's gates. Default: ``False``.

    Outputs:
        - **h**, **c**: the new states, each ``(B, H)`` (``(H,)`` unbatched).
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of ``input,
          forget, candidate, output, cell, hidden``, each ``(B, H)`` (``(H,)`` unbatched).

    Examples:
        >>> import torch, gatedrnn
        >>> cell = gatedrnn.LSTMCell(10, 20, forget_bias=1.0)
        >>> x = torch.randn(6, 3, 10)  # (T, B, I)
        >>> h, c = torch.zeros(3, 20), torch.zeros(3, 20)
        >>> for x_t in x:
        ...     c_prev = c
        ...     h, c, trace = cell(x_t, (h, c), return_trace=True)
        >>> h.shape, trace.forget.shape
        (torch.Size([3, 20]), torch.Size([3, 20]))
        >>> torch.allclose(c, trace.forget * c_prev + trace.input * trace.candidate)
        True
    """

    num_gates = 4

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, forget_bias=0.0,
                 peephole=False, coupled=False):  # fmt: skip
        self.forget_bias = float(forget_bias)  # read by reset_parameters, which __init__ calls
        if self.forget_bias and bias is False:
            raise ValueError(f"forget_bias={forget_bias} needs bias=True, got bias=False")
        self.peephole = _checks.boolean("peephole", peephole)
        self.coupled = _checks.boolean("coupled", coupled)
        self.num_gates = 3 if self.coupled else 4  # the blocks torch's RNNCellBase registers
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        if self.peephole:  # after torch's parameters, so a seeded cell keeps torch.nn's weights
            for name in peephole_names(self.coupled):
                setattr(self, name, nn.Parameter(torch.zeros(hidden_size, device=device, dtype=dtype)))

    def _defaults(self) -> dict:
        return {"forget_bias": 0.0, "peephole": False, "coupled": False}

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            if self.forget_bias:
                H, block = self.hidden_size, forget_block(self.coupled)
                self.bias_ih[block * H : (block + 1) * H] += self.forget_bias
            for name in PEEPHOLES:
                if getattr(self, name, None) is not None:
                    getattr(self, name).zero_()

    def extra_repr(self) -> str:
        s = super().extra_repr()  # torch.nn's
        s += f", forget_bias={self.forget_bias}" if self.forget_bias else ""
        return s + (", peephole=True" if self.peephole else "") + (", coupled=True" if self.coupled else "")

    def to_torch(self):
        """A :class:`torch.nn.LSTMCell` with a copy of this cell's weights (a peephole or
        coupled cell is a ``ValueError``: torch.nn has neither)."""
        if self.peephole or self.coupled:
            raise ValueError("torch.nn.LSTMCell has no peepholes or coupled gates: this cell cannot be converted")
        return super().to_torch()

    def forward(self, input, hx=None, return_trace=False):
        x, unbatched = self._check_input(input)
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"hx must be a tuple (h, c) for an LSTM cell, got {type(hx).__name__}")
        h0, c0 = (None, None) if hx is None else hx
        B, H = x.shape[0], self.hidden_size
        h0 = self._check_state("hx[0]", h0, B, unbatched, H, x)
        c0 = self._check_state("hx[1]", c0, B, unbatched, H, x)
        xw = F.linear(x, self.weight_ih, self.bias_ih)  # (B, 4H), or (B, 3H) coupled
        peephole = tuple(getattr(self, name, None) for name in PEEPHOLES) if self.peephole else None
        (h, c), values = lstm_step(xw, (h0, c0), self.weight_hh, self.bias_hh, peephole=peephole,
                                   coupled=self.coupled)  # fmt: skip
        if unbatched:
            h, c, values = h[0], c[0], tuple(v[0] for v in values)
        if return_trace:
            names = ("input", "forget", "candidate", "output", "cell", "hidden")
            return h, c, Trace(dict(zip(names, values)))
        return h, c
