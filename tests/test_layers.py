"""gatedrnn.RNN/LSTM/GRU against torch.nn over random configurations: outputs, final
states and every gradient."""

import pytest
import torch
from helpers import INPUT_KINDS, Case, assert_close, check_parity, configurations, twin_layers
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn




@settings(max_examples=150, deadline=None)
@given(
    configurations(),
    st.sampled_from([torch.float32, torch.float64]),
    st.sampled_from(INPUT_KINDS),
    st.booleans(),
    st.integers(1, 6),
    st.integers(1, 4),
    st.integers(0, 2**31 - 1),
)
def test_matches_torch_nn(config, dtype, kind, with_hx, T, B, seed):
    name, config = config
    check_parity(name, config, dtype, kind, with_hx, T, B, seed)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_matches_torch_nn_every_input_kind(name, kind):
    config = {"input_size": 3, "hidden_size": 5, "num_layers": 2, "bidirectional": True}
    check_parity(name, config, torch.float64, kind, True, 7, 4, seed=0)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_lengths_match_packing(name, batch_first):
    torch.manual_seed(0)
    config = {"input_size": 3, "hidden_size": 4, "num_layers": 2, "bidirectional": True, "batch_first": batch_first}
    _, ours = twin_layers(name, torch.float64, **config)
    case = Case(ours, "lengths", 6, 5, True, seed=1)
    out_packed, finals_packed, grads_packed, _ = case.run(ours, use_lengths=False)
    out_lengths, finals_lengths, grads_lengths, _ = case.run(ours, use_lengths=True)
    assert_close(out_lengths, out_packed, torch.float64, "output")
    for a, b in zip(finals_lengths + grads_lengths, finals_packed + grads_packed):
        assert_close(a, b, torch.float64, "state or gradient")


def test_outputs_past_lengths_are_zero_and_states_are_at_last_step():
    torch.manual_seed(0)
    lstm = gatedrnn.LSTM(2, 3, bidirectional=True)
    x = torch.randn(5, 2, 2)
    lengths = torch.tensor([5, 2])
    out, (h, c) = lstm(x, lengths=lengths)
    assert out[2:, 1].abs().max() == 0
    # the short sequence run alone gives the same output and states
    out_short, (h_short, c_short) = lstm(x[:2, 1:2])
    torch.testing.assert_close(out[:2, 1:2], out_short)
    torch.testing.assert_close(h[:, 1:2], h_short)
    torch.testing.assert_close(c[:, 1:2], c_short)


def test_dropout_between_layers_is_torchs():
    """In training mode the masks are drawn as torch.nn draws them: same seed, same result."""
    theirs, ours = twin_layers("GRU", torch.float64, input_size=3, hidden_size=4, num_layers=3, dropout=0.5,
                               bidirectional=True)  # fmt: skip
    theirs.train(), ours.train()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.manual_seed(7)
    expected = theirs(x)[0]
    torch.manual_seed(7)
    actual = ours(x)[0]
    torch.testing.assert_close(actual, expected)
    # and dropout is on: a different seed gives different outputs, eval mode none at all
    torch.manual_seed(8)
    assert not torch.allclose(ours(x)[0], expected)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_seeded_initialization_matches_torch(name):
    kw = {"proj_size": 2} if name == "LSTM" else {}
    torch.manual_seed(3)
    theirs = getattr(torch.nn, name)(4, 5, num_layers=2, bidirectional=True, **kw)
    torch.manual_seed(3)
    ours = getattr(gatedrnn, name)(4, 5, num_layers=2, bidirectional=True, **kw)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_state_dict_moves_both_ways(name):
    kw = {"proj_size": 2} if name == "LSTM" else {}
    theirs = getattr(torch.nn, name)(4, 5, num_layers=2, bidirectional=True, **kw)
    ours = getattr(gatedrnn, name)(4, 5, num_layers=2, bidirectional=True, **kw)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 2, 4)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], atol=1e-6, rtol=1e-6)
    again = getattr(torch.nn, name)(4, 5, num_layers=2, bidirectional=True, **kw)
    again.load_state_dict(ours.state_dict())
    torch.testing.assert_close(again(x)[0], theirs(x)[0], atol=0, rtol=0)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_from_torch_and_to_torch(name):
    kw = {"nonlinearity": "relu"} if name == "RNN" else {}
    theirs = getattr(torch.nn, name)(3, 4, num_layers=2, batch_first=True, bias=False, **kw).double().eval()
    ours = getattr(gatedrnn, name).from_torch(theirs)
    assert ours.batch_first and not ours.bias and not ours.training
    assert ours.weight_ih_l0.dtype == torch.float64
    if name == "RNN":
        assert ours.nonlinearity == "relu"
    back = ours.to_torch()
    assert type(back) is type(theirs) and back.batch_first and not back.training
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(back(x)[0], theirs(x)[0], atol=0, rtol=0)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])
    with pytest.raises(TypeError, match="module must be a torch.nn"):
        gatedrnn.LSTM.from_torch(torch.nn.GRU(3, 4))


def test_forget_bias_adds_to_forget_gate_only():
    torch.manual_seed(0)
    plain = gatedrnn.LSTM(3, 4, num_layers=2)
    torch.manual_seed(0)
    biased = gatedrnn.LSTM(3, 4, num_layers=2, forget_bias=1.0)
    for layer in range(2):
        delta = getattr(biased, f"bias_ih_l{layer}") - getattr(plain, f"bias_ih_l{layer}")
        torch.testing.assert_close(delta, torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 8))
        torch.testing.assert_close(getattr(biased, f"bias_hh_l{layer}"), getattr(plain, f"bias_hh_l{layer}"))


def test_nan_in_input_propagates():
    for name in ("RNN", "LSTM", "GRU"):
        layer = getattr(gatedrnn, name)(2, 3)
        x = torch.randn(4, 1, 2)
        x[1, 0, 0] = float("nan")
        out = layer(x)[0]
        assert not out[0].isnan().any() and out[1:].isnan().all(), name


def test_repr_reads_like_torch():
    assert repr(gatedrnn.LSTM(3, 4, num_layers=2, batch_first=True)) == repr(
        torch.nn.LSTM(3, 4, num_layers=2, batch_first=True)
    )
    assert "backend='reference'" in repr(gatedrnn.GRU(3, 4, backend="reference"))
