"""The matrix-memory LSTM of xLSTM: a covariance update of a matrix memory, exponential gating.

Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter & Hochreiter,
"xLSTM: Extended Long Short-Term Memory", NeurIPS 2024, section 2.3 (eqs. 19-27).

This file is the specification: the readable recurrent step that the parallel and the
chunkwise forms of :mod:`gatedrnn.xlstm.mlstm_forms` are tested against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gatedrnn import _checks
from gatedrnn.capture import RefusesScript
from gatedrnn.cells.slstm import check_forget, head_size
from gatedrnn.trace import Trace

# The trace's names: mlstm_step's activations (input .. memory), then the layer's output gate and h
MLSTM_TRACE_NAMES = ("input", "forget", "output", "normalizer", "stabilizer", "memory", "hidden")

EPS = 1e-6  # added to the denominator of h~, where the official package adds it (backends.py)


def log_forget(f_raw: torch.Tensor, forget: str = "sigmoid") -> torch.Tensor:
    """``log f_t`` from the forget gate's pre-activation: ``logsigmoid(f~)`` or ``f~`` (eq. 26)."""
    return F.logsigmoid(f_raw) if forget == "sigmoid" else f_raw


def safe_stabilizer(m: torch.Tensor) -> torch.Tensor:
    """``m`` where finite, ``0`` where ``m = -inf`` (nothing has been written yet): the
    value to subtract inside ``exp``, so that ``-inf - (-inf)`` never makes a NaN."""
    return torch.where(m == float("-inf"), torch.zeros_like(m), m)


