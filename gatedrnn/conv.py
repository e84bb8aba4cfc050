"""Convolutional recurrent layers for sequences of frames: :class:`ConvLSTM` and
:class:`ConvGRU` stack their cell (:mod:`gatedrnn.cells.conv`) over time and layers, with
``hx``, ``lengths``, ``batch_first`` and gate traces as the other gatedrnn layers have them.

``backend="reference"`` runs the cell step as written (:mod:`gatedrnn.cells.conv`), its input
convolutions of all steps as one ``conv2d`` over the ``T·B`` frames; ``backend="fused"``
keeps frames channels last and runs the gate math as one native pass per step
(:mod:`gatedrnn.fused.conv`); ``"auto"`` (the default) takes the fused path on a CPU with the
native kernels built, outside graph capture and torch.func transforms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatedrnn import _checks, capture, fused
from gatedrnn.backends import BACKENDS, needs_reference_for
from gatedrnn.cells.conv import (CONV_TRACE_NAMES, NUM_GATES, conv_gru_step, conv_lstm_step, kernel_pair,
                                 reset_conv_parameters)  # fmt: skip
from gatedrnn.fused import conv as fused_conv
from gatedrnn.trace import Trace


class ConvRNNBase(nn.Module):
    """What ConvLSTM and ConvGRU share: parameters ``weight_ih_l{k} (G·C, C_in, kh, kw)``,
    ``weight_hh_l{k} (G·C, C, kh, kw)``, ``bias_ih_l{k}``, ``bias_hh_l{k} (G·C,)`` per layer
    (``C_in`` is ``in_channels`` for the first layer, ``C`` after), and the forward.

    Args:
        in_channels (int): ``C_in``, the input frames' channels.
        hidden_channels (int): ``C``, the state maps' channels.
        kernel_size (int or tuple[int, int]): the odd kernel size of every convolution.
        num_layers (int): how many layers are stacked. Default: ``1``.
        bias (bool): whether the layers have biases. Default: ``True``.
        batch_first (bool): batch-first input and output. Default: ``False``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' dtype. Default: ``None``.
        backend (str): ``"auto"``, ``"reference"`` or ``"fused"``. Default: ``"auto"``.
    """

    mode: str

    def __init__(self, in_channels, hidden_channels, kernel_size, num_layers=1, bias=True, batch_first=False,
                 device=None, dtype=None, backend="auto"):  # fmt: skip
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
        self.backend = backend
        self.in_channels = _checks.positive_int("in_channels", in_channels)
        self.hidden_channels = _checks.positive_int("hidden_channels", hidden_channels)
        self.num_layers = _checks.positive_int("num_layers", num_layers)
        self.kernel_size = kernel_pair(kernel_size)
        self.padding = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)
        self.bias, self.batch_first = _checks.boolean("bias", bias), _checks.boolean("batch_first", batch_first)
        kw = {"device": device, "dtype": dtype}
        G, C = NUM_GATES[self.mode], self.hidden_channels
        for layer in range(self.num_layers):
            c_in = self.in_channels if layer == 0 else C
            setattr(self, f"weight_ih_l{layer}", nn.Parameter(torch.empty(G * C, c_in, *self.kernel_size, **kw)))
            setattr(self, f"weight_hh_l{layer}", nn.Parameter(torch.empty(G * C, C, *self.kernel_size, **kw)))
            if bias:
                setattr(self, f"bias_ih_l{layer}", nn.Parameter(torch.empty(G * C, **kw)))
                setattr(self, f"bias_hh_l{layer}", nn.Parameter(torch.empty(G * C, **kw)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_conv_parameters(self, self.hidden_channels, self.kernel_size)

    def weights(self, layer: int):
        """``(weight_ih, weight_hh, bias_ih, bias_hh)`` of one layer (biases None without bias)."""
        return tuple(getattr(self, f"{kind}_l{layer}", None) for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def forward(self, input, hx=None, *, lengths=None, return_trace=False):
        """Runs the layers over a sequence of frames.

        ``input`` is ``(T, B, C_in, H, W)``, ``(B, T, C_in, H, W)`` with ``batch_first``, or
        ``(T, C_in, H, W)`` unbatched. Returns the last layer's output ``(T, B, C, H, W)``
        (batch-first: ``(B, T, C, H, W)``) and ``h_n`` (ConvGRU) or ``(h_n, c_n)`` (ConvLSTM),
        each ``(num_layers, B, C, H, W)``. ``lengths`` (B,) marks valid steps: outputs past
        them are zero, final states those of each sequence's last valid step. With
        ``return_trace`` a :class:`~gatedrnn.Trace` of every gate as maps,
        ``(num_layers, T, B, C, H, W)`` (batch-first: ``(num_layers, B, T, C, H, W)``).

        Args:
            input (Tensor): the frames, ``(T, B, C_in, H, W)`` (``batch_first``:
                ``(B, T, C_in, H, W)``) or ``(T, C_in, H, W)`` unbatched.
            hx (Tensor or tuple, optional): ``h_0`` (ConvGRU) or ``(h_0, c_0)`` (ConvLSTM),
                each ``(num_layers, B, C, H, W)``. Default: zeros.
            lengths (Tensor, optional): ``(B,)`` integers in ``[1, T]``, each sequence's
                valid steps. Keyword only. Default: ``None``, every sequence full.
            return_trace (bool): also return the gate maps. Keyword only. Default: ``False``.
        """
        x, unbatched = self._check_input(input)
        T, B = x.shape[:2]
        if lengths is not None:
            lengths = self._check_lengths(lengths, T, B, x, unbatched)
        states = self._check_hx(hx, x, unbatched)
        masks = None
        if lengths is not None:
            masks = (torch.arange(T, device=x.device)[:, None] < lengths[None, :])[..., None, None, None]  # (T, B, 1, 1, 1)
        finals, traces = [], []
        run = self._run_layer_fused if self._fused(x, states) else self._run_layer
        for layer in range(self.num_layers):
            x, state, values = run(layer, x, tuple(s[layer] for s in states), masks, return_trace)
            finals.append(state)
            traces.append(values)
        final = tuple(torch.stack(s) for s in zip(*finals))  # each (L, B, C, H, W)
        if unbatched:
            x, final = x.squeeze(1), tuple(s.squeeze(1) for s in final)
        elif self.batch_first:
            x = x.transpose(0, 1)  # (B, T, C, H, W)
        result = (x, final if self.mode == "LSTM" else final[0])
        if not return_trace:
            return result
        trace = {}
        for name, value in zip(CONV_TRACE_NAMES[self.mode], zip(*traces)):
            value = torch.stack(value)  # (L, T, B, C, H, W)
            if unbatched:
                value = value.squeeze(2)
            elif self.batch_first:
                value = value.transpose(1, 2)
            trace[name] = value
        return result + (Trace(trace),)

    def _fused(self, x, states) -> bool:
        """Whether this call takes the fused path (see the module's docstring)."""
        backend = getattr(self, "backend", "auto")  # a module pickled before the attribute existed
        if backend == "reference" or capture.exporting() or torch.jit.is_tracing():
            return False
        if needs_reference_for([x, *states, *self.parameters()]):
            return False
        if backend == "fused":
            return True
        if torch.compiler.is_compiling():  # the ops are opaque to the compiler: no build to ask about
            return x.device.type == "cpu"
        return fused.native_available_for(x.device)

    def _run_layer_fused(self, layer, x, state, masks, want_trace):
        reset_after = getattr(self, "reset_after", True)
        return fused_conv.run_layer(self.mode, x, state, self.weights(layer), self.padding, masks, want_trace,
                                    reset_after)  # fmt: skip

    def _run_layer(self, layer, x, state, masks, want_trace):
        """One layer over time: the output (T, B, C, H, W), the final state and, when
        ``want_trace``, the step activations stacked over time."""
        weight_ih, weight_hh, bias_ih, bias_hh = self.weights(layer)
        T, B = x.shape[:2]
        xw = F.conv2d(x.flatten(0, 1), weight_ih, bias_ih, padding=self.padding)  # (T*B, G*C, H, W): all steps
        xw = xw.unflatten(0, (T, B)).unbind(0)  # T x (B, G*C, H, W)
        values = [None] * T
        for t in range(T):
            new_state, v = self._step(xw[t], state, weight_hh, bias_hh)
            if not want_trace:
                v = v[-1:]  # h alone: keeping every gate map of every step costs memory traffic
            if masks is not None:  # past a sequence's end: keep its state, output zeros
                new_state = tuple(torch.where(masks[t], new, old) for new, old in zip(new_state, state))
                v = tuple(torch.where(masks[t], a, 0.0) for a in v)
            state, values[t] = new_state, v
        output = torch.stack([v[-1] for v in values])  # (T, B, C, H, W)
        trace = tuple(torch.stack(seq) for seq in zip(*values)) if want_trace else None
        return output, state, trace

    # -- argument checks -------------------------------------------------------------

    def _check_input(self, input) -> tuple[torch.Tensor, bool]:
        """The input as (T, B, C_in, H, W) and whether it came unbatched."""
        x = _checks.float_tensor("input", input, self.weight_ih_l0)
        layout = "(B, T, C_in, H, W)" if self.batch_first else "(T, B, C_in, H, W)"
        if x.dim() not in (4, 5):
            raise _checks.ShapeError(f"input must be 5-D {layout} or 4-D (T, C_in, H, W) unbatched, got {x.dim()}-D "
                             f"with shape {tuple(x.shape)}")  # fmt: skip
        if x.shape[-3] != self.in_channels:
            raise _checks.ShapeError(f"input must have {self.in_channels} channels (in_channels) in dimension -3, "
                             f"got {x.shape[-3]} (shape {tuple(x.shape)})")  # fmt: skip
        if x.shape[0 if x.dim() == 4 or not self.batch_first else 1] == 0:
            raise ValueError(f"input must hold at least one time step, got T=0 (shape {tuple(x.shape)})")
        if x.dim() == 4:
            return x.unsqueeze(1), True  # (T, 1, C_in, H, W)
        return (x.transpose(0, 1) if self.batch_first else x), False

    def _check_lengths(self, lengths, T, B, x, unbatched):
        if unbatched:
            raise ValueError("lengths is only accepted with batched input, got 4-D (T, C_in, H, W) unbatched input")
        return _checks.lengths(lengths, T, B, x.device)

    def _check_hx(self, hx, x, unbatched):
        """The initial states, each (L, B, C, H, W)."""
        L, C = self.num_layers, self.hidden_channels
        _, B, _, Hs, Ws = x.shape
        if self.mode == "LSTM":
            if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError(f"hx must be a tuple (h_0, c_0) for a ConvLSTM, got {type(hx).__name__}")
            given, names = ((None, None) if hx is None else tuple(hx)), ("hx[0] (h_0)", "hx[1] (c_0)")
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"hx must be a tensor h_0 for a ConvGRU, got a {type(hx).__name__}")
            given, names = (hx,), ("hx",)
        states = []
        for name, value in zip(names, given):
            if value is None:
                states.append(x.new_zeros(L, B, C, Hs, Ws))
                continue
            value = _checks.float_tensor(name, value, x)
            expected = (L, C, Hs, Ws) if unbatched else (L, B, C, Hs, Ws)
            meaning = "(num_layers, " + ("" if unbatched else "batch, ") + "hidden_channels, height, width)"
            _checks.shape(name, value, expected, meaning)
            states.append(value.unsqueeze(1) if unbatched else value)
        return tuple(states)


