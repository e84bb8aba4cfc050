"""The xLSTM blocks and stack (gatedrnn.xlstm.blocks) on their own: each block recomputed from
its equations in float64 (the cells' reference steps, dense matrices, explicit norms and
convolution), causality, lengths, pieces with the returned state, layouts, block placement,
gradients to every parameter, traces, and bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import gatedrnn
from gatedrnn.cells.mlstm import mlstm_step
from gatedrnn.cells.slstm import slstm_step
from gatedrnn.xlstm import mLSTMBlock, sLSTMBlock, xLSTM
from gatedrnn.xlstm.parts import FFN_ACTIVATIONS, up_size

F64 = {"atol": 1e-10, "rtol": 1e-10}


def _perturb(module, seed, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p) * scale)


# ---- the equations, written out ------------------------------------------------------------


def _layer_norm(x, weight, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * (1 + weight)


def _group_norm(x, weight, groups, eps=1e-5):
    per_group = x.reshape(*x.shape[:-1], groups, -1)
    mean = per_group.mean(-1, keepdim=True)
    var = ((per_group - mean) ** 2).mean(-1, keepdim=True)
    return ((per_group - mean) / torch.sqrt(var + eps)).reshape(x.shape) * (1 + weight)


def _causal_conv(x, weight, bias, buffer=None):
    """y_t = b + sum_j w_j x_{t-K+1+j}, the inputs before step 0 from buffer (zeros)."""
    B, T, C = x.shape
    K = weight.shape[-1]
    past = x.new_zeros(B, K - 1, C) if buffer is None else buffer
    padded = torch.cat([past, x], 1)
    y = torch.stack([bias + sum(weight[:, 0, j] * padded[:, t + j] for j in range(K)) for t in range(T)], 1)
    return y, padded[:, T:]


def _dense(headwise):
    """A (heads, out, in) head-wise weight as its dense block-diagonal matrix."""
    return torch.block_diag(*headwise)


def reference_slstm_block(block: sLSTMBlock, x):
    branch = block.slstm
    B, T, H = x.shape
    K, d = branch.num_heads, H // branch.num_heads
    x_n = _layer_norm(x, block.norm.weight)
    if branch.conv is not None:
        conv, buffer = _causal_conv(x_n, branch.conv.weight, branch.conv.bias)
        x_c = F.silu(conv)
    else:
        x_c, buffer = x_n, x.new_zeros(B, 0, H)
    w = branch.weight_ih.view(K, 4, d, d)
    W = [_dense(w[:, g]) for g in range(4)]  # (H, H) each: i, f, z, o
    xw = torch.cat([x_c @ W[0].T, x_c @ W[1].T, x_n @ W[2].T, x_n @ W[3].T], -1)  # (B, T, 4H)
    state = tuple(x.new_zeros(B, H) for _ in range(4))
    hs = []
    for t in range(T):
        state, _ = slstm_step(xw[:, t], state, branch.weight_hh, branch.bias)
        hs.append(state[0])
    y = x + _group_norm(torch.stack(hs, 1), branch.group_norm.weight, K)
    if block.ffn is not None:
        up = _layer_norm(y, block.ffn_norm.weight) @ block.ffn.up.weight.T
        gate, value = up.split(block.ffn.size, -1)
        y = y + (FFN_ACTIVATIONS[block.ffn.act](gate) * value) @ block.ffn.down.weight.T
    return y, (buffer, *state)


def reference_mlstm_block(block: mLSTMBlock, x):
    br = block.mlstm
    B, T, _ = x.shape
    inner, K = br.inner_size, br.num_heads
    d = inner // K
    x_n = _layer_norm(x, block.norm.weight)
    u, z = (x_n @ br.up.weight.T).split(inner, -1)
    conv, buffer = _causal_conv(u, br.conv.weight, br.conv.bias)
    u_c = F.silu(conv)
    q, k, v = u_c @ _dense(br.q_proj.weight).T, u_c @ _dense(br.k_proj.weight).T, u @ _dense(br.v_proj.weight).T
    qkv = torch.cat([q, k, v], -1)
    i_raw = qkv @ br.input_gate.weight.T + br.input_gate.bias  # (B, T, K)
    f_raw = qkv @ br.forget_gate.weight.T + br.forget_gate.bias
    state, hs = None, []
    for t in range(T):
        h, state, _ = mlstm_step(q[:, t].view(B, K, d), k[:, t].view(B, K, d), v[:, t].view(B, K, d), i_raw[:, t],
                                 f_raw[:, t], state)  # fmt: skip
        hs.append(h.reshape(B, inner))
    h = (_group_norm(torch.stack(hs, 1), br.group_norm.weight, K) + br.skip * u_c) * F.silu(z)
    return x + h @ br.down.weight.T, (buffer, *state)


@pytest.mark.parametrize("H, heads, kernel, ffn, act", [(12, 3, 4, 1.3, "gelu"), (8, 1, 0, None, "gelu"),
                                                        (16, 4, 2, 2.0, "relu^2"), (6, 2, 1, 1.0, "swish")])  # fmt: skip
def test_slstm_block_is_its_equations(H, heads, kernel, ffn, act):
    torch.manual_seed(0)
    block = sLSTMBlock(H, heads, kernel, ffn_proj_factor=ffn, ffn_act=act, backend="reference", dtype=torch.float64)
    _perturb(block, 1)
    x = torch.randn(3, 9, H, dtype=torch.float64)
    y, state = block(x)
    y_ref, state_ref = reference_slstm_block(block, x)
    torch.testing.assert_close(y, y_ref, **F64)
    for got, want in zip(state, state_ref, strict=True):
        torch.testing.assert_close(got, want, **F64)


@pytest.mark.parametrize("form", ["recurrent", "parallel", "chunkwise"])
@pytest.mark.parametrize("H, heads, factor, blocksize, kernel", [(8, 2, 2.0, 4, 4), (12, 4, 1.0, 2, 2)])
def test_mlstm_block_is_its_equations(H, heads, factor, blocksize, kernel, form):
    torch.manual_seed(0)
    block = mLSTMBlock(H, heads, proj_factor=factor, inner_size=round(factor * H), qkv_proj_blocksize=blocksize,
                       conv_kernel_size=kernel, bias=False, form=form, chunk_size=4, dtype=torch.float64)  # fmt: skip
    _perturb(block, 2)
    x = torch.randn(2, 11, H, dtype=torch.float64)
    y, state = block(x)
    y_ref, state_ref = reference_mlstm_block(block, x)
    torch.testing.assert_close(y, y_ref, **F64)
    for got, want in zip(state, state_ref, strict=True):
        torch.testing.assert_close(got, want, **F64)


def test_sizes_follow_the_official_rounding():
    assert up_size(128, 1.3) == 192 and up_size(32, 2.0) == 64 and up_size(64, 2.0) == 128
    assert mLSTMBlock(48).mlstm.inner_size == 128
    assert sLSTMBlock(128).ffn.size == 192
    assert sLSTMBlock(16, ffn_proj_factor=None).ffn is None


# ---- the stack -------------------------------------------------------------------------------


def _stack(**kw):
    torch.manual_seed(3)
    options = {"num_layers": 3, "num_heads": 2, "slstm_at": (1,), "batch_first": True, "conv_kernel_size": 3,
               "dtype": torch.float64, "slstm_options": {"backend": "reference"}}  # fmt: skip
    model = xLSTM(5, 8, **{**options, **kw})
    _perturb(model, 4, 0.2)
    return model


def test_slstm_at_picks_the_block_types():
    assert [type(b) for b in xLSTM(4, 8, 4, 2, slstm_at=(1, 3)).blocks] == [mLSTMBlock, sLSTMBlock] * 2
    assert all(isinstance(b, sLSTMBlock) for b in xLSTM(4, 8, 3, 2, slstm_at="all").blocks)
    assert all(isinstance(b, mLSTMBlock) for b in xLSTM(4, 8, 3, 2).blocks)
    assert xLSTM(8, 8, 2, 2).proj_in is None and xLSTM(4, 8, 2, 2).proj_in.weight.shape == (8, 4)
    for bad in ((3,), (0, 0), (-1,)):
        with pytest.raises(ValueError, match="slstm_at"):
            xLSTM(4, 8, 3, 2, slstm_at=bad)
    with pytest.raises(ValueError, match="slstm_at"):
        xLSTM(4, 8, 3, 2, slstm_at="some")
    with pytest.raises(ValueError, match="num_heads=3 must divide"):
        xLSTM(4, 8, 2, num_heads=3, slstm_at=(0,))


@pytest.mark.parametrize("t", [0, 4, 8])
def test_causal(t):
    """The output at step t has no gradient from any input after t, and changing those inputs
    leaves it as it was (while the outputs after t do change)."""
    model = _stack()
    x = torch.randn(2, 10, 5, dtype=torch.float64, requires_grad=True)
    y, _ = model(x)
    y[:, t].sum().backward()
    assert torch.count_nonzero(x.grad[:, t + 1 :]) == 0
    assert torch.count_nonzero(x.grad[:, : t + 1]) > 0
    x2 = x.detach().clone()
    x2[:, t + 1 :] += torch.randn_like(x2[:, t + 1 :])
    y2, _ = model(x2)
    torch.testing.assert_close(y2[:, : t + 1], y[:, : t + 1].detach(), **F64)
    assert not torch.allclose(y2[:, t + 1 :], y[:, t + 1 :].detach())


def test_pieces_with_the_state_equal_the_whole():
    """Feeding a sequence in pieces, each from the state the last returned (one step at a time
    included, as in generation), gives the whole sequence's outputs and final state."""
    model = _stack(slstm_at=(0, 2))
    x = torch.randn(3, 9, 5, dtype=torch.float64)
    y, state = model(x)
    for cuts in ((4,), (1, 2, 3, 4, 5, 6, 7, 8), (2, 7)):
        pieces, hx = [], None
        for a, b in zip((0, *cuts), (*cuts, 9)):
            out, hx = model(x[:, a:b], hx=hx)
            pieces.append(out)
        torch.testing.assert_close(torch.cat(pieces, 1), y, **F64)
        for block_state, block_state_whole in zip(hx, state, strict=True):
            for got, want in zip(block_state, block_state_whole, strict=True):
                torch.testing.assert_close(got, want, **F64)


