"""The fused sLSTM (gatedrnn.fused.slstm.slstm_sequence: the native loop of csrc/slstm.cpp, or
its Python stand-in in fused/slstm_loop.py) against the specification, a Python loop of
gatedrnn.cells.slstm.slstm_step differentiated by autograd: outputs, final states, the eight
activations and every gradient, over hypothesis-drawn configurations; gradcheck in float64;
the stabilizer against the unstabilized formula; the stand-in against the native loop."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatedrnn import fused
from gatedrnn._checks import ShapeError
from gatedrnn.cells.slstm import block_diagonal, slstm_step
from gatedrnn.fused import slstm_loop
from gatedrnn.fused.slstm import slstm_sequence

TOL = {torch.float64: {"rtol": 1e-9, "atol": 1e-10}, torch.float32: {"rtol": 2e-4, "atol": 2e-5}}
NAMES = ("out", "h_n", "c_n", "n_n", "m_n", "acts")
INPUTS = ("xw", "h0", "c0", "n0", "m0", "weight_hh", "bias_hh")


def reference(xw, h0, c0, n0, m0, weight_hh, bias_hh, forget="sigmoid", lengths=None, reverse=False):
    """(out, h_n, c_n, n_n, m_n, acts (T, B, 8, H)) from slstm_step, one step at a time; past a
    sequence's end the state is carried and the outputs and activations are zero."""
    T = xw.shape[0]
    state = (h0, c0, n0, m0)
    outs, acts = [None] * T, [None] * T
    for t in range(T - 1, -1, -1) if reverse else range(T):
        new, act = slstm_step(xw[t], state, weight_hh, bias_hh, forget=forget)
        act = torch.stack(act, dim=1)  # (B, 8, H)
        if lengths is not None:
            valid = (t < lengths)[:, None]  # (B, 1)
            new = tuple(torch.where(valid, a, b) for a, b in zip(new, state))
            act = torch.where(valid[..., None], act, 0.0)
        outs[t], acts[t] = act[:, 7], act
        state = new
    return (torch.stack(outs), *state, torch.stack(acts))


def make_inputs(seed, T, B, heads, d, dtype, empty_rows=(), bias=True, scale=1.5):
    """xw, h0, c0, n0, m0, weight_hh, bias_hh (None without bias), all requiring gradients;
    rows in ``empty_rows`` start empty (c0 = n0 = 0)."""
    g = torch.Generator().manual_seed(seed)
    H = heads * d
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)
    xw = rand(T, B, 4 * H) * scale
    h0, c0, m0 = rand(B, H), rand(B, H), rand(B, H)
    n0 = torch.rand(B, H, generator=g, dtype=torch.float64) + 0.5
    for b in empty_rows:
        c0[b], n0[b] = 0.0, 0.0
    weight_hh = rand(heads, 4 * d, d) / d**0.5
    bias_hh = rand(4 * H) if bias else None
    return [
        None if t is None else t.to(dtype).requires_grad_() for t in (xw, h0, c0, n0, m0, weight_hh, bias_hh)
    ]


def outputs_and_grads(fn, inputs, seed, want_acts=True):
    """fn's outputs and the gradients of every input given of a loss that weights each output
    (acts included, when asked) with a fixed random tensor."""
    results = [r for r in fn(*inputs) if r is not None]
    if not want_acts:
        results = results[:5]
    g = torch.Generator().manual_seed(seed + 1)
    cotangents = [torch.randn(r.shape, generator=g, dtype=torch.float64).to(r.dtype) for r in results]
    wrt = [t for t in inputs if t is not None]
    grads = torch.autograd.grad(results, wrt, cotangents)
    return results, grads


@pytest.fixture
def split_rows():
    """Lets the native loop split a step's rows across threads at the smallest sizes."""
    if not fused.native_available():
        yield
        return
    kernels = fused.kernels()
    work = kernels.min_shared_work()
    kernels.set_min_shared_work(0)
    yield
    kernels.set_min_shared_work(work)