class ConvLSTM(ConvRNNBase):
    r"""A stack of convolutional LSTM layers (Shi et al. 2015); each layer runs
    :class:`gatedrnn.ConvLSTMCell` over time (gates ``i, f, g, o`` as maps, states ``h, c``
    of shape ``(B, C, H, W)``; no peephole terms, as in Keras' ``ConvLSTM2D``).

    ``forget_bias`` is added to every layer's forget-gate input bias after initialization
    (1.0 is the usual choice for learning; 0.0, the default, leaves the seeded weights alone).
    See :meth:`ConvRNNBase.forward` for shapes, ``lengths`` and ``return_trace``.

    Args:
        in_channels (int): ``C_in``, the channels of each input frame.
        hidden_channels (int): ``C``, the channels of every layer's state maps.
        kernel_size (int or tuple[int, int]): ``(kh, kw)`` of every convolution, each odd
            ("same" padding keeps the frame size).
        num_layers (int): how many layers are stacked. Default: ``1``.
        bias (bool): if ``False``, no ``bias_ih_l{k}`` and ``bias_hh_l{k}``. Default: ``True``.
        batch_first (bool): ``(B, T, C_in, H, W)`` input and output instead of
            ``(T, B, C_in, H, W)``. Default: ``False``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default: ``None``.
        forget_bias (float): added to every layer's forget-gate input bias after
            initialization; needs ``bias=True``. Keyword only. Default: ``0.0``.
        backend (str): ``"reference"`` (the cell step as written), ``"fused"`` (channels last,
            one native pass per step) or ``"auto"`` (fused on a CPU with the native kernels
            built). Keyword only. Default: ``"auto"``.

    Inputs:
        - **input** (Tensor): ``(T, B, C_in, H, W)``, ``(B, T, C_in, H, W)`` with
          ``batch_first``, or ``(T, C_in, H, W)`` unbatched.
        - **hx** (tuple of two Tensors, optional): ``(h_0, c_0)``, each, ``(L, B, C, H, W)``. Default: zeros.
        - **lengths** (Tensor, optional): ``(B,)``, each sequence's valid steps. Keyword only.
        - **return_trace** (bool): also return every gate map. Keyword only. Default: ``False``.

    Outputs:
        - **output**: ``(T, B, C, H, W)`` (``(B, T, C, H, W)`` with ``batch_first``), the last
          layer's ``h`` at every step.
        - **(h_n, c_n)**: each ``(L, B, C, H, W)``.
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of
          ``input, forget, candidate, output, cell, hidden``, each ``(L, T, B, C, H, W)``.

    Attributes:
        weight_ih_l{k} (Tensor): ``(4C, C_in, kh, kw)`` for ``k = 0``, ``(4C, C, kh, kw)``
            after.
        weight_hh_l{k} (Tensor): ``(4C, C, kh, kw)``.
        bias_ih_l{k} (Tensor): ``(4C,)``.
        bias_hh_l{k} (Tensor): ``(4C,)``.

    Examples:
        >>> import torch, gatedrnn
        >>> layer = gatedrnn.ConvLSTM(1, 8, kernel_size=3, num_layers=2, batch_first=True)
        >>> frames = torch.rand(2, 5, 1, 16, 16)  # (B, T, C_in, H, W)
        >>> output, (h_n, c_n) = layer(frames)
        >>> output.shape, h_n.shape
        (torch.Size([2, 5, 8, 16, 16]), torch.Size([2, 2, 8, 16, 16]))
    """

    mode = "LSTM"

    def __init__(self, in_channels, hidden_channels, kernel_size, num_layers=1, bias=True, batch_first=False,
                 device=None, dtype=None, *, forget_bias=0.0, backend="auto"):  # fmt: skip
        self.forget_bias = float(forget_bias)
        if self.forget_bias and not bias:
            raise ValueError(f"forget_bias={forget_bias} needs bias=True, got bias=False")
        super().__init__(in_channels, hidden_channels, kernel_size, num_layers, bias, batch_first, device, dtype,
                         backend)  # fmt: skip

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.forget_bias:
            C = self.hidden_channels
            with torch.no_grad():
                for layer in range(self.num_layers):
                    getattr(self, f"bias_ih_l{layer}")[C : 2 * C] += self.forget_bias

    def _step(self, xw, state, weight_hh, bias_hh):
        return conv_lstm_step(xw, state, weight_hh, bias_hh, self.padding)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", forget_bias={self.forget_bias}" if self.forget_bias else "")


