"""The xLSTM residual blocks and the block stack.

Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter & Hochreiter,
"xLSTM: Extended Long Short-Term Memory", NeurIPS 2024, section 2.4 and appendix A (the sLSTM
block: figure 10 left; the mLSTM block: figure 11). The structure, the defaults and the
initialization are those of the official ``xlstm`` package (2.0), so that
:func:`gatedrnn.convert.xlstm.from_xlstm` and :func:`~gatedrnn.convert.xlstm.to_xlstm` copy weights
between the two exactly:

- :class:`sLSTMBlock`: ``x + sLSTM-branch(LN(x))``, then ``x + FFN(LN(x))``;
- :class:`mLSTMBlock`: ``x + mLSTM-branch(LN(x))`` (no feed-forward: its branch projects up
  and down itself);
- :class:`xLSTM`: blocks, sLSTM where ``slstm_at`` says and mLSTM elsewhere, then a final
  LayerNorm; a gatedrnn layer (``forward(input, hx, lengths, return_trace)``).

Every norm here scales by ``1 + weight`` (``weight`` starts at zero, so weight decay pulls the
scale toward one), as the official package does; the group norms normalize each head apart.
The branches, with the recurrences in them, are in :mod:`gatedrnn.xlstm.branches`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gatedrnn import _checks
from gatedrnn.capture import RefusesScript
from gatedrnn.trace import Trace
from gatedrnn.xlstm.branches import mLSTMBranch, sLSTMBranch
from gatedrnn.xlstm.mlstm import FORMS
from gatedrnn.xlstm.parts import (
    GatedFeedForward,
    OffsetNorm,
    factory,
)
from gatedrnn.xlstm.slstm import check_backend


def _valid(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) True where step t lies inside its sequence."""
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


def _check_state(name: str, state, expected: Sequence[tuple[int, ...]], meanings: Sequence[str], like):
    if not isinstance(state, (tuple, list)) or len(state) != len(expected):
        raise TypeError(f"{name} must be a tuple of {len(expected)} tensors ({', '.join(meanings)}), got "
                        f"{type(state).__name__}" + (f" of {len(state)}" if isinstance(state, (tuple, list)) else ""))  # fmt: skip
    out = []
    for k, (value, shape, meaning) in enumerate(zip(state, expected, meanings)):
        value = _checks.float_tensor(f"{name}[{k}]", value, like)
        _checks.shape(f"{name}[{k}]", value, shape, f"({meaning})")
        out.append(value)
    return tuple(out)


