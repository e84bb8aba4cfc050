r"""The mLSTM over a sequence (:func:`mlstm_sequence`) and the ``mLSTM`` layer.

Beck et al., "xLSTM: Extended Long Short-Term Memory", NeurIPS 2024, section 2.3. The step, the
specification, is :func:`gatedrnn.cells.mlstm.mlstm_step`; the three forms that compute the
same thing over a whole sequence (recurrent, parallel, chunkwise), their numerics and their
gradients are in :mod:`gatedrnn.xlstm.mlstm_forms`.

**The official package** (``xlstm.blocks.mlstm.backends``), argument by argument:

- ``parallel_stabilized_simple(queries=q, keys=k, values=v, igate_preact=i_raw[..., None],
  fgate_preact=f_raw[..., None])`` is ``mlstm_sequence(q, k, v, i_raw, f_raw, form="parallel")[0]``
  (float64: ``~1e-13``; gradients too). It takes no initial state and returns no state; it
  starts empty, as ``state=None`` does here (``m = -inf``).
- ``recurrent_step_stabilized_simple(C, n[..., None], m[..., None, None], q[:, :, None],
  k[:, :, None], v[:, :, None], i_raw[..., None, None], f_raw[..., None, None])`` is
  :func:`~gatedrnn.cells.mlstm.mlstm_step` from the same state (``C`` laid out ``(dk, dv)`` in
  both). Its blocks start it from zeros with ``m = 0``: the same outputs as the empty state up to
  ``eps`` (about ``1e-6`` relative).
- ``chunkwise_simple(q, k, v, i_raw, f_raw, initial_C, initial_n, initial_m)`` scales the query
  by :math:`1/\sqrt{d}` where the paper and this module scale the key: the same :math:`\tilde h`,
  but its returned ``C`` and ``n`` are :math:`\sqrt{d}` times ours (``m`` the same); it starts
  from ``m = 0`` and needs ``T`` a multiple of ``chunk_size``.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from gatedrnn import _checks, capture, exportable
from gatedrnn.capture import RefusesScript
from gatedrnn.cells.mlstm import (
    EPS,
    MLSTM_TRACE_NAMES,
    check_eps,
    check_state,
    log_forget,
    reset_mlstm_parameters,
    split_projection,
)
from gatedrnn.cells.slstm import check_forget, head_size
from gatedrnn.trace import Trace

from gatedrnn.xlstm.mlstm_forms import (  # noqa: F401  (FORMS, choose_form: part of this module's API)
    FORMS,
    STEP_TRACE_NAMES,
    chunkwise_form,
    choose_form,
    parallel_form,
    recurrent_form,
    scanned_form,
)


def mlstm_sequence(q, k, v, i_raw, f_raw, state=None, *, form="auto", chunk_size=64, forget="sigmoid", eps=EPS,
                   lengths=None, want_trace=False):  # fmt: skip
    r"""The mLSTM memory over a whole sequence, every head at once: :math:`\tilde h_t` for
    every step (the output gate is the caller's) and the final state.

    Args:
        q (Tensor): ``(B, K, T, dk)`` queries and keys of ``K`` heads.
        k (Tensor): as ``q``.
        v (Tensor): ``(B, K, T, dv)`` values.
        i_raw (Tensor): ``(B, K, T)`` the input and forget gates' pre-activations.
        f_raw (Tensor): as ``i_raw``.
        state (tuple, optional): ``(C (B, K, dk, dv), n (B, K, dk), m (B, K))``, the state
            before the first step. Default: ``None``, the empty state (zeros, ``m = -inf``).
        form (str): ``"recurrent"``, ``"parallel"``, ``"chunkwise"`` or ``"auto"``
            (:func:`choose_form`: recurrent for ``T = 1`` or a trace, parallel up to
            ``chunk_size``, chunkwise above). Default: ``"auto"``.
        chunk_size (int): the chunkwise form's chunk length ``L``. Default: ``64``.
        forget (str): ``"sigmoid"`` or ``"exp"``. Default: ``"sigmoid"``.
        eps (float): added to the denominator of :math:`\tilde h_t`. Default: ``1e-6``.
        lengths (Tensor, optional): ``(B,)`` integers, each sequence's valid steps: past them
            the state is carried unchanged (``i~ = -inf``, ``log f = 0``), ``h~`` and the trace
            are zero. Default: ``None`` (all ``T``).
        want_trace (bool): also return the activations (with the recurrent form, whatever
            ``form`` says). Default: ``False``.

    Returns:
        ``(h_tilde, (C, n, m), trace)``: ``h_tilde`` ``(B, K, T, dv)``; the state after each
        sequence's last valid step; ``trace`` ``None`` or a dict of ``input, forget,
        normalizer, stabilizer, memory``, each ``(B, K, T)`` (see
        :func:`~gatedrnn.cells.mlstm.mlstm_step`).

    Examples:
        >>> import torch
        >>> from gatedrnn.xlstm.mlstm import mlstm_sequence
        >>> q, k, v = (torch.randn(2, 4, 100, 16, dtype=torch.float64) for _ in range(3))
        >>> i_raw, f_raw = torch.randn(2, 4, 100, dtype=torch.float64), torch.randn(2, 4, 100, dtype=torch.float64)
        >>> h1, (C1, n1, m1), _ = mlstm_sequence(q, k, v, i_raw, f_raw, form="recurrent")
        >>> h2, (C2, n2, m2), _ = mlstm_sequence(q, k, v, i_raw, f_raw, form="chunkwise", chunk_size=32)
        >>> torch.allclose(h1, h2), torch.allclose(C1, C2), torch.allclose(m1, m2)
        (True, True, True)
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(map(repr, FORMS))}, got {form!r}")
    chunk_size = _checks.positive_int("chunk_size", chunk_size)
    check_forget(forget)
    eps = check_eps(eps)
    B, K, T, dk, dv = _check_qkv(q, k, v, i_raw, f_raw)
    if state is not None:
        state = check_state("state", state, B, K, dk, dv, False, q)
    log_f = log_forget(f_raw, forget)  # (B, K, T)
    valid = None
    if lengths is not None:
        lengths = _checks.lengths(lengths, T, B, q.device)
        if lengths is not None:
            valid = torch.arange(T, device=q.device) < lengths[:, None]  # (B, T)
            valid = valid[:, None, :]  # (B, 1, T): past the end, write nothing and keep the state
            i_raw = torch.where(valid, i_raw, float("-inf"))
            log_f = torch.where(valid, log_f, 0.0)
    trace = None
    # under torch.export, one scan node (the graph runs at every T), decided before choose_form,
    # whose comparison of T with chunk_size export would turn into a guard that fixes T
    form = "scan" if capture.exporting() and exportable.scan_op is not None else choose_form(form, T, chunk_size,
                                                                                             want_trace)  # fmt: skip
    if form == "scan":
        h_tilde, state, trace = scanned_form(q, k, v, i_raw, log_f, state, eps, want_trace)
    elif form == "recurrent" or want_trace:
        h_tilde, state, trace = recurrent_form(q, k, v, i_raw, log_f, state, eps, want_trace)
    elif form == "parallel":
        h_tilde, state = parallel_form(q, k, v, i_raw, log_f, state, eps)
    else:
        h_tilde, state = chunkwise_form(q, k, v, i_raw, log_f, state, eps, chunk_size)
    if valid is not None:
        h_tilde = torch.where(valid[..., None], h_tilde, 0.0)
        if trace is not None:
            trace = {name: torch.where(valid, value, 0.0) for name, value in trace.items()}
    return h_tilde, state, trace


