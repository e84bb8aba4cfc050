"""gatedrnn's cells against torch.nn's: outputs, states and every gradient."""

import pytest
import torch
from helpers import TOL
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn


def _twin(name, dtype, **kw):
    theirs = getattr(torch.nn, name)(**kw, dtype=dtype)
    return theirs, getattr(gatedrnn, name).from_torch(theirs)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["RNNCell", "LSTMCell", "GRUCell"]),
    st.integers(1, 5),
    st.integers(1, 6),
    st.integers(0, 4),
    st.booleans(),
    st.booleans(),
    st.sampled_from([torch.float32, torch.float64]),
    st.integers(0, 2**31 - 1),
)
def test_cell_matches_torch(name, I, H, B, bias, with_hx, dtype, seed):
    """B=0 stands for an unbatched (I,) input."""
    kw = {"input_size": I, "hidden_size": H, "bias": bias}
    if name == "RNNCell" and seed % 2:
        kw["nonlinearity"] = "relu"
    theirs, ours = _twin(name, dtype, **kw)
    g = torch.Generator().manual_seed(seed)
    batch = (B,) if B else ()
    x = torch.randn(*batch, I, generator=g, dtype=dtype)
    n_states = 2 if name == "LSTMCell" else 1
    hx = [torch.randn(*batch, H, generator=g, dtype=dtype) for _ in range(n_states)] if with_hx else None
    grads_out = [torch.randn(*batch, H, generator=g, dtype=dtype) for _ in range(n_states)]

    def run(cell):
        xs = x.clone().requires_grad_()
        hs = None if hx is None else [h.clone().requires_grad_() for h in hx]
        arg = None if hs is None else (tuple(hs) if n_states == 2 else hs[0])
        out = cell(xs, arg)
        out = out if isinstance(out, tuple) else (out,)
        loss = sum((o * go).sum() for o, go in zip(out, grads_out))
        leaves = [xs] + (hs or []) + list(cell.parameters())
        return out, torch.autograd.grad(loss, leaves)

    out_t, grads_t = run(theirs)
    out_o, grads_o = run(ours)
    for a, b in zip(out_o + grads_o, out_t + grads_t):
        torch.testing.assert_close(a, b, **TOL[dtype])


def test_cell_trace_holds_the_gates():
    torch.manual_seed(0)
    cell = gatedrnn.LSTMCell(3, 4)
    x, h0, c0 = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
    h, c, trace = cell(x, (h0, c0), return_trace=True)
    torch.testing.assert_close(trace.cell, trace.forget * c0 + trace.input * trace.candidate)
    torch.testing.assert_close(trace.hidden, trace.output * torch.tanh(trace.cell))
    torch.testing.assert_close(trace.hidden, h)
    gru = gatedrnn.GRUCell(3, 4)
    h, trace = gru(x, h0, return_trace=True)
    torch.testing.assert_close(h, (1 - trace.update) * trace.candidate + trace.update * h0)


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cell_gradcheck(name):
    torch.manual_seed(0)
    cell = getattr(gatedrnn, name)(2, 3).double()
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    hx = [torch.randn(4, 3, dtype=torch.float64, requires_grad=True) for _ in range(2 if name == "LSTMCell" else 1)]
    params = list(cell.parameters())

    def f(x, *rest):
        states = rest[: len(hx)]
        out = torch.func.functional_call(cell, dict(zip([n for n, _ in cell.named_parameters()], rest[len(hx):])),
                                         (x, tuple(states) if len(hx) == 2 else states[0]))  # fmt: skip
        return out

    assert torch.autograd.gradcheck(f, (x, *hx, *[p.detach().requires_grad_() for p in params]))


def test_cell_bad_input():
    cell = gatedrnn.LSTMCell(3, 4)
    with pytest.raises(ValueError, match="input must have 3 features"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match="input must be 2-D"):
        cell(torch.randn(2, 2, 3))
    with pytest.raises(TypeError, match="floating-point"):
        cell(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h, c\)"):
        cell(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"hx\[1\] must have shape \(2, 4\)"):
        cell(torch.randn(2, 3), (torch.randn(2, 4), torch.randn(3, 4)))
    with pytest.raises(TypeError, match="hx must be a tensor"):
        gatedrnn.GRUCell(3, 4)(torch.randn(2, 3), (torch.randn(2, 4),))
    with pytest.raises(ValueError, match="hidden_size must be a positive int, got 0"):
        gatedrnn.GRUCell(3, 0)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        gatedrnn.RNNCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="forget_bias"):
        gatedrnn.LSTMCell(3, 4, bias=False, forget_bias=1.0)


def test_cell_round_trip_to_torch():
    ours = gatedrnn.RNNCell(3, 4, nonlinearity="relu")
    back = ours.to_torch()
    assert isinstance(back, torch.nn.RNNCell) and back.nonlinearity == "relu"
    x = torch.randn(2, 3)
    torch.testing.assert_close(back(x), ours(x), atol=0, rtol=0)
