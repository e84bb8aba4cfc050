"""The sLSTM layer of xLSTM: :class:`gatedrnn.sLSTMCell`'s step run over time, layers stacked.

Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter & Hochreiter,
"xLSTM: Extended Long Short-Term Memory", NeurIPS 2024, section 2.2.

:func:`run_slstm` runs one layer from its input projections, by the reference loop (the step
of :mod:`gatedrnn.cells.slstm` per time step, differentiated by autograd) or by the fused
native loop of :mod:`gatedrnn.fused.slstm` (a hand-written backward); the residual blocks of
:mod:`gatedrnn.xlstm.blocks` call it too. :class:`sLSTM` is the torch.nn-style layer.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from gatedrnn import _checks, capture, exportable, regularizers
from gatedrnn.backends import needs_reference_for
from gatedrnn.capture import RefusesScript
from gatedrnn.cells.slstm import (
    SLSTM_TRACE_NAMES,
    check_forget,
    head_size,
    reset_slstm_parameters,
    slstm_step,
)
from gatedrnn.rnnbase import _dropout_warning
from gatedrnn.trace import Trace

BACKENDS = ("auto", "reference", "fused")

_FUSED = "gatedrnn.fused.slstm"  # the native loop's home; imported on first use


def fused_available() -> bool:
    """Whether :mod:`gatedrnn.fused.slstm` (the native sLSTM loop) is part of this installation."""
    return importlib.util.find_spec(_FUSED) is not None


def check_backend(backend) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    return backend


def choose_backend(backend: str, tensors) -> str:
    """The backend that runs a call: ``backend`` itself unless it is ``"auto"``.

    ``"auto"`` picks ``"fused"`` when the native loop exists and the tensors are on the CPU,
    outside ``torch.export`` and ``torch.jit.trace`` and with no ``torch.func`` transform or
    forward-mode tangent in force (the fused op has a backward only); under ``torch.export``
    ``"export"``, the reference step inside torch's ``scan`` (:mod:`gatedrnn.exportable`: the
    exported graph runs at every ``T``); ``"reference"`` otherwise.
    The fused loop returns the trace as well, so ``return_trace`` does not change the choice.
    An explicit ``"fused"`` under ``torch.func`` or forward-mode AD runs the reference loop too:
    it is the only one with those derivatives.
    """
    tensors = [t for t in tensors if t is not None]
    if needs_reference_for(tensors):
        return "reference"
    if backend != "auto":
        return backend
    if capture.exporting():
        return "export"
    if torch.jit.is_tracing():
        return "reference"
    on_cpu = all(t.device.type == "cpu" for t in tensors)
    return "fused" if on_cpu and fused_available() else "reference"


def run_slstm(xw, state, weight_hh, bias_hh=None, *, forget="sigmoid", lengths=None, backend="auto",
              want_trace=False):  # fmt: skip
    """Runs one sLSTM layer over time from its input projections.

    Args:
        xw (Tensor): ``(T, B, 4H)``, every step's ``W_ih x_t + b_ih``, blocks ``[i; f; z; o]``.
        state (tuple of four Tensors): ``(h, c, n, m)``, each ``(B, H)``; zeros are the empty
            state.
        weight_hh (Tensor): ``(K, 4d, d)``, the block-diagonal recurrent matrix, one block per
            head (:func:`gatedrnn.cells.slstm.slstm_step`).
        bias_hh (Tensor, optional): ``(4H,)``. Default: ``None``.
        forget (str): ``"sigmoid"`` or ``"exp"``. Keyword only. Default: ``"sigmoid"``.
        lengths (Tensor, optional): ``(B,)`` int64 in ``[1, T]``: past a sequence's end its
            state is carried unchanged and its outputs and activations are zero. Keyword only.
            Default: ``None``, every sequence full.
        backend (str): ``"reference"`` (:func:`~gatedrnn.cells.slstm.slstm_step` in a Python
            loop), ``"fused"`` (:func:`gatedrnn.fused.slstm.slstm_sequence`, the native loop)
            or ``"auto"`` (:func:`choose_backend`). Keyword only. Default: ``"auto"``.
        want_trace (bool): also return every step's activations. Keyword only.
            Default: ``False``.

    Returns:
        ``(out, (h_n, c_n, n_n, m_n), acts)``: ``out`` ``(T, B, H)``, the final states each
        ``(B, H)`` (each sequence's at its length), and ``acts``, a tuple of eight ``(T, B, H)``
        tensors in the order of :data:`~gatedrnn.cells.slstm.SLSTM_TRACE_NAMES` (``input,
        forget, candidate, output, cell, normalizer, stabilizer, hidden``), or ``None``.

    Examples:
        >>> import torch
        >>> from gatedrnn.xlstm.slstm import run_slstm
        >>> T, B, K, d = 5, 2, 2, 3
        >>> xw = torch.randn(T, B, 4 * K * d)
        >>> state = tuple(torch.zeros(B, K * d) for _ in range(4))
        >>> out, (h, c, n, m), acts = run_slstm(xw, state, torch.randn(K, 4 * d, d) / 3, want_trace=True)
        >>> out.shape, torch.equal(out[-1], h), len(acts)
        (torch.Size([5, 2, 6]), True, 8)
    """
    check_forget(forget)
    check_backend(backend)
    if not (isinstance(state, (tuple, list)) and len(state) == 4):
        raise TypeError(f"state must be a tuple (h, c, n, m) of four tensors, got {type(state).__name__}")
    name = choose_backend(backend, (xw, *state, weight_hh, bias_hh))
    if name == "fused":
        if not fused_available():
            raise ValueError(f"backend='fused' needs {_FUSED} (the native sLSTM loop), which this installation lacks; "
                             "use backend='reference' or 'auto'")  # fmt: skip
        slstm_sequence = importlib.import_module(_FUSED).slstm_sequence
        if lengths is not None:
            lengths = lengths.to("cpu", torch.int64)
        out, h, c, n, m, acts = slstm_sequence(xw, *state, weight_hh, bias_hh, forget=forget, lengths=lengths,
                                               want_acts=want_trace)  # fmt: skip
        return out, (h, c, n, m), (tuple(acts.unbind(2)) if want_trace else None)  # 8 x (T, B, H)
    if name == "export" and exportable.scan_op is not None:
        step = functools.partial(_scan_step, forget=forget)
        out, final, acts = exportable.run_direction("sLSTM", xw, tuple(state), (None, weight_hh, None, bias_hh, None),
                                                    lengths, False, want_trace, step=step)  # fmt: skip
        return out, final, acts
    return _reference(xw, tuple(state), weight_hh, bias_hh, forget, lengths, want_trace)


def _scan_step(xw, state, weight_hh, bias_hh, weight_hr, forget):
    """:func:`slstm_step` in the step signature :func:`gatedrnn.exportable.run_direction` calls
    (``weight_hr``, a projection the sLSTM has not, is None)."""
    return slstm_step(xw, state, weight_hh, bias_hh, forget)


def _reference(xw, state, weight_hh, bias_hh, forget, lengths, want_trace):
    """The reference loop: :func:`slstm_step` per step, masked past each sequence's end."""
    T = xw.shape[0]
    if lengths is None:
        masks = [None] * T
    else:
        valid = torch.arange(T, device=xw.device)[:, None] < lengths.to(xw.device)[None, :]  # (T, B)
        masks = valid.unsqueeze(-1).unbind(0)  # T x (B, 1)
    values = []
    for t in range(T):
        new_state, v = slstm_step(xw[t], state, weight_hh, bias_hh, forget)
        if masks[t] is not None:  # past a sequence's end: keep its state, output zeros
            new_state = tuple(torch.where(masks[t], new, old) for new, old in zip(new_state, state))
            v = tuple(torch.where(masks[t], a, 0.0) for a in v)
        state = new_state
        values.append(v if want_trace else v[-1:])  # h is the activations' last
    out = torch.stack([v[-1] for v in values])  # (T, B, H)
    acts = tuple(torch.stack(seq) for seq in zip(*values)) if want_trace else None  # 8 x (T, B, H)
    return out, state, acts


class sLSTM(RefusesScript, nn.Module):
    r"""A stack of sLSTM layers (xLSTM's scalar-memory LSTM), with the API of torch.nn's RNNs.

    Each layer runs :class:`gatedrnn.sLSTMCell` over time (its page holds the equations, the
    symbols, and where the paper and the official package differ): per head, exponential
    input and forget gates with a normalizer ``n`` and a stabilizer ``m``, states
    ``(h, c, n, m)``, the recurrent matrix block-diagonal over ``num_heads`` heads. Layer
    ``k > 0`` reads layer ``k - 1``'s ``h`` sequence, with ``dropout`` between them in
    training, as torch.nn's.

    Args:
        input_size (int): ``I``, the number of features in each step of the input.
        hidden_size (int): ``H``, the number of features of each state; divisible by
            ``num_heads``.
        num_heads (int): ``K``, heads per layer; each has ``d = H / K`` units and its own
            ``(4d, d)`` recurrent block. Default: ``4``.
        num_layers (int): how many layers are stacked. Default: ``1``.
        bias (bool): if ``False``, no ``bias_ih_l{k}`` and ``bias_hh_l{k}``. Default: ``True``.
        batch_first (bool): if ``True``, ``input`` and ``output`` are ``(B, T, *)``; the
            states keep their layout. Default: ``False``.
        dropout (float): in training, dropout on each layer's output but the last's, before
            the next layer reads it. Default: ``0.0``.
        forget (str): the forget gate's activation, ``"sigmoid"`` (the official package's)
            or ``"exp"``. Default: ``"sigmoid"``.
        backend (str): ``"reference"`` (the cell's step in a PyTorch loop), ``"fused"`` (the
            native loop of :mod:`gatedrnn.fused.slstm`, hand-written backward) or ``"auto"``:
            fused on the CPU where it is installed, else the reference (see
            :func:`choose_backend`). Default: ``"auto"``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default: ``None``.

    Inputs:
        - **input** (Tensor or PackedSequence): ``(T, B, I)``, ``(B, T, I)`` with
          ``batch_first=True``, ``(T, I)`` unbatched, or a packed sequence.
        - **hx** (tuple of four Tensors, optional): ``(h_0, c_0, n_0, m_0)``, each
          ``(L, B, H)`` (``(L, H)`` unbatched). Default: zeros, the empty state.
        - **lengths** (Tensor, optional): ``(B,)`` integers in ``[1, T]``, each sequence's
          valid steps: outputs past them are zero and the final states are those at each
          sequence's last valid step. Default: ``None``, every sequence full.
        - **return_trace** (bool): if ``True``, also return every gate and state at every
          step. Default: ``False``.

    Outputs:
        - **output**: ``(T, B, H)`` (``(B, T, H)`` with ``batch_first``, ``(T, H)`` unbatched,
          packed for packed input): the last layer's ``h_t`` at every step.
        - **(h_n, c_n, n_n, m_n)**: every layer's final states, each ``(L, B, H)``.
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of ``input,
          forget, candidate, output, cell, normalizer, stabilizer, hidden``, each
          ``(L, T, B, H)`` (``(L, B, T, H)`` with ``batch_first``, ``(L, T, H)`` unbatched):
          the stabilized gates :math:`i'_t, f'_t`, :math:`\tanh(\tilde z_t)`,
          :math:`\sigma(\tilde o_t)`, then the states; zero past a sequence's length.

    Shape:
        ``B`` batch size, ``T`` sequence length, ``I = input_size``, ``H = hidden_size``,
        ``K = num_heads``, ``d = H / K``, ``L = num_layers``.

    Attributes:
        weight_ih_l{k} (Tensor): ``(4H, I)`` for ``k = 0``, ``(4H, H)`` after: ``W_ih``,
            blocks ``[i; f; z; o]``, head ``j``'s units at rows ``j*d:(j+1)*d`` of each.
        weight_hh_l{k} (Tensor): ``(K, 4d, d)``: head ``j``'s recurrent block, rows i, f, z, o.
        bias_ih_l{k} (Tensor): ``(4H,)``, ``b_ih``.
        bias_hh_l{k} (Tensor): ``(4H,)``, ``b_hh``.

    Every parameter starts uniform in :math:`(-1/\sqrt{H}, 1/\sqrt{H})` (torch's rule), then
    each layer's forget-gate bias is set to the official package's power-law profile over
    each head's units, from 5 (long memory) to -7 (short), with ``bias_hh``'s forget block
    zero (:func:`gatedrnn.cells.slstm.powerlaw_forget_bias`; with ``forget="exp"`` its
    :math:`\log\sigma`).

    Examples:
        >>> import torch
        >>> from gatedrnn.xlstm import sLSTM
        >>> slstm = sLSTM(10, 16, num_heads=4, num_layers=2, batch_first=True)
        >>> x = torch.randn(3, 7, 10)  # (B, T, I)
        >>> output, (h, c, n, m), trace = slstm(x, return_trace=True)
        >>> output.shape, h.shape, trace.stabilizer.shape  # (B, T, H), (L, B, H), (L, B, T, H)
        (torch.Size([3, 7, 16]), torch.Size([2, 3, 16]), torch.Size([2, 3, 7, 16]))
        >>> torch.allclose(trace.hidden, trace.output * trace.cell / trace.normalizer)
        True
        >>> list(slstm.state_dict())[:4]
        ['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0']
    """

    def __init__(self, input_size, hidden_size, num_heads=4, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, forget="sigmoid", backend="auto", device=None, dtype=None):  # fmt: skip
        super().__init__()
        self.input_size = _checks.positive_int("input_size", input_size)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.num_heads = _checks.positive_int("num_heads", num_heads)
        self.head_size = head_size(self.hidden_size, self.num_heads)
        self.num_layers = _checks.positive_int("num_layers", num_layers)
        self.bias = _checks.boolean("bias", bias)
        self.batch_first = _checks.boolean("batch_first", batch_first)
        self.dropout = _checks.probability("dropout", dropout)
        self.forget = check_forget(forget)
        self.backend = check_backend(backend)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(_dropout_warning(self.dropout, self.num_layers), UserWarning, stacklevel=2)
        kw = {"device": device, "dtype": dtype}
        H, K, d = self.hidden_size, self.num_heads, self.head_size
        for k in range(self.num_layers):  # registered in torch's order, so state_dict keys read as torch.nn's
            size = self.input_size if k == 0 else H
            setattr(self, f"weight_ih_l{k}", nn.Parameter(torch.empty(4 * H, size, **kw)))
            setattr(self, f"weight_hh_l{k}", nn.Parameter(torch.empty(K, 4 * d, d, **kw)))
            if bias:
                setattr(self, f"bias_ih_l{k}", nn.Parameter(torch.empty(4 * H, **kw)))
                setattr(self, f"bias_hh_l{k}", nn.Parameter(torch.empty(4 * H, **kw)))
            else:
                self.register_parameter(f"bias_ih_l{k}", None)
                self.register_parameter(f"bias_hh_l{k}", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each layer by :func:`gatedrnn.cells.slstm.reset_slstm_parameters`."""
        for k in range(self.num_layers):
            reset_slstm_parameters(*self.weights(k), forget=self.forget)

    def weights(self, layer: int):
        """``(weight_ih, weight_hh, bias_ih, bias_hh)`` of one layer (biases ``None`` without bias).

        Args:
            layer (int): the layer, ``0`` to ``num_layers - 1``.
        """
        return tuple(
            getattr(self, f"{kind}_l{layer}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_heads={self.num_heads}"
        s += f", num_layers={self.num_layers}" if self.num_layers != 1 else ""
        s += "" if self.bias else ", bias=False"
        s += ", batch_first=True" if self.batch_first else ""
        s += f", dropout={self.dropout}" if self.dropout else ""
        s += f", forget={self.forget!r}" if self.forget != "sigmoid" else ""
        return s + (f", backend={self.backend!r}" if self.backend != "auto" else "")

    # -- forward ------------------------------------------------------------------

    def forward(self, input, hx=None, lengths=None, return_trace=False):
        """Run the stack over a sequence; see the class's Inputs and Outputs.

        Args:
            input (Tensor): ``(T, B, I)``, ``(B, T, I)`` with ``batch_first``, or ``(T, I)`` unbatched.
            hx (tuple, optional): the initial state, ``(h_0, c_0, n_0, m_0)``, each ``(num_layers, B, H)``. Default: ``None``, zeros.
            lengths (Tensor, optional): ``(B,)`` integers in ``[1, T]``, each sequence's valid
                steps: outputs past them are zero and the final state is the one at each length.
                Default: ``None``, every sequence full.
            return_trace (bool): also return a :class:`~gatedrnn.Trace`. Default: ``False``.

        Raises:
            ShapeError: a tensor of the wrong shape (also a ``ValueError`` and a ``RuntimeError``).
            DTypeError: a tensor of another dtype than the parameters'.
            DeviceError: a tensor on another device than the parameters.
        """
        packed = input if isinstance(input, PackedSequence) else None
        x, lengths, unbatched = _checks.layer_input(input, lengths, self.weight_ih_l0, self._check_input)
        packed_lengths = lengths  # a packing's, on the CPU (for pack_padded_sequence below)
        T, B = x.shape[0], x.shape[1]
        if lengths is not None:
            if unbatched:
                raise ValueError(
                    "lengths is only accepted with batched input, got 2-D (T, I) unbatched input"
                )
            lengths = _checks.lengths(lengths, T, B, x.device)
        states = self._check_hx(hx, B, unbatched, x)
        if packed is not None and packed.sorted_indices is not None:
            states = tuple(s.index_select(1, packed.sorted_indices) for s in states)

        finals, traces = [], []
        for k in range(self.num_layers):
            weight_ih, weight_hh, bias_ih, bias_hh = self.weights(k)
            xw = F.linear(x, weight_ih, bias_ih)  # (T, B, 4H): every step's input projection at once
            x, final, acts = run_slstm(xw, tuple(s[k] for s in states), weight_hh, bias_hh, forget=self.forget,
                                       lengths=lengths, backend=self.backend, want_trace=return_trace)  # fmt: skip
            finals.append(final)
            traces.append(acts)
            if self.dropout and self.training and k < self.num_layers - 1:
                x = regularizers.between_layers(x, self.dropout, lengths)  # (T, B, H)
        final = tuple(torch.stack(s) for s in zip(*finals))  # 4 x (L, B, H)
        values = tuple(torch.stack(v) for v in zip(*traces)) if return_trace else None  # 8 x (L, T, B, H)

        output = x  # (T, B, H)
        if packed is not None:
            data = pack_padded_sequence(output, packed_lengths).data  # (sum(lengths), H)
            output = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
            back = packed.unsorted_indices  # to the caller's batch order
            if back is not None:
                final = tuple(s.index_select(1, back) for s in final)
                values = None if values is None else tuple(v.index_select(2, back) for v in values)
        elif unbatched:
            output = output.squeeze(1)  # (T, H)
            final = tuple(s.squeeze(1) for s in final)  # (L, H)
        elif self.batch_first:
            output = output.transpose(0, 1)  # (B, T, H)
        if not return_trace:
            return output, final
        trace = {}
        for name, value in zip(SLSTM_TRACE_NAMES, values):  # each (L, T, B, H)
            if unbatched:
                value = value.squeeze(2)  # (L, T, H)
            elif self.batch_first:
                value = value.transpose(1, 2)  # (L, B, T, H)
            trace[name] = value
        return output, final, Trace(trace)

    # -- argument checks -------------------------------------------------------------

    def _check_input(self, input) -> tuple[torch.Tensor, bool]:
        """The input as ``(T, B, I)`` and whether it came unbatched."""
        return _checks.sequence_input(input, self.weight_ih_l0, self.input_size, self.batch_first)

    def _check_hx(self, hx, B: int, unbatched: bool, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The initial states ``(h_0, c_0, n_0, m_0)``, each ``(L, B, H)``; zeros when ``hx`` is None."""
        L, H = self.num_layers, self.hidden_size
        if hx is None:
            return tuple(x.new_zeros(L, B, H) for _ in range(4))
        if not (isinstance(hx, (tuple, list)) and len(hx) == 4):
            got = (
                f"a {type(hx).__name__} of {len(hx)}" if isinstance(hx, (tuple, list)) else type(hx).__name__
            )
            raise TypeError(
                f"hx must be a tuple (h_0, c_0, n_0, m_0) of four tensors for an sLSTM, got {got}"
            )
        states = []
        for k, (name, value) in enumerate(zip(("h_0", "c_0", "n_0", "m_0"), hx)):
            value = _checks.float_tensor(f"hx[{k}] ({name})", value, self.weight_ih_l0)
            expected = (L, H) if unbatched else (L, B, H)
            meaning = "(num_layers, hidden_size)" if unbatched else "(num_layers, batch, hidden_size)"
            _checks.shape(f"hx[{k}] ({name})", value, expected, meaning)
            states.append(value.unsqueeze(1) if unbatched else value)
        return tuple(states)
