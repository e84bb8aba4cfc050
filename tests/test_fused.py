"""The fused backend against the reference path and torch.nn: outputs, states, every
gradient, traces; gradcheck on its custom ops; torch.compile; the Python fallback."""

import shutil

import pytest
import torch
from helpers import INPUT_KINDS, TOL, Case, check_parity, configurations
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn import fused
from gatedrnn.fused import gru as fused_gru
from gatedrnn.fused import lstm as fused_lstm
from gatedrnn.fused import rnn as fused_rnn


def test_the_direct_blas_path_is_in_use_where_torch_exports_blas():
    """With MKL (torch's x86 builds), libtorch exports sgemm_/dgemm_ and the native loops call
    them directly; were they not found, the loops would silently take the slower at::mm path."""
    if not fused.native_available():
        pytest.skip("native kernels not built on this machine")
    if not torch.backends.mkl.is_available():
        pytest.skip("this torch build has no MKL: its BLAS symbols may not be exported")
    assert fused.kernels().direct_blas_available()


def test_native_kernels_build_where_a_compiler_exists():
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler on this machine: the Python loops stand in")
    assert fused.native_available(), fused._native._native_error


@settings(max_examples=100, deadline=None)
@given(
    configurations(),
    st.sampled_from([torch.float32, torch.float64]),
    st.sampled_from(INPUT_KINDS),
    st.booleans(),
    st.integers(1, 6),
    st.integers(1, 4),
    st.integers(0, 2**31 - 1),
    st.sampled_from(["fused", "auto"]),
)
def test_fused_and_auto_match_torch_nn(config, dtype, kind, with_hx, T, B, seed, backend):
    name, config = config
    check_parity(name, config, dtype, kind, with_hx, T, B, seed, backend=backend)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_python_loops_match_torch_nn(loops, name, kind):
    config = {"input_size": 3, "hidden_size": 5, "num_layers": 2, "bidirectional": True}
    if name == "LSTM":
        config["proj_size"] = 2
    check_parity(name, config, torch.float64, kind, True, 6, 3, seed=1, backend="fused")


def _layer_pair(name, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    reference = getattr(gatedrnn, name)(3, 4, num_layers=2, bidirectional=True, backend="reference", **kw)
    reference = reference.to(dtype)
    other = getattr(gatedrnn, name)(3, 4, num_layers=2, bidirectional=True, backend="fused", **kw).to(dtype)
    other.load_state_dict(reference.state_dict())
    return reference, other


@pytest.mark.parametrize("name,kw", [("LSTM", {}), ("LSTM", {"proj_size": 2}), ("GRU", {}), ("RNN", {}),
                                     ("RNN", {"nonlinearity": "relu"})])  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_traces_and_their_gradients_equal_reference(loops, name, kw, dtype):
    """Same trace values, and the same gradients when the loss reads the trace."""
    reference, other = _layer_pair(name, dtype, **kw)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, 3, generator=g, dtype=dtype)
    lengths = torch.tensor([6, 2, 4])
    results = []
    for layer in (reference, other):
        xs = x.clone().requires_grad_()
        _, _, trace = layer(xs, lengths=lengths, return_trace=True)
        weights = torch.Generator().manual_seed(4)
        loss = sum((v * torch.randn(v.shape, generator=weights, dtype=dtype)).sum() for v in trace.values())
        grads = torch.autograd.grad(loss, [xs] + list(layer.parameters()))
        results.append((trace, grads))
    (trace_r, grads_r), (trace_f, grads_f) = results
    assert list(trace_r) == list(trace_f)
    for key in trace_r:
        torch.testing.assert_close(trace_f[key], trace_r[key], **TOL[dtype], msg=key)
    for a, b in zip(grads_f, grads_r):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("name,kw", [("LSTM", {}), ("LSTM", {"layer_norm": True}), ("LSTM", {"zoneout": 0.3}),
                                     ("GRU", {}), ("GRU", {"layer_norm": True}), ("MGU", {}), ("RNN", {})])  # fmt: skip
@pytest.mark.parametrize("read", ["output", "final", "first gate", "cell"])
def test_a_loss_on_one_output_alone_gets_the_reference_gradients(name, kw, read):
    """The ops leave the gradients of the outputs a loss does not read as None (not
    zero-filled): each output read alone, the others unused."""
    if read == "cell" and name != "LSTM":
        pytest.skip("only the LSTM has a cell state")
    if name == "MGU":
        torch.manual_seed(0)
        reference = gatedrnn.MGU(3, 4, num_layers=2, bidirectional=True, backend="reference").double()
        other = gatedrnn.MGU(3, 4, num_layers=2, bidirectional=True, backend="fused").double()
        other.load_state_dict(reference.state_dict())
    else:
        reference, other = _layer_pair(name, **kw)
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    results = []
    for layer in (reference, other):
        layer.train()
        xs = x.clone().requires_grad_()
        torch.manual_seed(2)  # the same zoneout masks
        out, final, trace = layer(xs, lengths=torch.tensor([5, 3]), return_trace=True)
        value = {"output": out, "final": final[0] if isinstance(final, tuple) else final,
                 "first gate": next(iter(trace.values())), "cell": trace.get("cell") if name == "LSTM" else None}[read]
        results.append(torch.autograd.grad(value.tanh().sum(), [xs] + list(layer.parameters()), allow_unused=True))
    for a, b in zip(*results):
        if a is None or b is None:
            assert a is None and b is None or torch.count_nonzero(a if a is not None else b) == 0
            continue
        torch.testing.assert_close(b, a, **TOL[torch.float64])


