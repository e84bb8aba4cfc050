"""Minimal gated RNNs whose gates see the input alone: MinGRU and MinLSTM.

Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, "Were RNNs All We Needed?", 2024. With no
``h_{t-1}`` inside the gates, ``h_t = a_t ⊙ h_{t-1} + b_t`` is a linear recurrence in ``h``,
run by ``backend=`` one of three ways, tested against each other: the step function in the
reference loop (:mod:`gatedrnn.reference`, the readable one), the gates of all steps at once
and then the native sequential loop of :mod:`gatedrnn.fused.linear` (``"fused"``, the fast one
on a few CPU cores), or a parallel scan over T in log space (:mod:`gatedrnn.scan`, the GPU
path). The candidate goes through the paper's positive
``g`` (its log-space version), so ``b_t > 0`` and the scan's logarithms exist.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from gatedrnn import _checks, capture, exportable, reference
from gatedrnn.backends import warn_unrolled
from gatedrnn.capture import RefusesScript
from gatedrnn.fused import native_available_for
from gatedrnn.fused.linear import linear_recurrence, min_gru_inference
from gatedrnn.scan import log_linear_scan
from gatedrnn.trace import Trace

MIN_TRACE_NAMES = {"MinGRU": ("update", "candidate", "hidden"), "MinLSTM": ("forget", "input", "candidate", "hidden")}
NUM_GATES = {"MinGRU": 2, "MinLSTM": 3}
BACKENDS = ("auto", "reference", "fused", "scan")


def g(x: torch.Tensor) -> torch.Tensor:
    """The paper's positive activation: ``x + 1/2`` for ``x >= 0``, ``sigmoid(x)`` below."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: torch.Tensor) -> torch.Tensor:
    """``log g(x)``, stable at both ends."""
    return torch.where(x >= 0, (F.relu(x) + 0.5).log(), -F.softplus(-x))


def min_gru_step(xw, state, weight_hh=None, bias_hh=None, weight_hr=None):
    """One MinGRU step from ``xw = W x_t + b`` (B, 2H), blocks ``[k; x_n]``: returns ``(h,)``
    and ``(z, n, h)``. There are no recurrent weights (the ``*_hh`` arguments are unused)."""
    (h_prev,) = state
    k, x_n = xw.chunk(2, dim=1)  # 2 x (B, H)
    z = torch.sigmoid(k)  # update gate, from x_t alone
    n = g(x_n)  # candidate
    h = (1 - z) * h_prev + z * n  # eq. (minGRU): z is the rate at which h moves to n
    return (h,), (z, n, h)


def min_lstm_step(xw, state, weight_hh=None, bias_hh=None, weight_hr=None):
    """One MinLSTM step from ``xw`` (B, 3H), blocks ``[x_f; x_i; x_n]``: forget and input
    gates normalized to sum to 1 (the paper's time-independent scale). Returns ``(h,)`` and
    ``(f, i, n, h)``."""
    (h_prev,) = state
    x_f, x_i, x_n = xw.chunk(3, dim=1)  # 3 x (B, H)
    f, i = torch.sigmoid(x_f), torch.sigmoid(x_i)
    f, i = f / (f + i), i / (f + i)  # normalized gates
    n = g(x_n)  # candidate
    h = f * h_prev + i * n
    return (h,), (f, i, n, h)


STEPS = {"MinGRU": min_gru_step, "MinLSTM": min_lstm_step}


def _log_coefficients(mode: str, xw: torch.Tensor):
    """``log a``, ``log b`` of ``h_t = a_t h_{t-1} + b_t`` and the gates, for all steps at
    once, from ``xw`` (T, B, G*H)."""
    if mode == "MinGRU":
        k, x_n = xw.chunk(2, dim=-1)
        log_a, log_z = -F.softplus(k), -F.softplus(-k)  # log(1 - z), log z
        return log_a, log_z + log_g(x_n), (torch.sigmoid(k), g(x_n))
    x_f, x_i, x_n = xw.chunk(3, dim=-1)
    log_f, log_i = -F.softplus(-x_f), -F.softplus(-x_i)
    total = torch.logaddexp(log_f, log_i)
    return log_f - total, log_i - total + log_g(x_n), ((log_f - total).exp(), (log_i - total).exp(), g(x_n))


