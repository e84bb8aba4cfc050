"""mLSTM (xLSTM's matrix memory): the step against the paper's unstabilized equations in float64,
the recurrent, parallel and chunkwise forms against each other (outputs, final states,
gradients) over hypothesis-drawn shapes, the stabilizer at ±1e4, the hand-written backward of the
intra-chunk product (gradcheck), the layer against the cell, lengths, unbatched input, traces,
errors, and the official ``xlstm`` package's parallel form and recurrent step where installed."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.cells import mlstm as cell_module
from gatedrnn.cells.mlstm import MLSTM_TRACE_NAMES, mlstm_step
from gatedrnn.xlstm import mLSTM, mLSTMCell
from gatedrnn.xlstm import mlstm as layer_module
from gatedrnn.xlstm import mlstm_forms
from gatedrnn.xlstm.mlstm import choose_form, mlstm_sequence
from gatedrnn.xlstm.mlstm_forms import _IntraChunk

TOL = {torch.float64: {"atol": 1e-10, "rtol": 1e-10}, torch.float32: {"atol": 1e-3, "rtol": 1e-3}}
FORMS = ("recurrent", "parallel", "chunkwise")


def inputs(B, K, T, dk, dv, dtype=torch.float64, seed=0, with_state=False, scale=1.0):
    """Random ``q, k, v, i_raw, f_raw`` and (optionally) an initial state (C, n, m)."""
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)
    q, k, v = randn(B, K, T, dk), randn(B, K, T, dk), randn(B, K, T, dv)
    i_raw, f_raw = scale * randn(B, K, T), scale * randn(B, K, T) + 1.0
    state = (randn(B, K, dk, dv), randn(B, K, dk), randn(B, K)) if with_state else None
    return (q, k, v, i_raw, f_raw), state


def close(actual, expected, dtype, what):
    torch.testing.assert_close(actual, expected, **TOL[dtype], msg=lambda m: f"{what}: {m}")


# --- the step is the paper's equations ---------------------------------------------------------


@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_step_equals_unstabilized_equations(forget):
    """Eight steps of mlstm_step from the empty state against the paper's equations written out
    without a stabilizer (C, n unscaled, i = exp(i~), lower bound 1) in float64."""
    B, K, dk, dv, T = 3, 2, 4, 5, 8
    (q, k, v, i_raw, f_raw), _ = inputs(B, K, T, dk, dv, scale=2.0, seed=1)
    f_raw = f_raw if forget == "sigmoid" else -F.softplus(f_raw)  # an exp forget gate at most 1 too
    state = None
    C_true, n_true = torch.zeros(B, K, dk, dv, dtype=torch.float64), torch.zeros(B, K, dk, dtype=torch.float64)
    for t in range(T):
        h, state, (i_act, f_act, denominator, m, memory) = mlstm_step(
            q[:, :, t], k[:, :, t], v[:, :, t], i_raw[:, :, t], f_raw[:, :, t], state, forget, eps=0.0)
        i_gate = torch.exp(i_raw[:, :, t])  # eq. 25 (unstabilized)
        f_gate = torch.sigmoid(f_raw[:, :, t]) if forget == "sigmoid" else torch.exp(f_raw[:, :, t])
        k_t = k[:, :, t] / math.sqrt(dk)
        C_true = f_gate[..., None, None] * C_true + i_gate[..., None, None] * k_t[..., :, None] * v[:, :, t, None, :]
        n_true = f_gate[..., None] * n_true + i_gate[..., None] * k_t
        qn = (n_true * q[:, :, t]).sum(-1)
        h_true = torch.einsum("bkd,bkde->bke", q[:, :, t], C_true) / torch.clamp(qn.abs(), min=1.0)[..., None]
        close(h, h_true, torch.float64, f"h~ at step {t}")
        C, n, _ = state
        close(C * torch.exp(m)[..., None, None], C_true, torch.float64, f"C e^m at step {t}")
        close(n * torch.exp(m)[..., None], n_true, torch.float64, f"n e^m at step {t}")
        close(memory, C.flatten(2).norm(dim=-1), torch.float64, "memory is ||C||_F")
        close(denominator, torch.maximum((n * q[:, :, t]).sum(-1).abs(), torch.exp(-m)), torch.float64, "denominator")
        assert (i_act <= 1).all() and (f_act <= 1).all()
        if t == 0:  # from the empty state: m = i~, nothing forgotten (there was nothing)
            close(m, i_raw[:, :, 0], torch.float64, "m_1 = i~_1")
            assert (f_act == 0).all()


def test_step_eps_is_in_the_stabilized_scale():
    """With eps, h~ = C q / (max(|n q|, 1) + eps e^m) in the unstabilized scale, as the official package."""
    (q, k, v, i_raw, f_raw), _ = inputs(2, 2, 1, 3, 3, scale=4.0, seed=2)
    eps = 1e-3
    h, (_, _, m), _ = mlstm_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], i_raw[:, :, 0], f_raw[:, :, 0], None, eps=eps)
    k0 = k[:, :, 0] / math.sqrt(3)
    C_true = torch.exp(i_raw[:, :, 0])[..., None, None] * k0[..., :, None] * v[:, :, 0, None, :]
    qn = torch.exp(i_raw[:, :, 0]) * (k0 * q[:, :, 0]).sum(-1)
    expected = torch.einsum("bkd,bkde->bke", q[:, :, 0], C_true) / (qn.abs().clamp(min=1) + eps * torch.exp(m))[..., None]
    close(h, expected, torch.float64, "h~ with eps")


# --- the three forms compute the same thing ----------------------------------------------------


def run_form(form, args, state, chunk_size=4, forget="sigmoid", lengths=None):
    h, final, _ = mlstm_sequence(*args, state, form=form, chunk_size=chunk_size, forget=forget, lengths=lengths)
    return h, final


shapes = st.tuples(
    st.integers(1, 3),  # B
    st.integers(1, 3),  # K
    st.sampled_from([1, 2, 5, 8, 13, 31]),  # T: 1, multiples and non-multiples of the chunk
    st.integers(1, 6),  # dk
    st.integers(1, 6),  # dv
    st.sampled_from([1, 3, 4, 8, 64]),  # chunk_size
)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, with_state=st.booleans(), forget=st.sampled_from(["sigmoid", "exp"]),
       dtype=st.sampled_from([torch.float64, torch.float32]), scale=st.sampled_from([1.0, 5.0]),
       seed=st.integers(0, 10_000))  # fmt: skip
def test_forms_equal(shape, with_state, forget, dtype, scale, seed):
    B, K, T, dk, dv, chunk_size = shape
    args, state = inputs(B, K, T, dk, dv, dtype, seed, with_state, scale)
    if forget == "exp":
        args = (*args[:4], -F.softplus(args[4]))
    h_ref, final_ref = run_form("recurrent", args, state, chunk_size, forget)
    for form in ("parallel", "chunkwise"):
        h, final = run_form(form, args, state, chunk_size, forget)
        close(h, h_ref, dtype, f"{form} h~")
        for name, a, b in zip("Cnm", final, final_ref):
            close(a, b, dtype, f"{form} final {name}")


@settings(max_examples=12, deadline=None)
@given(shape=shapes, with_state=st.booleans(), seed=st.integers(0, 10_000))
def test_form_gradients_equal(shape, with_state, seed):
    """Autograd through every form: the same gradients for q, k, v, both gates and the initial state."""
    B, K, T, dk, dv, chunk_size = shape
    args, state = inputs(B, K, T, dk, dv, torch.float64, seed, with_state, 2.0)
    leaves = [x.requires_grad_() for x in (*args, *(state or ()))]
    g = torch.Generator().manual_seed(seed + 1)
    weights = [torch.randn(*s, generator=g, dtype=torch.float64) for s in ((B, K, T, dv), (B, K, dk, dv), (B, K, dk), (B, K))]
    grads = {}
    for form in FORMS:
        h, final = run_form(form, leaves[:5], tuple(leaves[5:]) if with_state else None, chunk_size)
        loss = sum((x * w).sum() for x, w in zip((h, *final), weights))
        grads[form] = torch.autograd.grad(loss, leaves)
    for form in ("parallel", "chunkwise"):
        for j, (a, b) in enumerate(zip(grads[form], grads["recurrent"])):
            close(a, b, torch.float64, f"{form} gradient {j}")


def test_intra_chunk_backward_gradcheck():
    """The hand-written backward of the intra-chunk product against finite differences."""
    g = torch.Generator().manual_seed(3)
    randn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    q, k, v = randn(2, 3, 5, 4), randn(2, 3, 5, 4), randn(2, 3, 5, 2)
    a = randn(2, 3, 5)
    a[0, 0, 1] = float("-inf")  # a column that writes nothing (padding)
    neg_M = -(a.cummax(-1).values + randn(2, 3, 5).abs())  # a_j - M_t <= 0 on and below the diagonal
    args = [x.requires_grad_() for x in (q, k, v)] + [a.requires_grad_(), neg_M.requires_grad_()]
    assert torch.autograd.gradcheck(_IntraChunk.apply, args)


def test_chunkwise_gradcheck():
    """The chunkwise form end to end (hand-written intra-chunk backward inside autograd)."""
    args, state = inputs(1, 2, 7, 3, 2, seed=4, with_state=True)
    leaves = [x.requires_grad_() for x in (*args, *state)]

    def fn(q, k, v, i_raw, f_raw, C, n, m):
        h, (C, n, m), _ = mlstm_sequence(q, k, v, i_raw, f_raw, (C, n, m), form="chunkwise", chunk_size=3)
        return h, C, n, m

    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("form", FORMS)
def test_stabilizer_keeps_extreme_preactivations_finite(form, dtype):
    """±1e4 pre-activations (q, k, v moderate): finite outputs and states in every form, equal
    to the recurrent form in float64."""
    B, K, T, d = 2, 2, 19, 4
    args, _ = inputs(B, K, T, d, d, dtype, seed=5)
    g = torch.Generator().manual_seed(6)
    signs = lambda: torch.where(torch.rand(B, K, T, generator=g) < 0.5, -1.0, 1.0).to(dtype)
    args = (*args[:3], 1e4 * signs(), 1e4 * signs())
    h, (C, n, m) = run_form(form, args, None, chunk_size=4)
    for name, x in (("h~", h), ("C", C), ("n", n), ("m", m)):
        assert torch.isfinite(x).all(), f"{form}: {name} not finite"
    if dtype == torch.float64:
        h_ref, final_ref = run_form("recurrent", args, None)
        close(h, h_ref, dtype, "h~")
        for name, a, b in zip("Cnm", (C, n, m), final_ref):
            close(a, b, dtype, name)


@pytest.mark.parametrize("form", FORMS)
def test_float32_keeps_its_precision_after_a_huge_forget(form):
    """A forget pre-activation of -1e4 (and -1e3) inside a chunk: float32 outputs and gradients
    still equal the float64 recurrent form to float32 accuracy (the log weights are differences
    of large numbers)."""
    args, _ = inputs(2, 2, 40, 8, 8, seed=11)
    q, k, v, i_raw, f_raw = args
    f_raw = f_raw.clone()
    f_raw[..., 5], f_raw[..., 23] = -1e4, -1e3
    args = (q, k, v, i_raw, f_raw)
    ref = [x.clone().requires_grad_() for x in args]
    h_ref = run_form("recurrent", ref, None, chunk_size=16)[0]
    low = [x.float().requires_grad_() for x in args]
    h = run_form(form, low, None, chunk_size=16)[0]
    torch.testing.assert_close(h.double(), h_ref, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(h_ref)
    for j, (a, b) in enumerate(zip(torch.autograd.grad(h, low, grad.float()), torch.autograd.grad(h_ref, ref, grad))):
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-3, msg=lambda m, j=j: f"gradient {j}: {m}")


def test_empty_state_and_zero_start_agree_up_to_eps():
    """The empty state (m = -inf, our default) and the official recurrent start (m = 0) give the
    same outputs up to eps; with eps = 0 exactly the same."""
    (q, k, v, i_raw, f_raw), _ = inputs(2, 2, 9, 4, 4, seed=7)
    zero = (torch.zeros(2, 2, 4, 4, dtype=torch.float64), torch.zeros(2, 2, 4, dtype=torch.float64),
            torch.zeros(2, 2, dtype=torch.float64))  # fmt: skip
    for form in FORMS:
        h_empty = mlstm_sequence(q, k, v, i_raw, f_raw, form=form, eps=0.0)[0]
        h_zero = mlstm_sequence(q, k, v, i_raw, f_raw, zero, form=form, eps=0.0)[0]
        close(h_zero, h_empty, torch.float64, f"{form}, eps = 0")
        h_zero = mlstm_sequence(q, k, v, i_raw, f_raw, zero, form=form)[0]
        torch.testing.assert_close(h_zero, mlstm_sequence(q, k, v, i_raw, f_raw, form=form)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["auto", *FORMS])
def test_lengths_carry_the_state(form):
    """Past a sequence's end h~ is zero and the final state is the state at its length (equal to
    running the truncated sequence alone)."""
    B, K, T, d = 3, 2, 11, 3
    args, state = inputs(B, K, T, d, d, seed=8, with_state=True)
    lengths = torch.tensor([11, 4, 7])
    h, final = run_form(form, args, state, chunk_size=4, lengths=lengths)
    for b, length in enumerate(lengths.tolist()):
        one = tuple(x[b : b + 1, :, :length] for x in args)
        h_b, final_b = run_form("recurrent", one, tuple(s[b : b + 1] for s in state))
        close(h[b : b + 1, :, :length], h_b, torch.float64, f"h~ of sequence {b}")
        assert (h[b, :, length:] == 0).all()
        for name, a, c in zip("Cnm", final, final_b):
            close(a[b : b + 1], c, torch.float64, f"final {name} of sequence {b}")


def test_choose_form():
    assert choose_form("auto", 1, 64) == "recurrent"
    assert choose_form("auto", 64, 64) == "parallel"
    assert choose_form("auto", 65, 64) == "chunkwise"
    assert choose_form("auto", 500, 64, want_trace=True) == "recurrent"
    assert choose_form("parallel", 500, 64) == "parallel"


# --- the cell and the layer ---------------------------------------------------------------------


def test_cell_matches_its_equations_and_trace():
    torch.manual_seed(0)
    cell = mLSTMCell(5, 6, num_heads=3, dtype=torch.float64)
    x = torch.randn(4, 5, dtype=torch.float64)
    h, (C, n, m), trace = cell(x, return_trace=True)
    assert list(trace) == list(MLSTM_TRACE_NAMES)
    xw = F.linear(x, cell.weight_ih, cell.bias_ih)
    H, K, d = 6, 3, 2
    q, k, v = (xw[:, j * H : (j + 1) * H].reshape(4, K, d) for j in range(3))
    i_raw, f_raw, o_raw = xw[:, 3 * H : 3 * H + K], xw[:, 3 * H + K : 3 * H + 2 * K], xw[:, 3 * H + 2 * K :]
    h_tilde, state, _ = mlstm_step(q, k, v, i_raw, f_raw)
    close(h, torch.sigmoid(o_raw) * h_tilde.flatten(1), torch.float64, "h = o * h~")
    for name, a, b in zip("Cnm", (C, n, m), state):
        close(a, b, torch.float64, f"the cell's {name}")
    close(trace.output, torch.sigmoid(o_raw), torch.float64, "output gate")
    close(trace.memory, C.flatten(2).norm(dim=-1), torch.float64, "memory")
    assert trace.input.shape == (4, K) and trace.hidden.shape == (4, H)
    h2, state2 = cell(x, (C, n, m))  # a second step from the returned state
    assert h2.shape == (4, H) and state2[0].shape == (4, K, d, d)


def test_cell_initialization():
    cell = mLSTMCell(5, 8, num_heads=4)
    H, K = 8, 4
    torch.testing.assert_close(cell.bias_ih[3 * H + K : 3 * H + 2 * K], torch.linspace(3.0, 6.0, K))
    assert (cell.bias_ih[3 * H : 3 * H + K] == 0).all()
    bound = 1 / math.sqrt(H)
    assert cell.weight_ih.abs().max() <= bound
    assert mLSTMCell(5, 8, num_heads=1).bias_ih[3 * H + 1] == 3.0


@pytest.mark.parametrize("form", FORMS)
def test_layer_equals_cell_for_one_step(form):
    torch.manual_seed(1)
    layer = mLSTM(5, 8, num_heads=2, form=form, dtype=torch.float64)
    cell = mLSTMCell(5, 8, num_heads=2, dtype=torch.float64)
    cell.load_state_dict({"weight_ih": layer.weight_ih_l0, "bias_ih": layer.bias_ih_l0})
    x = torch.randn(1, 3, 5, dtype=torch.float64)
    out, (C, n, m) = layer(x)
    h, (C1, n1, m1) = cell(x[0])
    close(out[0], h, torch.float64, "h")
    for name, a, b in zip("Cnm", (C[0], n[0], m[0]), (C1, n1, m1)):
        close(a, b, torch.float64, name)


@pytest.mark.parametrize("form", ["auto", *FORMS])
def test_layer_equals_cell_loop(form):
    """Two layers, batch-first, an initial state: the layer against the cell run step by step."""
    torch.manual_seed(2)
    layer = mLSTM(4, 6, num_heads=3, num_layers=2, batch_first=True, form=form, chunk_size=3, dtype=torch.float64)
    cells = [mLSTMCell(4 if j == 0 else 6, 6, num_heads=3, dtype=torch.float64) for j in range(2)]
    for j, cell in enumerate(cells):
        cell.load_state_dict({"weight_ih": getattr(layer, f"weight_ih_l{j}"), "bias_ih": getattr(layer, f"bias_ih_l{j}")})
    x = torch.randn(2, 7, 4, dtype=torch.float64)
    hx = (torch.randn(2, 2, 3, 2, 2, dtype=torch.float64), torch.randn(2, 2, 3, 2, dtype=torch.float64),
          torch.randn(2, 2, 3, dtype=torch.float64))  # fmt: skip
    out, (C, n, m) = layer(x, hx)
    seq = x.transpose(0, 1)
    for j, cell in enumerate(cells):
        state, outs = (hx[0][j], hx[1][j], hx[2][j]), []
        for x_t in seq:
            h, state = cell(x_t, state)
            outs.append(h)
        seq = torch.stack(outs)
        for name, a, b in zip("Cnm", (C[j], n[j], m[j]), state):
            close(a, b, torch.float64, f"layer {j} final {name}")
    close(out, seq.transpose(0, 1), torch.float64, "output")


def test_layer_lengths_unbatched_and_trace():
    torch.manual_seed(3)
    layer = mLSTM(3, 4, num_heads=2, num_layers=2, dtype=torch.float64)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 3])
    out, (C, n, m), trace = layer(x, lengths=lengths, return_trace=True)
    assert (out[3:, 1] == 0).all()
    short, (C1, n1, m1) = layer(x[:3, 1:2])
    close(out[:3, 1:2], short, torch.float64, "output of the short sequence")
    for name, a, b in zip("Cnm", (C, n, m), (C1, n1, m1)):
        close(a[:, 1:2], b, torch.float64, f"its final {name}")
    for name in MLSTM_TRACE_NAMES:
        value = trace[name]
        assert value.shape[:3] == (2, 6, 2) and value.shape[3] in (2, 4), name
        assert (value[:, 3:, 1] == 0).all(), name
    close(trace.hidden[-1], out, torch.float64, "trace hidden = output")
    layer.form = "chunkwise"  # the trace comes from the recurrent form whatever the form
    close(layer(x, lengths=lengths)[0], out, torch.float64, "chunkwise with lengths")
    unbatched, (Cu, nu, mu) = layer(x[:, 0])
    batched, (Cb, nb, mb) = layer(x[:, :1])
    close(unbatched, batched[:, 0], torch.float64, "unbatched output")
    assert Cu.shape == (2, 2, 2, 2) and nu.shape == (2, 2, 2) and mu.shape == (2, 2)
    for name, a, b in zip("Cnm", (Cu, nu, mu), (Cb, nb, mb)):
        close(a, b[:, 0], torch.float64, f"unbatched {name}")
    _, _, trace_u = layer(x[:, 0], return_trace=True)
    assert trace_u.input.shape == (2, 6, 2) and trace_u.output.shape == (2, 6, 4)


def test_layer_dropout_and_gradients():
    torch.manual_seed(4)
    layer = mLSTM(3, 4, num_heads=2, num_layers=2, dropout=0.5)
    x = torch.randn(5, 2, 3)
    layer.eval()
    assert torch.equal(layer(x)[0], layer(x)[0])
    layer.train()
    torch.manual_seed(0)
    a = layer(x)[0]
    torch.manual_seed(1)
    b = layer(x)[0]
    assert not torch.equal(a, b)
    a.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


def test_errors():
    layer = mLSTM(3, 4, num_heads=2)
    with pytest.raises(gatedrnn.ShapeError, match="3 features"):
        layer(torch.randn(5, 2, 4))
    with pytest.raises(gatedrnn.ShapeError, match="3-D"):
        layer(torch.randn(5))
    with pytest.raises(gatedrnn.DTypeError):
        layer(torch.randn(5, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="lengths is only accepted with batched"):
        layer(torch.randn(5, 3), lengths=torch.tensor([5]))
    with pytest.raises(ValueError, match="lengths must lie in"):
        layer(torch.randn(5, 2, 3), lengths=torch.tensor([6, 1]))
    with pytest.raises(TypeError, match="tuple \\(C, n, m\\)"):
        layer(torch.randn(5, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(gatedrnn.ShapeError, match="hx\\[2\\] \\(m\\)"):
        layer(torch.randn(5, 2, 3), (torch.zeros(1, 2, 2, 2, 2), torch.zeros(1, 2, 2, 2), torch.zeros(1, 2)))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        mLSTM(3, 5, num_heads=2)
    with pytest.raises(ValueError, match="form must be one of"):
        mLSTM(3, 4, form="fast")
    with pytest.raises(ValueError, match="chunk_size"):
        mLSTM(3, 4, chunk_size=0)
    with pytest.raises(ValueError, match="forget must be one of"):
        mLSTMCell(3, 4, forget="tanh")
    with pytest.raises(ValueError, match="eps"):
        mLSTMCell(3, 4, eps=-1.0)
    cell = mLSTMCell(3, 4, num_heads=2)
    with pytest.raises(gatedrnn.ShapeError, match="hx\\[0\\] \\(C\\)"):
        cell(torch.randn(2, 3), (torch.zeros(2, 2, 2, 3), torch.zeros(2, 2, 2), torch.zeros(2, 2)))
    (q, k, v, i_raw, f_raw), _ = inputs(2, 2, 5, 3, 3)
    with pytest.raises(gatedrnn.ShapeError, match="k must have shape"):
        mlstm_sequence(q, k[..., :2], v, i_raw, f_raw)
    with pytest.raises(gatedrnn.ShapeError, match="i_raw must have shape"):
        mlstm_sequence(q, k, v, i_raw[..., :4], f_raw)
    with pytest.raises(ValueError, match="form must be one of"):
        mlstm_sequence(q, k, v, i_raw, f_raw, form="quadratic")
    with pytest.raises(ValueError, match="at least one time step"):
        mlstm_sequence(q[:, :, :0], k[:, :, :0], v[:, :, :0], i_raw[..., :0], f_raw[..., :0])


def test_docstring_examples_run():
    for module in (cell_module, layer_module):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# --- the official package -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parallel_equals_official_parallel(dtype):
    """Our parallel form (empty initial state) equals the official parallel_stabilized_simple:
    ``queries, keys, values`` = q, k, v (B, NH, S, DH); ``igate_preact, fgate_preact`` =
    i_raw, f_raw with a trailing 1; eps 1e-6 in both. Outputs and gradients."""
    backends = pytest.importorskip("xlstm.blocks.mlstm.backends", reason="the official xlstm package is not installed")
    (q, k, v, i_raw, f_raw), _ = inputs(2, 3, 37, 8, 8, dtype, seed=9, scale=3.0)
    leaves = [x.requires_grad_() for x in (q, k, v, i_raw, f_raw)]
    ours = mlstm_sequence(*leaves, form="parallel")[0]
    theirs = backends.parallel_stabilized_simple(q, k, v, i_raw[..., None], f_raw[..., None])
    close(ours, theirs, dtype, "h~")
    grad = torch.randn_like(ours)
    for j, (a, b) in enumerate(zip(torch.autograd.grad(ours, leaves, grad), torch.autograd.grad(theirs, leaves, grad))):
        close(a, b, dtype, f"gradient {j}")
    close(mlstm_sequence(q, k, v, i_raw, f_raw, form="chunkwise", chunk_size=8)[0], theirs, dtype, "chunkwise h~")


def test_step_equals_official_recurrent_step():
    """From the official zero start (m = 0) our step is its recurrent_step_stabilized_simple
    (state layout C (B, NH, DH, DH) the same; its n and m carry trailing singleton dims)."""
    backends = pytest.importorskip("xlstm.blocks.mlstm.backends", reason="the official xlstm package is not installed")
    (q, k, v, i_raw, f_raw), _ = inputs(2, 2, 6, 4, 4, seed=10, scale=2.0)
    ours = (torch.zeros(2, 2, 4, 4, dtype=torch.float64), torch.zeros(2, 2, 4, dtype=torch.float64),
            torch.zeros(2, 2, dtype=torch.float64))  # fmt: skip
    theirs = (ours[0], ours[1][..., None], ours[2][..., None, None])
    for t in range(6):
        h, ours, _ = mlstm_step(q[:, :, t], k[:, :, t], v[:, :, t], i_raw[:, :, t], f_raw[:, :, t], ours)
        h_theirs, theirs = backends.recurrent_step_stabilized_simple(
            *theirs, q[:, :, t : t + 1].clone(), k[:, :, t : t + 1].clone(), v[:, :, t : t + 1].clone(),
            i_raw[:, :, t, None, None], f_raw[:, :, t, None, None])  # fmt: skip
        close(h, h_theirs[:, :, 0], torch.float64, f"h~ at step {t}")
        close(ours[0], theirs[0], torch.float64, "C")
        close(ours[1], theirs[1][..., 0], torch.float64, "n")
        close(ours[2], theirs[2][..., 0, 0], torch.float64, "m")


@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_starts_at_once_equal_chunk_starts_in_turn(monkeypatch, with_state):
    """The chunk-start states come from one product over the chunk axis up to
    AT_ONCE_MAX_CHUNKS chunks, from a loop over chunks beyond: both equal the parallel form,
    outputs, final states and gradients, with many chunks (T = 45, chunk size 4: 12 chunks)."""
    torch.manual_seed(3)
    B, K, T, d = 2, 2, 45, 3
    q, k, v = (torch.randn(B, K, T, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    i_raw = torch.randn(B, K, T, dtype=torch.float64, requires_grad=True)
    f_raw = (2 + torch.randn(B, K, T, dtype=torch.float64)).requires_grad_()
    state = None
    if with_state:
        state = (torch.randn(B, K, d, d, dtype=torch.float64), torch.rand(B, K, d, dtype=torch.float64),
                 torch.randn(B, K, dtype=torch.float64))  # fmt: skip
    inputs = (q, k, v, i_raw, f_raw)

    def run(form):
        h, (C, n, m), _ = mlstm_sequence(*inputs, state, form=form, chunk_size=4)
        grads = torch.autograd.grad((h.sin().sum() + C.sum() + n.sum()), inputs)
        return [h, C, n, m, *grads]

    expected = run("parallel")
    for limit in (-1, 10**9):  # the loop for every chunk count; one product for every chunk count
        monkeypatch.setattr(mlstm_forms, "AT_ONCE_MAX_CHUNKS", limit)
        for got, want in zip(run("chunkwise"), expected):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