def test_lengths():
    """Each padded sequence: its valid outputs as alone, zeros after, its state as alone."""
    model = _stack()
    lengths = torch.tensor([7, 3, 10])
    x = torch.randn(3, 10, 5, dtype=torch.float64)
    y, state, trace = model(x, lengths=lengths, return_trace=True)
    for b, L in enumerate(lengths.tolist()):
        alone, alone_state = model(x[b : b + 1, :L])
        torch.testing.assert_close(y[b : b + 1, :L], alone, **F64)
        assert torch.count_nonzero(y[b, L:]) == 0
        for name, value in trace.items():
            assert torch.count_nonzero(value[b, L:]) == 0, name
        for j in range(3):
            for got, want in zip(state[j], alone_state[j], strict=True):
                torch.testing.assert_close(got[b : b + 1], want, **F64)
    with pytest.raises(ValueError, match="lengths must lie in"):
        model(x, lengths=torch.tensor([0, 3, 10]))


def test_layouts_unbatched_and_time_major():
    batch_first = _stack()
    time_major = _stack(batch_first=False)
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    y, state = batch_first(x)
    y_tm, _ = time_major(x.transpose(0, 1))
    torch.testing.assert_close(y_tm.transpose(0, 1), y, **F64)
    y_one, state_one, trace_one = time_major(x[0], return_trace=True)  # (T, I) unbatched
    torch.testing.assert_close(y_one, y[0], **F64)
    for block_one, block_all in zip(state_one, state, strict=True):
        for got, want in zip(block_one, block_all, strict=True):
            torch.testing.assert_close(got, want[0], **F64)
    assert trace_one.block1_hidden.shape == (6, 8)
    y_next, _ = time_major(x[0], hx=state_one)  # the unbatched state goes back in
    assert y_next.shape == (6, 8)
    _, _, trace_tm = time_major(x.transpose(0, 1), return_trace=True)
    assert trace_tm.block1_forget.shape == (6, 2, 8) and trace_tm.block0_input.shape == (6, 2, 2)


