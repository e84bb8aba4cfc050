"""gatedrnn.convert.from_flax / to_flax: Flax's linen and nnx cells, RNN and Bidirectional, computed
by Flax on jax (CPU) and by the converted gatedrnn module on the same random inputs, both ways;
round trips bitwise; every refusal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import gatedrnn

jax = pytest.importorskip("jax", reason="jax is not installed: pip install -e '.[interop]'")
pytest.importorskip("flax", reason="flax is not installed: pip install -e '.[interop]'")
import flax.linen as fnn
import jax.numpy as jnp
from flax import nnx

from gatedrnn.convert import from_flax, to_flax

TOL = {"atol": 2e-5, "rtol": 1e-5}  # float32, jax's XLA and torch's kernels
FEW = settings(max_examples=3, deadline=None, phases=[Phase.explicit, Phase.generate])  # jax compiles per shape: slow
sizes = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**16))  # B, I, H, seed


def t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(np.asarray(a)))


def randomized(tree, seed: int):
    """Every leaf replaced by random values (biases nonzero: every term is tested)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [0.5 * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])


def close(ours, theirs):
    torch.testing.assert_close(ours.detach(), t(theirs), **TOL)


LINEN = {"LSTMCell": fnn.LSTMCell, "OptimizedLSTMCell": fnn.OptimizedLSTMCell, "GRUCell": fnn.GRUCell,
         "SimpleCell": fnn.SimpleCell}  # fmt: skip


def linen_cell(name, H, x, seed, **options):
    cell = LINEN[name](features=H, **options)
    carry = randomized(cell.initialize_carry(jax.random.key(0), x.shape), seed + 1)
    params = randomized(cell.init(jax.random.key(seed), carry, x)["params"], seed)
    return cell, params, carry


def step(ours, x, carry):
    """gatedrnn's step from Flax's carry; returns Flax's (carry, output) order as tensors."""
    if isinstance(carry, tuple):  # Flax (c, h), gatedrnn (h, c)
        h, c = ours(t(x), (t(carry[1]), t(carry[0])))
        return (c, h), h
    h = ours(t(x), t(carry))
    return h, h


@FEW
@given(sizes, st.sampled_from(sorted(LINEN)), st.booleans())
def test_linen_cells_compute_the_same_step_both_ways(size, name, relu):
    B, I, H, seed = size
    options = {"activation_fn": jax.nn.relu} if name == "SimpleCell" and relu else {}
    x = jax.random.normal(jax.random.key(seed + 2), (B, I))
    cell, params, carry = linen_cell(name, H, x, seed, **options)
    new_carry, y = cell.apply({"params": params}, carry, x)
    ours = from_flax(params, cell if options else name)
    expected = {"LSTMCell": gatedrnn.LSTMCell, "OptimizedLSTMCell": gatedrnn.LSTMCell, "GRUCell": gatedrnn.GRUCell,
                "SimpleCell": gatedrnn.RNNCell}[name]  # fmt: skip
    assert type(ours) is expected
    if options:
        assert ours.nonlinearity == "relu"
    got_carry, got_y = step(ours, x, carry)
    close(got_y, y)
    for a, b in zip(jax.tree_util.tree_leaves(got_carry), jax.tree_util.tree_leaves(new_carry)):
        close(a, b)
    # and back: a gatedrnn cell with both biases nonzero, computed by Flax
    torch.manual_seed(seed)
    mine = expected(I, H, **({"nonlinearity": "relu"} if options else {}))
    params_back, flax_cell = to_flax(mine)
    assert type(flax_cell).__name__ == ("LSTMCell" if "LSTM" in name else name)
    new_carry, y = flax_cell.apply({"params": params_back}, carry, x)
    got_carry, got_y = step(mine, x, carry)
    close(got_y, y)
    for a, b in zip(jax.tree_util.tree_leaves(got_carry), jax.tree_util.tree_leaves(new_carry)):
        close(a, b)


NNX = {"LSTMCell": nnx.LSTMCell, "OptimizedLSTMCell": nnx.OptimizedLSTMCell, "GRUCell": nnx.GRUCell,
       "SimpleCell": nnx.SimpleCell}  # fmt: skip


