"""Convolutional LSTM and GRU steps: every matrix product of the LSTM and the GRU becomes a
2-D convolution and the state is a stack of feature maps.

Shi, Chen, Wang, Yeung, Wong & Woo, "Convolutional LSTM Network: A Machine Learning Approach
for Precipitation Nowcasting", NeurIPS 2015; Ballas, Yao, Pal & Courville, "Delving Deeper
into Convolutional Networks for Learning Video Representations", ICLR 2016.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from gatedrnn import _checks
from gatedrnn.trace import Trace

CONV_TRACE_NAMES = {
    "LSTM": ("input", "forget", "candidate", "output", "cell", "hidden"),
    "GRU": ("reset", "update", "candidate", "hidden"),
}
NUM_GATES = {"LSTM": 4, "GRU": 3}


def conv_lstm_step(xw, state, weight_hh, bias_hh, padding):
    """One ConvLSTM step, given the input convolution ``xw = W_x * x_t + b_x`` (B, 4C, H, W).

    ``state`` is ``(h_prev, c_prev)``, each (B, C, H, W); returns the new state ``(h, c)``
    and the step's activations ``(i, f, g, o, c, h)``.
    """
    h_prev, c_prev = state
    hw = F.conv2d(h_prev, weight_hh, bias_hh, padding=padding)  # (B, 4C, H, W)
    i, f, g, o = (xw + hw).chunk(4, dim=1)  # 4 x (B, C, H, W), torch's gate order
    i = torch.sigmoid(i)  # input gate, eq. 3 of Shi et al. without the peephole term
    f = torch.sigmoid(f)  # forget gate
    g = torch.tanh(g)  # candidate
    o = torch.sigmoid(o)  # output gate
    c = f * c_prev + i * g  # the cell state, one map per channel
    h = o * torch.tanh(c)
    return (h, c), (i, f, g, o, c, h)


def conv_gru_step(xw, state, weight_hh, bias_hh, padding, reset_after=True):
    """One ConvGRU step, given ``xw = W_x * x_t + b_x`` (B, 3C, H, W); ``state`` is ``(h_prev,)``.

    ``reset_after`` (torch's and cuDNN's form): ``n = tanh(x_n + r ⊙ (U_n * h + b_hn))``, one
    convolution of ``h`` per step for all three gates. ``reset_after=False`` is Ballas et al.'s
    (and Cho et al.'s) form, ``n = tanh(x_n + U_n * (r ⊙ h) + b_hn)``, a second convolution per
    step. Returns ``(h,)`` and ``(r, z, n, h)``.
    """
    (h_prev,) = state
    x_r, x_z, x_n = xw.chunk(3, dim=1)  # 3 x (B, C, H, W)
    C = h_prev.shape[1]
    if reset_after:
        h_r, h_z, h_n = F.conv2d(h_prev, weight_hh, bias_hh, padding=padding).chunk(3, dim=1)
        r = torch.sigmoid(x_r + h_r)  # reset gate
        z = torch.sigmoid(x_z + h_z)  # update gate
        n = torch.tanh(x_n + r * h_n)  # candidate
    else:
        b_rz, b_n = (None, None) if bias_hh is None else (bias_hh[: 2 * C], bias_hh[2 * C :])
        h_r, h_z = F.conv2d(h_prev, weight_hh[: 2 * C], b_rz, padding=padding).chunk(2, dim=1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + F.conv2d(r * h_prev, weight_hh[2 * C :], b_n, padding=padding))  # reset before
    h = (1 - z) * n + z * h_prev  # a moving average of candidates at rate 1 - z, per pixel
    return (h,), (r, z, n, h)


def kernel_pair(kernel_size) -> tuple[int, int]:
    """``kernel_size`` as ``(kh, kw)``, both odd (for "same" padding), or a clear error."""
    pair = (kernel_size, kernel_size) if isinstance(kernel_size, numbers.Integral) else kernel_size
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) for k in pair)):  # fmt: skip
        raise TypeError(f"kernel_size must be an int or a pair of ints, got {kernel_size!r}")
    if not all(k >= 1 and k % 2 == 1 for k in pair):
        raise ValueError(
            f"kernel_size must be odd and positive (a 'same' padding of (k - 1) / 2 keeps the frame size), "
            f"got {kernel_size!r}"
        )
    return int(pair[0]), int(pair[1])


def reset_conv_parameters(module, hidden_channels: int, kernel: tuple[int, int]) -> None:
    """Every parameter uniform in ``(-1/sqrt(C k_h k_w), 1/sqrt(C k_h k_w))``: torch's
    recurrent initialization with the recurrent convolution's fan-in for ``H``."""
    stdv = 1.0 / math.sqrt(hidden_channels * kernel[0] * kernel[1])
    for weight in module.parameters():
        nn.init.uniform_(weight, -stdv, stdv)


class ConvCellBase(nn.Module):
    """Parameters ``weight_ih (G*C, C_in, kh, kw)``, ``weight_hh (G*C, C, kh, kw)``,
    ``bias_ih (G*C)``, ``bias_hh (G*C)``; input ``(B, C_in, H, W)`` or unbatched
    ``(C_in, H, W)``."""

    mode: str

    def __init__(self, in_channels, hidden_channels, kernel_size, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_channels = _checks.positive_int("in_channels", in_channels)
        self.hidden_channels = _checks.positive_int("hidden_channels", hidden_channels)
        self.kernel_size = kernel_pair(kernel_size)
        self.padding = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)
        self.bias = _checks.boolean("bias", bias)
        kw = {"device": device, "dtype": dtype}
        G, C = NUM_GATES[self.mode], self.hidden_channels
        self.weight_ih = nn.Parameter(torch.empty(G * C, self.in_channels, *self.kernel_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(G * C, C, *self.kernel_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(G * C, **kw))
            self.bias_hh = nn.Parameter(torch.empty(G * C, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        reset_conv_parameters(self, C, self.kernel_size)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}"
        return s + ("" if self.bias else ", bias=False")

    def _check_input(self, input) -> tuple[torch.Tensor, bool]:
        x = _checks.float_tensor("input", input, self.weight_ih)
        if x.dim() not in (3, 4):
            raise _checks.ShapeError(
                f"input must be 4-D (B, C_in={self.in_channels}, H, W) or 3-D (C_in, H, W) unbatched, "
                f"got {x.dim()}-D with shape {tuple(x.shape)}"
            )
        if x.shape[-3] != self.in_channels:
            raise _checks.ShapeError(
                f"input must have {self.in_channels} channels (in_channels) in dimension -3, "
                f"got {x.shape[-3]} (shape {tuple(x.shape)})"
            )
        return (x if x.dim() == 4 else x.unsqueeze(0)), x.dim() == 3

    def _state(self, name, value, x):
        B, _, H, W = x.shape
        if value is None:
            return x.new_zeros(B, self.hidden_channels, H, W)
        value = _checks.float_tensor(name, value, x)
        expected = (B, self.hidden_channels, H, W)
        if value.dim() == 3:
            value = value.unsqueeze(0)
        _checks.shape(name, value, expected, "(batch, hidden_channels, height, width)")
        return value

    def forward(self, input, hx=None, return_trace=False):
        x, unbatched = self._check_input(input)
        xw = F.conv2d(x, self.weight_ih, self.bias_ih, padding=self.padding)  # (B, G*C, H, W)
        if self.mode == "LSTM":
            if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError(f"hx must be a tuple (h, c) for a ConvLSTM cell, got {type(hx).__name__}")
            h0, c0 = (None, None) if hx is None else hx
            state = (self._state("hx[0] (h)", h0, x), self._state("hx[1] (c)", c0, x))
            state, values = conv_lstm_step(xw, state, self.weight_hh, self.bias_hh, self.padding)
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"hx must be a tensor h for a ConvGRU cell, got a {type(hx).__name__}")
            state = (self._state("hx", hx, x),)
            state, values = conv_gru_step(xw, state, self.weight_hh, self.bias_hh, self.padding, self.reset_after)
        if unbatched:
            state, values = tuple(s[0] for s in state), tuple(v[0] for v in values)
        result = state if self.mode == "LSTM" else state[0]
        if return_trace:
            return result, Trace(dict(zip(CONV_TRACE_NAMES[self.mode], values)))
        return result


class ConvLSTMCell(ConvCellBase):
    r"""One step of a convolutional LSTM (Shi et al. 2015).

    .. math::

        \begin{aligned}
        i_t &= \sigma(W_{xi} * x_t + b_{xi} + W_{hi} * h_{t-1} + b_{hi}) \\
        f_t &= \sigma(W_{xf} * x_t + b_{xf} + W_{hf} * h_{t-1} + b_{hf}) \\
        g_t &= \tanh(W_{xg} * x_t + b_{xg} + W_{hg} * h_{t-1} + b_{hg}) \\
        o_t &= \sigma(W_{xo} * x_t + b_{xo} + W_{ho} * h_{t-1} + b_{ho}) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t &= o_t \odot \tanh(c_t)
        \end{aligned}

    ``*`` is a 2-D convolution with "same" padding (odd ``kernel_size``), so ``h`` and ``c``
    keep the frame's height and width: shapes ``x (B, C_in, H, W)``, ``h, c (B, C, H, W)``,
    ``weight_ih (4C, C_in, kh, kw)`` = ``[W_xi; W_xf; W_xg; W_xo]`` (torch's gate order),
    ``weight_hh (4C, C, kh, kw)``, ``bias_ih``, ``bias_hh (4C,)``. Shi et al.'s peephole terms
    (``W_ci ⊙ c_{t-1}`` in ``i`` and ``f``, ``W_co ⊙ c_t`` in ``o``) are left out, as in Keras'
    ``ConvLSTM2D``. Initialization: uniform in :math:`\pm 1/\sqrt{C k_h k_w}`.

    ``forward(input, hx=None, return_trace=False)`` returns ``(h, c)``; the trace holds
    ``input, forget, candidate, output, cell, hidden`` as maps.

    Args:
        in_channels (int): ``C_in``, the channels of each input frame.
        hidden_channels (int): ``C``, the channels of the state maps ``h`` and ``c``.
        kernel_size (int or tuple[int, int]): ``(kh, kw)`` of every convolution, each odd
            (the "same" padding ``(k - 1) / 2`` keeps the frame's height and width).
        bias (bool): if ``False``, no ``bias_ih`` and ``bias_hh``. Default: ``True``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default: ``None``.

    Inputs:
        - **input** (Tensor): ``(B, C_in, H, W)``, or ``(C_in, H, W)`` unbatched.
        - **hx** (tuple of two Tensors, optional): ``(h, c)``, each ``(B, C, H, W)``. Default: zeros.
        - **return_trace** (bool): also return the step's gate maps. Default: ``False``.

    Outputs:
        - **h**, **c**: the new states, each ``(B, C, H, W)`` (``(C, H, W)`` unbatched).
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of
          ``input, forget, candidate, output, cell, hidden``, each ``(B, C, H, W)``.

    Attributes:
        weight_ih (Tensor): ``(4C, C_in, kh, kw)``.
        weight_hh (Tensor): ``(4C, C, kh, kw)``.
        bias_ih (Tensor): ``(4C,)``.
        bias_hh (Tensor): ``(4C,)``.

    Examples:
        >>> import torch, gatedrnn
        >>> cell = gatedrnn.ConvLSTMCell(1, 8, kernel_size=3)
        >>> h, c = cell(torch.randn(2, 1, 16, 16))
        >>> h.shape, c.shape
        (torch.Size([2, 8, 16, 16]), torch.Size([2, 8, 16, 16]))
    """

    mode = "LSTM"


class ConvGRUCell(ConvCellBase):
    r"""One step of a convolutional GRU (Ballas et al. 2016), in gatedrnn's GRU convention.

    .. math::

        \begin{aligned}
        r_t &= \sigma(W_{xr} * x_t + b_{xr} + U_r * h_{t-1} + b_{hr}) \\
        z_t &= \sigma(W_{xz} * x_t + b_{xz} + U_z * h_{t-1} + b_{hz}) \\
        n_t &= \tanh(W_{xn} * x_t + b_{xn} + r_t \odot (U_n * h_{t-1} + b_{hn})) \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}
        \end{aligned}

    **Where the reset gate sits.** By default (``reset_after=True``) ``r`` scales the
    recurrent convolution's output, as torch.nn.GRU and cuDNN do, so one convolution of
    ``h`` serves all three gates. Ballas et al. put it before the convolution,
    :math:`n_t = \tanh(W_{xn} * x_t + U_n * (r_t \odot h_{t-1}))`: ``reset_after=False``,
    a second convolution per step. Ballas et al. write the blend with ``z`` weighting the
    candidate; here ``z`` weights the previous state, as in torch (the same family, ``z``
    read as ``1 - z``). Weights ``weight_ih (3C, C_in, kh, kw)`` = ``[W_xr; W_xz; W_xn]``,
    ``weight_hh (3C, C, kh, kw)`` = ``[U_r; U_z; U_n]``.

    ``forward(input, hx=None, return_trace=False)`` returns ``h``; the trace holds
    ``reset, update, candidate, hidden`` as maps.

    Args:
        in_channels (int): ``C_in``, the channels of each input frame.
        hidden_channels (int): ``C``, the channels of the state map ``h``.
        kernel_size (int or tuple[int, int]): ``(kh, kw)`` of every convolution, each odd
            (the "same" padding ``(k - 1) / 2`` keeps the frame's height and width).
        bias (bool): if ``False``, no ``bias_ih`` and ``bias_hh``. Default: ``True``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default: ``None``.
        reset_after (bool): ``True`` applies ``r`` after the recurrent convolution (torch's
            form), ``False`` before it (Ballas et al.'s). Keyword only. Default: ``True``.

    Inputs:
        - **input** (Tensor): ``(B, C_in, H, W)``, or ``(C_in, H, W)`` unbatched.
        - **hx** (Tensor, optional): ``h``, ``(B, C, H, W)``. Default: zeros.
        - **return_trace** (bool): also return the step's gate maps. Default: ``False``.

    Outputs:
        - **h**: the new state, ``(B, C, H, W)`` (``(C, H, W)`` unbatched).
        - **trace** (with ``return_trace=True``): a :class:`~gatedrnn.Trace` of
          ``reset, update, candidate, hidden``, each ``(B, C, H, W)``.

    Attributes:
        weight_ih (Tensor): ``(3C, C_in, kh, kw)``.
        weight_hh (Tensor): ``(3C, C, kh, kw)``.
        bias_ih (Tensor): ``(3C,)``.
        bias_hh (Tensor): ``(3C,)``.

    Examples:
        >>> import torch, gatedrnn
        >>> cell = gatedrnn.ConvGRUCell(3, 4, kernel_size=(3, 5), reset_after=False)
        >>> cell(torch.randn(3, 10, 12)).shape  # unbatched
        torch.Size([4, 10, 12])
    """

    mode = "GRU"

    def __init__(self, in_channels, hidden_channels, kernel_size, bias=True, device=None, dtype=None, *,
                 reset_after=True):  # fmt: skip
        if not isinstance(reset_after, bool):
            raise TypeError(f"reset_after must be a bool, got {type(reset_after).__name__} {reset_after!r}")
        self.reset_after = reset_after
        super().__init__(in_channels, hidden_channels, kernel_size, bias, device, dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.reset_after else ", reset_after=False")
