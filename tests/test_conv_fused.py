"""The fused path of ConvLSTM and ConvGRU (channels last, the gate math as one native op per
step) against the reference path: outputs, final states, traces and every gradient over
hypothesis-drawn configurations, with the native row ops and with their Python twins (the ``loops`` fixture, conftest.py);
gradcheck of the row ops; when ``auto`` takes which path; double backward refused clearly."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn import fused
from gatedrnn.fused import conv as fused_conv


def _pair(name, kw, backend):
    torch.manual_seed(0)
    ref = getattr(gatedrnn, name)(**kw, backend="reference").double()
    other = getattr(gatedrnn, name)(**kw, backend=backend).double()
    other.load_state_dict(ref.state_dict())
    return ref, other


def _run(layer, x, hx, lengths, trace, grads):
    """Forward and backward with fixed output gradients; returns every value and gradient."""
    x = x.clone().requires_grad_()
    hx_in = None if hx is None else tuple(h.clone().requires_grad_() for h in hx)
    arg = hx_in if hx_in is None or layer.mode == "LSTM" else hx_in[0]
    result = layer(x, arg, lengths=lengths, return_trace=trace)
    out, final = result[0], result[1]
    finals = final if isinstance(final, tuple) else (final,)
    values = [out, *finals] + ([result[2][k] for k in sorted(result[2])] if trace else [])
    loss = sum((v * g[: v.numel()].view_as(v)).sum() for v, g in zip(values, grads))
    leaves = [x, *(hx_in or ()), *layer.parameters()]
    return values, torch.autograd.grad(loss, leaves, allow_unused=True)


@settings(max_examples=25, deadline=None)
@given(
    layer=st.sampled_from([("ConvLSTM", {}), ("ConvGRU", {}), ("ConvGRU", {"reset_after": False})]),
    kernel=st.sampled_from([1, 3, (3, 5)]),
    num_layers=st.integers(1, 2),
    bias=st.booleans(),
    with_hx=st.booleans(),
    with_lengths=st.booleans(),
    trace=st.booleans(),
    batch_first=st.booleans(),
    T=st.integers(1, 4),
    B=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_fused_matches_reference(layer, kernel, num_layers, bias, with_hx, with_lengths, trace, batch_first, T, B,
                                 seed):  # fmt: skip
    name, extra = layer
    kw = dict(in_channels=2, hidden_channels=3, kernel_size=kernel, num_layers=num_layers, bias=bias,
              batch_first=batch_first, **extra)  # fmt: skip
    ref, ours = _pair(name, kw, "fused")
    g = torch.Generator().manual_seed(seed)
    shape = (B, T, 2, 5, 4) if batch_first else (T, B, 2, 5, 4)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    n_states = 2 if name == "ConvLSTM" else 1
    hx = tuple(torch.randn(num_layers, B, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(n_states))
    lengths = torch.randint(1, T + 1, (B,), generator=g) if with_lengths else None
    grads = [torch.randn(num_layers * T * B * 3 * 20, generator=g, dtype=torch.float64) for _ in range(8)]
    values_r, grads_r = _run(ref, x, hx if with_hx else None, lengths, trace, grads)
    values_o, grads_o = _run(ours, x, hx if with_hx else None, lengths, trace, grads)
    for k, (a, b) in enumerate(zip(values_o, values_r)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10, msg=f"value {k}")
    names = ["input"] + [f"hx[{k}]" for k in range(n_states)] + [n for n, _ in ours.named_parameters()]
    for what, a, b in zip(names, grads_o, grads_r):
        if b is None:
            assert a is None or not a.abs().max(), what
            continue
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9, msg=f"gradient of {what}")


@pytest.mark.parametrize("name,kw", [("ConvLSTM", {}), ("ConvGRU", {}), ("ConvGRU", {"reset_after": False})])
@pytest.mark.parametrize("trace", [False, True])
def test_fused_matches_reference_with_each_row_op(loops, name, kw, trace):
    ref, ours = _pair(name, dict(in_channels=2, hidden_channels=4, kernel_size=3, num_layers=2, **kw), "fused")
    x = torch.randn(3, 2, 2, 6, 5, dtype=torch.float64)
    lengths = torch.tensor([3, 2])
    grads = [torch.randn(2 * 3 * 2 * 4 * 30, dtype=torch.float64) for _ in range(8)]
    values_r, grads_r = _run(ref, x, None, lengths, trace, grads)
    values_o, grads_o = _run(ours, x, None, lengths, trace, grads)
    for a, b in zip(values_o, values_r):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    for a, b in zip(grads_o, grads_r):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)
    with torch.no_grad():  # inference keeps no gates (and the ConvLSTM's two convolutions run as one)
        out_r, out_o = ref(x, lengths=lengths)[0], ours(x, lengths=lengths)[0]
    torch.testing.assert_close(out_o, out_r, atol=1e-12, rtol=1e-10)


def test_float32_fused_matches_reference():
    for name in ("ConvLSTM", "ConvGRU"):
        torch.manual_seed(0)
        ref = getattr(gatedrnn, name)(4, 8, 3, backend="reference")
        ours = getattr(gatedrnn, name)(4, 8, 3, backend="fused")
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(5, 3, 4, 16, 16)
        out_r, out_o = ref(x)[0], ours(x)[0]
        torch.testing.assert_close(out_o, out_r, atol=1e-5, rtol=1e-5)
        out_r.square().sum().backward()
        out_o.square().sum().backward()
        for (n, a), b in zip(ours.named_parameters(), ref.parameters()):
            torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4, msg=n)


@pytest.mark.parametrize("with_hg", [False, True])
def test_gradcheck_lstm_rows(loops, with_hg):
    N, H = 5, 3
    xg = torch.randn(N, 4 * H, dtype=torch.float64, requires_grad=True)
    hg = torch.randn(N, 4 * H, dtype=torch.float64, requires_grad=True) if with_hg else None
    c = torch.randn(N, H, dtype=torch.float64, requires_grad=True)
    inputs = (xg, hg, c) if with_hg else (xg, c)

    def f(*args):
        h, c_new, act = fused_conv.lstm_rows(args[0], args[1] if with_hg else None, args[-1], True)
        return h, c_new, act  # the gates too: a trace's gradient reaches them

    assert torch.autograd.gradcheck(f, inputs)


def test_gradcheck_gru_rows(loops):
    N, H = 5, 3
    xg = torch.randn(N, 3 * H, dtype=torch.float64, requires_grad=True)
    hg = torch.randn(N, 3 * H, dtype=torch.float64, requires_grad=True)
    h = torch.randn(N, H, dtype=torch.float64, requires_grad=True)

    def f(xg, hg, h):
        h_new, act = fused_conv.gru_rows(xg, hg, h, True)
        return h_new, act[:, : 3 * H]  # r, z, n: the trace's values (the fourth block is hg's, saved)

    assert torch.autograd.gradcheck(f, (xg, hg, h))


def test_auto_takes_the_fused_path_on_a_cpu_and_the_reference_one_under_transforms(monkeypatch):
    if not fused.native_available():
        pytest.skip("native kernels not built on this machine")
    layer = gatedrnn.ConvLSTM(2, 3, 3).double()
    x = torch.randn(2, 1, 2, 4, 4, dtype=torch.float64)
    calls = []
    real = fused_conv.run_layer
    monkeypatch.setattr(fused_conv, "run_layer", lambda *a, **k: calls.append(1) or real(*a, **k))
    layer(x)
    assert calls, "auto on a CPU with native kernels takes the fused path"
    calls.clear()
    tangent = torch.randn_like(x)
    out, jvp = torch.func.jvp(lambda x: layer(x)[0], (x,), (tangent,))  # forward mode: the reference path
    assert not calls
    eps = 1e-6
    numeric = (layer(x + eps * tangent)[0] - layer(x - eps * tangent)[0]) / (2 * eps)
    torch.testing.assert_close(jvp, numeric, atol=1e-6, rtol=1e-5)
    assert gatedrnn.ConvGRU(2, 3, 3, backend="reference").backend == "reference"


def test_double_backward_is_refused_with_a_clear_error():
    layer = gatedrnn.ConvLSTM(2, 3, 3, backend="fused").double()
    x = torch.randn(2, 1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    out = layer(x)[0]
    with pytest.raises(RuntimeError, match="double backward.*backend='reference'"):
        torch.autograd.grad(out.sum(), x, create_graph=True)


def test_bad_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend must be one of"):
        gatedrnn.ConvGRU(2, 3, 3, backend="cudnn")


@pytest.mark.parametrize("name", ["ConvLSTM", "ConvGRU"])
def test_torch_compile_fullgraph_keeps_the_fused_ops(name):
    """Compiled whole with the gate ops in the graph (no graph break on asking whether the
    native kernels exist): the same outputs and gradients as eager."""
    torch.manual_seed(0)
    layer = getattr(gatedrnn, name)(2, 3, 3)
    x = torch.randn(3, 2, 2, 6, 6)
    eager = layer(x)[0]
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    out = compiled(x)[0]
    torch.testing.assert_close(out, eager, atol=1e-6, rtol=1e-6)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    eager.square().sum().backward()
    for a, p in zip(grads, layer.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-5)