@FEW
@given(sizes, st.sampled_from(sorted(NNX)))
def test_nnx_cells_compute_the_same_step_both_ways(size, name):
    B, I, H, seed = size
    cell = NNX[name](I, H, rngs=nnx.Rngs(seed))
    state = nnx.state(cell, nnx.Param)
    nnx.update(cell, randomized(state, seed))
    x = jax.random.normal(jax.random.key(seed + 2), (B, I))
    carry = randomized(cell.initialize_carry((B, I), rngs=nnx.Rngs(0)), seed + 1)
    new_carry, y = cell(carry, x)
    ours = from_flax(cell)  # the module says what it is
    got_carry, got_y = step(ours, x, carry)
    close(got_y, y)
    for a, b in zip(jax.tree_util.tree_leaves(got_carry), jax.tree_util.tree_leaves(new_carry)):
        close(a, b)
    assert type(from_flax(nnx.state(cell, nnx.Param), name)) is type(ours)  # its state and a name: the same
    # back, as nnx: the GRU's b_hn must be zero (nnx has none)
    torch.manual_seed(seed)
    mine = type(ours)(I, H)
    if isinstance(mine, gatedrnn.GRUCell):
        with torch.no_grad():
            mine.bias_hh[2 * H :] = 0
    _, theirs = to_flax(mine, api="nnx")
    new_carry, y = theirs(carry, x)
    got_carry, got_y = step(mine, x, carry)
    close(got_y, y)


def test_flax_mgu_becomes_the_gru_that_computes_it_and_gatedrnns_mgu_is_refused():
    x = jax.random.normal(jax.random.key(3), (2, 3))
    cell = fnn.MGUCell(features=4)
    carry = randomized(cell.initialize_carry(jax.random.key(0), x.shape), 1)
    params = randomized(cell.init(jax.random.key(0), carry, x)["params"], 2)
    with pytest.raises(ValueError, match=r"MGUCell: Flax's MGU resets h after .* as_gru=True"):
        from_flax(params, "MGUCell")
    ours = from_flax(params, "MGUCell", as_gru=True)
    assert type(ours) is gatedrnn.GRUCell
    _, y = cell.apply({"params": params}, carry, x)
    close(ours(t(x), t(carry)), y)
    # Flax's MGU is not gatedrnn's: the same weights in gatedrnn's MGU give another function
    mgu = gatedrnn.MGUCell(3, 4)
    with torch.no_grad():
        mgu.weight_ih.copy_(torch.cat([t(params["if"]["kernel"]).T, t(params["in"]["kernel"]).T]))
        mgu.weight_hh.copy_(torch.cat([t(params["hf"]["kernel"]).T, t(params["hn"]["kernel"]).T]))
        mgu.bias_ih.copy_(torch.cat([t(params["if"]["bias"]), t(params["in"]["bias"])]))
        mgu.bias_hh.copy_(torch.cat([torch.zeros(4), t(params["hn"]["bias"])]))
    assert (mgu(t(x), t(carry)) - t(y)).abs().max() > 1e-3
    no_reset = fnn.MGUCell(features=4, reset_gate=False)
    params = no_reset.init(jax.random.key(0), carry, x)["params"]
    with pytest.raises(ValueError, match="reset_gate=False"):
        from_flax(params, "MGUCell", as_gru=True)
    with pytest.raises(ValueError, match="reset_gate=False"):
        from_flax(params, no_reset, as_gru=True)
    for module in (gatedrnn.MGUCell(3, 4), gatedrnn.MGU(3, 4)):
        with pytest.raises(TypeError, match="another function than gatedrnn's MGU"):
            to_flax(module)


