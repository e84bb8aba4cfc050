"""The two branches of the xLSTM blocks: the sLSTM and the mLSTM layer with what surrounds
their cells (causal convolution, head-wise projections, group norm; for the mLSTM the
up- and down-projection and the output gate).

Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter & Hochreiter,
"xLSTM: Extended Long Short-Term Memory", NeurIPS 2024, appendix A; the structure, defaults
and initialization of the official ``xlstm`` package (2.0), whose ``sLSTMLayer`` and
``mLSTMLayer`` these are. The residual blocks that hold them and the stack are in
:mod:`gatedrnn.xlstm.blocks`. The recurrences run on :func:`gatedrnn.xlstm.slstm.run_slstm`
and :func:`gatedrnn.xlstm.mlstm.mlstm_sequence`.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from gatedrnn import _checks
from gatedrnn.capture import RefusesScript
from gatedrnn.trace import Trace
from gatedrnn.xlstm.mlstm import FORMS, mlstm_sequence
from gatedrnn.xlstm.parts import (
    CausalConv1d,
    HeadwiseLinear,
    OffsetNorm,
    check_divides,
    check_number,
    factory,
    small_init_,
    up_size,
    wang_init_,
)
from gatedrnn.xlstm.slstm import check_backend, run_slstm

SLSTM_TRACE = ("input", "forget", "candidate", "output", "cell", "normalizer", "stabilizer", "hidden")


def _last_inputs(padded: torch.Tensor, keep: int, lengths: torch.Tensor | None) -> torch.Tensor:
    """The ``keep`` inputs before each sequence's end from ``padded`` (B, keep+T, C): the
    convolution's buffer for the next call."""
    if lengths is None:
        return padded[:, padded.shape[1] - keep :]
    index = lengths[:, None] + torch.arange(keep, device=padded.device)  # (B, keep): steps L-keep..L-1
    return padded.gather(1, index[..., None].expand(-1, -1, padded.shape[2]))