def _gradcheck_inputs(G, B=2, T=4, I=None, H=3, P=None):
    g = torch.Generator().manual_seed(0)
    P = P or H

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    return {"xw": r(T, B, G * H), "h0": r(B, P), "c0": r(B, H), "w_hh": r(G * H, P), "b_hh": r(G * H)}


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, torch.tensor([4, 2])])
@pytest.mark.parametrize("proj", [False, True])
def test_gradcheck_lstm_op(loops, reverse, lengths, proj):
    t = _gradcheck_inputs(4, P=2 if proj else None)
    w_hr = torch.randn(2, 3, dtype=torch.float64, requires_grad=True) if proj else None

    def f(xw, h0, c0, w_hh, b_hh, *w):
        out, h_n, c_n, _, cs, gates, _ = fused_lstm.lstm_forward(xw, h0, c0, w_hh, b_hh, w[0] if w else None,
                                                                 lengths, reverse, True)  # fmt: skip
        return out, h_n, c_n, cs, gates  # cs and gates carry the trace's gradients

    args = (t["xw"], t["h0"], t["c0"], t["w_hh"], t["b_hh"]) + ((w_hr,) if proj else ())
    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, torch.tensor([4, 2])])
def test_gradcheck_gru_op(loops, reverse, lengths):
    t = _gradcheck_inputs(3)

    def f(xw, h0, w_hh, b_hh):
        out, h_n, _, act = fused_gru.gru_forward(xw, h0, w_hh, b_hh, lengths, reverse, True)
        return out, h_n, act[..., :9]  # r, z, n: the trace's share of the saved activations

    assert torch.autograd.gradcheck(f, (t["xw"], t["h0"], t["w_hh"], t["b_hh"]))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, torch.tensor([4, 2])])
@pytest.mark.parametrize("relu", [False, True])
def test_gradcheck_rnn_op(loops, reverse, lengths, relu):
    t = _gradcheck_inputs(1)

    def f(xw, h0, w_hh, b_hh):
        out, h_n, _, _ = fused_rnn.rnn_forward(xw, h0, w_hh, b_hh, lengths, reverse, True, relu)
        return out, h_n

    assert torch.autograd.gradcheck(f, (t["xw"], t["h0"], t["w_hh"], t["b_hh"]))


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_gradcheck_fused_layer(name):
    from test_gradcheck import test_layer_gradcheck

    test_layer_gradcheck(name, {}, use_lengths=True, backend="fused")


def test_backward_ops_refuse_differentiation_with_a_clear_error():
    """The forward ops' formulas never differentiate the backward ops (create_graph takes the
    recompute path); called directly without ``x``, they say so instead of returning zeros."""
    t = _gradcheck_inputs(3)
    out, h_n, _, _ = fused_gru.gru_forward(t["xw"], t["h0"], t["w_hh"], t["b_hh"], None, False, True)
    (d_xw,) = torch.autograd.grad(out.sum(), t["xw"], create_graph=True)
    with pytest.raises(RuntimeError, match="gru_backward has no derivative"):
        d_xw.sum().backward()


def test_nan_propagates_through_fused():
    for name in ("RNN", "LSTM", "GRU"):
        layer = getattr(gatedrnn, name)(2, 3, backend="fused")
        x = torch.randn(4, 1, 2)
        x[1, 0, 0] = float("nan")
        out = layer(x)[0]
        assert not out[0].isnan().any() and out[1:].isnan().all(), name


def subnormals_survive() -> bool:
    """Whether this thread keeps float32 subnormals (torch.set_flush_denormal off)."""
    return (torch.tensor([1e-39]) * 0.5).item() != 0.0


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_native_kernels_flush_subnormals_and_restore_the_mode(name):
    """A subnormal state (1e-39) through zero weights: the reference keeps it (GRU: z = 1/2
    of it, LSTM: f = 1/2 of c0, RNN: tanh of it with W_hh = 1); the native kernel flushes it
    to zero, and the caller's floating-point mode is what it was before."""
    if not fused.native_available():
        pytest.skip("native kernels not built on this machine")
    torch.set_flush_denormal(False)
    assert subnormals_survive()
    layer = getattr(gatedrnn, name)(1, 1)
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
        if name == "RNN":
            layer.weight_hh_l0.fill_(1.0)
    x = torch.zeros(1, 1, 1)
    tiny = torch.full((1, 1, 1), 1e-39)
    hx = (torch.zeros(1, 1, 1), tiny) if name == "LSTM" else tiny
    for backend, kept in (("reference", True), ("fused", False)):
        layer.backend = backend
        _, state = layer(x, hx)
        last = state[1] if name == "LSTM" else state  # the LSTM's cell state carries c0
        assert (last.abs().item() > 0) == kept, (backend, last.item())
    assert subnormals_survive(), "the native kernel left flush-to-zero on"


