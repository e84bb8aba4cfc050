"""The mLSTM's native recurrent form (gatedrnn.fused.mlstm: the loop of csrc/mlstm.cpp and its
hand-written backward, or the Python stand-in) against the specification, a loop of
gatedrnn.cells.mlstm.mlstm_step written out here: outputs, final states, the trace and every
gradient over hypothesis-drawn configurations (float32 and float64, T = 1, initial states, both
forget gates, ±1e4 pre-activations); gradcheck and gradgradcheck in float64; states carried
across calls; the layer's forms; which paths run the op; torch.compile; opcheck."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gatedrnn import fused
from gatedrnn.cells.mlstm import empty_state, log_forget, mlstm_step
from gatedrnn.fused import mlstm as fused_mlstm
from gatedrnn.xlstm import mLSTM
from gatedrnn.xlstm.mlstm import STEP_TRACE_NAMES, mlstm_sequence

TOL = {torch.float64: {"rtol": 1e-9, "atol": 1e-10}, torch.float32: {"rtol": 2e-4, "atol": 2e-5}}


@pytest.fixture(params=["native", "python"])
def loop(request):
    """The native loop, then the stand-in (the no-compiler path)."""
    if request.param == "python":
        fused.use_python_loops(True)
        assert not fused_mlstm.native_available()
        yield "python"
        fused.use_python_loops(False)
    else:
        if not fused_mlstm.native_available():
            pytest.skip("native kernels not built on this machine")
        yield "native"


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls of the op's loop (the native one or the stand-in)."""
    count = {"n": 0}
    real = fused_mlstm._loop

    def counted(device):
        inner = real(device)

        def run(*args):
            count["n"] += 1
            return inner(*args)

        return run

    monkeypatch.setattr(fused_mlstm, "_loop", counted)
    return count


def make_inputs(seed, B, K, T, dk, dv, dtype, scale=1.0, with_state=False):
    """q, k, v, i_raw, f_raw and a state (or None); the gates' pre-activations times ``scale``."""
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)
    q, k, v = randn(B, K, T, dk), randn(B, K, T, dk), randn(B, K, T, dv)
    i_raw, f_raw = scale * randn(B, K, T), scale * randn(B, K, T) + 1.0
    state = None
    if with_state:
        m0 = randn(B, K)
        m0[0, 0] = float("-inf")  # one head starts empty
        state = (randn(B, K, dk, dv), randn(B, K, dk), m0)
        state[0][0, 0], state[1][0, 0] = 0.0, 0.0
        state = tuple(s.to(dtype) for s in state)
    return tuple(x.to(dtype) for x in (q, k, v, i_raw, f_raw)), state


def reference(q, k, v, i_raw, f_raw, state, forget):
    """h~ (B, K, T, dv), the final (C, n, m) and the activations (name: (B, K, T)) from
    mlstm_step, one step at a time."""
    outputs, acts = [], []
    for t in range(q.shape[2]):
        h, state, values = mlstm_step(q[:, :, t], k[:, :, t], v[:, :, t], i_raw[:, :, t], f_raw[:, :, t], state,
                                      forget)  # fmt: skip
        outputs.append(h)
        acts.append(values)
    trace = {name: torch.stack(vals, dim=2) for name, vals in zip(STEP_TRACE_NAMES, zip(*acts))}
    return torch.stack(outputs, dim=2), state, trace


def assert_equal_results(got, want, dtype, what=""):
    (h, final, trace), (h_ref, final_ref, trace_ref) = got, want
    close = lambda a, b, name: torch.testing.assert_close(
        a, b, **TOL[dtype], msg=lambda m: f"{what}{name}: {m}"
    )
    assert h.dtype == dtype and all(s.dtype == dtype for s in final)
    close(h, h_ref, "h~")
    for name, a, b in zip("Cnm", final, final_ref):
        close(a, b, name)
    if trace is not None:
        assert set(trace) == set(trace_ref)
        for name in trace:
            close(trace[name], trace_ref[name], name)


