"""The official ``xlstm`` package (NX-AI, Beck et al. 2024) into gatedrnn and back.

:func:`from_xlstm` turns the package's ``sLSTMLayer``, ``mLSTMLayer``, ``sLSTMBlock``,
``mLSTMBlock`` (or an ``xLSTMBlock`` holding either) and ``xLSTMBlockStack`` into
:class:`~gatedrnn.xlstm.branches.sLSTMBranch`, :class:`~gatedrnn.xlstm.branches.mLSTMBranch`,
:class:`~gatedrnn.xlstm.blocks.sLSTMBlock`, :class:`~gatedrnn.xlstm.blocks.mLSTMBlock` and
:class:`~gatedrnn.xlstm.blocks.xLSTM`; :func:`to_xlstm` goes back. Weights are copied exactly (a
rearrangement, no arithmetic), so ours -> theirs -> ours gives the same ``state_dict`` bit for
bit; the two compute the same function within float32 rounding (the official sLSTM on its
``"vanilla"`` backend, the official mLSTM's parallel form). The mapping of every option, and
what is refused, is in ``docs/xlstm_mapping.md``.

Two things the package does that the mapping absorbs: its sLSTM layer computes the input gate
with the module it names ``fgate`` and the forget gate with ``igate`` (our ``weight_ih`` rows
follow the gate, not the name), and it keeps the recurrent kernel and the bias in a
backend-dependent internal layout, read and written here through its backend-independent
``recurrent_kernel`` and ``bias`` proxies ``(heads, d_in, 4, d_out)`` and ``(heads, 4, d)``.
"""

from __future__ import annotations

import torch
from torch import nn

from gatedrnn.models import SequenceModel
from gatedrnn.xlstm.blocks import mLSTMBlock, sLSTMBlock, xLSTM
from gatedrnn.xlstm.branches import mLSTMBranch, sLSTMBranch
from gatedrnn.xlstm.parts import GatedFeedForward, OffsetNorm

ACCEPTED = "sLSTMLayer, mLSTMLayer, sLSTMBlock, mLSTMBlock (or an xLSTMBlock), xLSTMBlockStack, xLSTMLMModel"
OURS = "sLSTMBranch, mLSTMBranch, sLSTMBlock, mLSTMBlock, xLSTM, SequenceModel('xlstm', ...)"


def _xlstm():
    try:
        import xlstm
    except ImportError as error:
        raise ImportError("converting to or from the official xLSTM needs its package: pip install xlstm "
                          "(or gatedrnn[xlstm])") from error  # fmt: skip
    return xlstm


def _refuse(where: str, option: str, value, why: str):
    raise ValueError(f"{where}: {option}={value!r} is not supported by gatedrnn ({why})")


def _placement(module: nn.Module) -> dict:
    """The device and dtype of every parameter, which must be one of each."""
    params = list(module.parameters())
    devices, dtypes = {p.device for p in params}, {p.dtype for p in params}
    if len(devices) > 1 or len(dtypes) > 1:
        raise ValueError(f"{type(module).__name__}: its parameters must share one device and one dtype to convert, "
                         f"got devices {sorted(map(str, devices))} and dtypes {sorted(map(str, dtypes))} "
                         "(sLSTMLayerConfig.enable_automatic_mixed_precision=False keeps the recurrent kernel in "
                         "dtype_r; cast the module first)")  # fmt: skip
    return {"device": params[0].device, "dtype": params[0].dtype}


