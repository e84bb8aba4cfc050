"""MinGRU and MinLSTM (Feng et al. 2024): every gate recomputed from the paper's equations
(float64), the parallel scan against the sequential loop over hypothesis-drawn
configurations (outputs, states, traces, every gradient), gradcheck on both paths, packed
input, the cells, and clear errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import gatedrnn
from gatedrnn.minimal import g


def _unrolled(layer, x, h0):
    """One layer from the equations: (outputs, trace) with the paper's g."""
    W, b = layer.weight_ih_l0, layer.bias_ih_l0
    H = layer.hidden_size
    h, outs, trace = h0, [], []
    for x_t in x:
        a = x_t @ W.T + b
        if layer.mode == "MinGRU":
            z, n = torch.sigmoid(a[:, :H]), g(a[:, H:])
            h = (1 - z) * h + z * n
            trace.append((z, n, h))
        else:
            f, i, n = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H : 2 * H]), g(a[:, 2 * H :])
            f, i = f / (f + i), i / (f + i)
            h = f * h + i * n
            trace.append((f, i, n, h))
        outs.append(h)
    return torch.stack(outs), [torch.stack(v) for v in zip(*trace)]


@pytest.mark.parametrize("name", ["MinGRU", "MinLSTM"])
@pytest.mark.parametrize("backend", ["reference", "fused", "scan"])
def test_recomputed_from_the_equations(name, backend):
    torch.manual_seed(0)
    layer = getattr(gatedrnn, name)(3, 5, backend=backend).double()
    x, h0 = torch.randn(9, 2, 3, dtype=torch.float64), torch.randn(1, 2, 5, dtype=torch.float64)
    out, h_n, trace = layer(x, h0, return_trace=True)
    expected, gates = _unrolled(layer, x, h0[0])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(h_n[0], expected[-1])
    for k, (key, value) in enumerate(trace.items()):
        torch.testing.assert_close(value[0], gates[k], msg=key)
    assert (gates[-2] > 0).all()  # g keeps the candidate positive (the scan's logarithms need it)


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(["MinGRU", "MinLSTM"]), layers=st.integers(1, 2), bidirectional=st.booleans(),
       batch_first=st.booleans(), with_lengths=st.booleans(), with_hx=st.booleans(), T=st.integers(1, 12),
       B=st.integers(1, 4), seed=st.integers(0, 10**6), backend=st.sampled_from(["scan", "fused"]))  # fmt: skip