def test_the_native_kernels_hold_the_mlstm_loop():
    if not fused.native_available():
        pytest.skip("native kernels not built on this machine")
    assert hasattr(fused.kernels(), "mlstm_recurrent")
    assert fused_mlstm.native_available()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    B=st.integers(1, 3), K=st.integers(1, 3), T=st.sampled_from([1, 2, 5, 9]), dk=st.integers(1, 6),
    dv=st.integers(1, 6), with_state=st.booleans(), forget=st.sampled_from(["sigmoid", "exp"]),
    dtype=st.sampled_from([torch.float32, torch.float64]), scale=st.sampled_from([1.0, 5.0, 1e4]),
    want_trace=st.booleans(), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_recurrent_form_matches_the_reference_step(loop, calls, B, K, T, dk, dv, with_state, forget, dtype, scale,
                                                   want_trace, seed):  # fmt: skip
    args, state = make_inputs(seed, B, K, T, dk, dv, dtype, scale, with_state)
    before = calls["n"]  # (the fixture lives across hypothesis's examples)
    with torch.no_grad():
        got = mlstm_sequence(*args, state, form="recurrent", forget=forget, want_trace=want_trace)
    assert calls["n"] == before + 1, "the no-grad recurrent form runs the op"
    want = reference(*args, state, forget)
    if not want_trace:
        want = (*want[:2], None)
    assert_equal_results(got, want, dtype)
    for name, x in (("h~", got[0]), *zip("Cnm", got[1])):  # the stabilizer keeps exp from overflowing
        assert torch.isfinite(x).all(), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_preactivations_stay_finite(loop, dtype):
    """±1e4 input and forget pre-activations: finite h~, C, n and m, equal to the reference."""
    args, _ = make_inputs(3, 2, 2, 17, 4, 4, dtype)
    g = torch.Generator().manual_seed(4)
    signs = lambda: torch.where(torch.rand(2, 2, 17, generator=g) < 0.5, -1.0, 1.0).to(dtype)
    args = (*args[:3], 1e4 * signs(), 1e4 * signs())
    for forget in ("sigmoid", "exp"):
        with torch.no_grad():
            got = mlstm_sequence(*args, form="recurrent", forget=forget, want_trace=True)
        for name, x in (("h~", got[0]), *zip("Cnm", got[1])):
            assert torch.isfinite(x).all(), f"{forget}: {name} not finite"
        assert_equal_results(got, reference(*args, None, forget), dtype, f"{forget}: ")


def test_rows_split_across_threads_match_the_reference(loop):
    """A size whose rows the native loop shares among threads (2^15 multiply-adds a block: here
    blocks of 4 of the 16 rows), equal to the reference."""
    args, state = make_inputs(12, 8, 2, 8, 32, 32, torch.float64, with_state=True)
    with torch.no_grad():
        got = mlstm_sequence(*args, state, form="recurrent", want_trace=True)
    assert_equal_results(got, reference(*args, state, "sigmoid"), torch.float64)