def _coefficients(mode: str, xw: torch.Tensor):
    """``a``, ``b`` of ``h_t = a_t h_{t-1} + b_t`` and the gates, for all steps at once, from
    ``xw`` (T, B, G*H): the step functions' arithmetic, vectorized over time."""
    if mode == "MinGRU":
        k, x_n = xw.chunk(2, dim=-1)
        z, n = torch.sigmoid(k), g(x_n)
        return 1 - z, z * n, (z, n)
    x_f, x_i, x_n = xw.chunk(3, dim=-1)
    f, i = torch.sigmoid(x_f), torch.sigmoid(x_i)
    f, i = f / (f + i), i / (f + i)
    n = g(x_n)
    return f, i * n, (f, i, n)


def loop_direction(mode, x, h0, weights, lengths, reverse, want_trace):
    """One layer and direction by the native sequential loop (:mod:`gatedrnn.fused.linear`):
    the contract of :func:`gatedrnn.reference.run_direction`."""
    weight_ih, bias_ih = weights
    xw = F.linear(x, weight_ih, bias_ih)  # (T, B, G*H)
    needs_grad = torch.is_grad_enabled() and (xw.requires_grad or h0.requires_grad)
    if mode == "MinGRU" and lengths is None and not want_trace and not needs_grad and not torch.jit.is_tracing():
        h = min_gru_inference(xw, h0, reverse)  # the coefficients computed on the fly, never stored
        return h, (h[0] if reverse else h[-1],), None
    a, b, gates = _coefficients(mode, xw)
    valid = None
    if lengths is not None:  # past a sequence's end: a = 1, b = 0 carries the state unchanged
        valid = (torch.arange(xw.shape[0], device=xw.device)[:, None] < lengths[None, :])[..., None]  # (T, B, 1)
        a, b = torch.where(valid, a, 1.0), torch.where(valid, b, 0.0)
    h = linear_recurrence(a, b, h0, reverse)  # (T, B, H)
    h_n = h[0] if reverse else h[-1]  # the carried state: each sequence's last valid step
    values = (*gates, h)
    if valid is not None:
        values = tuple(torch.where(valid, v, 0.0) for v in values)
    return values[-1], (h_n,), (values if want_trace else None)


def _flip(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Each sequence of x (T, B, *) reversed within its own length (padding stays last)."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device)[:, None]
    index = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, B): an involution
    return x.gather(0, index.view(T, -1, *([1] * (x.dim() - 2))).expand_as(x))


def scan_direction(mode, x, h0, weights, lengths, reverse, want_trace):
    """One layer and direction by the parallel scan: the contract of
    :func:`gatedrnn.reference.run_direction`."""
    weight_ih, bias_ih = weights
    xw = F.linear(x, weight_ih, bias_ih)  # (T, B, G*H)
    if reverse:
        xw = _flip(xw, lengths)
    log_a, log_b, gates = _log_coefficients(mode, xw)
    if lengths is not None:  # past a sequence's end: a = 1, b = 0 carries the state unchanged
        valid = (torch.arange(xw.shape[0], device=xw.device)[:, None] < lengths[None, :])[..., None]  # (T, B, 1)
        log_a, log_b = log_a.masked_fill(~valid, 0.0), log_b.masked_fill(~valid, float("-inf"))
    h = log_linear_scan(log_a, log_b, h0)  # (T, B, H)
    last = (lengths - 1) if lengths is not None else torch.full((xw.shape[1],), xw.shape[0] - 1, device=xw.device)
    h_n = h.gather(0, last.view(1, -1, 1).expand(1, *h.shape[1:]))[0]  # (B, H): each sequence's last valid step
    values = (*gates, h)
    if lengths is not None:
        values = tuple(torch.where(valid, v, 0.0) for v in values)
    if reverse:
        values = tuple(_flip(v, lengths) for v in values)
    return values[-1], (h_n,), (values if want_trace else None)


