"""gatedrnn.convert.from_xlstm / to_xlstm against the official xlstm package: its sLSTM on the
"vanilla" backend and its mLSTM's parallel form, on the CPU. Random configurations; outputs
and the gradients of the input and of every parameter; round trips bit for bit; refusals."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch
from torch import nn

xlstm = pytest.importorskip("xlstm", reason="the official xlstm package is not installed (pip install gatedrnn[xlstm])")

from gatedrnn.convert import from_xlstm, to_xlstm
from gatedrnn.xlstm import mLSTMBlock, sLSTMBlock, xLSTM
from gatedrnn.xlstm.branches import mLSTMBranch, sLSTMBranch

TOL = {torch.float32: {"atol": 2e-5, "rtol": 1e-4}, torch.float64: {"atol": 1e-10, "rtol": 1e-9}}
GRAD_TOL = {torch.float32: {"atol": 1e-4, "rtol": 1e-3}, torch.float64: {"atol": 1e-9, "rtol": 1e-8}}


def _perturb(module: nn.Module, seed: int, scale: float = 0.3) -> None:
    """Every parameter moved off its initialization (zero recurrent kernels, zero gate weights
    and norm offsets would hide a misplaced row)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p) * scale)


def _mlstm_layer_config(rng: random.Random, E: int):
    multiple = rng.choice([8, 16, 64])
    factor = rng.choice([1.0, 1.5, 2.0])
    inner = math.ceil(factor * E / multiple) * multiple
    blocksize = rng.choice([b for b in (2, 4, 8) if inner % b == 0])
    heads = rng.choice([h for h in (1, 2, 4) if inner % h == 0])
    return xlstm.mLSTMLayerConfig(conv1d_kernel_size=rng.choice([2, 3, 4]), qkv_proj_blocksize=blocksize,
                                  num_heads=heads, proj_factor=factor, round_proj_up_to_multiple_of=multiple)  # fmt: skip


def _slstm_layer_config(rng: random.Random, E: int):
    return xlstm.sLSTMLayerConfig(backend="vanilla", num_heads=rng.choice([h for h in (1, 2, 4) if E % h == 0]),
                                  conv1d_kernel_size=rng.choice([0, 2, 4]))  # fmt: skip


def _ffn_config(rng: random.Random):
    if rng.random() < 0.2:
        return None
    return xlstm.FeedForwardConfig(proj_factor=rng.choice([1.3, 2.0]), act_fn=rng.choice(["gelu", "swish", "relu^2"]),
                                   bias=rng.random() < 0.5, round_proj_up_to_multiple_of=rng.choice([8, 64]))  # fmt: skip


def random_stack(seed: int):
    """An official xLSTMBlockStack drawn from ``seed``, its parameters perturbed, and (B, T)."""
    rng = random.Random(seed)
    E = rng.choice([8, 16, 24])
    num_blocks = rng.choice([1, 2, 3])
    slstm_at = sorted(rng.sample(range(num_blocks), rng.randint(0, num_blocks)))
    T, B = rng.choice([1, 4, 9]), rng.choice([1, 3])
    all_slstm = len(slstm_at) == num_blocks
    config = xlstm.xLSTMBlockStackConfig(
        mlstm_block=None if all_slstm else xlstm.mLSTMBlockConfig(mlstm=_mlstm_layer_config(rng, E)),
        slstm_block=xlstm.sLSTMBlockConfig(slstm=_slstm_layer_config(rng, E), feedforward=_ffn_config(rng)),
        context_length=T + rng.choice([0, 3]), num_blocks=num_blocks, embedding_dim=E, slstm_at=slstm_at,
        add_post_blocks_norm=rng.random() < 0.7, bias=rng.random() < 0.5,
    )  # fmt: skip
    torch.manual_seed(seed)
    stack = xlstm.xLSTMBlockStack(config)
    _perturb(stack, seed)
    return stack, B, T