def test_lengths_match_the_reference_path(loop, calls):
    """Past each sequence's end the state is carried (i~ = -inf, log f = 0 reach the op) and h~
    and the trace are zero: equal to the loop autograd runs."""
    args, state = make_inputs(5, 3, 2, 8, 3, 4, torch.float64, with_state=True)
    lengths = torch.tensor([8, 3, 5])
    with torch.no_grad():
        got = mlstm_sequence(*args, state, form="recurrent", lengths=lengths, want_trace=True)
    assert calls["n"] == 1
    leaves = [x.clone().requires_grad_() for x in args]
    want = mlstm_sequence(*leaves, state, form="recurrent", lengths=lengths, want_trace=True)
    assert calls["n"] == 1, "a trace wanted with gradients: the reference loop"
    assert_equal_results(got, want, torch.float64)
    assert (got[0][1, :, 3:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_states_carried_across_calls_equal_one_call(loop, dtype):
    """Generation: step by step (and in pieces), the state handed from call to call, equals one call."""
    args, state = make_inputs(6, 2, 3, 11, 5, 5, dtype, with_state=True)
    with torch.no_grad():
        h, final, _ = mlstm_sequence(*args, state, form="recurrent")
        for cuts in ([1] * 11, [4, 1, 6]):
            carried, pieces, t = state, [], 0
            for length in cuts:
                piece = tuple(x[:, :, t : t + length] for x in args)
                h_piece, carried, _ = mlstm_sequence(*piece, carried, form="recurrent")
                pieces.append(h_piece)
                t += length
            assert_equal_results(
                (torch.cat(pieces, dim=2), carried, None), (h, final, None), dtype, f"{cuts}: "
            )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layer_outputs_are_the_same_through_every_form(loop, calls, dtype):
    """The mLSTM layer without gradients: form="recurrent" (the op) equals the parallel and
    chunkwise forms and the reference loop (gradients on), outputs, states and trace."""
    torch.manual_seed(7)
    layer = mLSTM(6, 12, num_heads=3, num_layers=2, batch_first=True, chunk_size=4, dtype=dtype)
    x = torch.randn(3, 10, 6, dtype=dtype)
    hx = (
        torch.randn(2, 3, 3, 4, 4, dtype=dtype),
        torch.randn(2, 3, 3, 4, dtype=dtype),
        torch.randn(2, 3, 3, dtype=dtype),
    )
    tol = {torch.float64: {"rtol": 1e-9, "atol": 1e-10}, torch.float32: {"rtol": 1e-4, "atol": 1e-5}}[dtype]
    layer.form = "recurrent"
    with torch.no_grad():
        out, (C, n, m), trace = layer(x, hx, return_trace=True)
    assert calls["n"] == 2, "one call per layer"
    reference_out, reference_state, reference_trace = layer(
        x, hx, return_trace=True
    )  # gradients on: the loop
    assert calls["n"] == 2
    assert reference_out.requires_grad
    torch.testing.assert_close(out, reference_out, **tol)
    for a, b in zip((C, n, m), reference_state):
        torch.testing.assert_close(a, b, **tol)
    for name in trace:
        torch.testing.assert_close(
            trace[name], reference_trace[name], **tol, msg=lambda msg, name=name: f"{name}: {msg}"
        )
    for form in ("parallel", "chunkwise"):
        layer.form = form
        with torch.no_grad():
            other, (C2, n2, m2) = layer(x, hx)
        torch.testing.assert_close(other, out, **tol, msg=lambda msg, form=form: f"{form}: {msg}")
        for a, b in zip((C2, n2, m2), (C, n, m)):
            torch.testing.assert_close(a, b, **tol)


def test_generation_and_training_run_the_op(loop, calls):
    """One step at a time without gradients (T = 1, form "auto"): the op; with gradients the op
    too where its native backward is built (the stand-in: the reference loop); a trace wanted
    with gradients: the reference loop. The gradients flow."""
    layer = mLSTM(5, 8, num_heads=2)
    x = torch.randn(1, 2, 5)  # (T, B, I)
    with torch.no_grad():
        layer(x)
    assert calls["n"] == 1
    out, _ = layer(x)
    assert calls["n"] == (2 if loop == "native" else 1)
    out.sum().backward()
    assert layer.weight_ih_l0.grad is not None and layer.weight_ih_l0.grad.abs().sum() > 0
    before = calls["n"]
    layer(x, return_trace=True)
    assert calls["n"] == before


def test_applies(loop):
    t = torch.zeros(2, 3)
    assert fused_mlstm.applies(t, t.clone()) and fused_mlstm.applies(t, t, trace=True)
    assert not fused_mlstm.applies(t.half(), t.half()), "float16: the reference loop"
    assert not fused_mlstm.applies(t, t.double()), "mixed dtypes: the reference loop"
    leaf = t.clone().requires_grad_()
    assert fused_mlstm.applies(t, leaf) == (loop == "native"), "gradients: the native backward where built"
    assert not fused_mlstm.applies(t, leaf, trace=True), "a trace with gradients: the reference loop"
    with torch.no_grad():
        assert fused_mlstm.applies(t, leaf, trace=True)


def test_half_precision_runs_the_reference_loop(calls):
    args, _ = make_inputs(8, 1, 2, 4, 3, 3, torch.bfloat16)
    with torch.no_grad():
        h = mlstm_sequence(*args, form="recurrent")[0]
    assert calls["n"] == 0 and h.dtype == torch.bfloat16
    want = mlstm_sequence(*(x.double() for x in args), form="recurrent")[0]
    torch.testing.assert_close(h.double(), want, rtol=5e-2, atol=5e-2)


def op_arguments(dtype=torch.float64, trace=True):
    args, state = make_inputs(9, 2, 2, 3, 3, 4, dtype, with_state=True)
    q, k, v, i_raw, f_raw = args
    return (q, k, v, i_raw, log_forget(f_raw), *state, 1e-6, trace)


@pytest.mark.parametrize("trace", [True, False])
def test_the_op_passes_torch_library_opcheck(loop, trace):
    """Schema, fake (meta) implementation and autograd registration of the op."""
    args = [
        a.requires_grad_() if isinstance(a, torch.Tensor) and j != 7 else a
        for j, a in enumerate(op_arguments(trace=trace))
    ]
    torch.library.opcheck(torch.ops.gatedrnn.mlstm_recurrent.default, args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))  # fmt: skip


# --- the hand-written backward ----------------------------------------------------------------


def grads(fn, leaves, seed):
    """fn's outputs (a flat list) and the gradients of every leaf of a loss weighting each output
    with a fixed random tensor."""
    results = fn(*leaves)
    g = torch.Generator().manual_seed(seed + 1)
    # through float32 always: a float32 call and its float64 twin get the same cotangents
    cotangents = [torch.randn(r.shape, generator=g, dtype=torch.float64).float().to(r.dtype) for r in results]
    return results, torch.autograd.grad(results, leaves, cotangents)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    B=st.integers(1, 2), K=st.integers(1, 3), T=st.sampled_from([1, 2, 5, 10, 17]), dk=st.integers(1, 5),
    dv=st.integers(1, 5), with_state=st.booleans(), forget=st.sampled_from(["sigmoid", "exp"]),
    dtype=st.sampled_from([torch.float32, torch.float64]), scale=st.sampled_from([1.0, 5.0, 1e4]),
    seed=st.integers(0, 2**16),
)  # fmt: skip
@example(B=1, K=2, T=10, dk=3, dv=3, with_state=False, forget="exp", dtype=torch.float32, scale=5.0, seed=3)
def test_gradients_match_the_reference_step(B, K, T, dk, dv, with_state, forget, dtype, scale, seed):
    """The native backward (segments of C recomputed from checkpoints: T = 10, 17 span several)
    against autograd through the mlstm_step loop: every input's and the state's gradient."""
    if not fused_mlstm.native_available():
        pytest.skip("native kernels not built on this machine")
    args, state = make_inputs(seed, B, K, T, dk, dv, dtype, scale, with_state)
    if state is not None:
        state = (*state[:2], state[2].clone().fill_(0.5))  # finite m0: a gradient for each entry
    leaves = [x.clone().requires_grad_() for x in (*args, *(state or ()))]

    def native(*t):
        h, final, _ = mlstm_sequence(*t[:5], tuple(t[5:]) or None, form="recurrent", forget=forget)
        assert type(h.grad_fn).__name__ != "StackBackward0", "the op, not the loop"
        return [h, *final]

    def ref(*t):
        h, final, _ = reference(*t[:5], tuple(t[5:]) or None, forget)
        return [h, *final]

    got, d_got = grads(native, leaves, seed)
    want, d_want = grads(ref, leaves, seed)
    tol = TOL[dtype] if scale < 1e4 else {"rtol": TOL[dtype]["rtol"] * 10, "atol": TOL[dtype]["atol"] * 10}
    for name, a, b in zip(("h~", "C", "n", "m"), got, want):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"{name}: {m}")
    # float32: both sides round differently over T steps; each is held to the float64 reference
    # (the same values, widened), the native within a few times the float32 reference's own error
    exact = grads(ref, [x.detach().double().requires_grad_() for x in leaves], seed)[1] if dtype == torch.float32 else None
    for k, (name, a, b) in enumerate(zip(("q", "k", "v", "i_raw", "f_raw", "C0", "n0", "m0"), d_got, d_want)):
        assert torch.isfinite(a).all(), f"d_{name} not finite"
        # where e^{-m} overflows (m < -88 in float32) autograd's reference gives 0 * inf = NaN
        finite = torch.isfinite(b)
        if exact is None:
            torch.testing.assert_close(a[finite], b[finite], **tol, msg=lambda m, name=name: f"d_{name}: {m}")
            continue
        e = exact[k][finite]
        own = (b[finite].double() - e).abs().max().item() if e.numel() else 0.0
        torch.testing.assert_close(a[finite].double(), e, rtol=tol["rtol"], atol=tol["atol"] + 4 * own,
                                   msg=lambda m, name=name: f"d_{name} against float64: {m}")  # fmt: skip