class MinRNNBase(RefusesScript, nn.Module):
    """What MinGRU and MinLSTM share: parameters ``weight_ih_l{k}`` ``(G·H, I)`` and
    ``bias_ih_l{k}`` ``(G·H,)`` per layer and direction (``_reverse``), uniform in
    ``±1/sqrt(H)`` as torch initializes its RNNs; torch.nn's constructor arguments (``dropout``
    between layers included); input ``(T, B, I)``, ``(B, T, I)`` with
    ``batch_first``, ``(T, I)`` unbatched or a ``PackedSequence``; ``hx`` ``(L·D, B, H)``;
    ``lengths=``; ``return_trace``. ``backend``: ``"reference"`` (the step function in the
    reference loop), ``"fused"`` (the gates of all steps at once, then the native sequential
    loop), ``"scan"`` (log-space parallel scan) or ``"auto"`` (fused on the CPU where the native
    loops are built, the reference loop where not, the scan on other devices).

    Args:
        input_size (int): ``I``, the number of input features.
        hidden_size (int): ``H``, the number of features of ``h``.
        num_layers (int): how many layers are stacked. Default: ``1``.
        bias (bool): whether the layers have ``bias_ih_l{k}``. Default: ``True``.
        batch_first (bool): ``(B, T, *)`` input and output. Default: ``False``.
        dropout (float): dropout between layers, in training. Default: ``0.0``.
        bidirectional (bool): both directions. Default: ``False``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' dtype. Default: ``None``.
        backend (str): ``"auto"``, ``"reference"``, ``"fused"`` or ``"scan"``. Keyword only.
            Default: ``"auto"``.
    """

    mode: str

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None, *, backend="auto"):  # fmt: skip
        super().__init__()
        self.input_size = _checks.positive_int("input_size", input_size)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.num_layers = _checks.positive_int("num_layers", num_layers)
        self.bias = _checks.boolean("bias", bias)
        self.batch_first = _checks.boolean("batch_first", batch_first)
        self.dropout = _checks.probability("dropout", dropout)  # between layers, in training
        self.bidirectional = _checks.boolean("bidirectional", bidirectional)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
        self.backend = backend
        kw = {"device": device, "dtype": dtype}
        G, H, D = NUM_GATES[self.mode], self.hidden_size, self.num_directions
        for layer in range(self.num_layers):
            for suffix in ("", "_reverse")[:D]:
                size = self.input_size if layer == 0 else H * D
                setattr(self, f"weight_ih_l{layer}{suffix}", nn.Parameter(torch.empty(G * H, size, **kw)))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}", nn.Parameter(torch.empty(G * H, **kw)))
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        s += f", num_layers={self.num_layers}" if self.num_layers != 1 else ""
        s += ", bias=False" if not self.bias else ""
        s += ", batch_first=True" if self.batch_first else ""
        s += f", dropout={self.dropout}" if self.dropout else ""
        s += ", bidirectional=True" if self.bidirectional else ""
        return s + (f", backend={self.backend!r}" if self.backend != "auto" else "")

    def forward(self, input, hx=None, lengths=None, return_trace=False):
        """Returns the output ``(T, B, D·H)`` (``(B, T, D·H)`` batch-first, a
        ``PackedSequence`` for one) and ``h_n`` ``(L·D, B, H)``; with ``return_trace`` also a
        :class:`~gatedrnn.Trace` of every gate, ``(L·D, T, B, H)`` (batch-first: ``(L·D, B, T, H)``).

        Args:
            input (Tensor or PackedSequence): ``(T, B, I)``, ``(B, T, I)`` with
                ``batch_first``, ``(T, I)`` unbatched, or packed.
            hx (Tensor, optional): ``h_0``, ``(L·D, B, H)`` (``(L·D, H)`` unbatched).
                Default: zeros.
            lengths (Tensor, optional): ``(B,)`` integers in ``[1, T]``, each sequence's valid
                steps; outputs past them are zero, ``h_n`` is each sequence's last valid state.
                Default: ``None``.
            return_trace (bool): also return the trace. Default: ``False``.
        """
        packed = input if isinstance(input, PackedSequence) else None
        if packed is not None:
            if lengths is not None:
                raise ValueError("lengths must be None when input is a PackedSequence (it carries its own)")
            x, lengths = pad_packed_sequence(packed)  # (T, B, I) in the caller's batch order
            unbatched = False
        else:
            x, unbatched = self._check_input(input)
        x = _checks.float_tensor("input", x, self.weight_ih_l0)
        T, B = x.shape[:2]
        if T == 0:
            raise ValueError(f"input must hold at least one time step, got T=0 (shape {tuple(x.shape)})")
        if lengths is not None:
            if unbatched:
                raise ValueError("lengths is only accepted with batched input, got 2-D (T, I) unbatched input")
            lengths = _checks.lengths(lengths, T, B, x.device)
        h0 = self._check_hx(hx, B, unbatched, x)
        backend = self.backend
        if backend == "auto":
            backend = "scan" if x.device.type != "cpu" else ("fused" if native_available_for(x.device) else "reference")
        backend = self._capture_backend(backend, x)
        finals, traces = [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                weights = (getattr(self, "weight_ih" + suffix), getattr(self, "bias_ih" + suffix, None))
                k = layer * self.num_directions + direction
                if backend in ("scan", "fused"):
                    run = scan_direction if backend == "scan" else loop_direction
                    out, (h_n,), values = run(self.mode, x, h0[k], weights, lengths, direction == 1, return_trace)
                else:
                    weight_ih, bias_ih = weights  # no recurrent weights, no projection
                    loop = exportable if backend == "export" else reference
                    out, (h_n,), values = loop.run_direction(
                        self.mode, x, (h0[k],), (weight_ih, None, bias_ih, None, None), lengths, direction == 1,
                        return_trace, step=STEPS[self.mode],
                    )  # fmt: skip
                outputs.append(out)
                finals.append(h_n)
                traces.append(values)
            x = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]  # (T, B, D*H)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        h_n = torch.stack(finals)  # (L*D, B, H)
        if packed is not None:  # back into the packing's own order (ties included)
            order = packed.sorted_indices
            padded, sizes = (x, lengths) if order is None else (x.index_select(1, order), lengths[order])
            data = pack_padded_sequence(padded, sizes.cpu(), enforce_sorted=True).data
            x = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        elif unbatched:
            x, h_n = x.squeeze(1), h_n.squeeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        if not return_trace:
            return x, h_n
        trace = {}
        for name, value in zip(MIN_TRACE_NAMES[self.mode], zip(*traces)):
            value = torch.stack(value)  # (L*D, T, B, H)
            trace[name] = value.squeeze(2) if unbatched else (value.transpose(1, 2) if self.batch_first else value)
        return x, h_n, Trace(trace)

    def _capture_backend(self, backend: str, x: torch.Tensor) -> str:
        """While a graph is captured, a loop whose graph runs at every T: under ``torch.export``
        and ONNX's dynamo exporter the reference step in torch's ``scan``
        (:mod:`gatedrnn.exportable`), under ``torch.jit.trace`` (and the legacy ONNX exporter)
        the parallel scan, whose operations take T from the input. The legacy ONNX exporter
        has no ``logcumsumexp``: there the reference loop is unrolled, with a warning."""
        if capture.exporting():
            if exportable.scan_op is None:
                warn_unrolled(type(self).__name__, {}, x.shape[0], "this torch has no scan operator")
                return "reference"
            return "export"
        if not torch.jit.is_tracing():
            return backend
        if torch.onnx.is_in_onnx_export():
            warn_unrolled(type(self).__name__, {}, x.shape[0])
            return "reference"
        return "scan"

    def _check_input(self, input) -> tuple[torch.Tensor, bool]:
        """The input as ``(T, B, I)`` and whether it came unbatched."""
        return _checks.sequence_input(input, self.weight_ih_l0, self.input_size, self.batch_first)

    def _check_hx(self, hx, B, unbatched, x):
        LD = self.num_layers * self.num_directions
        if hx is None:
            return x.new_zeros(LD, B, self.hidden_size)
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"hx must be a tensor h_0 for {type(self).__name__}, got a {type(hx).__name__}")
        hx = _checks.float_tensor("hx", hx, self.weight_ih_l0)
        expected = (LD, self.hidden_size) if unbatched else (LD, B, self.hidden_size)
        _checks.shape("hx", hx, expected, "(num_layers * num_directions, " + ("" if unbatched else "batch, ") + "hidden)")
        return hx.unsqueeze(1) if unbatched else hx