@torch.no_grad()
def _copy(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if dst.shape != src.shape:
        raise ValueError(f"{name}: shape {tuple(src.shape)} does not fit {tuple(dst.shape)}")
    dst.copy_(src)


def _norm_in(theirs, ours: OffsetNorm, name: str) -> None:
    """The package's LayerNorm / MultiHeadLayerNorm (scale ``1 + weight``) into an OffsetNorm."""
    if theirs.weight is None:
        _refuse(name, "weight", None, "its norms all have a scale; for sLSTMLayerConfig.group_norm_weight=False "
                                      "there is no gatedrnn block")  # fmt: skip
    if not theirs.residual_weight:
        _refuse(name, "residual_weight", False, "gatedrnn's norms scale by 1 + weight")
    if (theirs.bias is None) != (ours.bias is None):
        _refuse(name, "bias", theirs.bias is not None, "the norm's bias is fixed by the block")
    ours.eps = theirs.eps
    _copy(ours.weight, theirs.weight, name + ".weight")
    if ours.bias is not None:
        _copy(ours.bias, theirs.bias, name + ".bias")


def _norm_out(ours: OffsetNorm, theirs, name: str) -> None:
    theirs.eps = ours.eps
    _copy(theirs.weight, ours.weight, name + ".weight")
    if ours.bias is not None:
        _copy(theirs.bias, ours.bias, name + ".bias")


# ---- sLSTM -------------------------------------------------------------------------------

_SLSTM_DEFAULTS = {  # sLSTMLayerConfig fields that change what the official kernels compute, and
    # the only value gatedrnn computes (the vanilla backend ignores the first three: its CUDA one does not)
    "gradient_recurrent_cut": False,
    "gradient_recurrent_clipval": None,
    "forward_clipval": None,
    "function": "slstm",
    "num_gates": 4,
    "num_states": 4,
    "input_shape": "BSGNH",
    "output_shape": "BNSH",
}


def _slstm_from(layer, xlstm=None) -> sLSTMBranch:
    config = layer.config
    where = "sLSTMLayerConfig"
    for option, expected in _SLSTM_DEFAULTS.items():
        if getattr(config, option) != expected:
            _refuse(where, option, getattr(config, option), f"it computes {option}={expected!r} only")
    if not config.group_norm_weight:
        _refuse(where, "group_norm_weight", False, "its sLSTM block's group norm always has a scale")
    ours = sLSTMBranch(config.embedding_dim, config.num_heads, config.conv1d_kernel_size, config.dropout,
                       block_index=config._block_idx or 0, num_blocks=config._num_blocks or 1,
                       **_placement(layer))  # fmt: skip
    K, d = ours.num_heads, ours.hidden_size // ours.num_heads
    if ours.conv is not None:
        _copy(ours.conv.weight, layer.conv1d.conv.weight, "conv1d.conv.weight")
        _copy(ours.conv.bias, layer.conv1d.conv.bias, "conv1d.conv.bias")
    # the package's fgate module computes i~, its igate module f~ (sLSTMLayer.forward)
    weight_ih = torch.stack([layer.fgate.weight, layer.igate.weight, layer.zgate.weight, layer.ogate.weight], 1)
    _copy(ours.weight_ih, weight_ih.reshape(K, 4 * d, d), "fgate/igate/zgate/ogate.weight")
    kernel = layer.slstm_cell.recurrent_kernel.clone()  # (heads, d_in, 4, d_out)
    _copy(ours.weight_hh, kernel.permute(0, 2, 3, 1).reshape(K, 4 * d, d), "slstm_cell.recurrent_kernel")
    bias = layer.slstm_cell.bias.clone()  # (heads, 4, d)
    _copy(ours.bias, bias.permute(1, 0, 2).reshape(-1), "slstm_cell.bias")
    _norm_in(layer.group_norm, ours.group_norm, "group_norm")
    return ours


def _check_kernel(where: str, kernel_size: int) -> None:
    if kernel_size == 1:
        _refuse(where, "conv_kernel_size", 1, "the official CausalConv1d drops every output step at kernel_size 1: "
                                              "it pads by K - 1 = 0 and then cuts the last 0 steps with [:-0]")  # fmt: skip


def _slstm_config(ours: sLSTMBranch, backend: str):
    xlstm = _xlstm()
    if ours.forget != "sigmoid":
        _refuse("sLSTMBranch", "forget", ours.forget, "the official sLSTM's forget gate is a sigmoid")
    _check_kernel("sLSTMBranch", ours.conv_kernel_size)
    return xlstm.sLSTMLayerConfig(embedding_dim=ours.hidden_size, num_heads=ours.num_heads,
                                  conv1d_kernel_size=ours.conv_kernel_size, dropout=ours.dropout, backend=backend,
                                  _block_idx=ours.block_index, _num_blocks=ours.num_blocks)  # fmt: skip


def _slstm_out(ours: sLSTMBranch, layer) -> None:
    K, d = ours.num_heads, ours.hidden_size // ours.num_heads
    if ours.conv is not None:
        _copy(layer.conv1d.conv.weight, ours.conv.weight, "conv.weight")
        _copy(layer.conv1d.conv.bias, ours.conv.bias, "conv.bias")
    w = ours.weight_ih.view(K, 4, d, d)
    for g, name in enumerate(("fgate", "igate", "zgate", "ogate")):  # i~ comes from their fgate (see above)
        _copy(getattr(layer, name).weight, w[:, g], "weight_ih")
    with torch.no_grad():
        layer.slstm_cell.recurrent_kernel[:] = ours.weight_hh.view(K, 4, d, d).permute(0, 3, 1, 2)
        layer.slstm_cell.bias[:] = ours.bias.view(4, K, d).transpose(0, 1)
    _norm_out(ours.group_norm, layer.group_norm, "group_norm")


# ---- mLSTM -------------------------------------------------------------------------------

_MLSTM_PAIRS = (("up", "proj_up"), ("q_proj", "q_proj"), ("k_proj", "k_proj"), ("v_proj", "v_proj"),
                ("conv", "conv1d.conv"), ("input_gate", "mlstm_cell.igate"), ("forget_gate", "mlstm_cell.fgate"),
                ("down", "proj_down"))  # fmt: skip


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _mlstm_from(layer, xlstm=None) -> mLSTMBranch:
    config = layer.config
    ours = mLSTMBranch(config.embedding_dim, config.num_heads, config.proj_factor, config._inner_embedding_dim,
                       config.qkv_proj_blocksize, config.conv1d_kernel_size, config.bias, config.dropout,
                       num_blocks=config._num_blocks or 1, **_placement(layer))  # fmt: skip
    for mine, theirs in _MLSTM_PAIRS:
        for kind in ("weight", "bias"):
            a, b = getattr(_get(ours, mine), kind), getattr(_get(layer, theirs), kind)
            if (a is None) != (b is None):
                _refuse("mLSTMLayer", f"{theirs}.{kind}", b is not None, "the biases follow mLSTMLayerConfig.bias")
            if a is not None:
                _copy(a, b, f"{theirs}.{kind}")
    _copy(ours.skip, layer.learnable_skip, "learnable_skip")
    _norm_in(layer.mlstm_cell.outnorm, ours.group_norm, "mlstm_cell.outnorm")
    return ours


def _up_projection(config_class, hidden: int, size: int, factor: float, **fields):
    """A config of ``config_class`` whose rounded up-projection is ``size`` wide: the factor as
    stored with the package's rounding (to a multiple of 64) when that gives ``size``, else the
    factor ``size / hidden`` with no rounding."""
    attempts = [(factor, 64, True), (size / hidden, 1, True), (size / hidden, 1, False), (size / hidden, size, True),
                (size / hidden, size, False)]  # fmt: skip
    for proj_factor, multiple, up in attempts:
        config = config_class(proj_factor=proj_factor, round_proj_up_to_multiple_of=multiple, round_proj_up_dim_up=up,
                              embedding_dim=hidden, **fields)  # fmt: skip
        if config._proj_up_dim == size:
            return config
    raise ValueError(f"no {config_class.__name__} gives an up-projection of width {size} from {hidden}")


def _mlstm_config(ours: mLSTMBranch, context_length: int):
    xlstm = _xlstm()
    _check_kernel("mLSTMBranch", ours.conv_kernel_size)
    return _up_projection(xlstm.mLSTMLayerConfig, ours.hidden_size, ours.inner_size, ours.proj_factor,
                          conv1d_kernel_size=ours.conv_kernel_size, qkv_proj_blocksize=ours.qkv_proj_blocksize,
                          num_heads=ours.num_heads, bias=ours.bias, dropout=ours.dropout,
                          context_length=context_length, _num_blocks=ours.num_blocks)  # fmt: skip


def _mlstm_out(ours: mLSTMBranch, layer) -> None:
    for mine, theirs in _MLSTM_PAIRS:
        for kind in ("weight", "bias"):
            a = getattr(_get(ours, mine), kind)
            if a is not None:
                _copy(getattr(_get(layer, theirs), kind), a, f"{mine}.{kind}")
    _copy(layer.learnable_skip, ours.skip, "skip")
    _norm_out(ours.group_norm, layer.mlstm_cell.outnorm, "group_norm")


# ---- feed-forward, blocks, stack ---------------------------------------------------------


def _ffn_from(ffn) -> GatedFeedForward:
    config = ffn.config
    if config.ff_type != "ffn_gated":
        _refuse("FeedForwardConfig", "ff_type", config.ff_type, "its feed-forward is the gated one")
    if config.act_fn not in ("gelu", "relu", "relu^2", "sigmoid", "swish", "selu"):
        _refuse("FeedForwardConfig", "act_fn", config.act_fn, "unknown activation")
    ours = GatedFeedForward(config.embedding_dim, config.proj_factor, config._proj_up_dim, config.act_fn,
                            config.bias, config.dropout, config._num_blocks or 1, **_placement(ffn))  # fmt: skip
    for name in ("up", "down"):
        for kind in ("weight", "bias"):
            a, b = getattr(getattr(ours, name), kind), getattr(getattr(ffn, f"proj_{name}"), kind)
            if a is not None:
                _copy(a, b, f"proj_{name}.{kind}")
    return ours


def _ffn_config(ours: GatedFeedForward):
    xlstm = _xlstm()
    return _up_projection(xlstm.FeedForwardConfig, ours.hidden_size, ours.size, ours.proj_factor, act_fn=ours.act,
                          dropout=ours.dropout, bias=ours.up.bias is not None, _num_blocks=ours.num_blocks)  # fmt: skip


def _ffn_out(ours: GatedFeedForward, ffn) -> None:
    for name in ("up", "down"):
        for kind in ("weight", "bias"):
            a = getattr(getattr(ours, name), kind)
            if a is not None:
                _copy(getattr(getattr(ffn, f"proj_{name}"), kind), a, f"{name}.{kind}")


def _block_from(block, xlstm):
    layer, place = block.xlstm, _placement(block)
    if isinstance(layer, xlstm.sLSTMLayer):
        branch = _slstm_from(layer)
        ours = sLSTMBlock(branch.hidden_size, branch.num_heads, branch.conv_kernel_size, branch.dropout,
                          ffn_proj_factor=None if block.ffn is None else block.ffn.config.proj_factor,
                          block_index=branch.block_index, num_blocks=branch.num_blocks, **place)  # fmt: skip
        ours.slstm = branch
        if block.ffn is not None:
            ours.ffn = _ffn_from(block.ffn)
            _norm_in(block.ffn_norm, ours.ffn_norm, "ffn_norm")
    else:
        if block.ffn is not None:
            _refuse("xLSTMBlockConfig", "feedforward", "FeedForwardConfig(...)",
                    "an mLSTM block has no feed-forward in the paper or in gatedrnn")  # fmt: skip
        branch = _mlstm_from(layer)
        ours = mLSTMBlock(branch.hidden_size, branch.num_heads, inner_size=branch.inner_size,
                          qkv_proj_blocksize=branch.qkv_proj_blocksize, conv_kernel_size=branch.conv_kernel_size,
                          bias=branch.bias, num_blocks=branch.num_blocks, **place)  # fmt: skip
        ours.mlstm = branch
    _norm_in(block.xlstm_norm, ours.norm, "xlstm_norm")
    return ours


def _block_out(ours, backend: str, context_length: int, place: dict):
    xlstm = _xlstm()
    if isinstance(ours, sLSTMBlock):
        config = xlstm.sLSTMBlockConfig(slstm=_slstm_config(ours.slstm, backend),
                                        feedforward=None if ours.ffn is None else _ffn_config(ours.ffn),
                                        _num_blocks=ours.slstm.num_blocks,
                                        _block_idx=ours.slstm.block_index)  # fmt: skip
        if config.feedforward is not None:
            config.feedforward.embedding_dim = ours.hidden_size
        theirs = xlstm.sLSTMBlock(config).to(**place)  # before the copy: no rounding through float32
        _slstm_out(ours.slstm, theirs.xlstm)
        if ours.ffn is not None:
            _ffn_out(ours.ffn, theirs.ffn)
            _norm_out(ours.ffn_norm, theirs.ffn_norm, "ffn_norm")
    else:
        config = xlstm.mLSTMBlockConfig(mlstm=_mlstm_config(ours.mlstm, context_length),
                                        _num_blocks=ours.mlstm.num_blocks,
                                        _block_idx=ours.mlstm.block_index)  # fmt: skip
        theirs = xlstm.mLSTMBlock(config).to(**place)
        _mlstm_out(ours.mlstm, theirs.xlstm)
    _norm_out(ours.norm, theirs.xlstm_norm, "norm")
    return theirs


def _stack_from(stack, xlstm) -> xLSTM:
    config = stack.config
    blocks = [_block_from(block, xlstm) for block in stack.blocks]
    slstm_at = tuple(j for j, block in enumerate(blocks) if isinstance(block, sLSTMBlock))
    place = _placement(stack)
    first = blocks[0].mlstm if isinstance(blocks[0], mLSTMBlock) else blocks[0].slstm
    ours = xLSTM(config.embedding_dim, config.embedding_dim, len(blocks), first.num_heads, slstm_at=slstm_at,
                 batch_first=True, dropout=config.dropout, bias=config.bias, post_norm=config.add_post_blocks_norm, mlstm_options=_options(blocks, mLSTMBlock),
                 slstm_options=_options(blocks, sLSTMBlock), **place)  # fmt: skip
    ours.blocks = nn.ModuleList(blocks)
    if config.add_post_blocks_norm:
        _norm_in(stack.post_blocks_norm, ours.post_norm, "post_blocks_norm")
    return ours


def _options(blocks, kind) -> dict:
    """The keywords that rebuild the stack's blocks of one kind (the first one's)."""
    block = next((b for b in blocks if isinstance(b, kind)), None)
    if block is None:
        return {}
    if kind is mLSTMBlock:
        m = block.mlstm
        return {"num_heads": m.num_heads, "conv_kernel_size": m.conv_kernel_size, "proj_factor": m.proj_factor,
                "inner_size": m.inner_size, "qkv_proj_blocksize": m.qkv_proj_blocksize, "dropout": m.dropout}  # fmt: skip
    s, ffn = block.slstm, block.ffn
    options = {"num_heads": s.num_heads, "conv_kernel_size": s.conv_kernel_size, "dropout": s.dropout}
    if ffn is None:
        return options | {"ffn_proj_factor": None}
    return options | {"ffn_proj_factor": ffn.proj_factor, "ffn_size": ffn.size, "ffn_act": ffn.act,
                      "ffn_bias": ffn.up.bias is not None, "ffn_dropout": ffn.dropout}  # fmt: skip


def from_xlstm(module: nn.Module) -> nn.Module:
    """The gatedrnn module that computes what an official ``xlstm`` module computes, with its
    weights copied exactly, on its device, in its dtype and its training mode.

    ==========================  ============================================================
    official                    gatedrnn
    ==========================  ============================================================
    ``sLSTMLayer``              :class:`~gatedrnn.xlstm.branches.sLSTMBranch`
    ``mLSTMLayer``              :class:`~gatedrnn.xlstm.branches.mLSTMBranch`
    ``sLSTMBlock``              :class:`~gatedrnn.xlstm.blocks.sLSTMBlock`
    ``mLSTMBlock``              :class:`~gatedrnn.xlstm.blocks.mLSTMBlock`
    ``xLSTMBlock``              either block, by the layer it holds
    ``xLSTMBlockStack``         :class:`~gatedrnn.xlstm.blocks.xLSTM` with ``batch_first=True``
    ``xLSTMLMModel``            :class:`~gatedrnn.models.SequenceModel` with the ``"xlstm"``
                                cell (the trainer's model), its readout's bias zero
    ==========================  ============================================================

    Ours return ``(output, state)`` where the package returns the output alone; the branches
    and blocks take ``(B, T, H)`` as the package's do. The sLSTM may have been built for either
    of the package's backends (its weights are read through the backend-independent proxies).

    Args:
        module (nn.Module): one of the classes above.

    Returns:
        nn.Module: ours.

    Raises:
        TypeError: for any other module.
        ValueError: naming the config option, for what gatedrnn does not compute
            (``docs/xlstm_mapping.md`` lists them).

    Examples:
        >>> import torch
        >>> from xlstm import mLSTMBlock as Theirs, mLSTMBlockConfig, mLSTMLayerConfig
        >>> from gatedrnn.convert import from_xlstm
        >>> theirs = Theirs(mLSTMBlockConfig(mlstm=mLSTMLayerConfig(embedding_dim=32, context_length=16),
        ...                                  _num_blocks=1, _block_idx=0))
        >>> ours = from_xlstm(theirs)
        >>> x = torch.randn(2, 16, 32)
        >>> torch.allclose(ours(x)[0], theirs(x), atol=1e-5)
        True
    """
    xlstm = _xlstm()
    from xlstm.blocks.xlstm_block import xLSTMBlock

    convert = {xlstm.xLSTMLMModel: _lm_from, xlstm.xLSTMBlockStack: _stack_from, xLSTMBlock: _block_from,
               xlstm.sLSTMLayer: _slstm_from, xlstm.mLSTMLayer: _mlstm_from}  # fmt: skip
    kind = next((kind for kind in convert if isinstance(module, kind)), None)
    if kind is None:
        raise TypeError(f"from_xlstm takes one of the official xlstm package's {ACCEPTED}, got {type(module).__name__}")
    with torch.random.fork_rng(devices=[]):  # building ours initializes weights it then overwrites: the caller's
        ours = convert[kind](module, xlstm)  # random stream stays as it was
    return ours.train(module.training)


def to_xlstm(module: nn.Module, *, context_length: int = 256, backend: str = "vanilla") -> nn.Module:
    """The official ``xlstm`` module that computes what a gatedrnn xLSTM module computes, with
    its weights copied exactly, on its device, in its dtype and its training mode (the reverse
    of :func:`from_xlstm`).

    Args:
        module (nn.Module): an :class:`~gatedrnn.xlstm.branches.sLSTMBranch`,
            :class:`~gatedrnn.xlstm.branches.mLSTMBranch`, :class:`~gatedrnn.xlstm.blocks.sLSTMBlock`,
            :class:`~gatedrnn.xlstm.blocks.mLSTMBlock`, :class:`~gatedrnn.xlstm.blocks.xLSTM`, or a
            :class:`~gatedrnn.models.SequenceModel` of the ``"xlstm"`` cell (token inputs,
            readout ``"all"``, no dropout of its own, a zero readout bias).
        context_length (int): the package's ``context_length`` for mLSTM layers: the longest
            sequence its parallel form accepts (ours has no such limit). Keyword only.
            Default: ``256``.
        backend (str): the official sLSTM's backend, ``"vanilla"`` (PyTorch, any device) or
            ``"cuda"`` (its kernels; needs a GPU to build). Keyword only. Default: ``"vanilla"``.

    Returns:
        nn.Module: the package's ``sLSTMLayer``, ``mLSTMLayer``, ``sLSTMBlock``,
        ``mLSTMBlock``, ``xLSTMBlockStack`` or ``xLSTMLMModel``.

    Raises:
        TypeError: for any other module.
        ValueError: for what the package does not compute (``forget="exp"``; an
            ``xLSTM`` whose ``input_size`` differs from ``hidden_size``, or whose blocks of
            one kind differ, or whose mLSTM and sLSTM dropouts differ).
    """
    xlstm = _xlstm()
    if not isinstance(context_length, int) or isinstance(context_length, bool) or context_length < 1:
        raise ValueError(f"context_length must be a positive int, got {context_length!r}")
    if backend not in ("vanilla", "cuda"):
        raise ValueError(f"backend must be 'vanilla' or 'cuda', got {backend!r}")
    if not isinstance(module, (sLSTMBranch, mLSTMBranch, sLSTMBlock, mLSTMBlock, xLSTM, SequenceModel)):
        raise TypeError(f"to_xlstm takes one of gatedrnn's {OURS}, got {type(module).__name__}")
    place = _placement(module)
    with torch.random.fork_rng(devices=[]):  # the package initializes what the copy overwrites
        if isinstance(module, sLSTMBranch):
            theirs = xlstm.sLSTMLayer(_slstm_config(module, backend)).to(**place)  # before the copy, as below
            _slstm_out(module, theirs)
        elif isinstance(module, mLSTMBranch):
            theirs = xlstm.mLSTMLayer(_mlstm_config(module, context_length)).to(**place)
            _mlstm_out(module, theirs)
        elif isinstance(module, (sLSTMBlock, mLSTMBlock)):
            theirs = _block_out(module, backend, context_length, place)
        elif isinstance(module, SequenceModel):
            theirs = _lm_out(module, backend, context_length, xlstm, place)
        else:
            theirs = _stack_out(module, backend, context_length, xlstm, place)
    return theirs.train(module.training)


def _stack_config(ours: xLSTM, backend: str, context_length: int, xlstm, config_class=None, **extra):
    """The package's stack config (or ``config_class``, a subclass, with ``extra`` fields) of an xLSTM."""
    if ours.proj_in is not None:
        _refuse("xLSTM", "input_size", ours.input_size, f"the official stack reads embedding_dim={ours.hidden_size} "
                                                        "features; convert without proj_in")  # fmt: skip
    kinds = {"mlstm": [b for b in ours.blocks if isinstance(b, mLSTMBlock)],
             "slstm": [b for b in ours.blocks if isinstance(b, sLSTMBlock)]}  # fmt: skip
    configs = {}
    for kind, blocks in kinds.items():
        if not blocks:
            configs[kind] = None
            continue
        first = _options(blocks, type(blocks[0]))
        for b in blocks[1:]:
            if _options([b], type(b)) != first:
                _refuse("xLSTM", f"{kind} blocks", "unlike", "the official stack builds every block of a kind "
                                                              "from one config")  # fmt: skip
        if kind == "mlstm":
            configs[kind] = xlstm.mLSTMBlockConfig(mlstm=_mlstm_config(blocks[0].mlstm, context_length))
        else:
            ffn = blocks[0].ffn
            configs[kind] = xlstm.sLSTMBlockConfig(slstm=_slstm_config(blocks[0].slstm, backend),
                                                   feedforward=None if ffn is None else _ffn_config(ffn))  # fmt: skip
    dropouts = {b.mlstm.dropout if isinstance(b, mLSTMBlock) else b.slstm.dropout for b in ours.blocks}
    if len(dropouts) > 1:
        _refuse("xLSTM", "dropout", sorted(dropouts), "the official stack gives every block one dropout")
    biases = {b.mlstm.bias for b in kinds["mlstm"]}
    config_class = config_class or xlstm.xLSTMBlockStackConfig
    return config_class(mlstm_block=configs["mlstm"], slstm_block=configs["slstm"], context_length=context_length,
                        num_blocks=ours.num_layers, embedding_dim=ours.hidden_size,
                        add_post_blocks_norm=ours.post_norm is not None, bias=biases.pop() if biases else False,
                        dropout=dropouts.pop(), slstm_at=list(ours.slstm_at), **extra)  # fmt: skip


def _stack_copy(ours: xLSTM, theirs) -> None:
    for mine, block in zip(ours.blocks, theirs.blocks, strict=True):
        if isinstance(mine, sLSTMBlock):
            _slstm_out(mine.slstm, block.xlstm)
            if mine.ffn is not None:
                _ffn_out(mine.ffn, block.ffn)
                _norm_out(mine.ffn_norm, block.ffn_norm, "ffn_norm")
        else:
            _mlstm_out(mine.mlstm, block.xlstm)
        _norm_out(mine.norm, block.xlstm_norm, "norm")
    if ours.post_norm is not None:
        _norm_out(ours.post_norm, theirs.post_blocks_norm, "post_norm")


def _stack_out(ours: xLSTM, backend: str, context_length: int, xlstm, place: dict):
    theirs = xlstm.xLSTMBlockStack(_stack_config(ours, backend, context_length, xlstm)).to(**place)
    _stack_copy(ours, theirs)
    return theirs


# ---- the language model --------------------------------------------------------------------


def _lm_from(model, xlstm):
    """An xLSTMLMModel as the trainer's model, :class:`gatedrnn.models.SequenceModel` with the
    ``"xlstm"`` cell: the embedding, the stack, the readout (its bias zero: the package's head has none)."""
    config = model.config
    if config.add_embedding_dropout and config.dropout:
        _refuse("xLSTMLMModelConfig", "add_embedding_dropout", True, "SequenceModel's dropout on the embedding "
                                                                     "also acts on the stack's output")  # fmt: skip
    stack = _stack_from(model.xlstm_block_stack, xlstm)
    E, V = config.embedding_dim, config.vocab_size
    ours = SequenceModel("xlstm", E, E, output_size=V, num_layers=1, vocab_size=V, tie_weights=config.tie_weights,
                         cell_options={"num_heads": 1})  # fmt: skip
    ours = ours.to(**_placement(model))
    ours.rnn = stack
    _copy(ours.embed.weight, model.token_embedding.weight, "token_embedding.weight")
    if ours.head is not None:
        _copy(ours.head.weight, model.lm_head.weight, "lm_head.weight")
        nn.init.zeros_(ours.head.bias)
    return ours


def _lm_out(model, backend: str, context_length: int, xlstm, place: dict):
    where = "SequenceModel"
    if not isinstance(model.rnn, xLSTM):
        _refuse(where, "cell", model.cell, "only the 'xlstm' cell is an xLSTMLMModel")
    if model.embed is None or model.adaptive or model.readout != "all":
        _refuse(where, "vocab_size/readout/adaptive_softmax", (model.embed is not None, model.readout, model.adaptive),
                "an xLSTMLMModel reads tokens and predicts every step with a linear head")  # fmt: skip
    if model.drop.p:
        _refuse(where, "dropout", model.drop.p, "the package drops nothing on the embedding or the stack's output "
                                                "(the stack's own dropout is the blocks')")  # fmt: skip
    bias = model.head_bias if model.head is None else model.head.bias
    if bias is not None and torch.count_nonzero(bias):
        _refuse(where, "head bias", "nonzero", "the package's lm_head has no bias")
    V = model.embed.num_embeddings
    config = _stack_config(model.rnn, backend, context_length, xlstm, xlstm.xLSTMLMModelConfig, vocab_size=V,
                           tie_weights=model.head is None)  # fmt: skip
    theirs = xlstm.xLSTMLMModel(config).to(**place)
    _stack_copy(model.rnn, theirs.xlstm_block_stack)
    _copy(theirs.token_embedding.weight, model.embed.weight, "embed.weight")
    if model.head is not None:
        _copy(theirs.lm_head.weight, model.head.weight, "head.weight")
    return theirs