def test_the_native_kernels_hold_the_slstm_loop():
    if not fused.native_available():
        pytest.skip("native kernels not built on this machine")
    assert hasattr(fused.kernels(), "slstm_forward") and hasattr(fused.kernels(), "slstm_backward")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    heads=st.sampled_from([1, 2, 4]), d=st.integers(1, 3), T=st.integers(1, 6), B=st.integers(1, 4),
    short=st.booleans(), reverse=st.booleans(), forget=st.sampled_from(["sigmoid", "exp"]),
    dtype=st.sampled_from([torch.float32, torch.float64]), bias=st.booleans(), empty=st.booleans(),
    want_acts=st.booleans(), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_sequence_matches_the_reference_step(loops, split_rows, heads, d, T, B, short, reverse, forget, dtype, bias,
                                             empty, want_acts, seed):  # fmt: skip
    lengths = None
    if short and T > 1:
        lengths = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(seed))
        lengths[0] = T - 1  # at least one sequence shorter
    inputs = make_inputs(seed, T, B, heads, d, dtype, empty_rows=[0] if empty else [], bias=bias)
    kw = {"forget": forget, "lengths": lengths, "reverse": reverse}
    got, d_got = outputs_and_grads(
        lambda *a: slstm_sequence(*a, want_acts=want_acts, **kw), inputs, seed, want_acts
    )
    want, d_want = outputs_and_grads(lambda *a: reference(*a, **kw), inputs, seed, want_acts)
    for name, a, b in zip(NAMES, got, want):
        assert a.dtype == dtype, name
        torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")
    names = [n for n, t in zip(INPUTS, inputs) if t is not None]
    for name, a, b in zip(names, d_got, d_want):
        torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m, name=name: f"d_{name}: {m}")


@pytest.fixture(params=["native", "python"])
def native_or_python(request):
    """The native loops, then the stand-in (the no-compiler path)."""
    if request.param == "python":
        fused.use_python_loops(True)
        yield "python"
        fused.use_python_loops(False)
    else:
        if not fused.native_available():
            pytest.skip("native kernels not built on this machine")
        yield "native"


@pytest.mark.parametrize("reverse, lengths", [(False, None), (True, [3, 2])])
@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_gradcheck(native_or_python, reverse, lengths, forget):
    """The hand-written backward against finite differences, float64, every input, with a
    trace (all eight activations). The states start non-empty: at n0 = 0 a perturbation of n0
    would change the branch."""
    inputs = make_inputs(3, 3, 2, 2, 2, torch.float64)
    lengths = None if lengths is None else torch.tensor(lengths)

    def fn(*a):
        return slstm_sequence(*a, forget=forget, lengths=lengths, reverse=reverse, want_acts=True)

    assert torch.autograd.gradcheck(
        fn, inputs, fast_mode=native_or_python == "python"
    )  # the slow loop: fast mode


def test_gradgradcheck():
    """Double backward (create_graph) goes through the reference loop rebuilt from the op's inputs."""
    inputs = make_inputs(4, 2, 2, 2, 1, torch.float64)
    lengths = torch.tensor([2, 1])  # one sequence shorter
    assert torch.autograd.gradgradcheck(
        lambda *a: slstm_sequence(*a, lengths=lengths)[:5], inputs, fast_mode=True
    )


def test_a_tie_in_the_stabilizer_shares_its_gradient_as_torch_maximum(native_or_python):
    """log f + m_{t-1} = i~ exactly (exp forget gate, m0 = 0, f~ = i~, no recurrent weights):
    max() then sends half of m's gradient each way, as autograd of torch.maximum does."""
    g = torch.Generator().manual_seed(12)
    B, H = 2, 3
    xw = torch.randn(2, B, 4 * H, generator=g, dtype=torch.float64)
    xw[0, :, H : 2 * H] = xw[0, :, :H]  # f~ = i~ at the first step
    inputs = [xw, torch.randn(B, H, generator=g, dtype=torch.float64), torch.randn(B, H, generator=g, dtype=torch.float64),
              torch.ones(B, H, dtype=torch.float64), torch.zeros(B, H, dtype=torch.float64),
              torch.zeros(1, 4 * H, H, dtype=torch.float64), None]  # fmt: skip
    inputs = [t if t is None else t.requires_grad_() for t in inputs]
    _, d_got = outputs_and_grads(lambda *a: slstm_sequence(*a, forget="exp", want_acts=True), inputs, 12)
    _, d_want = outputs_and_grads(lambda *a: reference(*a, forget="exp"), inputs, 12)
    for name, a, b in zip(INPUTS, d_got, d_want):
        torch.testing.assert_close(a, b, **TOL[torch.float64], msg=lambda m, name=name: f"d_{name}: {m}")


