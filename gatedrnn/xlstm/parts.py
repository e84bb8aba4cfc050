"""The parts the xLSTM blocks (:mod:`gatedrnn.xlstm.blocks`) are built of, as the official
``xlstm`` package (2.0) builds them: :class:`OffsetNorm` (a layer or head-wise group norm that
scales by ``1 + weight``), :class:`HeadwiseLinear` (one small linear map per head),
:class:`CausalConv1d` (a depthwise causal convolution over time) and :class:`GatedFeedForward`;
with the initializations they share and the checks of their arguments.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from gatedrnn import _checks

FFN_ACTIVATIONS = {  # the gate activations of the gated feed-forward (the official package's six)
    "gelu": F.gelu,
    "relu": F.relu,
    "relu^2": lambda x: torch.square(F.relu(x)),
    "sigmoid": torch.sigmoid,
    "swish": F.silu,
    "selu": F.selu,
}


def up_size(hidden_size: int, proj_factor: float, multiple_of: int = 64) -> int:
    """The width of an up-projection: ``proj_factor * hidden_size`` rounded up to a multiple
    of ``multiple_of``, as the official package sizes it (``2 * 32 = 64``, ``1.3 * 128 -> 192``)."""
    return int(math.ceil(proj_factor * hidden_size / multiple_of) * multiple_of)


def factory(device, dtype) -> dict:
    return {"device": device, "dtype": dtype}


def small_init_(weight: torch.Tensor, fan: int) -> None:
    """Normal with std ``sqrt(2 / (5 fan))`` (Nguyen & Salazar 2019), the package's input projections."""
    nn.init.normal_(weight, 0.0, math.sqrt(2.0 / (5.0 * fan)))


def wang_init_(weight: torch.Tensor, fan: int, num_blocks: int) -> None:
    """Normal with std ``2 / (num_blocks sqrt(fan))`` (GPT-NeoX), the package's output projections."""
    nn.init.normal_(weight, 0.0, 2.0 / num_blocks / math.sqrt(fan))