class sLSTMBranch(RefusesScript, nn.Module):
    r"""The sLSTM branch of an :class:`sLSTMBlock` (the official package's ``sLSTMLayer``):
    causal convolution, head-wise projections, the sLSTM cell, a per-head group norm.

    .. math::

        \tilde x_t &= \mathrm{swish}(\mathrm{conv}(x)_t) \\
        \tilde i_t, \tilde f_t &= W_{i,f}\, \tilde x_t + R_{i,f}\, h_{t-1} + b_{i,f}, \quad
        \tilde z_t, \tilde o_t = W_{z,o}\, x_t + R_{z,o}\, h_{t-1} + b_{z,o} \\
        h_t &= \mathrm{sLSTM}(\tilde i_t, \tilde f_t, \tilde z_t, \tilde o_t) \quad
               \text{(:mod:`gatedrnn.cells.slstm`)} \\
        y_t &= \mathrm{GroupNorm}_{heads}(\mathrm{dropout}(h_t))

    The input gates and forget gates read the convolved input, the candidate and output gate
    the input itself; every ``W`` and ``R`` is block-diagonal over the heads. With
    ``conv_kernel_size=0`` there is no convolution and no swish (``x~ = x``).

    Args:
        hidden_size (int): ``H``, the features in and out.
        num_heads (int): heads; they divide ``H``. Default: ``4``.
        conv_kernel_size (int): ``K`` of the causal convolution, ``0`` for none. Default: ``4``.
        dropout (float): on ``h`` before the group norm, in training. Default: ``0.0``.
        forget (str): ``"sigmoid"`` (the paper's, and the official package's) or ``"exp"``.
            Default: ``"sigmoid"``.
        backend (str): :func:`gatedrnn.xlstm.slstm.run_slstm`'s. Default: ``"auto"``.
        block_index (int): the block's place in a stack, for the forget-gate bias
            initialization. Default: ``0``.
        num_blocks (int): the blocks in the stack, as ``block_index``. Default: ``1``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' type. Default: ``None``.

    Attributes:
        conv.weight (Tensor): ``(H, 1, K)``; ``conv.bias`` ``(H,)``.
        weight_ih (Tensor): ``(heads, 4d, d)``, ``d = H / heads``: head ``j``'s rows ``W_i, W_f,
            W_z, W_o``, each ``(d, d)``, the layout of ``weight_hh``.
        weight_hh (Tensor): ``(heads, 4d, d)``, the recurrent ``R``, head ``j``'s rows i, f, z, o.
        bias (Tensor): ``(4H,)``, gate-major ``[b_i; b_f; b_z; b_o]``.
        group_norm.weight (Tensor): ``(H,)``, the scale minus one.
    """

    def __init__(self, hidden_size, num_heads=4, conv_kernel_size=4, dropout=0.0, forget="sigmoid",
                 backend="auto", block_index=0, num_blocks=1, device=None, dtype=None):  # fmt: skip
        super().__init__()
        H = self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        K = self.num_heads = _checks.positive_int("num_heads", num_heads)
        check_divides("num_heads", K, "hidden_size", H)
        if isinstance(conv_kernel_size, bool) or not isinstance(conv_kernel_size, numbers.Integral) or conv_kernel_size < 0:
            raise ValueError(f"conv_kernel_size must be an int >= 0 (0: no convolution), got {conv_kernel_size!r}")
        self.conv_kernel_size = int(conv_kernel_size)
        self.dropout = _checks.probability("dropout", dropout)
        if forget not in ("sigmoid", "exp"):
            raise ValueError(f"forget must be 'sigmoid' or 'exp', got {forget!r}")
        self.forget, self.backend = forget, check_backend(backend)
        self.block_index, self.num_blocks = block_index, num_blocks
        d = H // K
        kw = factory(device, dtype)
        self.conv = CausalConv1d(H, self.conv_kernel_size, **kw) if self.conv_kernel_size else None
        self.weight_ih = nn.Parameter(torch.empty(K, 4 * d, d, **kw))
        self.weight_hh = nn.Parameter(torch.empty(K, 4 * d, d, **kw))
        self.bias = nn.Parameter(torch.empty(4 * H, **kw))
        self.group_norm = OffsetNorm(H, groups=K, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official package's defaults: small-init input projections, zero recurrent
        weights, zero biases but the forget gate's, which falls from 5 to -7 over each head's
        units along a power law that flattens with depth (``powerlaw_blockdependent``)."""
        H, K = self.hidden_size, self.num_heads
        d = H // K
        if self.conv is not None:
            self.conv.reset_parameters()
        small_init_(self.weight_ih, H)
        nn.init.zeros_(self.weight_hh)
        with torch.no_grad():
            self.bias.zero_()
            depth = self.block_index / (self.num_blocks - 1) if self.num_blocks > 1 else 0.0
            units = torch.arange(d, dtype=torch.float64) / max(d - 1, 1)
            forget = 5.0 - 12.0 * units ** (0.3 + 1.3 * depth)  # (d,), the same for every head
            self.bias[H : 2 * H] = forget.repeat(K).to(self.bias)
        self.group_norm.reset_parameters()

    def forward(self, x: torch.Tensor, state=None, lengths: torch.Tensor | None = None, return_trace: bool = False):
        """``x`` (B, T, H) -> ``y`` (B, T, H) and the state ``(conv buffer (B, K-1, H), h, c, n, m)``
        at each sequence's end; with ``return_trace`` also a :class:`~gatedrnn.Trace` of the
        cell's ``input, forget, candidate, output, cell, normalizer, stabilizer, hidden``, each
        (B, T, H), zero past each length.

        Args:
            x (Tensor): ``(B, T, H)``.
            state (tuple, optional): the state a previous call returned. Default: zeros.
            lengths (Tensor, optional): ``(B,)`` valid steps per sequence. Default: all ``T``.
            return_trace (bool): also return the trace. Default: ``False``.
        """
        B, T, H = x.shape
        K, d = self.num_heads, H // self.num_heads
        buffer = cell_state = None
        if state is not None:
            buffer, *cell_state = state
            buffer = None if self.conv is None else buffer
        if self.conv is not None:
            conv_out, padded = self.conv(x, buffer)  # (B, T, H), (B, K-1+T, H)
            x_conv = F.silu(conv_out)
            buffer = _last_inputs(padded, self.conv_kernel_size - 1, lengths)  # (B, K-1, H)
        else:
            x_conv, buffer = x, x.new_zeros(B, 0, H)
        heads_conv = x_conv.reshape(B, T, K, d)  # (B, T, heads, d)
        heads_x = x.reshape(B, T, K, d)
        w = self.weight_ih.view(K, 4, d, d)  # head, gate, row, column
        if_ = torch.einsum("btjc,jgrc->btgjr", heads_conv, w[:, :2])  # (B, T, 2, heads, d): i~, f~ from the conv
        zo = torch.einsum("btjc,jgrc->btgjr", heads_x, w[:, 2:])  # (B, T, 2, heads, d): z~, o~ from x
        xw = torch.cat([if_, zo], dim=2).reshape(B, T, 4 * H).transpose(0, 1)  # (T, B, 4H), gate-major
        if cell_state is None:
            zeros = x.new_zeros(B, H)
            cell_state = (zeros, zeros, zeros, zeros)  # n = 0: an empty state
        out, cell_state, acts = run_slstm(xw, tuple(cell_state), self.weight_hh, self.bias, forget=self.forget,
                                          lengths=lengths, backend=self.backend, want_trace=return_trace)  # fmt: skip
        h = out.transpose(0, 1)  # (B, T, H)
        h = F.dropout(h, self.dropout, self.training) if self.dropout else h
        y = self.group_norm(h)
        if not return_trace:
            return y, (buffer, *cell_state)
        return y, (buffer, *cell_state), Trace({n: a.transpose(0, 1) for n, a in zip(SLSTM_TRACE, acts)})  # (B, T, H)

    def state_shapes(self, B: int):
        H = self.hidden_size
        return [(B, max(self.conv_kernel_size - 1, 0), H)] + [(B, H)] * 4, ["conv buffer", "h", "c", "n", "m"]

    def extra_repr(self) -> str:
        return (f"{self.hidden_size}, num_heads={self.num_heads}, conv_kernel_size={self.conv_kernel_size}"
                + (f", dropout={self.dropout}" if self.dropout else "") + (f", forget={self.forget!r}" if self.forget != "sigmoid" else ""))  # fmt: skip


class mLSTMBranch(RefusesScript, nn.Module):
    r"""The mLSTM branch of an :class:`mLSTMBlock` (the official package's ``mLSTMLayer``).

    .. math::

        [u_t; z_t] &= W_{up} x_t, \quad \tilde u_t = \mathrm{swish}(\mathrm{conv}(u)_t) \\
        q_t &= W_q \tilde u_t, \quad k_t = W_k \tilde u_t, \quad v_t = W_v u_t \\
        \tilde i_t &= w_i^\top [q_t; k_t; v_t] + b_i, \quad \tilde f_t = w_f^\top [q_t; k_t; v_t] + b_f
            \quad \text{(one per head)} \\
        \tilde h_t &= \mathrm{mLSTM}(q, k, v, \tilde i, \tilde f)_t \quad
            \text{(:func:`gatedrnn.xlstm.mlstm.mlstm_sequence`)} \\
        y_t &= W_{down} \big( (\mathrm{GroupNorm}_{heads}(\tilde h_t) + s \odot \tilde u_t)
               \odot \mathrm{swish}(z_t) \big)

    ``W_q, W_k, W_v`` are block-diagonal with blocks of ``qkv_proj_blocksize``; the mLSTM's
    heads split the inner width ``I`` (``proj_factor * H`` rounded up to a multiple of 64)
    into ``num_heads``; ``s`` is the learnable skip. Dropout acts on ``y`` in training.

    Args:
        hidden_size (int): ``H``, the features in and out.
        num_heads (int): the mLSTM's heads; they divide ``I``. Default: ``4``.
        proj_factor (float): the up-projection factor. Default: ``2.0``.
        inner_size (int, optional): ``I`` itself, instead of ``proj_factor``. Default: ``None``.
        qkv_proj_blocksize (int): the block size of ``W_q, W_k, W_v``. Default: ``4``.
        conv_kernel_size (int): ``K`` of the causal convolution (at least 1). Default: ``4``.
        bias (bool): biases on the up, q, k, v and down projections. Default: ``False``.
        dropout (float): on the output, in training. Default: ``0.0``.
        form (str): :func:`~gatedrnn.xlstm.mlstm.mlstm_sequence`'s. Default: ``"auto"``.
        chunk_size (int): :func:`~gatedrnn.xlstm.mlstm.mlstm_sequence`'s. Default: ``64``.
        block_index (int): the block's place in a stack (the down-projection's
            initialization). Default: ``0``.
        num_blocks (int): the blocks in the stack, as ``block_index``. Default: ``1``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' type. Default: ``None``.

    Attributes:
        up.weight (Tensor): ``(2I, H)``, rows ``[W_up for u; for z]``.
        q_proj.weight, k_proj.weight, v_proj.weight (Tensor): ``(I/bs, bs, bs)``.
        conv.weight (Tensor): ``(I, 1, K)``; ``conv.bias`` ``(I,)``.
        input_gate (Linear): ``3I -> heads``, with biases.
        forget_gate (Linear): as ``input_gate``.
        group_norm.weight (Tensor): ``(I,)``; skip (Tensor): ``(I,)``; down.weight ``(H, I)``.
    """

    def __init__(self, hidden_size, num_heads=4, proj_factor=2.0, inner_size=None, qkv_proj_blocksize=4,
                 conv_kernel_size=4, bias=False, dropout=0.0, form="auto", chunk_size=64, block_index=0,
                 num_blocks=1, device=None, dtype=None):  # fmt: skip
        super().__init__()
        H = self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.proj_factor = check_number("proj_factor", proj_factor)
        inner = up_size(H, self.proj_factor) if inner_size is None else _checks.positive_int("inner_size", inner_size)
        self.inner_size = inner
        self.num_heads = _checks.positive_int("num_heads", num_heads)
        check_divides("num_heads", self.num_heads, "inner_size", inner)
        self.qkv_proj_blocksize = _checks.positive_int("qkv_proj_blocksize", qkv_proj_blocksize)
        check_divides("qkv_proj_blocksize", self.qkv_proj_blocksize, "inner_size", inner)
        self.conv_kernel_size = _checks.positive_int("conv_kernel_size", conv_kernel_size)
        self.bias = _checks.boolean("bias", bias)
        self.dropout = _checks.probability("dropout", dropout)
        if form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(map(repr, FORMS))}, got {form!r}")
        self.form, self.chunk_size = form, _checks.positive_int("chunk_size", chunk_size)
        self.block_index, self.num_blocks = block_index, num_blocks
        kw = factory(device, dtype)
        blocks = inner // self.qkv_proj_blocksize
        self.up = nn.Linear(H, 2 * inner, bias=bias, **kw)
        self.conv = CausalConv1d(inner, self.conv_kernel_size, **kw)
        self.q_proj = HeadwiseLinear(inner, inner, blocks, bias=bias, **kw)
        self.k_proj = HeadwiseLinear(inner, inner, blocks, bias=bias, **kw)
        self.v_proj = HeadwiseLinear(inner, inner, blocks, bias=bias, **kw)
        self.input_gate = nn.Linear(3 * inner, self.num_heads, **kw)
        self.forget_gate = nn.Linear(3 * inner, self.num_heads, **kw)
        self.group_norm = OffsetNorm(inner, groups=self.num_heads, **kw)
        self.skip = nn.Parameter(torch.ones(inner, **kw))
        self.down = nn.Linear(inner, H, bias=bias, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official package's defaults: small-init up, q, k, v projections (by ``H``), the
        down-projection scaled by depth, zero gate weights, forget biases from 3 to 6 over the
        heads, input biases ``N(0, 0.1)``, skip one, zero biases elsewhere."""
        H = self.hidden_size
        small_init_(self.up.weight, H)
        wang_init_(self.down.weight, H, self.num_blocks)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            small_init_(proj.weight, H)
        for layer in (self.up, self.down, self.q_proj, self.k_proj, self.v_proj):
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        self.conv.reset_parameters()
        nn.init.zeros_(self.forget_gate.weight)
        with torch.no_grad():
            self.forget_gate.bias.copy_(torch.linspace(3.0, 6.0, self.num_heads))
        nn.init.zeros_(self.input_gate.weight)
        nn.init.normal_(self.input_gate.bias, 0.0, 0.1)
        self.group_norm.reset_parameters()
        nn.init.ones_(self.skip)

    def forward(self, x: torch.Tensor, state=None, lengths: torch.Tensor | None = None, return_trace: bool = False):
        """``x`` (B, T, H) -> ``y`` (B, T, H) and the state ``(conv buffer (B, K-1, I), C, n, m)``
        at each sequence's end; with ``return_trace`` also a :class:`~gatedrnn.Trace` of the
        mLSTM's ``input, forget, normalizer, stabilizer, memory``, each (B, T, heads).

        Args:
            x (Tensor): ``(B, T, H)``.
            state (tuple, optional): the state a previous call returned. Default: zeros.
            lengths (Tensor, optional): ``(B,)`` valid steps per sequence. Default: all ``T``.
            return_trace (bool): also return the trace. Default: ``False``.
        """
        B, T, _ = x.shape
        inner, heads = self.inner_size, self.num_heads
        buffer = cell_state = None
        if state is not None:
            buffer, *cell_state = state
            cell_state = tuple(cell_state)
        u, z = self.up(x).split(inner, dim=-1)  # 2 x (B, T, I)
        conv_out, padded = self.conv(u, buffer)
        u_conv = F.silu(conv_out)  # (B, T, I)
        buffer = _last_inputs(padded, self.conv_kernel_size - 1, lengths)  # (B, K-1, I)
        q, k, v = self.q_proj(u_conv), self.k_proj(u_conv), self.v_proj(u)  # 3 x (B, T, I)
        qkv = torch.cat([q, k, v], dim=-1)  # (B, T, 3I): what the gates read
        i_raw = self.input_gate(qkv).transpose(1, 2)  # (B, heads, T)
        f_raw = self.forget_gate(qkv).transpose(1, 2)  # (B, heads, T)
        per_head = (B, T, heads, inner // heads)
        q, k, v = (t.view(per_head).transpose(1, 2) for t in (q, k, v))  # 3 x (B, heads, T, I/heads)
        h_tilde, cell_state, trace = mlstm_sequence(q, k, v, i_raw, f_raw, cell_state, form=self.form,
                                                    chunk_size=self.chunk_size, lengths=lengths,
                                                    want_trace=return_trace)  # fmt: skip
        h_tilde = h_tilde.transpose(1, 2).reshape(B, T, inner)  # (B, T, I)
        h = (self.group_norm(h_tilde) + self.skip * u_conv) * F.silu(z)  # the skip, then the output gate
        y = self.down(h)  # (B, T, H)
        y = F.dropout(y, self.dropout, self.training) if self.dropout else y
        if not return_trace:
            return y, (buffer, *cell_state)
        return y, (buffer, *cell_state), Trace({n: a.transpose(1, 2) for n, a in trace.items()})  # (B, T, heads)

    def state_shapes(self, B: int):
        inner, heads = self.inner_size, self.num_heads
        d = inner // heads
        shapes = [(B, self.conv_kernel_size - 1, inner), (B, heads, d, d), (B, heads, d), (B, heads)]
        return shapes, ["conv buffer", "C", "n", "m"]

    def extra_repr(self) -> str:
        return (f"{self.hidden_size}, num_heads={self.num_heads}, inner_size={self.inner_size}, "
                f"qkv_proj_blocksize={self.qkv_proj_blocksize}, conv_kernel_size={self.conv_kernel_size}"
                + (", bias=True" if self.bias else "") + (f", dropout={self.dropout}" if self.dropout else ""))  # fmt: skip