@FEW
@given(sizes, st.sampled_from(["LSTMCell", "GRUCell", "SimpleCell"]), st.booleans(), st.booleans())
def test_rnn_and_bidirectional_become_one_layer_with_lengths(size, name, bidirectional, time_major):
    B, I, H, seed = size
    T = 5
    make = lambda: fnn.RNN(LINEN[name](features=H), time_major=time_major)
    # a Bidirectional's own time_major rules (it passes it to both RNNs)
    flax_layer = fnn.Bidirectional(make(), make(), time_major=time_major) if bidirectional else make()
    x = jax.random.normal(jax.random.key(seed + 2), (T, B, I) if time_major else (B, T, I))
    # Flax 0.12 cannot pick the last carry of time-major sequences with seq_lengths: lengths batch-major only
    lengths = np.full(B, T) if time_major else np.random.default_rng(seed).integers(1, T + 1, size=B)
    params = randomized(flax_layer.init(jax.random.key(seed), x)["params"], seed)
    seq_lengths = None if time_major else jnp.asarray(lengths)
    carry, y = flax_layer.apply({"params": params}, x, seq_lengths=seq_lengths, return_carry=True)
    ours = from_flax(params, flax_layer)
    assert type(ours) is {"LSTMCell": gatedrnn.LSTM, "GRUCell": gatedrnn.GRU, "SimpleCell": gatedrnn.RNN}[name]
    assert (ours.num_layers, ours.bidirectional, ours.batch_first) == (1, bidirectional, not time_major)
    out, state = ours(t(x), lengths=torch.from_numpy(lengths))
    valid = torch.arange(T)[:, None] < torch.from_numpy(lengths)[None, :]  # (T, B)
    valid = valid if time_major else valid.T
    torch.testing.assert_close(out[valid].detach(), t(y)[valid], **TOL)  # Flax leaves what is past a length
    flat = [t(a) for a in jax.tree_util.tree_leaves(carry)]
    if name == "LSTMCell":  # Flax: (c, h) per direction
        h, c = state
        for d in range(2 if bidirectional else 1):
            close(c[d], flat[2 * d]), close(h[d], flat[2 * d + 1])
    else:
        for d in range(2 if bidirectional else 1):
            close(state[d], flat[d])
    # and back: to_flax of the layer gives Flax's wrapper with the same params, bitwise
    params_back, wrapper = to_flax(ours)
    assert type(wrapper).__name__ == ("Bidirectional" if bidirectional else "RNN")
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool((np.array(a) == np.array(b)).all()),
                                                         params_back, params))  # fmt: skip


@pytest.mark.parametrize("kernel, use_bias, over_time", [((3, 3), True, True), ((1, 5), False, False)])
def test_conv_lstm_cell_and_its_rnn(kernel, use_bias, over_time):
    B, I, H, seed = 2, 3, 4, 7  # fixed sizes: each new shape is a compilation of Flax's convolutions
    cell = fnn.ConvLSTMCell(features=H, kernel_size=kernel, use_bias=use_bias)
    x = jax.random.normal(jax.random.key(seed + 2), (B, 5, 4, I))  # Flax: channels last
    carry = randomized(cell.initialize_carry(jax.random.key(0), x.shape), seed + 1)
    params = randomized(cell.init(jax.random.key(seed), carry, x)["params"], seed)
    (c, h), y = cell.apply({"params": params}, carry, x)
    ours = from_flax(params, cell)
    assert type(ours) is gatedrnn.ConvLSTMCell and ours.kernel_size == kernel
    chw = lambda a: t(a).movedim(-1, -3)
    got_h, got_c = ours(chw(x), (chw(carry[1]), chw(carry[0])))
    close(got_h.movedim(-3, -1), h), close(got_c.movedim(-3, -1), c)
    # back: Flax computes the gatedrnn cell
    torch.manual_seed(seed)
    mine = gatedrnn.ConvLSTMCell(I, H, kernel, bias=use_bias)
    params_back, flax_cell = to_flax(mine)
    (c, h), _ = flax_cell.apply({"params": params_back}, carry, x)
    got_h, got_c = mine(chw(x), (chw(carry[1]), chw(carry[0])))
    close(got_h.movedim(-3, -1), h), close(got_c.movedim(-3, -1), c)
    if not over_time:
        return
    # over time: RNN(ConvLSTMCell) -> gatedrnn.ConvLSTM
    rnn = fnn.RNN(fnn.ConvLSTMCell(features=H, kernel_size=kernel))
    frames = jax.random.normal(jax.random.key(seed + 4), (B, 3, 5, 4, I))
    params = randomized(rnn.init(jax.random.key(seed), frames)["params"], seed)
    (c, h), y = rnn.apply({"params": params}, frames, return_carry=True)
    layer = from_flax(params, rnn)
    assert type(layer) is gatedrnn.ConvLSTM and layer.batch_first
    out, (got_h, got_c) = layer(t(frames).movedim(-1, -3))
    close(out.movedim(-3, -1), y), close(got_h[0].movedim(-3, -1), h), close(got_c[0].movedim(-3, -1), c)


