"""gatedrnn.convert.from_haste / to_haste against haste's documented equations, recomputed here in
float64 from haste's documentation (haste_pytorch builds only against CUDA: the test against
haste itself runs where it is installed); outputs, final states and every gradient; round trips
bitwise; settings and refusals."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.convert import from_haste, to_haste
from gatedrnn.convert.haste import haste_equations

CELLS = ("LSTM", "GRU", "LayerNormLSTM", "LayerNormGRU")
FEW = settings(max_examples=12, deadline=None)


def haste_state(name: str, I: int, H: int, generator, dtype=torch.float64) -> dict:
    """A random haste state dict, laid out as haste documents it (gates i,g,f,o or z,r,h)."""
    G = 4 if name.endswith("LSTM") else 3
    r = lambda *shape, scale=0.5: (scale * torch.randn(*shape, generator=generator, dtype=dtype))
    state = {"kernel": r(I, G * H), "recurrent_kernel": r(H, G * H), "bias": r(G * H)}
    if G == 3:
        state["recurrent_bias"] = r(G * H)
    if name.startswith("LayerNorm"):
        state["gamma"] = 1 + r(2, G * H, scale=0.3)
        if G == 4:
            state |= {"gamma_h": 1 + r(H, scale=0.3), "beta_h": r(H, scale=0.3)}
    return state


def ln(v, gain, bias=None):
    """Layer normalization over the last axis, epsilon 1e-5, as haste's kernels (biased variance)."""
    mu = v.mean(-1, keepdim=True)
    sigma = (v - mu).pow(2).mean(-1, keepdim=True).add(1e-5).sqrt()
    return (v - mu) / sigma * gain + (0 if bias is None else bias)


def haste_forward(name, s, x, h0=None, c0=None, zoneout=0.0, lengths=None):
    """haste's forward in eval mode from its docs: x (T, B, I) -> outputs (T, B, H), final h (and c).

    Blocks are sliced one gate at a time by haste's documented order (LSTM i, g, f, o; GRU z, r, h)."""
    T, B, _ = x.shape
    H = s["recurrent_kernel"].shape[0]
    block = lambda v, k: v[..., k * H : (k + 1) * H]
    lstm, norm = name.endswith("LSTM"), name.startswith("LayerNorm")
    h = torch.zeros(B, H, dtype=x.dtype) if h0 is None else h0
    c = torch.zeros(B, H, dtype=x.dtype) if c0 is None else c0
    hs, cs = [h], [c]
    for t in range(T):
        wx, rh = x[t] @ s["kernel"], h @ s["recurrent_kernel"]
        if norm:
            wx, rh = ln(wx, s["gamma"][0]), ln(rh, s["gamma"][1])
        if lstm:
            v = wx + rh + s["bias"]
            i, g, f, o = (block(v, k) for k in range(4))
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(ln(c, s["gamma_h"], s["beta_h"]) if norm else c)
        else:
            vx, vh = wx + s["bias"], rh + s["recurrent_bias"]
            z = torch.sigmoid(block(vx, 0) + block(vh, 0))
            r = torch.sigmoid(block(vx, 1) + block(vh, 1))
            g = torch.tanh(block(vx, 2) + r * block(vh, 2))
            h_new = z * h + (1 - z) * g
        h = zoneout * h + (1 - zoneout) * h_new  # haste's eval-mode zoneout (on h only)
        hs.append(h)
        cs.append(c)
    hs, cs = torch.stack(hs), torch.stack(cs)  # (T + 1, B, H)
    at = torch.full((B,), T) if lengths is None else lengths
    final_h, final_c = hs[at, torch.arange(B)], cs[at, torch.arange(B)]  # haste: the state after `lengths` steps
    return hs[1:], (final_h, final_c) if lstm else final_h


@FEW
@given(st.sampled_from(CELLS), st.integers(1, 4), st.integers(1, 5), st.integers(1, 6), st.sampled_from([0.0, 0.3]),
       st.booleans(), st.booleans(), st.integers(0, 2**16))  # fmt: skip
