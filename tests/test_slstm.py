"""sLSTM (xLSTM, Beck et al. 2024): the cell and the layer against the paper's equations
recomputed here in float64 without the stabilizer (outputs, states up to the common scale
exp(m), traces, gradients), the stabilizer at +-1e4, cell = layer, stacking, lengths,
unbatched, batch_first, hx, gradcheck, hypothesis-drawn configurations, errors, state_dict
names; and the fused backend against the reference once gatedrnn.fused.slstm exists."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import gatedrnn
from gatedrnn.cells.slstm import block_diagonal, powerlaw_forget_bias, sLSTMCell
from gatedrnn.xlstm.slstm import choose_backend, fused_available, run_slstm, sLSTM

NAMES = ("input", "forget", "candidate", "output", "cell", "normalizer", "stabilizer", "hidden")
TOL64 = {"atol": 1e-9, "rtol": 1e-9}


# -- the paper's equations, unstabilized, float64 ------------------------------------


def dense_r(weight_hh):
    """The block-diagonal R (4H, H) built entry by entry: gate g, head j, unit r."""
    K, _, d = weight_hh.shape
    H = K * d
    R = torch.zeros(4 * H, H, dtype=weight_hh.dtype)
    for g in range(4):
        for j in range(K):
            R[g * H + j * d : g * H + (j + 1) * d, j * d : (j + 1) * d] = weight_hh[j, g * d : (g + 1) * d]
    return R


def paper_layer(weights, x, state, forget):
    """One layer of the paper's sLSTM (eqs. 8-14) with i = exp(i~) and no stabilizer.

    x (T, B, I) float64; state (h, C, N) in the unstabilized scale, each (B, H). Returns the
    per-step values (i, f, z, o, C, N, h, i~, f~), each (T, B, H)."""
    W, Rh, b_ih, b_hh = weights
    R = dense_r(Rh)
    h, C, N = state
    steps = []
    for x_t in x:
        a = x_t @ W.T + h @ R.T  # (B, 4H)
        if b_ih is not None:
            a = a + b_ih + b_hh
        i_raw, f_raw, z_raw, o_raw = a.chunk(4, dim=1)
        i = torch.exp(i_raw)  # eq. 12
        f = torch.sigmoid(f_raw) if forget == "sigmoid" else torch.exp(f_raw)  # eq. 13
        z, o = torch.tanh(z_raw), torch.sigmoid(o_raw)  # eqs. 11, 14
        C = f * C + i * z  # eq. 8
        N = f * N + i  # eq. 9
        h = o * C / N  # eq. 10
        steps.append((i, f, z, o, C, N, h, i_raw, f_raw))
    return [torch.stack(v) for v in zip(*steps)]


def paper_stack(layer, x, hx=None, lengths=None):
    """The whole stack from the equations, one sequence at a time up to its length.

    x (T, B, I) float64; hx the layer's stabilized (h, c, n, m), each (L, B, H), or None.
    Returns outputs (T, B, H) (zero past each length), the final (h, C, N) per layer in the
    unstabilized scale, each (L, B, H), and per layer the values of :func:`paper_layer`
    padded with zeros to (T, B, H)."""
    T, B, _ = x.shape
    L, H = layer.num_layers, layer.hidden_size
    lengths = [T] * B if lengths is None else lengths.tolist()
    out = torch.zeros(T, B, H, dtype=torch.float64)
    finals = torch.zeros(3, L, B, H, dtype=torch.float64)
    values = torch.zeros(L, 9, T, B, H, dtype=torch.float64)
    weights = [tuple(None if w is None else w.detach().double() for w in layer.weights(k)) for k in range(L)]
    for b in range(B):
        seq = x[: lengths[b], b : b + 1]  # (T_b, 1, I)
        for k in range(L):
            if hx is None:
                state = tuple(torch.zeros(1, H, dtype=torch.float64) for _ in range(3))
            else:
                h0, c0, n0, m0 = (s[k, b : b + 1].double() for s in hx)
                state = (h0, c0 * m0.exp(), n0 * m0.exp())  # the paper's C, N: the scale put back
            v = paper_layer(weights[k], seq, state, layer.forget)
            values[k, :, : lengths[b], b] = torch.stack(v)[:, :, 0]
            finals[:, k, b] = torch.stack([v[6][-1, 0], v[4][-1, 0], v[5][-1, 0]])
            seq = v[6]  # h: the next layer's input
        out[: lengths[b], b] = seq[:, 0]
    return out, finals, values


def check_against_paper(layer, x, hx=None, lengths=None, tol=TOL64):
    """The layer's output, final states and trace equal the paper's equations (float64 x)."""
    out, (h, c, n, m), trace = layer(x, hx, lengths=lengths, return_trace=True)
    want_out, (want_h, want_C, want_N), v = paper_stack(layer, x.double(), hx, lengths)
    close = lambda a, b, what: torch.testing.assert_close(a.double(), b, **tol, msg=lambda s: f"{what}: {s}")
    close(out, want_out, "output")
    close(h, want_h, "h_n")
    close(c * m.exp(), want_C, "c_n * exp(m_n)")  # the stabilized states times their common scale
    close(n * m.exp(), want_N, "n_n * exp(m_n)")
    close(c / n, want_C / want_N, "c_n / n_n")
    i, _, z, o, C, N, hid, i_raw, f_raw = v.unbind(1)  # each (L, T, B, H)
    M = trace.stabilizer.double()
    valid = (torch.arange(x.shape[0])[:, None] < (lengths if lengths is not None else x.shape[0]))[
        None, :, :, None
    ]
    close(trace.candidate, z, "trace candidate")
    close(trace.output, o, "trace output")
    close(trace.hidden, hid, "trace hidden")
    close(trace.cell * M.exp(), C, "trace cell * exp(m)")
    close(trace.normalizer * M.exp(), N, "trace normalizer * exp(m)")
    close(trace.input * M.exp(), i, "trace input * exp(m)")  # i' = exp(i~ - m_t)
    # eq. 15, m_t = max(log f_t + m_{t-1}, i~_t), from the empty state m_1 = i~_1 (or from m_0 of hx)
    log_f = F.logsigmoid(f_raw) if layer.forget == "sigmoid" else f_raw
    m_prev = torch.cat([torch.full_like(M[:, :1], float("-inf")) if hx is None else hx[3][:, None].double(),
                        M[:, :-1]], dim=1)  # fmt: skip
    want_m = torch.where(valid, torch.maximum(log_f + m_prev, i_raw), 0.0)
    close(M, want_m, "trace stabilizer (eq. 15)")
    # eq. 17, f'_t = f_t exp(m_{t-1} - m_t): zero into the empty state
    want_f = torch.where(valid, (log_f + m_prev - M).exp(), 0.0)
    close(trace.forget, want_f, "trace forget (eq. 17)")
    assert (trace.input <= 1).all() and (trace.forget <= 1).all()
    return out, (h, c, n, m), trace


def layer64(**config):
    config = {"input_size": 3, "hidden_size": 6, "num_heads": 2} | config
    return sLSTM(**config, dtype=torch.float64)


# -- the equations ----------------------------------------------------------------------


@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_layer_is_the_papers_equations(forget, num_layers):
    torch.manual_seed(0)
    layer = layer64(num_layers=num_layers, forget=forget, backend="reference")
    check_against_paper(layer, torch.randn(7, 4, 3, dtype=torch.float64))


@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_cell_is_the_papers_equations(forget):
    torch.manual_seed(1)
    cell = sLSTMCell(3, 6, num_heads=3, forget=forget, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    zeros = [torch.zeros(2, 6, dtype=torch.float64)] * 3
    i, _, z, o, C, N, h_want, _, _ = paper_layer([w.detach() for w in weights], x, zeros, forget)
    state = None
    for t, x_t in enumerate(x):
        h, c, n, m, trace = cell(x_t, state, return_trace=True)
        state = (h, c, n, m)
        torch.testing.assert_close(h, h_want[t], **TOL64)
        torch.testing.assert_close(c * m.exp(), C[t], **TOL64)
        torch.testing.assert_close(n * m.exp(), N[t], **TOL64)
        torch.testing.assert_close(trace.input * m.exp(), i[t], **TOL64)
        torch.testing.assert_close(trace.candidate, z[t], **TOL64)
        torch.testing.assert_close(trace.output, o[t], **TOL64)
        assert list(trace) == list(NAMES)
        for name, value in zip(NAMES[4:], (c, n, m, h)):
            assert torch.equal(trace[name], value)


def test_block_diagonal_is_the_dense_r():
    weight_hh = torch.randn(3, 8, 2, dtype=torch.float64)
    assert torch.equal(block_diagonal(weight_hh), dense_r(weight_hh))


def test_float32_layer_equals_float64_equations():
    torch.manual_seed(2)
    layer = sLSTM(4, 8, num_heads=2, num_layers=2, backend="reference")
    check_against_paper(layer, torch.randn(9, 3, 4), tol={"atol": 2e-5, "rtol": 2e-4})


# -- the stabilizer ---------------------------------------------------------------------


@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_stabilizer_keeps_huge_preactivations_finite(forget):
    """+-1e4 on i~ and f~: finite states, and equal to the unstabilized formula after a
    shift of i~ by the constant (h depends on i~ up to a constant shift only) or, where the
    formula itself is finite, to it directly."""
    torch.manual_seed(3)
    T, B, H = 6, 2, 6
    noise = torch.randn(T, B, 4 * H, dtype=torch.float64)
    shift = torch.zeros(4 * H, dtype=torch.float64)
    shift[0:3] = 1e4  # i~ of units 0-2: +1e4 (exp overflows)
    shift[3:6] = -1e4  # i~ of units 3-5: -1e4 (exp underflows: n = 0, h = 0/0 unstabilized)
    f_big = torch.tensor([1e4, -1e4, 0.0, 1e4, -1e4, 0.0], dtype=torch.float64)
    shift[H : 2 * H] = f_big  # f~: +-1e4
    xw = noise + shift
    state = tuple(torch.zeros(B, H, dtype=torch.float64) for _ in range(4))
    weight_hh = torch.zeros(1, 4 * H, H, dtype=torch.float64)  # units independent: comparable one by one
    out, (h, c, n, m), acts = run_slstm(
        xw, state, weight_hh, forget=forget, backend="reference", want_trace=True
    )
    assert all(torch.isfinite(v).all() for v in (out, h, c, n, m, *acts))
    # the unstabilized formula on i~ minus its constant shift: finite, and the same h
    noshift = xw.clone()
    noshift[..., :H] -= shift[:H]
    i, f_raw, z, o = noshift.chunk(4, dim=-1)
    f = torch.sigmoid(f_raw) if forget == "sigmoid" else torch.exp(f_raw)
    f = torch.where(torch.isinf(f), 1.0, f)  # exp(+1e4): only the ratio of f to the shifted i matters below
    C = N = torch.zeros(B, H, dtype=torch.float64)
    rows = []
    for t in range(T):
        C = f[t] * C + torch.exp(i[t]) * torch.tanh(z[t])
        N = f[t] * N + torch.exp(i[t])
        rows.append(torch.sigmoid(o[t]) * C / N)
    want = torch.stack(rows)
    # units whose f is finite in the unstabilized formula: equal (+1e4 with exp forget is not)
    finite_f = torch.isfinite(torch.exp(f_big)) if forget == "exp" else torch.ones(H, dtype=torch.bool)
    torch.testing.assert_close(out[..., finite_f], want[..., finite_f], atol=1e-9, rtol=1e-9)
    # with exp forget and f~ = +1e4, f' = 1 and i' = 0 after the first step: h stays at its first value
    if forget == "exp":
        big = ~finite_f
        torch.testing.assert_close(out[1:, :, big] / torch.sigmoid(o[1:, :, big]),
                                   (out[:1, :, big] / torch.sigmoid(o[:1, :, big])).expand(T - 1, B, -1))  # fmt: skip


def test_huge_inputs_through_the_layer_give_finite_outputs_and_gradients():
    torch.manual_seed(4)
    layer = sLSTM(3, 8, num_heads=2, num_layers=2, backend="reference", dtype=torch.float64)
    x = (torch.randint(0, 2, (6, 2, 3)) * 2 - 1).double().mul(1e4).requires_grad_()
    out, state = layer(x)
    assert torch.isfinite(out).all() and all(torch.isfinite(s).all() for s in state)
    (out.sum() + state[0].sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


# -- the cell, the layer, stacking ----------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_cell_equals_layer_for_one_step(bias):
    torch.manual_seed(5)
    layer = layer64(bias=bias, backend="reference")
    cell = sLSTMCell(3, 6, num_heads=2, bias=bias, dtype=torch.float64)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    x = torch.randn(1, 4, 3, dtype=torch.float64)
    hx = (torch.randn(1, 4, 6), torch.randn(1, 4, 6), torch.rand(1, 4, 6) + 0.5, torch.randn(1, 4, 6))
    hx = tuple(s.double() for s in hx)
    out, state, trace = layer(x, hx, return_trace=True)
    *cell_state, cell_trace = cell(x[0], tuple(s[0] for s in hx), return_trace=True)
    assert torch.equal(out[0], cell_state[0])
    for a, b in zip(state, cell_state):
        assert torch.equal(a[0], b)
    for name in NAMES:
        assert torch.equal(trace[name][0, 0], cell_trace[name])


def test_unbatched_cell_equals_batched_row():
    torch.manual_seed(6)
    cell = sLSTMCell(3, 4, num_heads=2)
    x = torch.randn(3)
    hx = (torch.randn(4), torch.randn(4), torch.rand(4) + 0.1, torch.randn(4))
    *one, trace = cell(x, hx, return_trace=True)
    *batched, _ = cell(x[None], tuple(s[None] for s in hx), return_trace=True)
    for a, b in zip(one, batched):
        torch.testing.assert_close(a, b[0])
    assert trace.forget.shape == (4,)


def test_two_layers_are_two_layers_composed():
    torch.manual_seed(7)
    stack = layer64(num_layers=2, backend="reference")
    first, second = layer64(backend="reference"), layer64(input_size=6, backend="reference")
    sd = stack.state_dict()
    first.load_state_dict({k.replace("_l0", "_l0"): v for k, v in sd.items() if k.endswith("_l0")})
    second.load_state_dict({k.replace("_l1", "_l0"): v for k, v in sd.items() if k.endswith("_l1")})
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    hx = tuple(torch.randn(2, 3, 6, dtype=torch.float64) for _ in range(4))
    hx = (hx[0], hx[1], hx[2].abs() + 0.1, hx[3])
    out, state, trace = stack(x, hx, return_trace=True)
    mid, s1, t1 = first(x, tuple(s[:1] for s in hx), return_trace=True)
    out2, s2, t2 = second(mid, tuple(s[1:] for s in hx), return_trace=True)
    torch.testing.assert_close(out, out2, **TOL64)
    for a, b, c in zip(state, s1, s2):
        torch.testing.assert_close(a, torch.cat([b, c]), **TOL64)
    for name in NAMES:
        torch.testing.assert_close(trace[name], torch.cat([t1[name], t2[name]]), **TOL64)


def test_lengths_zero_outputs_and_final_states_at_each_length():
    torch.manual_seed(8)
    layer = layer64(num_layers=2, backend="reference")
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    out, state, trace = layer(x, lengths=lengths, return_trace=True)
    for b, length in enumerate(lengths.tolist()):
        alone, alone_state, alone_trace = layer(x[:length, b : b + 1], return_trace=True)
        torch.testing.assert_close(out[:length, b : b + 1], alone, **TOL64)
        assert (out[length:, b] == 0).all()
        for a, s in zip(state, alone_state):
            torch.testing.assert_close(a[:, b : b + 1], s, **TOL64)
        for name in NAMES:
            torch.testing.assert_close(trace[name][:, :length, b : b + 1], alone_trace[name], **TOL64)
            assert (trace[name][:, length:, b] == 0).all()
    check_against_paper(layer, x, lengths=lengths)


def test_unbatched_equals_batched_and_batch_first():
    torch.manual_seed(9)
    layer = layer64(num_layers=2, backend="reference")
    x = torch.randn(5, 3, dtype=torch.float64)  # (T, I)
    hx = tuple(torch.randn(2, 6, dtype=torch.float64).abs() for _ in range(4))
    out, state, trace = layer(x, hx, return_trace=True)
    bout, bstate, btrace = layer(x[:, None], tuple(s[:, None] for s in hx), return_trace=True)
    assert out.shape == (5, 6) and state[0].shape == (2, 6) and trace.cell.shape == (2, 5, 6)
    torch.testing.assert_close(out, bout[:, 0])
    for a, b in zip(state, bstate):
        torch.testing.assert_close(a, b[:, 0])
    for name in NAMES:
        torch.testing.assert_close(trace[name], btrace[name][:, :, 0])
    bf = copy.deepcopy(layer)
    bf.batch_first = True
    xb = torch.randn(4, 5, 3, dtype=torch.float64)  # (B, T, I)
    fout, fstate, ftrace = bf(xb, return_trace=True)
    tout, tstate, ttrace = layer(xb.transpose(0, 1), return_trace=True)
    torch.testing.assert_close(fout, tout.transpose(0, 1))
    for a, b in zip(fstate, tstate):
        torch.testing.assert_close(a, b)
    for name in NAMES:
        torch.testing.assert_close(ftrace[name], ttrace[name].transpose(1, 2))


def test_hx_given_is_the_equations_from_that_state():
    torch.manual_seed(10)
    layer = layer64(num_layers=2, backend="reference")
    hx = (torch.randn(2, 3, 6) * 0.5, torch.randn(2, 3, 6), torch.rand(2, 3, 6) + 0.5, torch.randn(2, 3, 6))
    check_against_paper(layer, torch.randn(4, 3, 3, dtype=torch.float64), tuple(s.double() for s in hx))


def test_packed_input_equals_lengths():
    torch.manual_seed(11)
    layer = layer64(backend="reference")
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([3, 5, 2])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    pout, pstate = layer(packed)
    out, state = layer(x, lengths=lengths)
    torch.testing.assert_close(pad_packed_sequence(pout)[0], out[:5])
    for a, b in zip(pstate, state):
        torch.testing.assert_close(a, b)


def test_dropout_between_layers_in_training_only():
    torch.manual_seed(12)
    layer = layer64(num_layers=2, dropout=0.5, backend="reference")
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    layer.eval()
    a, b = layer(x)[0], layer(x)[0]
    assert torch.equal(a, b)
    layer.train()
    torch.manual_seed(0)
    c = layer(x)[0]
    torch.manual_seed(1)
    d = layer(x)[0]
    assert not torch.equal(c, d)
    with pytest.warns(UserWarning, match="dropout option adds dropout"):
        sLSTM(3, 4, num_heads=2, dropout=0.2)


# -- gradients ---------------------------------------------------------------------------


def test_gradients_equal_the_equations_and_float32_the_float64():
    torch.manual_seed(13)
    layer = layer64(num_layers=2, backend="reference")
    x = torch.randn(6, 3, 3, dtype=torch.float64, requires_grad=True)
    g_out, g_h = torch.randn(6, 3, 6, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
    out, (h, *_) = layer(x)
    grads = torch.autograd.grad((out * g_out).sum() + (h * g_h).sum(), [x, *layer.parameters()])
    # the unstabilized equations, differentiated by autograd: the same gradients
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    xx = x.detach().clone().requires_grad_()
    H, seq, hs = 6, xx, []
    for k in range(2):
        W, R, b_ih, b_hh = params[4 * k : 4 * k + 4]
        v = paper_layer((W, R, b_ih, b_hh), seq, [torch.zeros(3, H, dtype=torch.float64)] * 3, "sigmoid")
        seq = v[6]
        hs.append(seq[-1])
    want = torch.autograd.grad((seq * g_out).sum() + (torch.stack(hs) * g_h).sum(), [xx, *params])
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, b, **TOL64)
    # float32: the same to float32's precision
    layer32 = copy.deepcopy(layer).float()
    x32 = x.detach().float().requires_grad_()
    out32, (h32, *_) = layer32(x32)
    grads32 = torch.autograd.grad((out32 * g_out.float()).sum() + (h32 * g_h.float()).sum(),
                                  [x32, *layer32.parameters()])  # fmt: skip
    for a, b in zip(grads32, grads):
        torch.testing.assert_close(a.double(), b, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
@pytest.mark.parametrize("with_hx", [False, True])
def test_gradcheck_reference(forget, with_hx):
    torch.manual_seed(14)
    layer = sLSTM(2, 4, num_heads=2, forget=forget, backend="reference", dtype=torch.float64)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    hx = (torch.randn(1, 2, 4), torch.randn(1, 2, 4), torch.rand(1, 2, 4) + 0.5, torch.randn(1, 2, 4))
    hx = [s.double().requires_grad_() for s in hx] if with_hx else []
    names = [name for name, _ in layer.named_parameters()]

    def f(x, *tensors):
        params, states = tensors[: len(names)], tensors[len(names) :]
        out, state = torch.func.functional_call(layer, dict(zip(names, params)), (x, tuple(states) or None))
        return (out, *state)

    assert torch.autograd.gradcheck(f, (x, *[p.detach().requires_grad_() for p in layer.parameters()], *hx))


# -- hypothesis over configurations -------------------------------------------------------


@st.composite
def configs(draw):
    heads, d = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    T, B = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    lengths = draw(st.one_of(st.none(), st.lists(st.integers(1, T), min_size=B, max_size=B)))
    return {
        "num_heads": heads, "hidden_size": heads * d, "num_layers": draw(st.integers(1, 2)),
        "forget": draw(st.sampled_from(["sigmoid", "exp"])), "bias": draw(st.booleans()),
        "T": T, "B": B, "lengths": None if lengths is None else torch.tensor(lengths),
        "with_hx": draw(st.booleans()), "seed": draw(st.integers(0, 2**16)),
    }  # fmt: skip


def make_case(c, dtype=torch.float64):
    torch.manual_seed(c["seed"])
    layer = sLSTM(3, c["hidden_size"], num_heads=c["num_heads"], num_layers=c["num_layers"], bias=c["bias"],
                  forget=c["forget"], backend="reference", dtype=dtype)  # fmt: skip
    x = torch.randn(c["T"], c["B"], 3, dtype=dtype)
    hx = None
    if c["with_hx"]:
        shape = (c["num_layers"], c["B"], c["hidden_size"])
        hx = (torch.randn(shape) * 0.5, torch.randn(shape), torch.rand(shape) + 0.2, torch.randn(shape))
        hx = tuple(s.to(dtype) for s in hx)
    return layer, x, hx


@settings(max_examples=25, deadline=None)
@given(configs())
def test_hypothesis_layer_is_the_papers_equations(c):
    layer, x, hx = make_case(c)
    check_against_paper(layer, x, hx, c["lengths"])


# -- backends --------------------------------------------------------------------------------


def test_auto_backend_rule():
    x = torch.randn(2, 2, 8)
    assert choose_backend("reference", [x]) == "reference"
    assert choose_backend("auto", [x]) == ("fused" if fused_available() else "reference")
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x, torch.ones_like(x))
        assert choose_backend("fused", [dual]) == "reference"  # forward-mode AD: the reference only


def test_backend_fused_without_the_native_module_says_so():
    if fused_available():
        pytest.skip("gatedrnn.fused.slstm exists: the fused backend runs (tested below)")
    layer = sLSTM(3, 4, num_heads=2, backend="fused")
    with pytest.raises(ValueError, match="backend='fused' needs gatedrnn.fused.slstm"):
        layer(torch.randn(2, 1, 3))


def needs_fused():
    if not fused_available():
        pytest.skip("gatedrnn.fused.slstm (the native sLSTM loop) is not in this checkout yet")


def run_both(layer, x, hx, lengths):
    """Forward and backward on the reference and the fused backend with one shared random
    gradient: outputs, states, traces and every gradient of each."""
    results = []
    g = torch.Generator().manual_seed(0)
    for backend in ("reference", "fused"):
        twin = copy.deepcopy(layer)
        twin.backend = backend
        xx = x.clone().requires_grad_()
        hh = None if hx is None else tuple(s.clone().requires_grad_() for s in hx)
        out, state, trace = twin(xx, hh, lengths=lengths, return_trace=True)
        tensors = (out, *state, *trace.values())
        g.manual_seed(0)
        grads_out = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in tensors]
        inputs = [xx, *(hh or ()), *twin.parameters()]
        grads = torch.autograd.grad(sum((t * gt).sum() for t, gt in zip(tensors, grads_out)), inputs)
        results.append((tensors, grads))
    return results


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=15, deadline=None)
@given(c=configs())
def test_hypothesis_fused_equals_reference(dtype, c):
    needs_fused()
    layer, x, hx = make_case(c, dtype)
    (ref, ref_grads), (fus, fus_grads) = run_both(layer, x, hx, c["lengths"])
    tol = {"atol": 1e-10, "rtol": 1e-8} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-4}
    what = ["output", "h_n", "c_n", "n_n", "m_n", *(f"trace {n}" for n in NAMES)]
    for a, b, name in zip(fus, ref, what):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"{name}: {m}")
    for a, b in zip(fus_grads, ref_grads):
        torch.testing.assert_close(a, b, **tol)


def test_auto_runs_the_fused_backend_where_it_exists():
    needs_fused()
    torch.manual_seed(15)
    layer = layer64(num_layers=2)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    ref = copy.deepcopy(layer)
    ref.backend = "reference"
    torch.testing.assert_close(layer(x)[0], ref(x)[0], **TOL64)
    check_against_paper(layer, x)


def test_torch_func_runs_the_reference_whatever_the_backend():
    torch.manual_seed(17)
    layer = layer64(backend="auto")
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    jac = torch.func.jacrev(lambda x: layer(x)[0])(x)  # (T, B, H, T, B, I)
    xx = x.clone().requires_grad_()
    out = layer(xx)[0]
    g = torch.randn_like(out)
    (want,) = torch.autograd.grad(out, xx, g)
    torch.testing.assert_close(torch.einsum("tbhsci,tbh->sci", jac, g), want, **TOL64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_equals_cpu():
    torch.manual_seed(18)
    layer = layer64(num_layers=2)
    x, lengths = torch.randn(5, 3, 3, dtype=torch.float64), torch.tensor([5, 2, 3])
    out, state, trace = layer(x, lengths=lengths, return_trace=True)
    gpu = copy.deepcopy(layer).cuda()
    g_out, g_state, g_trace = gpu(x.cuda(), lengths=lengths, return_trace=True)
    torch.testing.assert_close(g_out.cpu(), out, **TOL64)
    for a, b in zip(g_state, state):
        torch.testing.assert_close(a.cpu(), b, **TOL64)
    for name in NAMES:
        torch.testing.assert_close(g_trace[name].cpu(), trace[name], **TOL64)


# -- errors, names, pickling -------------------------------------------------------------------


def test_errors_name_the_argument():
    with pytest.raises(
        ValueError, match="hidden_size must be divisible by num_heads.*hidden_size=10.*num_heads=4"
    ):
        sLSTM(3, 10)
    with pytest.raises(ValueError, match="hidden_size must be divisible by num_heads"):
        sLSTMCell(3, 10, num_heads=3)
    with pytest.raises(ValueError, match="forget must be one of"):
        sLSTM(3, 8, forget="tanh")
    with pytest.raises(ValueError, match="forget must be one of"):
        sLSTMCell(3, 8, forget="relu")
    with pytest.raises(ValueError, match="backend must be one of"):
        sLSTM(3, 8, backend="cuda")
    with pytest.raises(TypeError, match="num_heads must be a positive int"):
        sLSTM(3, 8, num_heads=2.0)
    with pytest.raises(ValueError, match="num_heads must be a positive int"):
        sLSTMCell(3, 8, num_heads=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        run_slstm(torch.zeros(1, 1, 8), (torch.zeros(1, 2),) * 4, torch.zeros(1, 8, 2), backend="fast")
    layer = sLSTM(3, 8, num_heads=2, num_layers=2)
    with pytest.raises(gatedrnn.ShapeError, match="input must have 3 features"):
        layer(torch.randn(4, 2, 5))
    with pytest.raises(gatedrnn.ShapeError, match="input must be 3-D"):
        layer(torch.randn(4))
    with pytest.raises(gatedrnn.ShapeError, match="at least one time step"):
        layer(torch.randn(0, 2, 3))
    with pytest.raises(gatedrnn.DTypeError, match="input"):
        layer(torch.randn(4, 2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0, n_0, m_0\)"):
        layer(torch.randn(4, 2, 3), (torch.zeros(2, 2, 8), torch.zeros(2, 2, 8)))
    with pytest.raises(gatedrnn.ShapeError, match=r"hx\[2\] \(n_0\) must have shape \(2, 2, 8\)"):
        layer(
            torch.randn(4, 2, 3), (torch.zeros(2, 2, 8),) * 2 + (torch.zeros(1, 2, 8), torch.zeros(2, 2, 8))
        )
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=4\]"):
        layer(torch.randn(4, 2, 3), lengths=torch.tensor([5, 1]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=4\]"):
        layer(torch.randn(4, 2, 3), lengths=torch.tensor([0, 1]))
    with pytest.raises(gatedrnn.ShapeError, match=r"lengths must have shape \(2,\)"):
        layer(torch.randn(4, 2, 3), lengths=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="lengths is only accepted with batched input"):
        layer(torch.randn(4, 3), lengths=torch.tensor([2]))
    cell = sLSTMCell(3, 8, num_heads=2)
    with pytest.raises(gatedrnn.ShapeError, match="input must have 3 features"):
        cell(torch.randn(2, 4))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h, c, n, m\)"):
        cell(torch.randn(2, 3), torch.zeros(2, 8))
    with pytest.raises(gatedrnn.ShapeError, match=r"hx\[3\] \(m\) must have shape \(2, 8\)"):
        cell(torch.randn(2, 3), (torch.zeros(2, 8),) * 3 + (torch.zeros(8),))


def test_state_dict_names_shapes_and_pickling():
    layer = sLSTM(3, 8, num_heads=2, num_layers=2)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {
        "weight_ih_l0": (32, 3), "weight_hh_l0": (2, 16, 4), "bias_ih_l0": (32,), "bias_hh_l0": (32,),
        "weight_ih_l1": (32, 8), "weight_hh_l1": (2, 16, 4), "bias_ih_l1": (32,), "bias_hh_l1": (32,),
    }  # fmt: skip
    assert list(shapes)[:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert list(sLSTM(3, 8, num_heads=2, bias=False).state_dict()) == ["weight_ih_l0", "weight_hh_l0"]
    cell = sLSTMCell(3, 8, num_heads=2)
    assert list(cell.state_dict()) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    x = torch.randn(4, 2, 3)
    again = pickle.loads(pickle.dumps(layer))
    assert torch.equal(again(x)[0], layer(x)[0])
    assert "num_heads=2" in repr(layer) and "num_layers=2" in repr(layer)


@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_initialization(forget):
    torch.manual_seed(16)
    layer = sLSTM(3, 12, num_heads=3, num_layers=2, forget=forget)
    H, d = 12, 4
    profile = powerlaw_forget_bias(d, forget=forget)
    for k in range(2):
        w_ih, w_hh, b_ih, b_hh = layer.weights(k)
        assert torch.equal(b_ih[H : 2 * H], profile.repeat(3))
        assert (b_hh[H : 2 * H] == 0).all()
        for p in (w_ih, w_hh, b_ih[:H], b_hh[:H], b_ih[2 * H :]):
            assert p.abs().max() <= 1 / H**0.5 and p.std() > 0
    # the profile: 5 (long memory) to -7 (short), decreasing; exp forget: the same factors f_t
    sig = powerlaw_forget_bias(6)
    assert sig[0] == 5 and torch.isclose(sig[-1], torch.tensor(-7.0)) and (sig.diff() < 0).all()
    torch.testing.assert_close(powerlaw_forget_bias(6, forget="exp").exp(), torch.sigmoid(sig))
    assert powerlaw_forget_bias(1).tolist() == [5.0]
    # deeper blocks keep more long-memory units (the official package's block dependence)
    assert (powerlaw_forget_bias(8, position=1.0)[1:-1] > sig.new_tensor(powerlaw_forget_bias(8)[1:-1])).all()