def check_number(name: str, value, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not value > low:
        raise ValueError(f"{name} must be greater than {low}, got {value}")
    return float(value)


def check_divides(name: str, value: int, size_name: str, size: int) -> None:
    if size % value:
        raise ValueError(f"{name}={value} must divide {size_name}={size}")


class OffsetNorm(nn.Module):
    r"""LayerNorm (``groups=None``) or a per-head group norm whose scale is ``1 + weight``.

    .. math::

        y = \frac{x - \mathrm{mean}(x)}{\sqrt{\mathrm{var}(x) + \epsilon}} \odot (1 + w) \; (+\, b),

    the mean and variance over the last dimension, or over each of its ``groups`` equal slices
    (one per head). ``weight`` starts at zero, so the norm starts as a plain normalization.

    Args:
        size (int): the last dimension.
        groups (int, optional): normalize each of ``groups`` slices apart. Default: ``None``.
        bias (bool): whether there is a ``bias``. Default: ``False``.
        eps (float): added to the variance. Default: ``1e-5``.
    """

    def __init__(self, size: int, groups: int | None = None, bias: bool = False, eps: float = 1e-5,
                 device=None, dtype=None):  # fmt: skip
        super().__init__()
        self.size, self.groups, self.eps = size, groups, eps
        self.weight = nn.Parameter(torch.zeros(size, **factory(device, dtype)))
        self.bias = nn.Parameter(torch.zeros(size, **factory(device, dtype))) if bias else None

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0 + self.weight
        if self.groups is None:
            return F.layer_norm(x, (self.size,), scale, self.bias, self.eps)
        flat = x.reshape(-1, self.size)  # (B*T, H): group_norm's (N, C)
        return F.group_norm(flat, self.groups, scale, self.bias, self.eps).view(x.shape)

    def extra_repr(self) -> str:
        return f"{self.size}" + (f", groups={self.groups}" if self.groups else "") + (", bias=True" if self.bias is not None else "")


class HeadwiseLinear(nn.Module):
    """A block-diagonal linear map: the features split into ``heads`` slices, each mapped by
    its own ``(out/heads, in/heads)`` matrix. ``weight`` ``(heads, out/heads, in/heads)``."""

    def __init__(self, in_size: int, out_size: int, heads: int, bias: bool = False, device=None, dtype=None):
        super().__init__()
        self.in_size, self.out_size, self.heads = in_size, out_size, heads
        self.weight = nn.Parameter(torch.empty(heads, out_size // heads, in_size // heads, **factory(device, dtype)))
        self.bias = nn.Parameter(torch.zeros(out_size, **factory(device, dtype))) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_head = x.reshape(*x.shape[:-1], self.heads, self.in_size // self.heads)  # (..., heads, in/heads)
        y = torch.einsum("...jc,jrc->...jr", per_head, self.weight).reshape(*x.shape[:-1], self.out_size)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"{self.in_size}, {self.out_size}, heads={self.heads}, bias={self.bias is not None}"


class CausalConv1d(nn.Module):
    r"""A depthwise causal convolution over time: ``y_t = b + \sum_{j<K} w_j \odot x_{t-K+1+j}``.

    Each channel has its own ``K`` taps (``weight`` ``(C, 1, K)``, torch's depthwise
    ``Conv1d`` layout) and bias. The ``K - 1`` inputs before the first step come from
    ``buffer`` ``(B, K-1, C)``, zeros when none is given, so a sequence can be fed in pieces.
    """

    def __init__(self, channels: int, kernel_size: int, device=None, dtype=None):
        super().__init__()
        self.channels, self.kernel_size = channels, kernel_size
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size, **factory(device, dtype)))
        self.bias = nn.Parameter(torch.empty(channels, **factory(device, dtype)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.kernel_size)  # torch's Conv1d default for one input channel per group
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, buffer: torch.Tensor | None = None):
        """``x`` (B, T, C) -> ``y`` (B, T, C) and the padded input (B, K-1+T, C)."""
        B, T, C = x.shape
        if buffer is None:
            buffer = x.new_zeros(B, self.kernel_size - 1, C)
        padded = torch.cat([buffer, x], dim=1)  # (B, K-1+T, C)
        y = self.bias + padded[:, :T] * self.weight[:, 0, 0]  # one multiply-add per tap: K is small
        for j in range(1, self.kernel_size):
            y = y + padded[:, j : j + T] * self.weight[:, 0, j]  # (B, T, C)
        return y, padded

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"


class GatedFeedForward(nn.Module):
    r"""The gated feed-forward of an :class:`sLSTMBlock`: ``W_{down}(act(W_g x) \odot W_u x)``,
    ``[W_g; W_u] = up.weight`` ``(2F, H)``, ``down.weight`` ``(H, F)``, then dropout (the
    official package's ``GatedFeedForward``; ``F`` is ``proj_factor * H`` rounded up to a
    multiple of 64)."""

    def __init__(self, hidden_size, proj_factor=1.3, size=None, act="gelu", bias=False, dropout=0.0,
                 num_blocks=1, device=None, dtype=None):  # fmt: skip
        super().__init__()
        self.hidden_size = hidden_size
        self.proj_factor = check_number("ffn_proj_factor", proj_factor)
        self.size = up_size(hidden_size, self.proj_factor) if size is None else _checks.positive_int("ffn_size", size)
        if act not in FFN_ACTIVATIONS:
            raise ValueError(f"ffn_act must be one of {', '.join(map(repr, FFN_ACTIVATIONS))}, got {act!r}")
        self.act, self.dropout, self.num_blocks = act, _checks.probability("ffn_dropout", dropout), num_blocks
        kw = factory(device, dtype)
        self.up = nn.Linear(hidden_size, 2 * self.size, bias=_checks.boolean("ffn_bias", bias), **kw)
        self.down = nn.Linear(self.size, hidden_size, bias=bias, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        small_init_(self.up.weight, self.hidden_size)
        wang_init_(self.down.weight, self.hidden_size, self.num_blocks)
        for layer in (self.up, self.down):
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.up(x).split(self.size, dim=-1)  # 2 x (B, T, F)
        y = self.down(FFN_ACTIVATIONS[self.act](gate) * value)  # (B, T, H)
        return F.dropout(y, self.dropout, self.training) if self.dropout else y

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, size={self.size}, act={self.act!r}" + (f", dropout={self.dropout}" if self.dropout else "")