def test_outputs_states_and_gradients_equal_hastes_equations(name, B, I, H, zoneout, batch_first, with_lengths, seed):
    g = torch.Generator().manual_seed(seed)
    T = 5
    state = haste_state(name, I, H, g)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g) if with_lengths else None
    lstm = name.endswith("LSTM")
    h0 = torch.randn(B, H, generator=g, dtype=torch.float64)
    c0 = torch.randn(B, H, generator=g, dtype=torch.float64)
    ours = from_haste(state, name, zoneout=zoneout, batch_first=batch_first).eval()
    assert type(ours) is (gatedrnn.LSTM if lstm else gatedrnn.GRU) and ours.layer_norm == name.startswith("LayerNorm")
    assert ours.weight_ih_l0.dtype == torch.float64
    theirs_params = {k: v.clone().requires_grad_() for k, v in state.items()}
    xs, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, final = haste_forward(name, theirs_params, xs, h0, c0 if lstm else None, zoneout, lengths)
    got, got_final = ours(xt.transpose(0, 1) if batch_first else xt, (h0[None], c0[None]) if lstm else h0[None],
                          lengths=lengths)  # fmt: skip
    got = got.transpose(0, 1) if batch_first else got
    valid = (torch.arange(T)[:, None] < lengths[None, :]) if with_lengths else torch.ones(T, B, dtype=torch.bool)
    torch.testing.assert_close(got[valid], out[valid], atol=1e-10, rtol=1e-10)  # haste leaves the rest unmasked
    if with_lengths:
        assert bool((got[~valid] == 0).all())  # gatedrnn zeroes outputs past a sequence's end
    for a, b in zip(got_final if lstm else (got_final,), final if lstm else (final,)):
        torch.testing.assert_close(a[0], b, atol=1e-10, rtol=1e-10)
    # every gradient: one random weighting of the valid outputs and the final states
    w = torch.randn(T, B, H, generator=g, dtype=torch.float64) * valid[..., None]
    wf = torch.randn(B, H, generator=g, dtype=torch.float64)
    loss_theirs = (out * w).sum() + ((final[0] if lstm else final) * wf).sum()
    loss_ours = (got * w).sum() + ((got_final[0][0] if lstm else got_final[0]) * wf).sum()
    loss_theirs.backward()
    loss_ours.backward()
    torch.testing.assert_close(xt.grad, xs.grad, atol=1e-10, rtol=1e-10)
    back = to_haste(_grads_as_module(ours))
    for key, value in theirs_params.items():
        torch.testing.assert_close(back[key], value.grad, atol=1e-10, rtol=1e-10, msg=key)


def _grads_as_module(module):
    """A copy of ``module`` whose parameters hold its gradients, read through ``to_haste``'s layout
    (an LSTM's haste bias gradient is that of b_ih, which equals b_hh's: the sum is what
    to_haste writes, so the copy holds it in b_ih and zeros in b_hh)."""
    import copy

    twin = copy.deepcopy(module)
    with torch.no_grad():
        for (name, p), (_, q) in zip(twin.named_parameters(), module.named_parameters()):
            p.copy_(q.grad)
        if isinstance(module, gatedrnn.LSTM):
            twin.bias_hh_l0.zero_()
    return twin


@FEW
@given(st.sampled_from(CELLS), st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**16))
def test_round_trips_are_bitwise(name, I, H, seed):
    g = torch.Generator().manual_seed(seed)
    state = haste_state(name, I, H, g, dtype=torch.float32)
    back = to_haste(from_haste(state, name))
    assert back.keys() == state.keys()
    for key in state:
        assert torch.equal(back[key], state[key]), key
    torch.manual_seed(seed)
    cls = gatedrnn.LSTM if name.endswith("LSTM") else gatedrnn.GRU
    mine = cls(I, H, layer_norm=name.startswith("LayerNorm"))
    with torch.no_grad():
        for p in mine.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)  # layer-norm gains off their initial ones
    again = from_haste(to_haste(mine))  # the class read from the keys
    for (k, a), (k2, b) in zip(mine.named_parameters(), again.named_parameters()):
        assert k == k2
        if cls is gatedrnn.LSTM and k.startswith("bias_"):
            continue  # haste keeps one bias: their sum, below
        assert torch.equal(a, b), k
    if cls is gatedrnn.LSTM:
        assert torch.equal(mine.bias_ih_l0 + mine.bias_hh_l0, again.bias_ih_l0 + again.bias_hh_l0)


def test_the_librarys_yardstick_is_hastes_equations():
    g = torch.Generator().manual_seed(0)
    for name in CELLS:
        state = haste_state(name, 3, 4, g)
        x = torch.randn(6, 2, 3, generator=g, dtype=torch.float64)
        out, final = haste_forward(name, state, x, zoneout=0.2)
        got, got_final = haste_equations(state, name, x, zoneout=0.2)
        torch.testing.assert_close(got, out, atol=1e-12, rtol=1e-12)
        for a, b in zip(got_final if isinstance(got_final, tuple) else (got_final,), final if isinstance(final, tuple) else (final,)):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_settings_become_gatedrnn_keywords_and_back():
    g = torch.Generator().manual_seed(1)
    lstm = from_haste(haste_state("LSTM", 3, 4, g), "lstm", zoneout=0.1, dropout=0.2, batch_first=True, forget_bias=1.0)
    assert lstm.zoneout_given() == (0.0, 0.1)  # (p_c, p_h): haste zones out h only
    assert lstm.weight_dropout == 0.2 and lstm.batch_first and lstm.recurrent_dropout == 0.0
    _, haste_settings = to_haste(lstm, with_settings=True)
    assert haste_settings == {"class": "LSTM", "input_size": 3, "hidden_size": 4, "batch_first": True,
                              "zoneout": 0.1, "dropout": 0.2}  # fmt: skip
    gru = from_haste(haste_state("LayerNormGRU", 3, 4, g), "layer_norm_gru", zoneout=0.25)
    assert gru.zoneout_given() == 0.25 and gru.layer_norm
    assert to_haste(gru, with_settings=True)[1]["class"] == "LayerNormGRU"
    # torch.nn's layers go through gatedrnn's
    theirs = torch.nn.GRU(3, 4)
    x = torch.randn(5, 2, 3)
    out, _ = haste_forward("GRU", {k: v.double() for k, v in to_haste(theirs).items()}, x.double())
    torch.testing.assert_close(theirs(x)[0].double(), out, atol=1e-5, rtol=1e-5)