def _official_grads_of(ours: nn.Module, like_theirs: nn.Module, context_length: int) -> dict:
    """Our parameter gradients laid out as the official module's parameters: a copy of ours
    holding the gradients as its weights, converted by to_xlstm (a rearrangement, no arithmetic)."""
    holder = copy.deepcopy(ours)
    with torch.no_grad():
        for mine, grad_holder in zip(ours.parameters(), holder.parameters()):
            assert mine.grad is not None
            grad_holder.copy_(mine.grad)
    converted = to_xlstm(holder, context_length=context_length)
    return dict(converted.named_parameters())


def check_same_function(theirs: nn.Module, ours: nn.Module, B: int, T: int, E: int, context_length: int, seed: int,
                        dtype=torch.float32):  # fmt: skip
    """Outputs and the gradients of the input and of every parameter agree."""
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(B, T, E, generator=g, dtype=torch.float64).to(dtype)
    grad_out = torch.randn(B, T, E, generator=g, dtype=torch.float64).to(dtype)
    x_theirs, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_theirs = theirs(x_theirs)
    y_ours, _ = ours(x_ours)
    torch.testing.assert_close(y_ours, y_theirs, **TOL[dtype], msg=lambda m: f"output: {m}")
    (y_theirs * grad_out).sum().backward()
    (y_ours * grad_out).sum().backward()
    scale = x_theirs.grad.abs().max().clamp(min=1.0)  # relative to the largest: float32 loses digits in sums
    torch.testing.assert_close(x_ours.grad / scale, x_theirs.grad / scale, **GRAD_TOL[dtype],
                               msg=lambda m: f"input grad: {m}")  # fmt: skip
    ours_as_theirs = _official_grads_of(ours, theirs, context_length)
    names = dict(theirs.named_parameters())
    assert set(ours_as_theirs) == set(names)
    for name, param in names.items():
        assert param.grad is not None, name
        scale = param.grad.abs().max().clamp(min=1.0)  # as for the input's
        torch.testing.assert_close(ours_as_theirs[name] / scale, param.grad / scale, **GRAD_TOL[dtype],
                                   msg=lambda m, name=name: f"grad of {name}: {m}")  # fmt: skip


def check_round_trips(theirs: nn.Module, ours: nn.Module, context_length: int) -> None:
    back = to_xlstm(ours, context_length=context_length)
    assert type(back) is type(theirs)
    a, b = theirs.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # theirs -> ours -> theirs: bit for bit
    again = from_xlstm(back)
    c, d = ours.state_dict(), again.state_dict()
    assert c.keys() == d.keys()
    for key in c:
        assert torch.equal(c[key], d[key]), key  # ours -> theirs -> ours: bit for bit


@pytest.mark.parametrize("seed", range(8))
def test_stack_matches_official(seed):
    theirs, B, T = random_stack(seed)
    ours = from_xlstm(theirs)
    assert isinstance(ours, xLSTM) and ours.batch_first
    assert list(ours.slstm_at) == theirs.config.slstm_at
    context = theirs.config.context_length
    check_same_function(theirs, ours, B, T, theirs.config.embedding_dim, context, seed)
    check_round_trips(theirs, ours, context)


def _layer_and_block_cases():
    E, T = 16, 7
    s_config = {"embedding_dim": E, "num_heads": 2, "conv1d_kernel_size": 3, "backend": "vanilla", "_block_idx": 1,
                "_num_blocks": 3}  # fmt: skip
    m_config = {"embedding_dim": E, "num_heads": 2, "conv1d_kernel_size": 2, "qkv_proj_blocksize": 4,
                "context_length": T, "bias": True, "proj_factor": 1.5, "round_proj_up_to_multiple_of": 8}  # fmt: skip
    return {
        "sLSTMLayer": lambda: xlstm.sLSTMLayer(xlstm.sLSTMLayerConfig(**s_config)),
        "mLSTMLayer": lambda: xlstm.mLSTMLayer(xlstm.mLSTMLayerConfig(**m_config)),
        "sLSTMBlock": lambda: xlstm.sLSTMBlock(xlstm.sLSTMBlockConfig(
            slstm=xlstm.sLSTMLayerConfig(**{**s_config, "embedding_dim": E}),
            feedforward=xlstm.FeedForwardConfig(proj_factor=1.3, act_fn="selu", embedding_dim=E),
            _num_blocks=3, _block_idx=1)),
        "sLSTMBlock-no-ffn": lambda: xlstm.sLSTMBlock(xlstm.sLSTMBlockConfig(
            slstm=xlstm.sLSTMLayerConfig(**s_config), feedforward=None, _num_blocks=3, _block_idx=1)),
        "mLSTMBlock": lambda: xlstm.mLSTMBlock(xlstm.mLSTMBlockConfig(
            mlstm=xlstm.mLSTMLayerConfig(**m_config), _num_blocks=2, _block_idx=0)),
    }, E, T  # fmt: skip