@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
@pytest.mark.parametrize("lengths", [None, [7, 3]])
def test_gradcheck(forget, lengths):
    """float64 gradcheck of the recurrent form through the native backward, with an initial state."""
    if not fused_mlstm.native_available():
        pytest.skip("native kernels not built on this machine")
    args, state = make_inputs(13, 2, 2, 7, 3, 2, torch.float64, with_state=True)
    state = (*state[:2], torch.tensor([[0.3, -0.2], [0.1, 1.0]], dtype=torch.float64))
    leaves = [x.clone().requires_grad_() for x in (*args, *state)]
    lengths = None if lengths is None else torch.tensor(lengths)

    def fn(*t):
        h, final, _ = mlstm_sequence(*t[:5], tuple(t[5:]), form="recurrent", forget=forget, lengths=lengths)
        return h, *final

    assert torch.autograd.gradcheck(fn, leaves)


def test_gradgradcheck_and_trace_gradients_go_through_the_loop():
    """Double backward and the trace's gradients: the step's loop rebuilt from the saved inputs."""
    q, k, v, i_raw, log_f, C, n, m, eps, _ = op_arguments()
    leaves = [x.clone().requires_grad_() for x in (q, k, v, i_raw, log_f, C, n)]
    fn = lambda *t: fused_mlstm.mlstm_recurrent(*t, m, eps, True)
    assert torch.autograd.gradgradcheck(lambda *t: fn(*t)[:4], leaves)
    got, d_got = grads(fn, leaves, 3)
    want, d_want = grads(lambda *t: fused_mlstm.python_recurrent(*t, m, eps, True), leaves, 3)
    for a, b in zip((*got, *d_got), (*want, *d_want)):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