def test_a_models_state_dict_and_its_prefix():
    g = torch.Generator().manual_seed(2)
    inner = haste_state("GRU", 3, 4, g)
    model = {f"encoder.rnn.{k}": v for k, v in inner.items()} | {"decoder.weight": torch.randn(2, 4)}
    layer = from_haste(model, "GRU")  # the one haste layer found
    assert torch.equal(to_haste(layer)["kernel"], inner["kernel"])
    two = model | {f"decoder.rnn.{k}": v for k, v in inner.items()}
    with pytest.raises(ValueError, match=r"holds 2 haste layers .* pass prefix="):
        from_haste(two, "GRU")
    assert torch.equal(to_haste(from_haste(two, "GRU", prefix="decoder.rnn."))["bias"], inner["bias"])


def test_refusals_name_what_and_why():
    g = torch.Generator().manual_seed(3)
    lstm_state = haste_state("LSTM", 3, 4, g)
    with pytest.raises(ValueError, match=r"haste's GRU has .* got .* \(is it a LSTM\?\)"):
        from_haste(lstm_state, "GRU")
    with pytest.raises(ValueError, match="gatedrnn has no IndRNN"):
        from_haste(lstm_state, "IndRNN")
    with pytest.raises(ValueError, match="cell_type must be one of"):
        from_haste(lstm_state, "SRU")
    with pytest.raises(ValueError, match="return_state_sequence=True"):
        from_haste(lstm_state, "LSTM", return_state_sequence=True)
    with pytest.raises(ValueError, match=r"state_dict\['recurrent_kernel'\] has shape \(3, 16\), expected \(4, 16\)"):
        from_haste(lstm_state | {"recurrent_kernel": torch.zeros(3, 16)}, "LSTM")
    with pytest.raises(TypeError, match="state_dict must be"):
        from_haste([1, 2, 3], "LSTM")
    with pytest.raises(TypeError, match="unexpected keyword argument 'recurrent_dropout'"):
        from_haste(lstm_state, "LSTM", recurrent_dropout=0.1)
    for module, match in ((gatedrnn.LSTM(3, 4, num_layers=2), r"num_layers=2"),
                          (gatedrnn.GRU(3, 4, bidirectional=True), r"bidirectional=True"),
                          (gatedrnn.LSTM(3, 4, proj_size=2), r"proj_size=2"),
                          (gatedrnn.LSTM(3, 4, peephole=True), r"peephole=True"),
                          (gatedrnn.LSTM(3, 4, coupled=True), r"coupled=True"),
                          (gatedrnn.GRU(3, 4, reset_after=False), r"reset_after=False"),
                          (gatedrnn.LSTM(3, 4, recurrent_dropout=0.1), r"recurrent_dropout=0.1"),
                          (gatedrnn.LSTM(3, 4, zoneout=0.1), r"haste zones out h only")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            to_haste(module)
    for module in (gatedrnn.RNN(3, 4), gatedrnn.MGU(3, 4)):
        with pytest.raises(TypeError, match=r"haste has LSTM and GRU layers"):
            to_haste(module)


def test_against_haste_itself_where_it_is_installed():
    haste = pytest.importorskip("haste_pytorch", reason="haste_pytorch builds only against CUDA (pip install haste_pytorch "
                                "on a machine with nvcc); the documented equations above stand in for it")  # fmt: skip
    if not torch.cuda.is_available():
        pytest.skip("haste_pytorch runs on CUDA only")
    torch.manual_seed(0)
    for name in CELLS:
        theirs = getattr(haste, name)(3, 5, zoneout=0.1, batch_first=True).cuda().eval()
        with torch.no_grad():
            for p in theirs.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        ours = from_haste(theirs).cuda().eval()  # the module: its settings are read from it
        x = torch.randn(2, 6, 3, device="cuda")
        out, state = theirs(x)
        got, got_state = ours(x)
        torch.testing.assert_close(got, out, atol=1e-5, rtol=1e-5)
        for a, b in zip(got_state if isinstance(got_state, tuple) else (got_state,), state if isinstance(state, tuple) else (state,)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