@pytest.mark.parametrize("kind", ["sLSTMLayer", "mLSTMLayer", "sLSTMBlock", "sLSTMBlock-no-ffn", "mLSTMBlock"])
def test_layers_and_blocks_match_official(kind):
    cases, E, T = _layer_and_block_cases()
    torch.manual_seed(0)
    theirs = cases[kind]()
    _perturb(theirs, 3)
    ours = from_xlstm(theirs)
    expected = {"sLSTMLayer": sLSTMBranch, "mLSTMLayer": mLSTMBranch, "mLSTMBlock": mLSTMBlock}.get(kind, sLSTMBlock)
    assert type(ours) is expected
    check_same_function(theirs, ours, 2, T, E, T, seed=4)
    check_round_trips(theirs, ours, T)


def test_float64_agrees_tightly_and_placement_is_kept():
    theirs, B, T = random_stack(11)
    theirs = theirs.double().eval()
    ours = from_xlstm(theirs)
    assert all(p.dtype == torch.float64 for p in ours.parameters()) and not ours.training
    assert not any(m.training for m in ours.modules())
    check_same_function(theirs, ours, B, T, theirs.config.embedding_dim, theirs.config.context_length, 11,
                        dtype=torch.float64)  # fmt: skip
    check_round_trips(theirs, ours, theirs.config.context_length)  # float64 through and through
    back = to_xlstm(ours.train(), context_length=theirs.config.context_length)
    assert back.training and all(p.dtype == torch.float64 for p in back.parameters())


def test_converting_leaves_the_random_stream_alone():
    theirs, _, _ = random_stack(3)
    state = torch.random.get_rng_state()
    to_xlstm(from_xlstm(theirs), context_length=theirs.config.context_length)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_ours_to_official_from_scratch():
    """A stack built in gatedrnn, exported: the official module computes the same function,
    and comes back bit for bit."""
    torch.manual_seed(5)
    ours = xLSTM(16, 16, num_layers=3, num_heads=2, slstm_at=(1,), batch_first=True, conv_kernel_size=3, bias=True,
                 mlstm_options={"proj_factor": 1.5}, slstm_options={"ffn_act": "swish", "num_heads": 4})  # fmt: skip
    _perturb(ours, 6)
    theirs = to_xlstm(ours, context_length=10)
    assert isinstance(theirs, xlstm.xLSTMBlockStack)
    assert theirs.config.slstm_at == [1] and theirs.config.slstm_block.slstm.num_heads == 4
    assert theirs.blocks[0].xlstm.config._inner_embedding_dim == ours.blocks[0].mlstm.inner_size == 64
    check_same_function(theirs, ours, 2, 10, 16, 10, seed=7)
    again = from_xlstm(theirs)
    for key, value in ours.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_initialization_follows_the_official_one():
    """The deterministic parts of the package's initialization: the sLSTM's power-law forget
    bias by depth, the mLSTM's forget biases from 3 to 6, the unit skip."""
    for block_idx, num_blocks in ((0, 1), (2, 4)):
        theirs = xlstm.sLSTMLayer(xlstm.sLSTMLayerConfig(embedding_dim=16, num_heads=2, backend="vanilla",
                                                         _block_idx=block_idx, _num_blocks=num_blocks))  # fmt: skip
        ours = sLSTMBranch(16, 2, block_index=block_idx, num_blocks=num_blocks)
        expected = theirs.slstm_cell.bias.clone().permute(1, 0, 2).reshape(-1)
        torch.testing.assert_close(ours.bias, expected, atol=1e-6, rtol=0)
        assert torch.count_nonzero(ours.weight_hh) == 0
    theirs = xlstm.mLSTMLayer(xlstm.mLSTMLayerConfig(embedding_dim=16, num_heads=4, context_length=4))
    ours = mLSTMBranch(16, 4)
    torch.testing.assert_close(ours.forget_gate.bias, theirs.mlstm_cell.fgate.bias)
    assert torch.equal(ours.skip, theirs.learnable_skip)
    assert ours.inner_size == theirs.config._inner_embedding_dim