class ConvGRU(ConvRNNBase):
    r"""A stack of convolutional GRU layers (Ballas et al. 2016); each layer runs
    :class:`gatedrnn.ConvGRUCell` over time (gates ``r, z, n`` as maps,
    :math:`h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}`). ``reset_after=True`` (default)
    applies the reset gate after the recurrent convolution, as torch.nn.GRU does;
    ``reset_after=False`` before it, as Ballas et al. do. See :meth:`ConvRNNBase.forward`.

    Args:
        in_channels (int): ``C_in``, the channels of each input frame.
        hidden_channels (int): ``C``, the channels of every layer's state maps.
        kernel_size (int or tuple[int, int]): ``(kh, kw)`` of every convolution, each odd
            ("same" padding keeps the frame size).
        num_layers (int): how many layers are stacked. Default: ``1``.
        bias (bool): if ``False``, no ``bias_ih_l{k}`` and ``bias_hh_l{k}``. Default: ``True``.
        batch_first (bool): ``(B, T, C_in, H, W)`` input and output instead of
            ``(T, B, C_in, H, W)``. Default: ``False``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default: ``None``.
        reset_after (bool): ``True`` applies ``r`` after the recurrent convolution, ``False``
            before it. Keyword only. Default: ``True``.
        backend (str): ``"reference"`` (the cell step as written), ``"fused"`` (channels last,
            one native pass per step) or ``"auto"`` (fused on a CPU with the native kernels
            built). Keyword only. Default: ``"auto"``.

    Inputs:
        - **input** (Tensor): ``(T, B, C_in, H, W)``, ``(B, T, C_in, H, W)`` with
          ``batch_first``, or ``(T, C_in, H, W)`` unbatched.
        - **hx** (Tensor, optional): ``h_0``, ``(L, B, C, H, W)``. Default: zeros.
        - **lengths** (Tensor, optional): ``(B,)``, each sequence's valid steps. Keyword only.
        - **return_trace** (bool): also return every gate map. Keyword only. Default: ``False``.

    Outputs:
        - **output**: ``(T, B, C, H, W)`` (``(B, T, C, H, W)`` with ``batch_first``), the last
          layer's ``h`` at every step.
        - **h_n**: ``(L, B, C, H, W)``.
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of
          ``reset, update, candidate, hidden``, each ``(L, T, B, C, H, W)``.

    Attributes:
        weight_ih_l{k} (Tensor): ``(3C, C_in, kh, kw)`` for ``k = 0``, ``(3C, C, kh, kw)``
            after.
        weight_hh_l{k} (Tensor): ``(3C, C, kh, kw)``.
        bias_ih_l{k} (Tensor): ``(3C,)``.
        bias_hh_l{k} (Tensor): ``(3C,)``.

    Examples:
        >>> import torch, gatedrnn
        >>> layer = gatedrnn.ConvGRU(1, 4, kernel_size=5)
        >>> output, h_n, trace = layer(torch.rand(6, 2, 1, 12, 12), return_trace=True)
        >>> trace.update.shape  # (L, T, B, C, H, W)
        torch.Size([1, 6, 2, 4, 12, 12])
    """

    mode = "GRU"

    def __init__(self, in_channels, hidden_channels, kernel_size, num_layers=1, bias=True, batch_first=False,
                 device=None, dtype=None, *, reset_after=True, backend="auto"):  # fmt: skip
        if not isinstance(reset_after, bool):
            raise TypeError(f"reset_after must be a bool, got {type(reset_after).__name__} {reset_after!r}")
        self.reset_after = reset_after
        super().__init__(in_channels, hidden_channels, kernel_size, num_layers, bias, batch_first, device, dtype,
                         backend)  # fmt: skip

    def _step(self, xw, state, weight_hh, bias_hh):
        return conv_gru_step(xw, state, weight_hh, bias_hh, self.padding, self.reset_after)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.reset_after else ", reset_after=False")