@FEW
@given(sizes, st.sampled_from(["LSTM", "GRU", "RNN"]), st.booleans())
def test_round_trips_are_bitwise(size, name, bidirectional):
    _, I, H, seed = size
    torch.manual_seed(seed)
    mine = getattr(gatedrnn, name)(I, H, batch_first=True, bidirectional=bidirectional)
    params, _ = to_flax(mine)
    back = from_flax(params, {"LSTM": "LSTMCell", "GRU": "GRUCell", "RNN": "SimpleCell"}[name])
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[name]
    for suffix in ("_l0", "_l0_reverse")[: 1 + bidirectional]:
        a, b = (dict(m.named_parameters()) for m in (mine, back))
        for w in ("weight_ih", "weight_hh"):
            assert torch.equal(a[w + suffix], b[w + suffix]), w + suffix  # every weight, bit for bit
        sums = [m[f"bias_ih{suffix}"] + m[f"bias_hh{suffix}"] for m in (a, b)]
        if name == "GRU":  # r and z: one Flax bias; n keeps its two (b_hn is multiplied by r)
            assert torch.equal(sums[0][: 2 * H], sums[1][: 2 * H])
            assert torch.equal(a[f"bias_hh{suffix}"][2 * H :], b[f"bias_hh{suffix}"][2 * H :])
            assert torch.equal(a[f"bias_ih{suffix}"][2 * H :], b[f"bias_ih{suffix}"][2 * H :])
        else:
            assert torch.equal(sums[0], sums[1]) and sums[0].shape == (G * H,)
    # Flax -> gatedrnn -> Flax: the same params, bit for bit; and once in Flax's form, the round trip is exact
    again, _ = to_flax(back)
    same = jax.tree_util.tree_map(lambda x, y: bool((np.array(x) == np.array(y)).all()), params, again)
    assert jax.tree_util.tree_all(same)
    twice = from_flax(again, {"LSTM": "lstm", "GRU": "gru", "RNN": "simple"}[name])
    for (k, v), (k2, v2) in zip(back.state_dict().items(), twice.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_gradients_through_jax_equal_torchs():
    B, T, I, H = 2, 4, 3, 5
    rnn = fnn.RNN(fnn.LSTMCell(features=H))
    x = jax.random.normal(jax.random.key(0), (B, T, I))
    params = randomized(rnn.init(jax.random.key(1), x)["params"], 2)
    weight = jax.random.normal(jax.random.key(3), (B, T, H))

    def loss(p, x):
        return jnp.sum(rnn.apply({"params": p}, x) * weight)

    d_params, d_x = jax.grad(loss, argnums=(0, 1))(params, x)
    ours = from_flax(params, "LSTMCell")
    xt = t(x).requires_grad_()
    (ours(xt)[0] * t(weight)).sum().backward()
    close(xt.grad, d_x)
    close(ours.weight_ih_l0.grad[H : 2 * H], d_params["cell"]["if"]["kernel"].T)  # the forget gate's
    close(ours.weight_hh_l0.grad[3 * H :], d_params["cell"]["ho"]["kernel"].T)
    close(ours.bias_hh_l0.grad[2 * H : 3 * H], d_params["cell"]["hg"]["bias"])
    close(ours.bias_ih_l0.grad, ours.bias_hh_l0.grad)  # a zero bias_ih, still trainable: the same gradient


def test_refusals_name_the_option():
    x = jnp.ones((2, 3))
    h = jnp.zeros((2, 4))
    lstm_params = fnn.LSTMCell(4).init(jax.random.key(0), (h, h), x)["params"]
    with pytest.raises(ValueError, match=r"LSTMCell\(activation_fn=gelu\)"):
        from_flax(lstm_params, fnn.LSTMCell(4, activation_fn=jax.nn.gelu))
    with pytest.raises(ValueError, match=r"gate_fn=hard_sigmoid"):
        from_flax(lstm_params, fnn.LSTMCell(4, gate_fn=jax.nn.hard_sigmoid))
    simple = fnn.SimpleCell(4, residual=True)
    with pytest.raises(ValueError, match=r"residual=True"):
        from_flax(simple.init(jax.random.key(0), h, x)["params"], simple)
    with pytest.raises(ValueError, match=r"computes with tanh or relu"):
        from_flax(simple.init(jax.random.key(0), h, x)["params"], fnn.SimpleCell(4, activation_fn=jax.nn.elu))
    with pytest.raises(ValueError, match=r"GRUCell has the dense layers"):
        from_flax(lstm_params, "GRUCell")
    with pytest.raises(ValueError, match="cell_type must name a Flax cell"):
        from_flax(lstm_params, "PeepholeCell")
    with pytest.raises(TypeError, match="cell_type is required"):
        from_flax(lstm_params)
    with pytest.raises(TypeError, match="params must be"):
        from_flax([1, 2], "LSTMCell")
    def conv_params(kernel, C_in=2, C=3):  # a ConvLSTMCell's parameters, made by hand (no compilation)
        return {"ih": {"kernel": jnp.ones((*kernel, C_in, 4 * C)), "bias": jnp.zeros(4 * C)},
                "hh": {"kernel": jnp.ones((*kernel, C, 4 * C)), "bias": jnp.zeros(4 * C)}}  # fmt: skip

    for cell, match in ((fnn.ConvLSTMCell(3, (2, 3)), "odd kernel sizes"),
                        (fnn.ConvLSTMCell(3, (3,)), "gatedrnn's ConvLSTM is 2-D"),
                        (fnn.ConvLSTMCell(3, (3, 3), strides=(2, 2)), "strides"),
                        (fnn.ConvLSTMCell(3, (3, 3), padding="VALID"), "padding='VALID'")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            from_flax(conv_params(cell.kernel_size), cell)
    seq = jnp.ones((2, 5, 3))
    reverse = fnn.RNN(fnn.GRUCell(4), reverse=True)
    with pytest.raises(ValueError, match=r"RNN\(reverse=True\)"):
        from_flax(reverse.init(jax.random.key(0), seq)["params"], reverse)
    summed = fnn.Bidirectional(fnn.RNN(fnn.GRUCell(4)), fnn.RNN(fnn.GRUCell(4)), merge_fn=lambda a, b: a + b)
    with pytest.raises(ValueError, match=r"Bidirectional\(merge_fn=<lambda>\)"):
        from_flax(summed.init(jax.random.key(0), seq)["params"], summed)
    for module, match in ((gatedrnn.LSTM(3, 4, num_layers=2), r"num_layers=2"),
                          (gatedrnn.LSTM(3, 4, proj_size=2), r"proj_size=2"),
                          (gatedrnn.LSTMCell(3, 4, peephole=True), r"peephole=True"),
                          (gatedrnn.LSTM(3, 4, coupled=True), r"coupled=True"),
                          (gatedrnn.GRU(3, 4, layer_norm=True), r"layer_norm=True"),
                          (gatedrnn.GRU(3, 4, reset_after=False), r"reset_after=False"),
                          (gatedrnn.LSTM(3, 4, zoneout=0.1), r"zoneout=0.1")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            to_flax(module)
    for module, match in ((gatedrnn.ConvGRUCell(3, 4, 3), r"no convolutional GRU"),
                          (gatedrnn.MinGRU(3, 4), r"gatedrnn converts LSTM, GRU, RNN and ConvLSTM")):  # fmt: skip
        with pytest.raises(TypeError, match=match):
            to_flax(module)
    with pytest.raises(ValueError, match=r"nnx's GRUCell has no b_hn"):
        to_flax(gatedrnn.GRUCell(3, 4), api="nnx")
    with pytest.raises(ValueError, match=r"nnx has no ConvLSTM"):
        to_flax(gatedrnn.ConvLSTMCell(3, 4, 3), api="nnx")
    with pytest.raises(ValueError, match=r"api must be"):
        to_flax(gatedrnn.LSTMCell(3, 4), api="haiku")


def test_torch_nn_modules_convert_through_gatedrnn():
    theirs = torch.nn.GRU(3, 4, batch_first=True, bidirectional=True)
    params, wrapper = to_flax(theirs)
    x = torch.randn(2, 5, 3)
    y = wrapper.apply({"params": params}, jnp.asarray(x.numpy()))
    close(theirs(x)[0], y)


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell"])
def test_nnx_rnn_and_bidirectional_both_ways(name):
    x = jax.random.normal(jax.random.key(0), (2, 5, 3))
    make = lambda seed: nnx.RNN(NNX[name](3, 4, rngs=nnx.Rngs(seed)))
    theirs = nnx.Bidirectional(make(0), make(1))
    nnx.update(theirs, randomized(nnx.state(theirs, nnx.Param), 5))
    ours = from_flax(theirs)
    assert type(ours) is {"LSTMCell": gatedrnn.LSTM, "GRUCell": gatedrnn.GRU}[name] and ours.bidirectional
    close(ours(t(x))[0], theirs(x))
    torch.manual_seed(0)
    mine = type(ours)(3, 4, batch_first=True)
    if name == "GRUCell":
        with torch.no_grad():
            mine.bias_hh_l0[8:] = 0  # nnx's GRU has no b_hn
    _, rnn = to_flax(mine, api="nnx")
    assert type(rnn) is nnx.RNN
    close(mine(t(x))[0], rnn(x))