def test_torch_compile_traces_through_the_op(calls):
    """fullgraph, without gradients: mlstm_sequence's recurrent form reaches the custom op (its
    fake implementation at trace time), equal to eager, trace included."""
    args, state = make_inputs(11, 2, 3, 2, 4, 4, torch.float32, with_state=True)
    run = lambda *a: mlstm_sequence(*a[:5], a[5:], form="recurrent", want_trace=True)
    with torch.no_grad():
        got = torch.compile(run, fullgraph=True)(*args, *state)
        assert calls["n"] == 1, "the compiled graph runs the op"
        want = run(*args, *state)
    assert_equal_results(got, want, torch.float32)


def test_torch_compile_traces_through_the_backward():
    """fullgraph, with gradients: the op's autograd formula and the backward op's fake
    implementation, equal to eager."""
    if not fused_mlstm.native_available():
        pytest.skip("native kernels not built on this machine")
    args, state = make_inputs(14, 2, 2, 5, 3, 3, torch.float32, with_state=True)
    state = (*state[:2], state[2].clone().fill_(0.2))
    leaves = [x.clone().requires_grad_() for x in (*args, *state)]

    def run(*t):
        h, final, _ = mlstm_sequence(*t[:5], tuple(t[5:]), form="recurrent")
        return [h, *final]

    got, d_got = grads(torch.compile(run, fullgraph=True), leaves, 4)
    want, d_want = grads(run, leaves, 4)
    for a, b in zip((*got, *d_got), (*want, *d_want)):
        torch.testing.assert_close(a, b, **TOL[torch.float32])


def test_the_native_loop_names_bad_arguments():
    if not fused_mlstm.native_available():
        pytest.skip("native kernels not built on this machine")
    q, k, v, i_raw, log_f, C, n, m, eps, trace = op_arguments()
    run = fused.kernels().mlstm_recurrent
    with pytest.raises(RuntimeError, match="mlstm_recurrent: wants q, k"):
        run(q, k[:, :, :2], v, i_raw, log_f, C, n, m, eps, trace)
    with pytest.raises(RuntimeError, match="the state"):
        run(q, k, v, i_raw, log_f, C[:, :, :2], n, m, eps, trace)
    with pytest.raises(RuntimeError, match="dtype"):
        run(q, k, v, i_raw.float(), log_f, C, n, m, eps, trace)


def test_the_empty_state_is_the_default():
    """state None in the op's terms: zeros and m = -inf, as mlstm_step's."""
    args, _ = make_inputs(10, 2, 2, 4, 3, 3, torch.float64)
    q, k, v, i_raw, f_raw = args
    with torch.no_grad():
        a = fused_mlstm.recurrent(q, k, v, i_raw, log_forget(f_raw), None, 1e-6, False)
        b = fused_mlstm.recurrent(q, k, v, i_raw, log_forget(f_raw), empty_state(2, 2, 3, 3, q), 1e-6, False)
    assert_equal_results(a, b, torch.float64)