# ---- refusals ------------------------------------------------------------------------------


def test_refuses_other_modules():
    with pytest.raises(TypeError, match="sLSTMLayer, mLSTMLayer.*got Linear"):
        from_xlstm(nn.Linear(3, 3))
    with pytest.raises(TypeError, match="sLSTMBranch.*got LSTM"):
        to_xlstm(torch.nn.LSTM(3, 3))


@pytest.mark.parametrize("tie_weights", [False, True])
def test_language_model(tie_weights):
    """An xLSTMLMModel becomes the trainer's SequenceModel with the xlstm cell: the same logits
    and gradients (its readout bias zero), and comes back bit for bit."""
    from gatedrnn.models import SequenceModel

    config = xlstm.xLSTMLMModelConfig(
        mlstm_block=xlstm.mLSTMBlockConfig(mlstm=xlstm.mLSTMLayerConfig(num_heads=2)),
        slstm_block=xlstm.sLSTMBlockConfig(slstm=xlstm.sLSTMLayerConfig(backend="vanilla", num_heads=2)),
        vocab_size=13, embedding_dim=16, num_blocks=2, slstm_at=[1], context_length=8, tie_weights=tie_weights,
    )  # fmt: skip
    torch.manual_seed(1)
    theirs = xlstm.xLSTMLMModel(config)
    _perturb(theirs, 2)
    ours = from_xlstm(theirs)
    assert isinstance(ours, SequenceModel) and ours.cell == "xlstm" and (ours.head is None) == tie_weights
    tokens = torch.randint(0, 13, (3, 8))
    logits_theirs, logits_ours = theirs(tokens), ours(tokens)
    torch.testing.assert_close(logits_ours, logits_theirs, **TOL[torch.float32])
    grad = torch.randn_like(logits_theirs)
    (logits_theirs * grad).sum().backward()
    (logits_ours * grad).sum().backward()
    scale = theirs.token_embedding.weight.grad.abs().max().clamp(min=1.0)
    torch.testing.assert_close(ours.embed.weight.grad / scale, theirs.token_embedding.weight.grad / scale,
                               **GRAD_TOL[torch.float32])  # fmt: skip
    back = to_xlstm(ours, context_length=8)
    assert isinstance(back, xlstm.xLSTMLMModel) and back.config.tie_weights == tie_weights
    for key, value in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    with torch.no_grad():
        (ours.head_bias if tie_weights else ours.head.bias)[0] = 1.0
    with pytest.raises(ValueError, match="head bias"):
        to_xlstm(ours)


def test_language_model_refusals():
    from gatedrnn.models import SequenceModel

    with pytest.raises(ValueError, match="cell='lstm'"):
        to_xlstm(SequenceModel("lstm", 8, 8, output_size=5, vocab_size=5))
    with pytest.raises(ValueError, match="dropout=0.1"):
        to_xlstm(SequenceModel("xlstm", 8, 8, output_size=5, vocab_size=5, dropout=0.1, cell_options={"num_heads": 2}))
    model = xlstm.xLSTMLMModel(xlstm.xLSTMLMModelConfig(mlstm_block=xlstm.mLSTMBlockConfig(), vocab_size=5,
                                                        embedding_dim=8, num_blocks=1, context_length=4, dropout=0.1,
                                                        add_embedding_dropout=True))  # fmt: skip
    with pytest.raises(ValueError, match="add_embedding_dropout=True"):
        from_xlstm(model)


