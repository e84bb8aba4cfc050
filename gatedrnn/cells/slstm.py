"""The scalar-memory LSTM of xLSTM: exponential gating, a normalizer and a stabilizer.

Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter & Hochreiter,
"xLSTM: Extended Long Short-Term Memory", NeurIPS 2024, section 2.2 (eqs. 8-17).

This file is the specification: the readable step every faster path is tested against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gatedrnn import _checks
from gatedrnn.capture import RefusesScript
from gatedrnn.trace import Trace

FORGET = ("sigmoid", "exp")  # the forget gate's activation: the paper offers both (eq. 13)

# The trace's names, in the order slstm_step returns the step's activations
SLSTM_TRACE_NAMES = ("input", "forget", "candidate", "output", "cell", "normalizer", "stabilizer", "hidden")


def block_diagonal(weight_hh: torch.Tensor) -> torch.Tensor:
    """The recurrent weights ``(heads, 4d, d)`` as the dense ``(4H, H)`` matrix they stand for.

    Row ``g*H + j*d + r`` (gate ``g`` of i, f, z, o; head ``j``; unit ``r``) is head ``j``'s row
    ``g*d + r`` on the columns of head ``j``, zero elsewhere: the pre-activations come out
    gate-major, like ``weight_ih``'s rows and torch's LSTM.
    """
    K, _, d = weight_hh.shape  # heads, 4 * head size, head size
    blocks = weight_hh.reshape(K, 4, d, d).transpose(0, 1)  # (4, K, d, d): gate, head
    eye = torch.eye(K, dtype=weight_hh.dtype, device=weight_hh.device)
    dense = torch.einsum("gjrc,jk->gjrkc", blocks, eye)  # (4, K, d, K, d), zero off the head's block
    return dense.reshape(4 * K * d, K * d)


def recurrent_product(h: torch.Tensor, weight_hh: torch.Tensor) -> torch.Tensor:
    """``R h`` for the block-diagonal ``R``: one product per head. ``h`` (B, H) -> (B, 4H), gate-major."""
    B = h.shape[0]
    K, _, d = weight_hh.shape  # heads, 4 * head size, head size
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

    ``recurrent_mask`` (B, H), if given, multiplies ``h_{t-1}`` where it enters ``R h``
    (variational recurrent dropout), as in :func:`gatedrnn.cells.lstm.lstm_step`. The names of
    the activations, in this order, are :data:`SLSTM_TRACE_NAMES`; :class:`sLSTMCell` holds
    the equations in full.

    A state whose normalizer is zero holds nothing (the zero initial state): its stabilizer
    starts afresh at ``m_t = i~_t`` and its forget factor is zero, as the official package does
    for an all-zero state. Without this, an input gate of ``exp(-1e4)`` into an empty state
    would give ``h = 0 / 0``.

    Args:
        xw (Tensor): ``(B, 4H)``, ``W_ih x_t + b_ih``.
        state (tuple): ``(h, c, n, m)``, each ``(B, H)``.
        weight_hh (Tensor): ``(heads, 4d, d)``, the block-diagonal ``R``.
        bias_hh (Tensor, optional): ``(4H,)``. Default: ``None``.
        forget (str): ``"sigmoid"`` or ``"exp"``. Default: ``"sigmoid"``.
        recurrent_mask (Tensor, optional): ``(B, H)``. Default: ``None``.

    Examples:
        >>> import torch
        >>> from gatedrnn.cells.slstm import slstm_step
        >>> state = tuple(torch.zeros(2, 8) for _ in range(4))  # (h, c, n, m), B = 2, H = 8
        >>> state, acts = slstm_step(torch.randn(2, 32), state, torch.randn(4, 8, 2))  # 4 heads of 2
        >>> [tuple(s.shape) for s in state], len(acts)
        ([(2, 8), (2, 8), (2, 8), (2, 8)], 8)
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


def check_forget(forget) -> str:
    """``forget`` if it is one of :data:`FORGET`, else a ``ValueError`` naming it."""
    if not isinstance(forget, str) or forget not in FORGET:
        raise ValueError(f"forget must be one of {', '.join(map(repr, FORGET))}, got {forget!r}")
    return forget


def head_size(hidden_size: int, num_heads: int) -> int:
    """``d = hidden_size / num_heads``, each head's number of units; a ``ValueError`` naming
    both arguments when ``num_heads`` does not divide ``hidden_size``."""
    hidden_size = _checks.positive_int("hidden_size", hidden_size)
    num_heads = _checks.positive_int("num_heads", num_heads)
    if hidden_size % num_heads:
        divisors = [k for k in range(1, hidden_size + 1) if hidden_size % k == 0]
        raise ValueError(
            f"hidden_size must be divisible by num_heads: got hidden_size={hidden_size} and "
            f"num_heads={num_heads}; num_heads could be one of {divisors}"
        )
    return hidden_size // num_heads


def powerlaw_forget_bias(
    head_size: int, position: float = 0.0, forget: str = "sigmoid", dtype=None, device=None
):
    r"""The forget-gate bias of one head at initialization: one value per unit, from long
    memory to short, so that each head starts with a spread of time scales.

    .. math::

        b_{f,r} = 5 - 12 \left(\frac{r}{d - 1}\right)^{0.3 + 1.3\,p}, \qquad r = 0, \dots, d - 1,

    from ``5`` (:math:`\sigma(5) \approx 0.993`: the unit keeps what it holds for about 150
    steps) down to ``-7`` (:math:`\sigma(-7) \approx 0.001`: it forgets at once); the small
    exponent puts most units near the short end. ``p`` (``position``, in ``[0, 1]``) is a
    block's place in a residual stack (``block_index / (num_blocks - 1)``): deeper blocks get
    more long-memory units. This is the official xLSTM package's default
    (``bias_init="powerlaw_blockdependent"`` of its ``sLSTMCellConfig``). A single unit
    (``d = 1``) gets ``5``.

    With ``forget="exp"`` the bias is :math:`\log \sigma(b_f)`, so that an exponential forget
    gate starts with the same factors :math:`f_t` as the sigmoid one.

    Args:
        head_size (int): ``d``, the units per head.
        position (float): ``p`` in ``[0, 1]``, the block's depth in a stack. Default: ``0.0``.
        forget (str): ``"sigmoid"`` or ``"exp"``, the forget gate's activation. Default:
            ``"sigmoid"``.
        dtype, device: of the returned tensor.

    Returns:
        Tensor: ``(d,)``.

    Examples:
        >>> from gatedrnn.cells.slstm import powerlaw_forget_bias
        >>> powerlaw_forget_bias(4)
        tensor([ 5.0000, -3.6307, -5.6256, -7.0000])
    """
    d = _checks.positive_int("head_size", head_size)
    if not 0.0 <= float(position) <= 1.0:
        raise ValueError(f"position must lie in [0, 1], got {position}")
    check_forget(forget)
    r = torch.linspace(0.0, 1.0, d, dtype=torch.float64) if d > 1 else torch.zeros(1, dtype=torch.float64)
    bias = 5.0 - 12.0 * r ** (0.3 + 1.3 * float(position))  # (d,)
    if forget == "exp":
        bias = F.logsigmoid(bias)  # log f = b: the sigmoid gate's factors
    return bias.to(dtype=dtype or torch.get_default_dtype(), device=device)


def reset_slstm_parameters(weight_ih, weight_hh, bias_ih, bias_hh, forget: str = "sigmoid") -> None:
    r"""Initializes one sLSTM layer's parameters in place (the cell's and the layer's rule).

    Every parameter uniform in :math:`(-1/\sqrt{H}, 1/\sqrt{H})` in the order ``weight_ih``,
    ``weight_hh``, ``bias_ih``, ``bias_hh`` (torch's rule for its RNNs); then the forget gate's
    bias is set to :func:`powerlaw_forget_bias` in every head, in ``bias_ih``, with ``bias_hh``'s
    forget block zero, so the forget gate's total bias is exactly that profile.
    """
    K, _, d = weight_hh.shape  # heads, 4 * head size, head size
    H = K * d
    bound = 1.0 / math.sqrt(H)
    with torch.no_grad():
        for p in (weight_ih, weight_hh, bias_ih, bias_hh):
            if p is not None:
                p.uniform_(-bound, bound)
        if bias_ih is not None:
            profile = powerlaw_forget_bias(d, 0.0, forget, dtype=bias_ih.dtype, device=bias_ih.device)
            bias_ih[H : 2 * H] = profile.repeat(K)  # head j's units at j*d:(j+1)*d of the f block
            bias_hh[H : 2 * H] = 0.0


class sLSTMCell(RefusesScript, nn.Module):
    r"""One step of xLSTM's scalar-memory LSTM (sLSTM): exponential gating with a normalizer
    and a stabilizer, recurrence inside each head.

    Per step, from the input ``x_t`` and the previous state ``(h, c, n, m)``:

    .. math::

        \begin{aligned}
        [\tilde i_t; \tilde f_t; \tilde z_t; \tilde o_t]
            &= W_{ih} x_t + b_{ih} + R\, h_{t-1} + b_{hh}
            && R = \mathrm{blockdiag}(R_1, \dots, R_K) \\
        \log f_t &= \log \sigma(\tilde f_t) \quad (\texttt{forget="exp"}: \tilde f_t) \\
        m_t &= \max(\log f_t + m_{t-1},\ \tilde i_t) && \text{(eq. 15)} \\
        i'_t &= \exp(\tilde i_t - m_t) && \text{(eq. 16)} \\
        f'_t &= \exp(\log f_t + m_{t-1} - m_t) && \text{(eq. 17)} \\
        z_t &= \tanh(\tilde z_t), \quad o_t = \sigma(\tilde o_t) && \text{(eqs. 11, 14)} \\
        c_t &= f'_t \odot c_{t-1} + i'_t \odot z_t && \text{(eq. 8)} \\
        n_t &= f'_t \odot n_{t-1} + i'_t && \text{(eq. 9)} \\
        h_t &= o_t \odot c_t / n_t && \text{(eq. 10)}
        \end{aligned}

    The stabilizer changes nothing the cell computes: with the unstabilized gates
    :math:`i_t = \exp(\tilde i_t)` and :math:`f_t`, the paper's :math:`c_t = f_t c_{t-1} + i_t z_t`
    and :math:`n_t = f_t n_{t-1} + i_t` are this cell's ``c`` and ``n`` times :math:`e^{m_t}`, and
    ``h`` is the same. It keeps ``exp`` from overflowing: :math:`i'_t, f'_t \le 1` whatever
    the pre-activations (``±1e4`` gives finite states). From the empty state :math:`c_t / n_t`
    is a weighted mean of the candidates, so :math:`|h_t| < 1`.

    =================  ============  ===========================================================
    symbol             shape         meaning
    =================  ============  ===========================================================
    ``x``              (B, I)        input at step t
    ``h``              (B, H)        hidden state, the output: :math:`o_t \odot c_t / n_t`
    ``c``              (B, H)        cell state (stabilized: the paper's :math:`c_t e^{-m_t}`)
    ``n``              (B, H)        normalizer state (stabilized likewise); zero: empty
    ``m``              (B, H)        stabilizer, the running log-scale of ``c`` and ``n``
    ``i f z o``        (B, H)        :math:`i'_t, f'_t` (the stabilized gates, the factors
                                     that enter ``c_t``), candidate, output gate
    ``K``, ``d``       int           ``num_heads``, ``d = H / K`` units per head
    ``weight_ih``      (4H, I)       :math:`W_{ih}`, blocks ``[i; f; z; o]``, head ``j``'s units
                                     at rows ``j*d:(j+1)*d`` of each block
    ``weight_hh``      (K, 4d, d)    :math:`R_j` per head ``j``, its rows ordered i, f, z, o
                                     (:func:`block_diagonal` gives the dense ``(4H, H)`` ``R``)
    ``bias_ih``        (4H,)         :math:`b_{ih}`, blocks ``[i; f; z; o]``
    ``bias_hh``        (4H,)         :math:`b_{hh}`
    =================  ============  ===========================================================

    **Initialization** (:func:`reset_slstm_parameters`): every parameter uniform in
    :math:`(-1/\sqrt{H}, 1/\sqrt{H})` as torch's RNN cells, then the forget gate's bias set to
    the official package's power-law profile in each head (:func:`powerlaw_forget_bias`: from
    5 to -7 across a head's units; ``bias_hh``'s forget block zero), so the cell starts with
    units of long and of short memory. The official package starts ``R`` at zero and the
    other biases at zero; load its weights with :func:`gatedrnn.convert.xlstm.from_xlstm` for its
    exact start.

    **Where the paper and the official package differ, and what this cell does:**

    - *The empty state.* The paper leaves :math:`m_0` open. The official package sets
      :math:`m_t = \tilde i_t` when its whole state tensor's normalizer is zero (the first
      step from zeros). This cell does it per unit: where :math:`n_{t-1} = 0` the state holds
      nothing, so :math:`m_t = \tilde i_t` and :math:`f'_t = 0`. The two agree from a zero
      state. Without it an input gate of ``exp(-1e4)`` into an empty state gives ``0 / 0``.
    - *The forget gate.* The paper allows :math:`f_t = \sigma(\tilde f_t)` or
      :math:`\exp(\tilde f_t)` (eq. 13); the official package implements the sigmoid only.
      ``forget="sigmoid"`` (default) is that; ``forget="exp"`` the other.
    - The official package clamps :math:`i'_t, f'_t` at 1; here they are at most 1 by the
      definition of :math:`m_t`, so no clamp is needed. Its trace reports :math:`\tilde z_t`;
      this cell reports :math:`\tanh(\tilde z_t)`, the value that enters ``c``.

    Args:
        input_size (int): ``I``, the number of features of the input ``x``.
        hidden_size (int): ``H``, the number of features of each state; divisible by
            ``num_heads``.
        num_heads (int): ``K``, the number of heads: the recurrent matrix is block-diagonal
            with ``K`` blocks of ``d = H / K`` units. Default: ``4``.
        bias (bool): if ``False``, the cell has no ``bias_ih`` and ``bias_hh``. Default: ``True``.
        forget (str): the forget gate's activation, ``"sigmoid"`` or ``"exp"``. Default:
            ``"sigmoid"``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default: ``None``.

    Inputs:
        - **input** (Tensor): ``(B, I)``, or ``(I,)`` unbatched.
        - **hx** (tuple of four Tensors, optional): ``(h, c, n, m)``, each ``(B, H)`` (``(H,)``
          unbatched). Default: zeros, the empty state.
        - **return_trace** (bool): if ``True``, also return the step's gates and states.
          Default: ``False``.

    Outputs:
        - **h, c, n, m**: the new states, each ``(B, H)`` (``(H,)`` unbatched).
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of ``input,
          forget, candidate, output, cell, normalizer, stabilizer, hidden``, each ``(B, H)``.

    Examples:
        >>> import torch
        >>> from gatedrnn.xlstm import sLSTMCell
        >>> cell = sLSTMCell(10, 8, num_heads=2)
        >>> cell.weight_hh.shape  # (heads, 4 * head size, head size)
        torch.Size([2, 16, 4])
        >>> x = torch.randn(6, 3, 10)  # (T, B, I)
        >>> state = None
        >>> for x_t in x:
        ...     prev = state
        ...     *state, trace = cell(x_t, state, return_trace=True)
        >>> h, c, n, m = state
        >>> torch.allclose(c, trace.forget * prev[1] + trace.input * trace.candidate)
        True
        >>> torch.allclose(h, trace.output * c / n)
        True
    """

    def __init__(self, input_size, hidden_size, num_heads=4, bias=True, forget="sigmoid", device=None,
                 dtype=None):  # fmt: skip
        super().__init__()
        self.input_size = _checks.positive_int("input_size", input_size)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.num_heads = _checks.positive_int("num_heads", num_heads)
        self.head_size = head_size(self.hidden_size, self.num_heads)
        self.bias = _checks.boolean("bias", bias)
        self.forget = check_forget(forget)
        kw = {"device": device, "dtype": dtype}
        H, K, d = self.hidden_size, self.num_heads, self.head_size
        self.weight_ih = nn.Parameter(torch.empty(4 * H, self.input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(K, 4 * d, d, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * H, **kw))
            self.bias_hh = nn.Parameter(torch.empty(4 * H, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Torch's uniform rule, then the power-law forget-gate bias (:func:`reset_slstm_parameters`)."""
        reset_slstm_parameters(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.forget)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_heads={self.num_heads}"
        s += "" if self.bias else ", bias=False"
        return s + ("" if self.forget == "sigmoid" else f", forget={self.forget!r}")

    def _check_input(self, input) -> tuple[torch.Tensor, bool]:
        """The input as ``(B, I)`` and whether it came unbatched as ``(I,)``."""
        return _checks.step_input(input, self.weight_ih, self.input_size)

    def _check_hx(self, hx, B: int, unbatched: bool, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The four states, each ``(B, H)``; zeros (the empty state) when ``hx`` is None."""
        H = self.hidden_size
        if hx is None:
            return tuple(x.new_zeros(B, H) for _ in range(4))
        if not (isinstance(hx, (tuple, list)) and len(hx) == 4):
            got = (
                f"a {type(hx).__name__} of {len(hx)}" if isinstance(hx, (tuple, list)) else type(hx).__name__
            )
            raise TypeError(f"hx must be a tuple (h, c, n, m) of four tensors for an sLSTM cell, got {got}")
        states = []
        for k, (name, value) in enumerate(zip("hcnm", hx)):
            value = _checks.float_tensor(f"hx[{k}] ({name})", value, self.weight_ih)
            expected, meaning = ((H,), "(hidden_size,)") if unbatched else ((B, H), "(batch, hidden_size)")
            _checks.shape(f"hx[{k}] ({name})", value, expected, meaning)
            states.append(value.unsqueeze(0) if unbatched else value)
        return tuple(states)

    def forward(self, input, hx=None, return_trace=False):
        """One step; see the class's Inputs and Outputs.

        Args:
            input (Tensor): ``(B, I)``, or ``(I,)`` unbatched.
            hx (tuple, optional): the state before the step, ``(h, c, n, m)``, each ``(B, H)`` (``(H,)`` unbatched). Default: ``None``, zeros (an empty state).
            return_trace (bool): also return a :class:`~gatedrnn.Trace` of the step. Default: ``False``.
        """
        x, unbatched = self._check_input(input)
        state = self._check_hx(hx, x.shape[0], unbatched, x)
        xw = F.linear(x, self.weight_ih, self.bias_ih)  # (B, 4H): W_ih x + b_ih
        state, values = slstm_step(xw, state, self.weight_hh, self.bias_hh, self.forget)
        if unbatched:
            state, values = tuple(s[0] for s in state), tuple(v[0] for v in values)
        if return_trace:
            return (*state, Trace(dict(zip(SLSTM_TRACE_NAMES, values))))
        return state