def empty_state(B: int, K: int, dk: int, dv: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The empty state ``(C, n, m)``: zero memory and normalizer, ``m = -inf``."""
    C = like.new_zeros(B, K, dk, dv)
    n = like.new_zeros(B, K, dk)
    m = like.new_full((B, K), float("-inf"))
    return C, n, m


def mlstm_step(q, k, v, i_raw, f_raw, state=None, forget="sigmoid", eps=EPS):
    r"""One mLSTM step for every head: the memory update and the read-out ``h~`` (before the
    output gate, which the caller applies).

    .. math::

        \begin{aligned}
        m_t &= \max(\log f_t + m_{t-1},\ \tilde i_t), \quad
        i'_t = e^{\tilde i_t - m_t}, \quad f'_t = e^{\log f_t + m_{t-1} - m_t} \\
        C_t &= f'_t\, C_{t-1} + i'_t\, (k_t / \sqrt{d_k})\, v_t^\top, \qquad
        n_t = f'_t\, n_{t-1} + i'_t\, k_t / \sqrt{d_k} \\
        \tilde h_t &= C_t^\top q_t \,/\, \big(\max(|n_t^\top q_t|,\ e^{-m_t}) + \epsilon\big)
        \end{aligned}

    Args:
        q: ``(B, K, dk)`` query and key of each head.
        k: as ``q``.
        v: ``(B, K, dv)`` value.
        i_raw: ``(B, K)`` the input and forget gates' pre-activations.
        f_raw: as ``i_raw``.
        state: ``(C (B, K, dk, dv), n (B, K, dk), m (B, K))``, or ``None`` for the empty state
            (zeros and ``m = -inf``).
        forget: ``"sigmoid"`` (``log f = logsigmoid(f~)``) or ``"exp"`` (``log f = f~``).
        eps: added to the denominator of ``h~``. Default: ``1e-6``, the official package's.

    Returns:
        ``(h_tilde (B, K, dv), (C, n, m), (i, f, normalizer, m, memory))``: the activations are
        ``(B, K)`` each: the stabilized gates :math:`i'_t, f'_t` (the factors that enter
        :math:`C_t`), the denominator :math:`\max(|n_t^\top q_t|, e^{-m_t})` (without ``eps``),
        the stabilizer, and the Frobenius norm of :math:`C_t` (all in the stored, stabilized
        scale: multiply by :math:`e^{m_t}` for the paper's unstabilized values).
    """
    B, K, dk = q.shape
    if state is None:
        state = empty_state(B, K, dk, v.shape[-1], q)
    C_prev, n_prev, m_prev = state
    log_f = log_forget(f_raw, forget)  # eq. 26: log f_t, (B, K)
    m = torch.maximum(log_f + m_prev, i_raw)  # the stabilizer, as the sLSTM's (= i~ from the empty state m = -inf)
    m_safe = safe_stabilizer(m)
    i = torch.exp(i_raw - m_safe)  # eq. 25 stabilized: i'_t, at most 1
    f = torch.exp(log_f + m_prev - m_safe)  # eq. 26 stabilized: f'_t, at most 1 (0 from the empty state)
    k = k / math.sqrt(dk)  # eq. 23: the key scaled by 1/sqrt(d)
    C = f[..., None, None] * C_prev + i[..., None, None] * (k[..., :, None] * v[..., None, :])  # eq. 19: (B, K, dk, dv)
    n = f[..., None] * n_prev + i[..., None] * k  # eq. 20: (B, K, dk)
    numerator = torch.einsum("bkd,bkde->bke", q, C)  # C^T q, (B, K, dv)
    qn = torch.einsum("bkd,bkd->bk", q, n)  # n^T q, (B, K)
    denominator = torch.maximum(qn.abs(), torch.exp(-m_safe))  # eq. 21: at least e^{-m}, the unstabilized 1
    h_tilde = numerator / (denominator + eps)[..., None]  # eq. 21: (B, K, dv)
    memory = torch.linalg.vector_norm(C, dim=(-2, -1))  # ||C_t||_F, (B, K)
    return h_tilde, (C, n, m), (i, f, denominator, m, memory)


def reset_mlstm_parameters(weight_ih: torch.Tensor, bias_ih: torch.Tensor | None, num_heads: int) -> None:
    r"""Initializes one mLSTM layer's ``weight_ih`` ``(4H + 2K, I)`` and ``bias_ih`` in place.

    Every parameter uniform in :math:`(-1/\sqrt{H}, 1/\sqrt{H})` (torch's rule for its RNNs);
    then the forget gate's bias is ``linspace(3, 6)`` over the heads (the official package's
    ``bias_linspace_init_``: :math:`\sigma(3..6) \approx 0.95..0.998`, memories of about 20 to
    400 steps at the start) and the input gate's bias zero.
    """
    K = num_heads
    H = (weight_ih.shape[0] - 2 * K) // 4
    bound = 1.0 / math.sqrt(H)
    with torch.no_grad():
        weight_ih.uniform_(-bound, bound)
        if bias_ih is not None:
            bias_ih.uniform_(-bound, bound)
            bias_ih[3 * H : 3 * H + K] = 0.0  # the input gate
            bias_ih[3 * H + K : 3 * H + 2 * K] = torch.linspace(3.0, 6.0, K) if K > 1 else 3.0  # the forget gate


def split_projection(xw: torch.Tensor, hidden_size: int, num_heads: int):
    """``W_ih x + b_ih`` (..., 4H + 2K) into ``q, k, v`` (..., K, d), ``i~, f~`` (..., K) and
    ``o~`` (..., H): the row blocks ``[q; k; v; i; f; o]``."""
    H, K = hidden_size, num_heads
    q, k, v, i_raw, f_raw, o_raw = xw.split((H, H, H, K, K, H), dim=-1)
    heads = lambda x: x.unflatten(-1, (K, H // K))
    return heads(q), heads(k), heads(v), i_raw, f_raw, o_raw


class mLSTMCell(RefusesScript, nn.Module):
    r"""One step of xLSTM's matrix-memory LSTM (mLSTM): each head stores key-value pairs in a
    ``d x d`` matrix, written with an exponential input gate and read by a query.

    Per step, from the input ``x_t`` and the previous state ``(C, n, m)``, per head
    (``d = H / K`` units, :math:`\sqrt{d}` scales the key):

    .. math::

        \begin{aligned}
        [q_t; k_t; v_t; \tilde i_t; \tilde f_t; \tilde o_t] &= W_{ih} x_t + b_{ih}
            && \text{(eqs. 22-27)} \\
        \log f_t &= \log \sigma(\tilde f_t) \quad (\texttt{forget="exp"}: \tilde f_t) \\
        m_t &= \max(\log f_t + m_{t-1},\ \tilde i_t) && \text{(stabilizer)} \\
        i'_t &= \exp(\tilde i_t - m_t), \quad f'_t = \exp(\log f_t + m_{t-1} - m_t) \\
        C_t &= f'_t\, C_{t-1} + i'_t\, (k_t/\sqrt{d})\, v_t^\top && \text{(eq. 19)} \\
        n_t &= f'_t\, n_{t-1} + i'_t\, k_t / \sqrt{d} && \text{(eq. 20)} \\
        \tilde h_t &= \frac{C_t^\top q_t}{\max(|n_t^\top q_t|,\ e^{-m_t}) + \epsilon}
            && \text{(eq. 21)} \\
        h_t &= \sigma(\tilde o_t) \odot \tilde h_t && \text{(eqs. 21, 27)}
        \end{aligned}

    The stabilizer changes nothing but the rounding: :math:`C_t, n_t` are the paper's
    unstabilized memory and normalizer times :math:`e^{-m_t}`, and :math:`e^{-m_t}` in the
    denominator is the paper's lower bound 1 (up to :math:`\epsilon`, which the official
    package adds in the stabilized scale and so does this cell). :math:`i'_t, f'_t \le 1`
    whatever the pre-activations, so ``±1e4`` gives finite states and outputs.

    =================  ===============  ======================================================
    symbol             shape            meaning
    =================  ===============  ======================================================
    ``x``              (B, I)           input at step t
    ``h``              (B, H)           output: the heads' :math:`\tilde h_t` side by side,
                                        times the output gate
    ``C``              (B, K, d, d)     memory, rows indexed by the key, columns by the value
                                        (:math:`\sum k v^\top`, the official package's layout;
                                        the paper writes the transpose :math:`v k^\top`);
                                        stabilized: the paper's :math:`C_t e^{-m_t}`
    ``n``              (B, K, d)        normalizer (stabilized likewise)
    ``m``              (B, K)           stabilizer, the log-scale of ``C`` and ``n``;
                                        ``-inf``: the empty state
    ``q k v``          (B, K, d)        query, key, value of each head
    ``i f``            (B, K)           :math:`i'_t, f'_t`: one scalar per head and step
    ``o``              (B, H)           output gate :math:`\sigma(\tilde o_t)`
    ``K``, ``d``       int              ``num_heads``, ``d = H / K``
    ``weight_ih``      (4H + 2K, I)     rows ``[W_q (H); W_k (H); W_v (H); w_i (K); w_f (K);
                                        W_o (H)]``; head ``j``'s units at ``j*d:(j+1)*d``
                                        of the q, k, v and o blocks, its gates at row ``j``
                                        of the i and f blocks
    ``bias_ih``        (4H + 2K,)       the biases, same blocks
    =================  ===============  ======================================================

    **Initialization** (:func:`reset_mlstm_parameters`): uniform in
    :math:`(-1/\sqrt{H}, 1/\sqrt{H})` as torch's RNN cells; the forget gate's bias
    ``linspace(3, 6)`` over the heads and the input gate's bias zero, as the official package.

    **Where the paper and the official package differ, and what this cell does:**

    - *The empty state.* The paper leaves :math:`m_0` open. Here the empty state is
      ``C = 0, n = 0, m = -inf`` (the default ``hx``): then :math:`m_1 = \tilde i_1` and
      :math:`f'_1 = 0`, exactly what the official package's parallel form computes (its
      row-wise maximum). Its recurrent step and chunkwise form start from ``m = 0``; pass
      ``m = 0`` to start there. The two starts give the same outputs up to :math:`\epsilon`
      (relative differences of about ``1e-6``).
    - *Where* :math:`1/\sqrt{d}` *goes.* The paper scales the key; so does the official
      parallel form and recurrent step (its chunkwise form scales the query, the same product).
    - *The forget gate.* ``forget="sigmoid"`` (default, the official package's) or
      ``forget="exp"`` (eq. 26 allows both).
    - The official package computes the gates from ``[q; k; v]`` inside its block; this cell,
      like the paper, from ``x``. Its blocks (:mod:`gatedrnn.xlstm.blocks`) follow the package.

    Args:
        input_size (int): ``I``, the number of features of the input ``x``.
        hidden_size (int): ``H``, the number of features of ``h``; divisible by ``num_heads``.
        num_heads (int): ``K``, the number of heads, each with a ``d x d`` memory, ``d = H / K``.
            Default: ``4``.
        bias (bool): if ``False``, the cell has no ``bias_ih``. Default: ``True``.
        forget (str): the forget gate's activation, ``"sigmoid"`` or ``"exp"``. Default:
            ``"sigmoid"``.
        eps (float): added to the denominator of :math:`\tilde h_t`. Default: ``1e-6``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default: ``None``.

    Inputs:
        - **input** (Tensor): ``(B, I)``, or ``(I,)`` unbatched.
        - **hx** (tuple of three Tensors, optional): ``(C, n, m)``: ``(B, K, d, d)``,
          ``(B, K, d)``, ``(B, K)`` (without ``B`` unbatched). Default: the empty state.
        - **return_trace** (bool): also return the step's gates and states. Default: ``False``.

    Outputs:
        - **h**: ``(B, H)`` (``(H,)`` unbatched).
        - **(C, n, m)**: the new state.
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of ``input,
          forget`` (:math:`i'_t, f'_t`), ``output`` (the output gate), ``normalizer`` (the
          denominator :math:`\max(|n_t^\top q_t|, e^{-m_t})`), ``stabilizer`` (``m``),
          ``memory`` (:math:`\|C_t\|_F`, not the matrices) and ``hidden`` (``h``): ``output``
          and ``hidden`` ``(B, H)``, the others one value per head, ``(B, K)``.

    Examples:
        >>> import torch
        >>> from gatedrnn.xlstm import mLSTMCell
        >>> cell = mLSTMCell(10, 8, num_heads=2)
        >>> cell.weight_ih.shape  # [q; k; v; i; f; o]: 4H + 2K rows
        torch.Size([36, 10])
        >>> state = None
        >>> for x_t in torch.randn(6, 3, 10):  # (T, B, I)
        ...     h, state, trace = cell(x_t, state, return_trace=True)
        >>> C, n, m = state
        >>> C.shape, n.shape, m.shape
        (torch.Size([3, 2, 4, 4]), torch.Size([3, 2, 4]), torch.Size([3, 2]))
        >>> torch.allclose(trace.memory, C.flatten(2).norm(dim=-1))
        True
    """

    def __init__(self, input_size, hidden_size, num_heads=4, bias=True, forget="sigmoid", eps=EPS, device=None,
                 dtype=None):  # fmt: skip
        super().__init__()
        self.input_size = _checks.positive_int("input_size", input_size)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.num_heads = _checks.positive_int("num_heads", num_heads)
        self.head_size = head_size(self.hidden_size, self.num_heads)
        self.bias = _checks.boolean("bias", bias)
        self.forget = check_forget(forget)
        self.eps = check_eps(eps)
        kw = {"device": device, "dtype": dtype}
        rows = 4 * self.hidden_size + 2 * self.num_heads
        self.weight_ih = nn.Parameter(torch.empty(rows, self.input_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(rows, **kw))
        else:
            self.register_parameter("bias_ih", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Torch's uniform rule, then the official forget-gate bias (:func:`reset_mlstm_parameters`)."""
        reset_mlstm_parameters(self.weight_ih, self.bias_ih, self.num_heads)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_heads={self.num_heads}"
        s += "" if self.bias else ", bias=False"
        s += "" if self.forget == "sigmoid" else f", forget={self.forget!r}"
        return s + ("" if self.eps == EPS else f", eps={self.eps}")

    def _check_input(self, input) -> tuple[torch.Tensor, bool]:
        """The input as ``(B, I)`` and whether it came unbatched as ``(I,)``."""
        return _checks.step_input(input, self.weight_ih, self.input_size)

    def forward(self, input, hx=None, return_trace=False):
        """One step; see the class's Inputs and Outputs.

        Args:
            input (Tensor): ``(B, I)``, or ``(I,)`` unbatched.
            hx (tuple, optional): the state before the step, ``(C (B, K, d, d), n (B, K, d), m (B, K))``. Default: ``None``, the empty state (zeros, ``m = -inf``).
            return_trace (bool): also return a :class:`~gatedrnn.Trace` of the step. Default: ``False``.
        """
        x, unbatched = self._check_input(input)
        B, K, d = x.shape[0], self.num_heads, self.head_size
        state = check_state("hx", hx, B, K, d, d, unbatched, self.weight_ih)
        xw = F.linear(x, self.weight_ih, self.bias_ih)  # (B, 4H + 2K)
        q, k, v, i_raw, f_raw, o_raw = split_projection(xw, self.hidden_size, K)
        h_tilde, state, (i, f, denominator, m, memory) = mlstm_step(q, k, v, i_raw, f_raw, state, self.forget,
                                                                     self.eps)  # fmt: skip
        o = torch.sigmoid(o_raw)  # eq. 27: the output gate, (B, H)
        h = o * h_tilde.flatten(-2)  # (B, H)
        values = (i, f, o, denominator, m, memory, h)
        if unbatched:
            h, state, values = h[0], tuple(s[0] for s in state), tuple(v[0] for v in values)
        if return_trace:
            return h, state, Trace(dict(zip(MLSTM_TRACE_NAMES, values)))
        return h, state


def check_eps(eps) -> float:
    """``eps`` if it is a non-negative finite float, else an error naming it."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a non-negative float, got {type(eps).__name__} {eps!r}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a non-negative finite float, got {eps}")
    return float(eps)


def check_state(name, hx, B, K, dk, dv, unbatched, like) -> tuple[torch.Tensor, ...] | None:
    """``hx = (C, n, m)`` checked against ``(B, K, dk, dv), (B, K, dk), (B, K)`` (without
    ``B`` when ``unbatched``) and returned batched; ``None`` stays ``None`` (the empty state)."""
    if hx is None:
        return None
    if not (isinstance(hx, (tuple, list)) and len(hx) == 3):
        got = f"a {type(hx).__name__} of {len(hx)}" if isinstance(hx, (tuple, list)) else type(hx).__name__
        raise TypeError(f"{name} must be a tuple (C, n, m) of three tensors for an mLSTM, got {got}")
    shapes = {"C": ((K, dk, dv), "(heads, dk, dv)"), "n": ((K, dk), "(heads, dk)"), "m": ((K,), "(heads,)")}
    states = []
    for j, (letter, value) in enumerate(zip("Cnm", hx)):
        label = f"{name}[{j}] ({letter})"
        value = _checks.float_tensor(label, value, like)
        expected, meaning = shapes[letter]
        if not unbatched:
            expected, meaning = (B, *expected), "(batch, " + meaning[1:]
        _checks.shape(label, value, expected, meaning)
        states.append(value.unsqueeze(0) if unbatched else value)
    return tuple(states)