def test_scan_and_fused_equal_the_reference_loop(name, layers, bidirectional, batch_first, with_lengths, with_hx, T, B,
                                                  seed, backend):  # fmt: skip
    torch.manual_seed(seed)
    loop = getattr(gatedrnn, name)(3, 4, layers, bidirectional=bidirectional, batch_first=batch_first,
                                   backend="reference").double()  # fmt: skip
    scan = getattr(gatedrnn, name)(3, 4, layers, bidirectional=bidirectional, batch_first=batch_first,
                                   backend=backend).double()  # fmt: skip
    scan.load_state_dict(loop.state_dict())
    D = 2 if bidirectional else 1
    x = torch.randn(B, T, 3, dtype=torch.float64) if batch_first else torch.randn(T, B, 3, dtype=torch.float64)
    h0 = torch.randn(layers * D, B, 4, dtype=torch.float64) if with_hx else None
    lengths = torch.randint(1, T + 1, (B,)) if with_lengths else None
    results = []
    for layer in (loop, scan):
        xx = x.clone().requires_grad_()
        hh = None if h0 is None else h0.clone().requires_grad_()
        out, h_n, trace = layer(xx, hh, lengths=lengths, return_trace=True)
        loss = out.sin().sum() + h_n.square().sum() + sum(v.cos().sum() for v in trace.values())
        leaves = [xx] + ([hh] if hh is not None else []) + list(layer.parameters())
        results.append((out, h_n, dict(trace), torch.autograd.grad(loss, leaves)))
    (o1, h1, t1, g1), (o2, h2, t2, g2) = results
    torch.testing.assert_close(o2, o1)
    torch.testing.assert_close(h2, h1)
    for key in t1:
        torch.testing.assert_close(t2[key], t1[key], msg=key)
    for a, b in zip(g2, g1):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["native", "python"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_min_gru_inference_in_one_pass_equals_the_reference_loop(kind, dtype):
    """Without gradients the MinGRU runs its coefficients and recurrence as one op
    (gatedrnn::min_gru_inference); the same outputs and final states as the reference loop,
    both directions, two layers, with and without hx."""
    from gatedrnn import fused
    from gatedrnn.fused import linear

    if kind == "native" and not fused.native_available():
        pytest.skip("native kernels not built on this machine")
    fused.use_python_loops(kind == "python")
    try:
        torch.manual_seed(0)
        ref = gatedrnn.MinGRU(3, 8, 2, bidirectional=True, backend="reference").to(dtype)
        ours = gatedrnn.MinGRU(3, 8, 2, bidirectional=True, backend="fused").to(dtype)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(9, 4, 3, dtype=dtype) * 3  # both branches of g
        h0 = torch.randn(4, 4, 8, dtype=dtype)
        calls = []
        real = linear.min_gru_inference
        with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
            mp.setattr(gatedrnn.minimal, "min_gru_inference", lambda *a: calls.append(1) or real(*a))
            for hx in (None, h0):
                out_r, h_r = ref(x, hx)
                out_o, h_o = ours(x, hx)
                tol = {"atol": 1e-6, "rtol": 1e-5} if dtype == torch.float32 else {}
                torch.testing.assert_close(out_o, out_r, **tol)
                torch.testing.assert_close(h_o, h_r, **tol)
        assert calls, "inference took the one-pass op"
    finally:
        fused.use_python_loops(False)


@pytest.mark.parametrize("name", ["MinGRU", "MinLSTM"])
@pytest.mark.parametrize("backend", ["reference", "fused", "scan"])
def test_gradcheck(name, backend):
    torch.manual_seed(1)
    layer = getattr(gatedrnn, name)(2, 3, bidirectional=True, backend=backend).double()
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(5, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.zeros(2, 2, 3, dtype=torch.float64, requires_grad=True)  # a zero h_0: the scan's gradient is exact there
    lengths = torch.tensor([5, 3])

    def f(x, h0, *params):
        out, h_n = torch.func.functional_call(layer, dict(zip(names, params)), (x, h0), {"lengths": lengths})
        return out, h_n

    assert torch.autograd.gradcheck(f, (x, h0, *params))


@pytest.mark.parametrize("backend", ["scan", "fused"])
def test_long_sequences_stay_on_the_reference_loop(backend):
    torch.manual_seed(2)
    loop = gatedrnn.MinGRU(4, 16, backend="reference").double()
    other = gatedrnn.MinGRU(4, 16, backend=backend).double()
    other.load_state_dict(loop.state_dict())
    x = torch.randn(3000, 2, 4, dtype=torch.float64)
    torch.testing.assert_close(other(x)[0], loop(x)[0], atol=1e-9, rtol=1e-9)


def test_auto_takes_the_native_loop_on_the_cpu(monkeypatch):
    from gatedrnn import minimal

    calls = []
    monkeypatch.setattr(minimal, "loop_direction", lambda *a: calls.append(a) or minimal.scan_direction(*a))
    gatedrnn.MinGRU(2, 3)(torch.randn(4, 1, 2))
    assert len(calls) == (1 if gatedrnn.fused.native_available() else 0)


@pytest.mark.parametrize("name", ["MinGRU", "MinLSTM"])
def test_packed_input_equals_lengths_and_cell_equals_step(name):
    torch.manual_seed(3)
    layer = getattr(gatedrnn, name)(3, 4, 2, bidirectional=True)
    x, lengths = torch.randn(6, 4, 3), torch.tensor([6, 2, 6, 4])
    out_l, h_l = layer(x, lengths=lengths)
    out_p, h_p = layer(pack_padded_sequence(x, lengths, enforce_sorted=False))
    torch.testing.assert_close(out_p.data, pack_padded_sequence(out_l, lengths, enforce_sorted=False).data)
    torch.testing.assert_close(h_p, h_l)
    cell = getattr(gatedrnn, name + "Cell")(3, 4)
    one = getattr(gatedrnn, name)(3, 4)
    cell.load_state_dict({k[: -len("_l0")]: v for k, v in one.state_dict().items()})
    h, trace = cell(x[0], return_trace=True)
    out, _, layer_trace = one(x[:1], return_trace=True)
    torch.testing.assert_close(h, out[0])
    for key in trace:
        torch.testing.assert_close(trace[key], layer_trace[key][0, 0], msg=key)


def test_errors():
    with pytest.raises(ValueError, match="backend must be one of"):
        gatedrnn.MinGRU(2, 3, backend="torch")
    with pytest.raises(TypeError, match="hx must be a tensor"):
        gatedrnn.MinLSTM(2, 3)(torch.randn(4, 1, 2), (torch.zeros(1, 1, 3),))
    with pytest.raises(ValueError, match="input must have 2 features"):
        gatedrnn.MinGRU(2, 3)(torch.randn(4, 1, 5))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=4\]"):
        gatedrnn.MinGRU(2, 3)(torch.randn(4, 2, 2), lengths=torch.tensor([5, 1]))


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_train_command_trains_the_minimal_cells(cell, tmp_path):
    from gatedrnn.cli import main

    run = tmp_path / cell
    args = ["train", "--task", "adding", "--cell", cell, "--length", "8", "--hidden-size", "4", "--layers", "2",
            "--dropout", "0.1", "--steps", "4", "--eval-every", "2", "--batch-size", "4", "--out", str(run)]  # fmt: skip
    assert main(args) == 0 and (run / "report.html").exists()
    assert main(["evaluate", str(run)]) == 0