class MinGRU(MinRNNBase):
    r"""A stack of MinGRU layers (Feng et al. 2024): the GRU with its gates computed from the
    input alone and no reset gate,

    .. math::

        z_t = \sigma(W_z x_t + b_z), \quad n_t = g(W_n x_t + b_n), \quad
        h_t = (1 - z_t) \odot h_{t-1} + z_t \odot n_t,

    ``weight_ih_l{k}`` ``(2H, I)`` = ``[W_z; W_n]``. As in the paper, ``z`` is the rate at
    which ``h`` moves to the candidate (gatedrnn's GRU writes the blend the other way round:
    its ``z`` keeps). The trace holds ``update, candidate, hidden``.

    Args:
        input_size (int): ``I``, the number of features in each step of the input.
        hidden_size (int): ``H``, the number of features of the hidden state ``h``.
        num_layers (int): how many layers are stacked. Default: ``1``.
        bias (bool): if ``False``, the layers have no ``bias_ih_l{k}``. Default: ``True``.
        batch_first (bool): ``(B, T, *)`` input and output instead of ``(T, B, *)``.
            Default: ``False``.
        dropout (float): in training, dropout on each layer's output but the last.
            Default: ``0.0``.
        bidirectional (bool): run each layer in both directions (``_reverse`` parameters),
            ``D = 2``. Default: ``False``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default: ``None``.
        backend (str): ``"reference"``, ``"fused"``, ``"scan"`` or ``"auto"`` (the module's docstring).
            Keyword only. Default: ``"auto"``.

    Inputs:
        - **input** (Tensor or PackedSequence): ``(T, B, I)``, ``(B, T, I)`` with
          ``batch_first``, ``(T, I)`` unbatched, or packed.
        - **hx** (Tensor, optional): ``h_0``, ``(L*D, B, H)``. Default: zeros.
        - **lengths** (Tensor, optional): ``(B,)`` integers in ``[1, T]``, each sequence's
          valid steps.
        - **return_trace** (bool): also return the gate trace. Default: ``False``.

    Outputs:
        - **output**: ``(T, B, D*H)`` (``(B, T, D*H)`` with ``batch_first``).
        - **h_n**: ``(L*D, B, H)``.
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of
          ``update, candidate, hidden``, each ``(L*D, T, B, H)``.

    Attributes:
        weight_ih_l{k} (Tensor): ``(2H, I)`` for ``k = 0``, ``(2H, D*H)`` after: ``[W_z; W_n]``.
        bias_ih_l{k} (Tensor): ``(2H,)``.
        weight_ih_l{k}_reverse (Tensor): the reverse direction's, when ``bidirectional``.

    Examples:
        >>> import torch, gatedrnn
        >>> x = torch.randn(2, 50, 4)
        >>> loop = gatedrnn.MinGRU(4, 8, batch_first=True, backend="reference")
        >>> scan = gatedrnn.MinGRU(4, 8, batch_first=True, backend="scan")
        >>> _ = scan.load_state_dict(loop.state_dict())
        >>> torch.allclose(loop(x)[0], scan(x)[0], atol=1e-5)  # one recurrence, two ways
        True
    """

    mode = "MinGRU"