def test_trace_holds_each_blocks_cell():
    model = _stack()
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    y, _, trace = model(x, return_trace=True)
    torch.testing.assert_close(model(x)[0], y, **F64)
    assert {n for n in trace if n.startswith("block1_")} == {
        f"block1_{n}" for n in ("input", "forget", "candidate", "output", "cell", "normalizer", "stabilizer", "hidden")}
    assert {n for n in trace if n.startswith("block0_")} == {
        f"block0_{n}" for n in ("input", "forget", "normalizer", "stabilizer", "memory")}
    # the sLSTM's hidden state is its output gate times the normalized cell (eq. 10)
    torch.testing.assert_close(trace.block1_hidden, trace.block1_output * trace.block1_cell / trace.block1_normalizer,
                               **F64)  # fmt: skip
    assert ((trace.block0_forget >= 0) & (trace.block0_forget <= 1)).all()


def test_gradients_reach_every_parameter():
    model = _stack(bias=True)  # input_size 5 -> hidden 8: proj_in too
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    y, state = model(x)
    (y.pow(2).sum() + sum(s.sum() for block in state for s in block[1:])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_dropout_acts_in_training_only():
    model = xLSTM(4, 8, 2, 2, slstm_at=(1,), dropout=0.5)
    x = torch.randn(2, 5, 4)
    model.eval()
    torch.testing.assert_close(model(x)[0], model(x)[0])
    model.train()
    assert not torch.allclose(model(x)[0], model(x)[0])
    assert model.blocks[0].mlstm.dropout == model.blocks[1].slstm.dropout == 0.5


def test_fused_backend_and_forms_agree():
    """The stack on the sLSTM's default backend and the mLSTM's automatic form computes what
    the reference loop and the recurrent form compute."""
    torch.manual_seed(8)
    fast = xLSTM(6, 8, 3, 2, slstm_at=(1,), batch_first=True, chunk_size=4)
    slow = xLSTM(6, 8, 3, 2, slstm_at=(1,), batch_first=True, form="recurrent",
                 slstm_options={"backend": "reference"})  # fmt: skip
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 13, 6)
    torch.testing.assert_close(fast(x)[0], slow(x)[0], atol=1e-5, rtol=1e-5)