def unstabilized(xw, weight_hh, bias_hh, forget):
    """h at every step from the zero state by the formula without a stabilizer: i = exp(i~),
    f = sigmoid(f~) or exp(f~); overflows to inf or nan where the inputs are large."""
    T, B, _ = xw.shape
    H = xw.shape[2] // 4
    w = block_diagonal(weight_hh)
    h, c, n = (xw.new_zeros(B, H) for _ in range(3))
    outs = []
    for t in range(T):
        i_raw, f_raw, z_raw, o_raw = (xw[t] + h @ w.t() + bias_hh).chunk(4, dim=1)
        i, f = torch.exp(i_raw), torch.sigmoid(f_raw) if forget == "sigmoid" else torch.exp(f_raw)
        c = f * c + i * torch.tanh(z_raw)
        n = f * n + i
        h = torch.sigmoid(o_raw) * c / n
        outs.append(h)
    return torch.stack(outs)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_the_stabilizer_keeps_large_inputs_finite(native_or_python, scale, forget):
    """xw up to ±1e4 from the empty state: finite outputs, states and gradients in float32 and
    float64, equal to the unstabilized formula (float64) wherever that one is finite."""
    for dtype in (torch.float64, torch.float32):
        inputs = make_inputs(7, 12, 3, 2, 4, dtype, empty_rows=[0, 1, 2], scale=scale)
        inputs[1] = torch.zeros_like(inputs[1]).requires_grad_()  # h0: the zero state
        got, grads = outputs_and_grads(
            lambda *a: slstm_sequence(*a, forget=forget, want_acts=True), inputs, 7
        )
        for name, value in zip(NAMES + tuple("d_" + n for n in INPUTS), (*got, *grads)):
            assert torch.isfinite(value).all(), (name, dtype)
        xw, weight_hh, bias_hh = (t.detach().double() for t in (inputs[0], inputs[5], inputs[6]))
        plain = unstabilized(xw, weight_hh, bias_hh, forget)
        finite = torch.isfinite(plain)
        assert finite.any() or scale > 100
        tol = (
            {"rtol": 1e-9, "atol": 1e-9}
            if dtype == torch.float64
            else {"rtol": 1e-3, "atol": 1e-4 * max(1, scale / 30)}
        )
        torch.testing.assert_close(got[0].double()[finite], plain[finite], **tol)


def test_the_stand_in_loop_equals_the_native_loop():
    """Both loops' raw outputs, saved values and gradients, on one set of inputs with lengths,
    reversed, and with every output's gradient given (the trace's included)."""
    if not fused.native_available():
        pytest.skip("native kernels not built on this machine")
    native = fused.kernels()
    g = torch.Generator().manual_seed(11)
    T, B, H = 6, 4, 6
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)
    xw, h0, w_hh, b_hh = rand(T, B, 4 * H) * 2, rand(B, H), rand(4 * H, H) / 3, rand(4 * H)
    s0 = torch.cat([rand(B, H), torch.rand(B, H, generator=g, dtype=torch.float64), rand(B, H)], dim=1)
    s0[1, H : 2 * H] = 0.0  # an empty row
    lengths = torch.tensor([6, 3, 1, 5])
    for exp_forget in (False, True):
        args = (xw, h0, s0, w_hh, b_hh, lengths, True, True, exp_forget)
        a, b = native.slstm_forward(*args), slstm_loop.slstm_forward(*args)
        for name, x, y in zip(("out", "h_n", "s_n", "hs", "ss", "act"), a, b):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}")
        _, _, _, hs, ss, act = a
        d = (rand(T, B, H), rand(B, H), rand(B, 3 * H), rand(T, B, 6 * H), rand(T, B, 3 * H))
        back = (*d, hs, ss, act, h0, s0, w_hh, lengths, True, exp_forget)
        for name, x, y in zip(("d_xw", "d_h0", "d_s0", "d_w_hh", "d_b_hh"), native.slstm_backward(*back),
                              slstm_loop.slstm_backward(*back)):  # fmt: skip
            torch.testing.assert_close(x, y, rtol=1e-11, atol=1e-11, msg=lambda m, name=name: f"{name}: {m}")