class MinLSTM(MinRNNBase):
    r"""A stack of MinLSTM layers (Feng et al. 2024): forget and input gates from the input
    alone, normalized so that they sum to one, and no output gate or cell state,

    .. math::

        f'_t, i'_t = \frac{(f_t, i_t)}{f_t + i_t}, \quad f_t = \sigma(W_f x_t + b_f), \;
        i_t = \sigma(W_i x_t + b_i), \quad h_t = f'_t \odot h_{t-1} + i'_t \odot g(W_n x_t + b_n),

    ``weight_ih_l{k}`` ``(3H, I)`` = ``[W_f; W_i; W_n]``. The trace holds the normalized
    ``forget`` and ``input``, ``candidate``, ``hidden``.

    Args:
        input_size (int): ``I``, the number of features in each step of the input.
        hidden_size (int): ``H``, the number of features of the hidden state ``h``.
        num_layers (int): how many layers are stacked. Default: ``1``.
        bias (bool): if ``False``, the layers have no ``bias_ih_l{k}``. Default: ``True``.
        batch_first (bool): ``(B, T, *)`` input and output instead of ``(T, B, *)``.
            Default: ``False``.
        dropout (float): in training, dropout on each layer's output but the last.
            Default: ``0.0``.
        bidirectional (bool): run each layer in both directions (``_reverse`` parameters),
            ``D = 2``. Default: ``False``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default: ``None``.
        backend (str): ``"reference"``, ``"fused"``, ``"scan"`` or ``"auto"`` (the module's docstring).
            Keyword only. Default: ``"auto"``.

    Inputs:
        - **input** (Tensor or PackedSequence): ``(T, B, I)``, ``(B, T, I)`` with
          ``batch_first``, ``(T, I)`` unbatched, or packed.
        - **hx** (Tensor, optional): ``h_0``, ``(L*D, B, H)``. Default: zeros.
        - **lengths** (Tensor, optional): ``(B,)`` integers in ``[1, T]``, each sequence's
          valid steps.
        - **return_trace** (bool): also return the gate trace. Default: ``False``.

    Outputs:
        - **output**: ``(T, B, D*H)`` (``(B, T, D*H)`` with ``batch_first``).
        - **h_n**: ``(L*D, B, H)``.
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of
          ``forget, input, candidate, hidden``, each ``(L*D, T, B, H)``.

    Attributes:
        weight_ih_l{k} (Tensor): ``(3H, I)`` for ``k = 0``, ``(3H, D*H)`` after: ``[W_f; W_i; W_n]``.
        bias_ih_l{k} (Tensor): ``(3H,)``.
        weight_ih_l{k}_reverse (Tensor): the reverse direction's, when ``bidirectional``.

    Examples:
        >>> import torch, gatedrnn
        >>> layer = gatedrnn.MinLSTM(4, 8)
        >>> output, h_n, trace = layer(torch.randn(30, 2, 4), return_trace=True)
        >>> torch.allclose(trace.forget + trace.input, torch.ones(1, 30, 2, 8))
        True
    """

    mode = "MinLSTM"