class sLSTMBlock(RefusesScript, nn.Module):
    r"""The paper's sLSTM block (figure 10, left; the official package's ``sLSTMBlock``):

    .. math::

        x &\leftarrow x + \mathrm{sLSTMBranch}(\mathrm{LN}(x)) \\
        x &\leftarrow x + \mathrm{FFN}(\mathrm{LN}(x))

    the branch an :class:`sLSTMBranch` (convolution, head-wise projections, sLSTM cell, group
    norm), the FFN a :class:`GatedFeedForward` (GeLU-gated, ``1.3 H`` rounded up to a multiple
    of 64), each LayerNorm without bias and scaled by ``1 + weight``.

    Args:
        hidden_size (int): ``H``, the features in and out.
        num_heads (int): the sLSTM's heads. Default: ``4``.
        conv_kernel_size (int): the branch's convolution, ``0`` for none. Default: ``4``.
        dropout (float): the branch's dropout. Default: ``0.0``.
        ffn_proj_factor (float or None): the feed-forward's width factor; ``None``: no
            feed-forward. Default: ``1.3``.
        ffn_size (int, optional): the feed-forward's width itself. Default: ``None``.
        ffn_act (str): ``"gelu"``, ``"relu"``, ``"relu^2"``, ``"sigmoid"``, ``"swish"`` or
            ``"selu"``. Default: ``"gelu"``.
        ffn_bias (bool): biases in the feed-forward. Default: ``False``.
        ffn_dropout (float): dropout after the feed-forward. Default: ``0.0``.
        forget: the branch's (:class:`sLSTMBranch`).
        backend: as ``forget``.
        block_index (int): the block's place in a stack (initialization only).
        num_blocks (int): as ``block_index``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' type. Default: ``None``.

    Inputs: ``x`` ``(B, T, H)``, ``state`` (the tuple the block returned, or ``None``),
    ``lengths`` ``(B,)`` int64 or ``None``, ``return_trace``.

    Outputs: ``(y, state)``, with ``return_trace`` also a :class:`~gatedrnn.Trace` of the
    cell's ``input, forget, candidate, output, cell, normalizer, stabilizer, hidden``, each
    ``(B, T, H)``. ``state`` is ``(conv buffer (B, K-1, H), h, c, n, m)``.

    Examples:
        >>> import torch
        >>> from gatedrnn.xlstm import sLSTMBlock
        >>> block = sLSTMBlock(32, num_heads=4)
        >>> y, state = block(torch.randn(2, 10, 32))
        >>> y.shape, [tuple(s.shape) for s in state]
        (torch.Size([2, 10, 32]), [(2, 3, 32), (2, 32), (2, 32), (2, 32), (2, 32)])
    """

    kind = "slstm"

    def __init__(self, hidden_size, num_heads=4, conv_kernel_size=4, dropout=0.0, ffn_proj_factor=1.3,
                 ffn_size=None, ffn_act="gelu", ffn_bias=False, ffn_dropout=0.0, forget="sigmoid", backend="auto",
                 block_index=0, num_blocks=1, device=None, dtype=None):  # fmt: skip
        super().__init__()
        kw = factory(device, dtype)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.norm = OffsetNorm(hidden_size, **kw)
        self.slstm = sLSTMBranch(hidden_size, num_heads, conv_kernel_size, dropout, forget, backend, block_index,
                                 num_blocks, **kw)  # fmt: skip
        if ffn_proj_factor is None and ffn_size is None:
            self.ffn_norm = self.ffn = None
        else:
            self.ffn_norm = OffsetNorm(hidden_size, **kw)
            self.ffn = GatedFeedForward(hidden_size, 1.3 if ffn_proj_factor is None else ffn_proj_factor, ffn_size,
                                        ffn_act, ffn_bias, ffn_dropout, num_blocks, **kw)  # fmt: skip

    def reset_parameters(self) -> None:
        """The official package's initialization (:meth:`sLSTMBranch.reset_parameters`)."""
        for part in (self.norm, self.slstm, self.ffn_norm, self.ffn):
            if part is not None:
                part.reset_parameters()

    def state_shapes(self, B: int):
        return self.slstm.state_shapes(B)

    def forward(self, x, state=None, lengths=None, return_trace=False):
        """The block on a sequence: ``x`` (B, T, H) -> ``(y (B, T, H), state)`` [, trace].

        Args:
            x (Tensor): ``(B, T, H)``.
            state (tuple, optional): the state the block returned, to continue the sequences.
                Default: ``None``, an empty state.
            lengths (Tensor, optional): ``(B,)`` int64, each sequence's valid steps. Default: ``None``.
            return_trace (bool): also return the cell's :class:`~gatedrnn.Trace`. Default: ``False``.
        """
        y, state, *trace = self.slstm(self.norm(x), state, lengths, return_trace)
        x = x + y
        if self.ffn is not None:
            x = x + self.ffn(self.ffn_norm(x))
        return (x, state, *trace)