def test_auto_without_autotuning_asks_the_static_rule_where_both_can_run(monkeypatch):
    """With autotuning off (the suite's setting), a plain float32 call that torch's kernel and
    ours can both run is decided by the fitted table (gatedrnn.static_rule.decide, asked with
    whether a gradient is wanted); ours for everything torch's kernel lacks."""
    from gatedrnn import static_rule
    from gatedrnn.backends import auto_backend

    asked = []

    def decide(cell, grad, B, T, I, H):  # noqa: E741
        asked.append((cell, grad, B, T, I, H))
        return "torch"

    monkeypatch.setattr(static_rule, "decide", decide)
    x = torch.randn(3, 2, 4)
    layer = gatedrnn.LSTM(4, 5)
    assert auto_backend(layer, x, None, False) == "torch" and asked[-1] == ("LSTM", True, 2, 3, 4, 5)
    with torch.no_grad():
        assert auto_backend(layer, x, None, False) == "torch" and asked[-1] == ("LSTM", False, 2, 3, 4, 5)
    frozen = gatedrnn.LSTM(4, 5).requires_grad_(False)
    assert auto_backend(frozen, x, None, False) == "torch" and asked[-1][1] is False
    assert auto_backend(frozen, x.clone().requires_grad_(), None, False) == "torch" and asked[-1][1] is True
    assert auto_backend(gatedrnn.GRU(4, 5), x, None, False) == "torch" and asked[-1][0] == "GRU"
    del asked[:]
    assert auto_backend(gatedrnn.LSTM(4, 5), x, None, True) == "fused"  # a trace
    assert auto_backend(gatedrnn.LSTM(4, 5), x, torch.tensor([3, 1]), False) == "fused"  # lengths
    assert auto_backend(gatedrnn.LSTM(4, 5, proj_size=2), x, None, False) == "fused"  # the hand rule's
    assert auto_backend(gatedrnn.LSTM(4, 5).double(), x.double(), None, False) == "fused"
    assert auto_backend(gatedrnn.LSTM(4, 5, peephole=True), x, None, False) == "fused"
    assert asked == []  # none of these is the table's to decide


def test_fused_large_float32_matches_torch():
    """Larger than the property tests: the vectorised float32 activations stay within tolerance."""
    for name in ("RNN", "LSTM", "GRU"):
        theirs = getattr(torch.nn, name)(16, 64)
        ours = getattr(gatedrnn, name).from_torch(theirs, backend="fused")
        case = Case(ours, "padded", 40, 8, True, seed=0)
        out_t, finals_t, grads_t, _ = case.run(theirs)
        out_o, finals_o, grads_o, _ = case.run(ours)
        torch.testing.assert_close(out_o, out_t, atol=1e-5, rtol=1e-5)
        for a, b in zip(grads_o, grads_t):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_torch_compile_keeps_the_fused_ops_in_its_graph():
    """Dynamo's graph holds the native loop as one custom op per layer and direction, not the
    reference loop unrolled over T (what it held while functorch's interpreter stack, not
    empty under Dynamo, was read as a torch.func transform)."""
    targets = []

    def backend(gm, example_inputs):
        targets.extend(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return gm.forward

    for layer in (gatedrnn.GRU(3, 4), gatedrnn.LSTM(3, 4, peephole=True), gatedrnn.RNN(3, 4)):
        targets.clear()
        torch._dynamo.reset()
        torch.compile(layer, backend=backend, fullgraph=True)(torch.randn(5, 2, 3))
        assert sum("gatedrnn" in t and "_forward" in t for t in targets) == 1, targets
        assert len(targets) < 30, f"{len(targets)} operations: an unrolled loop"


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile_fullgraph_matches_eager(backend):
    """Compiled whole (no graph break), with aot_eager and with inductor, torch.compile's
    default (which generates C++ for the ops around the custom ones): the same outputs and
    gradients as eager."""
    if backend == "inductor" and shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("inductor's CPU backend needs a C++ compiler")

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = gatedrnn.GRU(3, 8, num_layers=2, batch_first=True)
            self.lstm = gatedrnn.LSTM(8, 6, bidirectional=True, batch_first=True)
            self.head = torch.nn.Linear(12, 1)

        def forward(self, x):
            y, _ = self.gru(x)
            y, _ = self.lstm(y)
            return self.head(y[:, -1])

    torch.manual_seed(0)
    model = Model()
    x = torch.randn(4, 7, 3)
    eager = model(x)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    out = compiled(x)
    torch.testing.assert_close(out, eager, atol=1e-6, rtol=1e-6)
    out.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager.sum().backward()
    for a, b in zip(grads, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