def test_bad_arguments():
    model = _stack()
    with pytest.raises(gatedrnn.ShapeError, match="5 features"):
        model(torch.randn(2, 6, 4, dtype=torch.float64))
    with pytest.raises(gatedrnn.ShapeError, match="3-D"):
        model(torch.randn(6, dtype=torch.float64))
    with pytest.raises(gatedrnn.DTypeError):
        model(torch.randn(2, 6, 5))
    with pytest.raises(ValueError, match="unbatched"):
        model(torch.randn(6, 5, dtype=torch.float64), lengths=torch.tensor([3]))
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    _, state = model(x)
    with pytest.raises(TypeError, match="list of 3 block states"):
        model(x, hx=state[:2])
    with pytest.raises(gatedrnn.ShapeError, match=r"hx\[0\]\[0\] must have shape \(1, 2, 64\) \(conv buffer\)"):
        model(x[:1], hx=state)  # a batch of 2's state for a batch of 1
    with pytest.raises(TypeError, match=r"hx\[0\] must be a tuple of 4"):
        model(x, hx=[state[0][:2], state[1], state[2]])
    with pytest.raises(ValueError, match="conv_kernel_size"):
        sLSTMBlock(8, 2, conv_kernel_size=-1)
    with pytest.raises(ValueError, match="qkv_proj_blocksize=3 must divide"):
        mLSTMBlock(8, 2, qkv_proj_blocksize=3)
    with pytest.raises(ValueError, match="ffn_act"):
        sLSTMBlock(8, 2, ffn_act="tanh")
    with pytest.raises(TypeError, match="proj_factor"):
        mLSTMBlock(8, 2, proj_factor="2")
    with pytest.raises(ValueError, match="form must be one of"):
        xLSTM(8, 8, form="fast")
    with pytest.raises(ValueError, match="backend"):
        xLSTM(8, 8, backend="cuda")


def test_initial_scales():
    """The official package's initialization, in the parts that are not random: zero norm
    offsets and recurrent weights, the sLSTM forget bias from 5 down to -7 per head."""
    block = sLSTMBlock(16, 2, block_index=0, num_blocks=1)
    b = block.slstm.bias.view(4, 2, 8)
    torch.testing.assert_close(b[1, 0], b[1, 1])
    assert math.isclose(b[1, 0, 0].item(), 5.0) and math.isclose(b[1, 0, -1].item(), -7.0, abs_tol=1e-6)
    assert torch.count_nonzero(b[[0, 2, 3]]) == 0 and torch.count_nonzero(block.slstm.weight_hh) == 0
    assert torch.count_nonzero(block.norm.weight) == 0
    m = mLSTMBlock(16, 4).mlstm
    torch.testing.assert_close(m.forget_gate.bias, torch.linspace(3.0, 6.0, 4))
    assert torch.count_nonzero(m.input_gate.weight) == 0 and torch.equal(m.skip, torch.ones(m.inner_size))


def test_reset_parameters_restores_the_initialization():
    torch.manual_seed(0)
    model = xLSTM(6, 8, 2, 2, slstm_at=(1,))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    deterministic = [k for k in fresh if "norm" in k or k.endswith(("skip", "slstm.bias", "forget_gate.bias",
                                                                    "weight_hh", "input_gate.weight"))]  # fmt: skip
    assert len(deterministic) == 11
    _perturb(model, 5)
    assert not any(torch.equal(model.state_dict()[k], fresh[k]) for k in deterministic)
    model.reset_parameters()
    for key in deterministic:
        assert torch.equal(model.state_dict()[key], fresh[key]), key


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_lengths_gradients_are_finite_and_ignore_the_padding(form):
    torch.manual_seed(0)
    model = xLSTM(5, 8, 3, 2, slstm_at=(1,), batch_first=True, form=form, chunk_size=4)
    x = torch.randn(3, 10, 5, requires_grad=True)
    y, state = model(x, lengths=torch.tensor([10, 3, 1]))
    (y.sum() + sum(s.sum() for block in state for s in block)).backward()
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    assert torch.isfinite(x.grad).all()
    assert torch.count_nonzero(x.grad[1, 3:]) == 0 and torch.count_nonzero(x.grad[2, 1:]) == 0
    assert torch.count_nonzero(x.grad[1, :3]) > 0