class mLSTMBlock(RefusesScript, nn.Module):
    r"""The paper's mLSTM block (figure 11; the official package's ``mLSTMBlock``):
    ``x <- x + mLSTMBranch(LN(x))``, the branch an :class:`mLSTMBranch` (up-projection,
    convolution, q/k/v, the mLSTM, group norm, learnable skip, output gate ``swish(z)``,
    down-projection), the LayerNorm without bias and scaled by ``1 + weight``.

    Args:
        hidden_size (int): ``H``, the features in and out.
        num_heads (int): the mLSTM's heads. Default: ``4``.
        proj_factor (float): the up-projection factor. Default: ``2.0``.
        inner_size (int, optional): the up-projection's width itself. Default: ``None``.
        qkv_proj_blocksize (int): the block size of the q, k, v projections. Default: ``4``.
        conv_kernel_size (int): the causal convolution's width. Default: ``4``.
        bias (bool): biases on the projections. Default: ``False``.
        dropout (float): on the branch's output. Default: ``0.0``.
        form: :func:`~gatedrnn.xlstm.mlstm.mlstm_sequence`'s.
        chunk_size: as ``form``.
        block_index (int): the block's place in a stack (initialization only).
        num_blocks (int): as ``block_index``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' type. Default: ``None``.

    Inputs and outputs: as :class:`sLSTMBlock`'s; ``state`` is ``(conv buffer (B, K-1, I),
    C, n, m)`` with the mLSTM's ``C, n, m``; the trace holds the mLSTM's names.

    Examples:
        >>> import torch
        >>> from gatedrnn.xlstm import mLSTMBlock
        >>> block = mLSTMBlock(32, num_heads=4)  # inner width 2 * 32 = 64
        >>> y, state = block(torch.randn(2, 10, 32))
        >>> y.shape, tuple(state[0].shape)
        (torch.Size([2, 10, 32]), (2, 3, 64))
    """

    kind = "mlstm"

    def __init__(self, hidden_size, num_heads=4, proj_factor=2.0, inner_size=None, qkv_proj_blocksize=4,
                 conv_kernel_size=4, bias=False, dropout=0.0, form="auto", chunk_size=64, block_index=0,
                 num_blocks=1, device=None, dtype=None):  # fmt: skip
        super().__init__()
        kw = factory(device, dtype)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.norm = OffsetNorm(hidden_size, **kw)
        self.mlstm = mLSTMBranch(hidden_size, num_heads, proj_factor, inner_size, qkv_proj_blocksize,
                                 conv_kernel_size, bias, dropout, form, chunk_size, block_index, num_blocks, **kw)  # fmt: skip

    def reset_parameters(self) -> None:
        """The official package's initialization (:meth:`mLSTMBranch.reset_parameters`)."""
        self.norm.reset_parameters()
        self.mlstm.reset_parameters()

    def state_shapes(self, B: int):
        return self.mlstm.state_shapes(B)

    def forward(self, x, state=None, lengths=None, return_trace=False):
        """The block on a sequence: ``x`` (B, T, H) -> ``(y (B, T, H), state)`` [, trace].

        Args:
            x (Tensor): ``(B, T, H)``.
            state (tuple, optional): the state the block returned, to continue the sequences.
                Default: ``None``, an empty state.
            lengths (Tensor, optional): ``(B,)`` int64, each sequence's valid steps. Default: ``None``.
            return_trace (bool): also return the cell's :class:`~gatedrnn.Trace`. Default: ``False``.
        """
        y, state, *trace = self.mlstm(self.norm(x), state, lengths, return_trace)
        return (x + y, state, *trace)