def _check_qkv(q, k, v, i_raw, f_raw):
    """The shapes of ``mlstm_sequence``'s inputs: ``(B, K, T, dk, dv)``, or an error naming the argument."""
    for name, x in (("q", q), ("k", k), ("v", v), ("i_raw", i_raw), ("f_raw", f_raw)):
        _checks.float_tensor(name, x, q)
    if q.dim() != 4:
        raise _checks.ShapeError(f"q must be 4-D (B, heads, T, dk), got {q.dim()}-D with shape {tuple(q.shape)}")
    B, K, T, dk = q.shape
    if T == 0:
        raise ValueError(f"q must hold at least one time step, got T=0 (shape {tuple(q.shape)})")
    _checks.shape("k", k, (B, K, T, dk), "(B, heads, T, dk), like q")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise _checks.ShapeError(f"v must have shape ({B}, {K}, {T}, dv) (B, heads, T, dv), like q but its last "
                                 f"dimension, got {tuple(v.shape)}")  # fmt: skip
    _checks.shape("i_raw", i_raw, (B, K, T), "(B, heads, T)")
    _checks.shape("f_raw", f_raw, (B, K, T), "(B, heads, T)")
    return B, K, T, dk, v.shape[-1]


class mLSTM(RefusesScript, nn.Module):
    r"""A stack of mLSTM layers (xLSTM's matrix-memory LSTM), a drop-in for ``torch.nn.LSTM``'s
    calling convention: per layer and step, from ``x_t``,

    .. math::

        \begin{aligned}
        [q_t; k_t; v_t; \tilde i_t; \tilde f_t; \tilde o_t] &= W_{ih} x_t + b_{ih} \\
        C_t &= f'_t C_{t-1} + i'_t\, (k_t / \sqrt d)\, v_t^\top, \quad
        n_t = f'_t n_{t-1} + i'_t\, k_t / \sqrt d \\
        h_t &= \sigma(\tilde o_t) \odot \frac{C_t^\top q_t}{\max(|n_t^\top q_t|, e^{-m_t}) + \epsilon}
        \end{aligned}

    per head, with the stabilized gates :math:`i'_t, f'_t` and the stabilizer :math:`m_t` of
    :class:`~gatedrnn.cells.mlstm.mLSTMCell` (its docstring has the full equations, the
    symbols, the initialization and where the paper and the official package differ). The gates
    see the input alone, so the whole sequence can be computed at once: ``form`` picks the
    recurrent, parallel or chunkwise form (:mod:`gatedrnn.xlstm.mlstm_forms`), which give the same
    values. Gradients: the recurrent form's native loop has a hand-written backward; the other
    forms go through torch's autograd (inside its chunks the chunkwise form has a backward of
    its own, native on the CPU); see the module's docstring.

    Args:
        input_size (int): ``I``, the number of features of the input.
        hidden_size (int): ``H``, the number of features of ``h``; divisible by ``num_heads``.
        num_heads (int): ``K``, heads of ``d = H / K`` units, each with a ``d x d`` memory.
            Default: ``4``.
        num_layers (int): how many layers are stacked. Default: ``1``.
        bias (bool): if ``False``, the layers have no ``bias_ih_l{k}``. Default: ``True``.
        batch_first (bool): ``(B, T, *)`` input and output instead of ``(T, B, *)``.
            Default: ``False``.
        dropout (float): in training, dropout on each layer's output but the last.
            Default: ``0.0``.
        form (str): ``"auto"``, ``"recurrent"``, ``"parallel"`` or ``"chunkwise"``
            (:func:`choose_form`). Default: ``"auto"``.
        chunk_size (int): the chunkwise form's chunk length. Default: ``64``.
        forget (str): ``"sigmoid"`` or ``"exp"``. Default: ``"sigmoid"``.
        eps (float): added to the denominator of :math:`\tilde h_t`. Default: ``1e-6``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default: ``None``.

    Inputs:
        - **input** (Tensor): ``(T, B, I)``, ``(B, T, I)`` with ``batch_first``, or ``(T, I)``
          unbatched.
        - **hx** (tuple, optional): ``(C, n, m)``: ``(L, B, K, d, d)``, ``(L, B, K, d)``,
          ``(L, B, K)`` for ``L = num_layers`` (without ``B`` unbatched). Default: the empty
          state (zeros, ``m = -inf``).
        - **lengths** (Tensor, optional): ``(B,)`` integers in ``[1, T]``, each sequence's valid
          steps: outputs past them are zero and the state is each sequence's state at its length.
        - **return_trace** (bool): also return the gate trace (computed with the recurrent
          form). Default: ``False``.

    Outputs:
        - **output**: ``(T, B, H)`` (``(B, T, H)`` with ``batch_first``, ``(T, H)`` unbatched).
        - **(C, n, m)**: the final state, shaped as ``hx``.
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of ``input,
          forget, output, normalizer, stabilizer, memory, hidden``: ``output`` (the output
          gate) and ``hidden`` ``(L, T, B, H)``, the per-head values ``(L, T, B, K)``
          (``(L, B, T, .)`` with ``batch_first``, ``(L, T, .)`` unbatched); zero past
          ``lengths``. ``normalizer`` is the denominator :math:`\max(|n_t^\top q_t|, e^{-m_t})`,
          ``memory`` the Frobenius norm :math:`\|C_t\|_F`, both in the stabilized scale.

    Attributes:
        weight_ih_l{k} (Tensor): ``(4H + 2K, I)`` for ``k = 0``, ``(4H + 2K, H)`` after: rows
            ``[W_q; W_k; W_v]`` (``H`` each), ``w_i``, ``w_f`` (``K`` each, one row per head),
            ``W_o`` (``H``).
        bias_ih_l{k} (Tensor): ``(4H + 2K,)``, the same blocks.

    Examples:
        >>> import torch
        >>> from gatedrnn.xlstm import mLSTM
        >>> layer = mLSTM(10, 32, num_heads=4, num_layers=2, batch_first=True)
        >>> x = torch.randn(3, 200, 10)
        >>> output, (C, n, m) = layer(x)
        >>> output.shape, C.shape  # (B, T, H); (L, B, K, d, d)
        (torch.Size([3, 200, 32]), torch.Size([2, 3, 4, 8, 8]))
        >>> layer.form = "recurrent"  # the step by step specification: the same values
        >>> torch.allclose(layer(x)[0], output, atol=1e-5)
        True
    """

    def __init__(self, input_size, hidden_size, num_heads=4, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, form="auto", chunk_size=64, forget="sigmoid", eps=EPS, device=None,
                 dtype=None):  # fmt: skip
        super().__init__()
        self.input_size = _checks.positive_int("input_size", input_size)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.num_heads = _checks.positive_int("num_heads", num_heads)
        self.head_size = head_size(self.hidden_size, self.num_heads)
        self.num_layers = _checks.positive_int("num_layers", num_layers)
        self.bias = _checks.boolean("bias", bias)
        self.batch_first = _checks.boolean("batch_first", batch_first)
        self.dropout = _checks.probability("dropout", dropout)
        if form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(map(repr, FORMS))}, got {form!r}")
        self.form = form
        self.chunk_size = _checks.positive_int("chunk_size", chunk_size)
        self.forget = check_forget(forget)
        self.eps = check_eps(eps)
        kw = {"device": device, "dtype": dtype}
        rows = 4 * self.hidden_size + 2 * self.num_heads
        for layer in range(self.num_layers):
            size = self.input_size if layer == 0 else self.hidden_size
            setattr(self, f"weight_ih_l{layer}", nn.Parameter(torch.empty(rows, size, **kw)))
            if bias:
                setattr(self, f"bias_ih_l{layer}", nn.Parameter(torch.empty(rows, **kw)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each layer as :func:`~gatedrnn.cells.mlstm.reset_mlstm_parameters`."""
        for layer in range(self.num_layers):
            reset_mlstm_parameters(getattr(self, f"weight_ih_l{layer}"), getattr(self, f"bias_ih_l{layer}", None),
                                   self.num_heads)  # fmt: skip

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_heads={self.num_heads}"
        s += f", num_layers={self.num_layers}" if self.num_layers != 1 else ""
        s += ", bias=False" if not self.bias else ""
        s += ", batch_first=True" if self.batch_first else ""
        s += f", dropout={self.dropout}" if self.dropout else ""
        s += f", form={self.form!r}" if self.form != "auto" else ""
        s += f", chunk_size={self.chunk_size}" if self.chunk_size != 64 else ""
        s += f", forget={self.forget!r}" if self.forget != "sigmoid" else ""
        return s + (f", eps={self.eps}" if self.eps != EPS else "")

    def _check_input(self, input):
        x = _checks.float_tensor("input", input, self.weight_ih_l0)
        if x.dim() not in (2, 3):
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise _checks.ShapeError(f"input must be 3-D {layout} or 2-D (T, I) unbatched, got {x.dim()}-D "
                                     f"with shape {tuple(x.shape)}")  # fmt: skip
        if x.shape[-1] != self.input_size:
            raise _checks.ShapeError(f"input must have {self.input_size} features (input_size) in its last dimension, "
                                     f"got {x.shape[-1]} (shape {tuple(x.shape)})")  # fmt: skip
        if x.dim() == 2:
            return x.unsqueeze(0), True  # (1, T, I)
        return (x if self.batch_first else x.transpose(0, 1)), False  # (B, T, I)

    def _check_hx(self, hx, B, unbatched):
        """``hx`` as a list of per-layer states (or ``None``s)."""
        L, K, d = self.num_layers, self.num_heads, self.head_size
        if hx is None:
            return [None] * L
        if not (isinstance(hx, (tuple, list)) and len(hx) == 3):
            got = f"a {type(hx).__name__} of {len(hx)}" if isinstance(hx, (tuple, list)) else type(hx).__name__
            raise TypeError(f"hx must be a tuple (C, n, m) of three tensors for an mLSTM, got {got}")
        lead = (L,) if unbatched else (L, B)
        meaning = "(num_layers, " + ("" if unbatched else "batch, ")
        shapes = {"C": ((*lead, K, d, d), meaning + "heads, d, d)"), "n": ((*lead, K, d), meaning + "heads, d)"),
                  "m": ((*lead, K), meaning + "heads)")}  # fmt: skip
        for j, (letter, value) in enumerate(zip("Cnm", hx)):
            _checks.float_tensor(f"hx[{j}] ({letter})", value, self.weight_ih_l0)
            _checks.shape(f"hx[{j}] ({letter})", value, *shapes[letter])
        C, n, m = (s.unsqueeze(1) if unbatched else s for s in hx)
        return [(C[layer], n[layer], m[layer]) for layer in range(L)]

    def forward(self, input, hx=None, lengths=None, return_trace=False):
        """Run the layers over a sequence; see the class's Inputs and Outputs.

        Args:
            input (Tensor): ``(T, B, I)``, ``(B, T, I)`` with ``batch_first``, or ``(T, I)`` unbatched.
            hx (tuple, optional): the initial state, ``(C (L, B, K, d, d), n (L, B, K, d), m (L, B, K))``. Default: ``None``, the empty state.
            lengths (Tensor, optional): ``(B,)`` integers in ``[1, T]``, each sequence's valid
                steps: outputs past them are zero and the final state is the one at each length.
                Default: ``None``, every sequence full.
            return_trace (bool): also return a :class:`~gatedrnn.Trace`. Default: ``False``.
        """
        x, unbatched = self._check_input(input)  # (B, T, I)
        B, T = x.shape[:2]
        if T == 0:
            raise ValueError(f"input must hold at least one time step, got T=0 (shape {tuple(input.shape)})")
        if lengths is not None:
            if unbatched:
                raise ValueError("lengths is only accepted with batched input, got 2-D (T, I) unbatched input")
            lengths = _checks.lengths(lengths, T, B, x.device)  # None when every sequence is full
        states = self._check_hx(hx, B, unbatched)
        H, K = self.hidden_size, self.num_heads
        finals, traces = [], []
        for layer in range(self.num_layers):
            xw = F.linear(x, getattr(self, f"weight_ih_l{layer}"), getattr(self, f"bias_ih_l{layer}", None))
            q, k, v, i_raw, f_raw, o_raw = split_projection(xw, H, K)  # (B, T, K, d) x 3, (B, T, K) x 2, (B, T, H)
            heads_first = lambda t: t.movedim(1, 2)
            h_tilde, state, acts = mlstm_sequence(
                heads_first(q), heads_first(k), heads_first(v), heads_first(i_raw), heads_first(f_raw), states[layer],
                form=self.form, chunk_size=self.chunk_size, forget=self.forget, eps=self.eps, lengths=lengths,
                want_trace=return_trace,
            )  # fmt: skip
            o = torch.sigmoid(o_raw)  # (B, T, H): the output gate
            h = o * h_tilde.movedim(1, 2).flatten(-2)  # (B, T, H)
            if lengths is not None:
                valid = (torch.arange(T, device=x.device) < lengths[:, None])[..., None]  # (B, T, 1)
                h, o = torch.where(valid, h, 0.0), torch.where(valid, o, 0.0)
            finals.append(state)
            if return_trace:
                per_head = {name: value.movedim(1, 2) for name, value in acts.items()}  # (B, T, K)
                traces.append({**per_head, "output": o, "hidden": h})
            x = h
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        C, n, m = (torch.stack(s) for s in zip(*finals))  # (L, B, K, d, d), (L, B, K, d), (L, B, K)
        output = x
        if unbatched:
            output, C, n, m = output[0], C[:, 0], n[:, 0], m[:, 0]
        elif not self.batch_first:
            output = output.transpose(0, 1)  # (T, B, H)
        if not return_trace:
            return output, (C, n, m)
        trace = {}
        for name in MLSTM_TRACE_NAMES:
            value = torch.stack([t[name] for t in traces])  # (L, B, T, .)
            trace[name] = value[:, 0] if unbatched else (value if self.batch_first else value.transpose(1, 2))
        return output, (C, n, m), Trace(trace)