def test_gatedrnn_native_0_runs_the_stand_in_loop(tmp_path):
    """With GATEDRNN_NATIVE=0 (as where no compiler exists) the op runs slstm_loop, and gives
    the reference's values."""
    script = textwrap.dedent(
        """
        import sys, torch
        from gatedrnn.fused import slstm, slstm_loop
        assert slstm._loops(torch.device("cpu")) is slstm_loop
        sys.path.insert(0, sys.argv[2])
        from test_fused_slstm import make_inputs, outputs_and_grads
        inputs = make_inputs(5, 4, 3, 2, 2, torch.float64, empty_rows=[1])
        lengths = torch.tensor([4, 2, 3])
        got = outputs_and_grads(lambda *a: slstm.slstm_sequence(*a, lengths=lengths, want_acts=True), inputs, 5)
        torch.save(got, sys.argv[1])
        """
    )
    path = tmp_path / "got.pt"
    env = {**os.environ, "GATEDRNN_NATIVE": "0"}
    done = subprocess.run([sys.executable, "-c", script, str(path), os.path.dirname(__file__)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    got, d_got = torch.load(path)
    inputs = make_inputs(5, 4, 3, 2, 2, torch.float64, empty_rows=[1])
    want, d_want = outputs_and_grads(lambda *a: reference(*a, lengths=torch.tensor([4, 2, 3])), inputs, 5)
    for a, b in zip((*got, *d_got), (*want, *d_want)):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


def test_without_gradients_nothing_is_saved_and_the_values_agree(native_or_python):
    """(The stand-in loop once returned one empty tensor for the three unsaved outputs, which
    the custom op refuses as aliasing: an sLSTM without a compiler failed in inference.)"""
    inputs = [t.detach() for t in make_inputs(8, 5, 2, 2, 3, torch.float32, empty_rows=[1])]
    lengths = torch.tensor([5, 3])
    with torch.no_grad():
        fast = slstm_sequence(*inputs, lengths=lengths)
    want = reference(*inputs, lengths=lengths)
    assert fast[5] is None
    for name, a, b in zip(NAMES, fast[:5], want[:5]):
        torch.testing.assert_close(a, b, **TOL[torch.float32], msg=lambda m, name=name: f"{name}: {m}")


def test_half_precision_is_computed_in_float32():
    inputs = make_inputs(9, 4, 2, 2, 4, torch.float32)
    half = [t.detach().to(torch.bfloat16).requires_grad_() for t in inputs]
    out = slstm_sequence(*half, want_acts=True)
    assert all(r.dtype == torch.bfloat16 for r in out)
    want = slstm_sequence(*[t.detach().to(torch.bfloat16).float() for t in inputs], want_acts=True)
    for a, b in zip(out, want):
        torch.testing.assert_close(a.float(), b, rtol=1e-2, atol=1e-2)
    out[0].float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in half)


def test_the_op_passes_torch_library_opcheck():
    """Schema, fake (meta) implementation and autograd registration of the forward op."""
    inputs = [t.detach() for t in make_inputs(2, 3, 2, 2, 2, torch.float64)]
    xw, h0, c0, n0, m0, weight_hh, bias_hh = inputs
    w = block_diagonal(weight_hh).requires_grad_()
    s0 = torch.cat([c0, n0, m0], dim=1).requires_grad_()
    args = (
        xw.requires_grad_(),
        h0.requires_grad_(),
        s0,
        w,
        bias_hh,
        torch.tensor([3, 2]),
        False,
        True,
        False,
    )
    torch.library.opcheck(torch.ops.gatedrnn.slstm_forward.default, args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))  # fmt: skip


@pytest.mark.parametrize(
    "change, error, words",
    [
        ({"forget": "tanh"}, ValueError, "forget"),
        ({"xw": torch.zeros(3, 2, 15)}, ShapeError, "xw"),
        ({"h0": torch.zeros(2, 5)}, ShapeError, "h0"),
        ({"m0": torch.zeros(2, 4, dtype=torch.int64)}, TypeError, "m0"),
        ({"weight_hh": torch.zeros(16, 4)}, ShapeError, "weight_hh"),
        ({"weight_hh": torch.zeros(2, 7, 2)}, ShapeError, "weight_hh"),
        ({"bias_hh": torch.zeros(15)}, ShapeError, "bias_hh"),
        ({"lengths": torch.tensor([4, 1])}, ValueError, "lengths"),
        ({"reverse": "yes"}, TypeError, "reverse"),
    ],
)  # fmt: skip
def test_bad_arguments_are_named(change, error, words):
    args = {
        "xw": torch.zeros(3, 2, 16),
        "h0": torch.zeros(2, 4),
        "c0": torch.zeros(2, 4),
        "n0": torch.zeros(2, 4),
        "m0": torch.zeros(2, 4),
        "weight_hh": torch.zeros(2, 8, 2),
        "bias_hh": torch.zeros(16),
    }
    change = dict(change)
    kw = {k: change.pop(k) for k in ("forget", "lengths", "reverse") if k in change}
    args.update(change)
    with pytest.raises(error, match=words):
        slstm_sequence(*args.values(), **kw)


def test_torch_compile_traces_through_the_op():
    """fullgraph: the custom op with its fake implementation, forward and backward, equal to eager."""
    inputs = make_inputs(1, 4, 2, 2, 2, torch.float32, empty_rows=[0])
    compiled = torch.compile(lambda *a: slstm_sequence(*a, want_acts=True), fullgraph=True)
    got, d_got = outputs_and_grads(compiled, inputs, 1)
    want, d_want = outputs_and_grads(lambda *a: slstm_sequence(*a, want_acts=True), inputs, 1)
    for a, b in zip((*got, *d_got), (*want, *d_want)):
        torch.testing.assert_close(a, b, **TOL[torch.float32])