@pytest.mark.parametrize("option, value", [("gradient_recurrent_cut", True), ("gradient_recurrent_clipval", 1.0),
                                           ("forward_clipval", 2.0), ("group_norm_weight", False)])  # fmt: skip
def test_refuses_slstm_options_it_does_not_compute(option, value):
    layer = xlstm.sLSTMLayer(xlstm.sLSTMLayerConfig(embedding_dim=8, num_heads=2, backend="vanilla", **{option: value}))
    with pytest.raises(ValueError, match=f"{option}={value!r}"):
        from_xlstm(layer)


def test_refuses_an_mlstm_block_with_a_feedforward():
    from xlstm.blocks.xlstm_block import xLSTMBlock, xLSTMBlockConfig

    block = xLSTMBlock(xLSTMBlockConfig(mlstm=xlstm.mLSTMLayerConfig(embedding_dim=8, context_length=4),
                                        feedforward=xlstm.FeedForwardConfig(), _num_blocks=1, _block_idx=0))  # fmt: skip
    with pytest.raises(ValueError, match="feedforward"):
        from_xlstm(block)


def test_refuses_mixed_dtypes():
    layer = xlstm.mLSTMLayer(xlstm.mLSTMLayerConfig(embedding_dim=8, context_length=4))
    layer.learnable_skip.data = layer.learnable_skip.data.double()
    with pytest.raises(ValueError, match="one dtype"):
        from_xlstm(layer)


def test_to_xlstm_refuses_what_the_package_does_not_compute():
    with pytest.raises(ValueError, match="forget='exp'"):
        to_xlstm(sLSTMBlock(8, 2, forget="exp"))
    with pytest.raises(ValueError, match="input_size=5"):
        to_xlstm(xLSTM(5, 8, num_layers=1, num_heads=2))
    with pytest.raises(ValueError, match="conv_kernel_size=1"):
        to_xlstm(mLSTMBlock(8, 2, conv_kernel_size=1))
    with pytest.raises(ValueError, match="slstm blocks"):
        to_xlstm(_unlike_stack())
    with pytest.raises(ValueError, match="dropout"):
        to_xlstm(xLSTM(8, 8, num_layers=2, num_heads=2, slstm_at=(1,), slstm_options={"dropout": 0.1}))
    with pytest.raises(ValueError, match="context_length"):
        to_xlstm(mLSTMBlock(8, 2), context_length=0)


def _unlike_stack() -> xLSTM:
    stack = xLSTM(8, 8, num_layers=2, num_heads=2, slstm_at="all")
    stack.blocks[1] = sLSTMBlock(8, 4, block_index=1, num_blocks=2)  # four heads beside two
    return stack


def test_the_cuda_backends_layout_converts_alike():
    """The package keeps the sLSTM's recurrent kernel in a layout of its backend; the CUDA
    cell (built here without its kernels) holds the same weights in another layout, and
    converts to the same gatedrnn weights."""
    from xlstm.blocks.slstm.cell import sLSTMCell_cuda

    layer = xlstm.sLSTMLayer(xlstm.sLSTMLayerConfig(embedding_dim=8, num_heads=2, backend="vanilla"))
    _perturb(layer, 9)
    config = copy.deepcopy(layer.config)
    config.backend = "cuda"
    cell = sLSTMCell_cuda(config, skip_backend_init=True)
    with torch.no_grad():
        cell.recurrent_kernel[:] = layer.slstm_cell.recurrent_kernel.clone()
        cell.bias[:] = layer.slstm_cell.bias.clone()
    assert cell._recurrent_kernel_.shape != layer.slstm_cell._recurrent_kernel_.shape  # (heads, d, 4d) vs (heads, 4d, d)
    on_cuda_layout = copy.deepcopy(layer)
    on_cuda_layout.slstm_cell = cell
    expected = from_xlstm(layer).state_dict()
    for key, value in from_xlstm(on_cuda_layout).state_dict().items():
        assert torch.equal(value, expected[key]), key