class MinCellBase(RefusesScript, nn.Module):
    """One step of a minimal cell: ``weight_ih (G·H, I)``, ``bias_ih (G·H,)``; input ``(B, I)``
    or ``(I,)``; returns ``h`` (and a :class:`~gatedrnn.Trace` with ``return_trace``)."""

    mode: str

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        self.input_size = _checks.positive_int("input_size", input_size)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.bias = _checks.boolean("bias", bias)
        G = NUM_GATES[self.mode]
        self.weight_ih = nn.Parameter(torch.empty(G * hidden_size, input_size, device=device, dtype=dtype))
        self.bias_ih = nn.Parameter(torch.empty(G * hidden_size, device=device, dtype=dtype)) if bias else None
        stdv = 1.0 / math.sqrt(hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def forward(self, input, hx=None, return_trace=False):
        x = _checks.float_tensor("input", input, self.weight_ih)
        if x.dim() not in (1, 2) or x.shape[-1] != self.input_size:
            raise _checks.ShapeError(f"input must be (B, {self.input_size}) or ({self.input_size},), got shape "
                                     f"{tuple(x.shape)}")  # fmt: skip
        unbatched = x.dim() == 1
        x = x.unsqueeze(0) if unbatched else x
        if hx is None:
            h0 = x.new_zeros(x.shape[0], self.hidden_size)
        else:
            h0 = _checks.float_tensor("hx", hx, self.weight_ih)
            h0 = h0.unsqueeze(0) if unbatched else h0
            _checks.shape("hx", h0, (x.shape[0], self.hidden_size), "(batch, hidden_size)")
        (h,), values = STEPS[self.mode](F.linear(x, self.weight_ih, self.bias_ih), (h0,))
        if unbatched:
            h, values = h[0], tuple(v[0] for v in values)
        return (h, Trace(dict(zip(MIN_TRACE_NAMES[self.mode], values)))) if return_trace else h


class MinGRUCell(MinCellBase):
    """One MinGRU step (see :class:`MinGRU`): from the input alone, ``z = σ(W_z x + b_z)``,
    ``h = (1 - z) ⊙ h_prev + z ⊙ g(W_n x + b_n)``.

    Args:
        input_size (int): ``I``, the number of input features.
        hidden_size (int): ``H``, the number of features of ``h``.
        bias (bool): whether the cell has ``bias_ih``. Default: ``True``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default: ``None``.

    Inputs:
        - **input** (Tensor): ``(B, I)`` or ``(I,)``.
        - **hx** (Tensor, optional): ``h_0``, ``(B, H)`` or ``(H,)``. Default: zeros.
        - **return_trace** (bool): also return the step's gates. Default: ``False``.

    Outputs:
        - **h**: ``(B, H)`` or ``(H,)``.
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of ``update, candidate, hidden``.

    Attributes:
        weight_ih (Tensor): ``(2H, I)``, ``[W_z; W_n]``.
        bias_ih (Tensor): ``(2H,)``.

    Examples:
        >>> import torch, gatedrnn
        >>> cell = gatedrnn.MinGRUCell(4, 8)
        >>> h_prev = torch.randn(2, 8)
        >>> h, trace = cell(torch.randn(2, 4), h_prev, return_trace=True)
        >>> z, n = trace.update, trace.candidate
        >>> torch.allclose(h, (1 - z) * h_prev + z * n)
        True
    """

    mode = "MinGRU"


class MinLSTMCell(MinCellBase):
    """One MinLSTM step (see :class:`MinLSTM`): normalized forget and input gates from the
    input alone, ``h = f' ⊙ h_prev + i' ⊙ g(W_n x + b_n)``.

    Args:
        input_size (int): ``I``, the number of input features.
        hidden_size (int): ``H``, the number of features of ``h``.
        bias (bool): whether the cell has ``bias_ih``. Default: ``True``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default: ``None``.

    Inputs:
        - **input** (Tensor): ``(B, I)`` or ``(I,)``.
        - **hx** (Tensor, optional): ``h_0``, ``(B, H)`` or ``(H,)``. Default: zeros.
        - **return_trace** (bool): also return the step's gates. Default: ``False``.

    Outputs:
        - **h**: ``(B, H)`` or ``(H,)``.
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of
          ``forget, input, candidate, hidden``.

    Attributes:
        weight_ih (Tensor): ``(3H, I)``, ``[W_f; W_i; W_n]``.
        bias_ih (Tensor): ``(3H,)``.

    Examples:
        >>> import torch, gatedrnn
        >>> cell = gatedrnn.MinLSTMCell(4, 8)
        >>> h = cell(torch.randn(4))  # unbatched
        >>> h.shape
        torch.Size([8])
    """

    mode = "MinLSTM"