class xLSTM(RefusesScript, nn.Module):
    r"""An xLSTM stack (the official package's ``xLSTMBlockStack``): ``num_layers`` residual
    blocks, an :class:`sLSTMBlock` at each index in ``slstm_at`` and an :class:`mLSTMBlock`
    elsewhere, then a LayerNorm; a linear map from ``input_size`` to ``hidden_size`` first when
    they differ. The paper's ``xLSTM[a:b]`` has ``a`` mLSTM blocks per ``b`` sLSTM blocks:
    ``xLSTM[7:1]`` over eight blocks is ``num_layers=8, slstm_at=(1,)`` (the paper puts the
    sLSTM second), ``xLSTM[1:0]`` is ``slstm_at=()``, ``xLSTM[0:1]`` is ``slstm_at="all"``.

    A gatedrnn layer: ``forward(input, hx=None, lengths=None, return_trace=False)``. The
    convolutions and the cells are causal, so the output at step ``t`` depends on steps up to
    ``t`` only, and padding after a sequence's ``lengths`` changes none of its valid outputs.

    Args:
        input_size (int): ``I``, features per input step.
        hidden_size (int): ``H``, the blocks' width (the official ``embedding_dim``) and the
            output's features.
        num_layers (int): the number of blocks. Default: ``2``.
        num_heads (int): heads of every block's cell. Default: ``4``.
        slstm_at (sequence of int or "all"): the indices (from 0) of the sLSTM blocks.
            Default: ``()`` (mLSTM only).
        batch_first (bool): ``(B, T, *)`` input and output. Default: ``False``.
        dropout (float): every block's dropout (the sLSTM's on ``h``, the mLSTM's on its
            output), in training. Default: ``0.0``.
        conv_kernel_size (int): every block's causal convolution. Default: ``4``.
        bias (bool): biases on the mLSTM's projections. Default: ``False``.
        post_norm (bool): the final LayerNorm. Default: ``True``.
        backend (str): the sLSTM's (:func:`gatedrnn.xlstm.slstm.run_slstm`). Default: ``"auto"``.
        form (str): the mLSTM's form. Default: ``"auto"``.
        chunk_size (int): the mLSTM's chunk size. Default: ``64``.
        mlstm_options (dict, optional): more keywords, or overrides, for the
        slstm_options (dict, optional): as ``mlstm_options``.
            blocks of each kind (:class:`mLSTMBlock`'s ``proj_factor``, ``qkv_proj_blocksize``;
            :class:`sLSTMBlock`'s ``ffn_proj_factor``, ``ffn_act``, ``forget``...).
            Default: ``None``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' type. Default: ``None``.

    Inputs:
        - **input**: ``(T, B, I)``, ``(B, T, I)`` with ``batch_first`` or ``(T, I)`` unbatched.
        - **hx** (list, optional): one state per block, as ``forward`` returns it; ``None``
          starts every block empty (zero convolution buffers, empty cells).
        - **lengths** (Tensor, optional): ``(B,)`` integers in ``[1, T]``.
        - **return_trace** (bool): also return the trace. Default: ``False``.

    Outputs:
        - **output**: ``(T, B, H)`` (``(B, T, H)`` batch-first, ``(T, H)`` unbatched), zero
          past each sequence's length.
        - **state**: a list with one tuple per block, each sequence's state at its last valid
          step: an sLSTM block's ``(conv buffer (B, K-1, H), h, c, n, m)``, an mLSTM block's
          ``(conv buffer (B, K-1, I), C, n, m)`` (unbatched: no ``B``). Pass it back as ``hx``
          to continue the sequences: feeding a sequence in pieces (one step at a time, for
          generation) gives the outputs of feeding it whole.
        - **trace** (with ``return_trace``): a :class:`~gatedrnn.Trace` of every block's cell
          values, named ``block{j}_{name}`` (``block1_forget``), laid out as the output
          (``(T, B, ...)``, ``(B, T, ...)`` batch-first), zero past each length.

    Examples:
        >>> import torch, gatedrnn
        >>> from gatedrnn.xlstm import xLSTM
        >>> model = xLSTM(16, 32, num_layers=3, slstm_at=(1,), batch_first=True)
        >>> [type(b).__name__ for b in model.blocks]
        ['mLSTMBlock', 'sLSTMBlock', 'mLSTMBlock']
        >>> x = torch.randn(2, 12, 16)
        >>> y, state = model(x)
        >>> y1, s = model(x[:, :5])
        >>> y2, _ = model(x[:, 5:], hx=s)  # the rest, from the state
        >>> torch.allclose(torch.cat([y1, y2], 1), y, atol=1e-5)
        True
    """

    def __init__(self, input_size, hidden_size, num_layers=2, num_heads=4, slstm_at=(), batch_first=False,
                 dropout=0.0, conv_kernel_size=4, *, bias=False, post_norm=True, backend="auto", form="auto",
                 chunk_size=64, mlstm_options=None, slstm_options=None, device=None, dtype=None):  # fmt: skip
        super().__init__()
        self.input_size = _checks.positive_int("input_size", input_size)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.num_layers = _checks.positive_int("num_layers", num_layers)
        self.num_heads = _checks.positive_int("num_heads", num_heads)
        self.batch_first = _checks.boolean("batch_first", batch_first)
        self.dropout = _checks.probability("dropout", dropout)
        self.post_norm_enabled = _checks.boolean("post_norm", post_norm)
        if isinstance(slstm_at, str):
            if slstm_at != "all":
                raise ValueError(f"slstm_at must be a sequence of block indices or 'all', got {slstm_at!r}")
            slstm_at = range(self.num_layers)
        try:
            at = sorted({int(j) for j in slstm_at if not isinstance(j, bool) and int(j) == j})
        except (TypeError, ValueError):
            raise TypeError(f"slstm_at must be a sequence of block indices or 'all', got {slstm_at!r}") from None
        if len(at) != len(list(slstm_at)) or any(not 0 <= j < self.num_layers for j in at):
            raise ValueError(f"slstm_at must hold distinct block indices in [0, num_layers={self.num_layers}), "
                             f"got {list(slstm_at)}")  # fmt: skip
        self.slstm_at = tuple(at)
        check_backend(backend)  # checked here too when no block of its kind takes it
        if form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(map(repr, FORMS))}, got {form!r}")
        kw = factory(device, dtype)
        self.proj_in = nn.Linear(input_size, hidden_size, bias=False, **kw) if input_size != hidden_size else None
        shared = {"num_heads": num_heads, "conv_kernel_size": conv_kernel_size, "dropout": dropout,
                  "num_blocks": self.num_layers, **kw}  # fmt: skip
        m_options = {**shared, "bias": bias, "form": form, "chunk_size": chunk_size, **(mlstm_options or {})}
        s_options = {**shared, "backend": backend, **(slstm_options or {})}
        blocks = []
        for j in range(self.num_layers):
            if j in self.slstm_at:
                blocks.append(sLSTMBlock(hidden_size, block_index=j, **s_options))
            else:
                blocks.append(mLSTMBlock(hidden_size, block_index=j, **m_options))
        self.blocks = nn.ModuleList(blocks)
        self.post_norm = OffsetNorm(hidden_size, **kw) if post_norm else None

    def reset_parameters(self) -> None:
        """Every block's initialization (the official package's), the norms' offsets zero."""
        if self.proj_in is not None:
            self.proj_in.reset_parameters()
        for block in self.blocks:
            block.reset_parameters()
        if self.post_norm is not None:
            self.post_norm.reset_parameters()

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, slstm_at={self.slstm_at}"
                + (", batch_first=True" if self.batch_first else ""))  # fmt: skip

    def _like(self) -> torch.Tensor:
        return self.blocks[0].norm.weight

    def forward(self, input, hx=None, lengths=None, return_trace=False):
        """Run the stack over a sequence: see the class docstring for shapes.

        Args:
            input (Tensor): ``(T, B, I)``, ``(B, T, I)`` with ``batch_first``, or ``(T, I)`` unbatched.
            hx (list, optional): the state a previous call returned (one tuple per block): the
                sequences continue from there. Default: ``None``, an empty state.
            lengths (Tensor, optional): ``(B,)`` integers in ``[1, T]``: outputs past each length
                are zero and the state is the one at each length. Default: ``None``.
            return_trace (bool): also return a :class:`~gatedrnn.Trace` of every block's cell.
                Default: ``False``.
        """
        like = self._like()
        x = _checks.float_tensor("input", input, like)
        if x.dim() not in (2, 3):
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise _checks.ShapeError(f"input must be 3-D {layout} or 2-D (T, I) unbatched, got {x.dim()}-D "
                                     f"with shape {tuple(x.shape)}")  # fmt: skip
        if x.shape[-1] != self.input_size:
            raise _checks.ShapeError(f"input must have {self.input_size} features (input_size) in its last dimension, "
                                     f"got {x.shape[-1]} (shape {tuple(x.shape)})")  # fmt: skip
        unbatched = x.dim() == 2
        x = x.unsqueeze(0) if unbatched else (x if self.batch_first else x.transpose(0, 1))  # (B, T, I)
        B, T = x.shape[:2]
        if T == 0:
            raise ValueError(f"input must hold at least one time step, got T=0 (shape {tuple(input.shape)})")
        if lengths is not None:
            if unbatched:
                raise ValueError("lengths is only accepted with batched input, got 2-D (T, I) unbatched input")
            lengths = _checks.lengths(lengths, T, B, x.device)
        states = self._check_hx(hx, B, unbatched, like)
        if self.proj_in is not None:
            x = self.proj_in(x)  # (B, T, H)
        finals, trace = [], {}
        for j, block in enumerate(self.blocks):
            result = block(x, states[j], lengths, return_trace)
            x, state = result[0], result[1]
            finals.append(state)
            if return_trace:
                for name, value in result[2].items():
                    trace[f"block{j}_{name}"] = value  # (B, T, ...)
        if self.post_norm is not None:
            x = self.post_norm(x)
        if lengths is not None:
            valid = _valid(lengths, T)  # (B, T)
            x = x * valid[..., None]
            trace = {k: v * valid.view(B, T, *([1] * (v.dim() - 2))) for k, v in trace.items()}
        if unbatched:
            x = x[0]
            finals = [tuple(s[0] for s in state) for state in finals]
            trace = {k: v[0] for k, v in trace.items()}
        elif not self.batch_first:
            x = x.transpose(0, 1)
            trace = {k: v.transpose(0, 1) for k, v in trace.items()}
        if not return_trace:
            return x, finals
        return x, finals, Trace(trace)

    def _check_hx(self, hx, B, unbatched, like):
        if hx is None:
            return [None] * self.num_layers
        if not isinstance(hx, (list, tuple)) or len(hx) != self.num_layers:
            raise TypeError(f"hx must be a list of {self.num_layers} block states (num_layers), as forward returns "
                            f"it, got {type(hx).__name__}" + (f" of {len(hx)}" if isinstance(hx, (list, tuple)) else ""))  # fmt: skip
        states = []
        for j, (block, state) in enumerate(zip(self.blocks, hx)):
            if state is None:
                states.append(None)
                continue
            if not isinstance(state, (tuple, list)):
                raise TypeError(f"hx[{j}] must be a tuple of tensors (block {j}'s state), got {type(state).__name__}")
            if unbatched:
                state = tuple(s.unsqueeze(0) if isinstance(s, torch.Tensor) else s for s in state)
            shapes, meanings = block.state_shapes(B)
            states.append(_check_state(f"hx[{j}]", state, shapes, meanings, like))
        return states

