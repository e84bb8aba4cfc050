"""The native parts of the mLSTM's chunkwise form (``csrc/mlstm_chunk.cpp``: each chunk's
writing and its inside): their equations recomputed, their hand-written backward against
finite differences (float64 ``gradcheck``), and the whole chunkwise form with them against the
batched Python they replace (outputs, final states, every gradient) over hypothesis-drawn
configurations; their products straight to BLAS, through ``at::mm``, and the chunk's own
float32 products (``tile_gemm.h``) against BLAS; where they apply and where not; their errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gatedrnn import fused
from gatedrnn.fused import mlstm_chunk
from gatedrnn.xlstm.mlstm import mlstm_sequence

pytestmark = pytest.mark.skipif(not mlstm_chunk.native_available(), reason="native kernels not built on this machine")


@pytest.fixture(params=["blas", "at::mm"])
def products(request):
    """The kernel's products straight to BLAS, then through at::mm (a torch without BLAS symbols)."""
    fused.kernels().use_direct_blas(request.param == "blas")
    yield request.param
    fused.kernels().use_direct_blas(True)


def chunk_inputs(N, L, dk, dv, dtype, seed):
    """Random inputs of inside_chunks: a with a column that writes nothing (-inf), neg_M so that
    a_j + neg_M_t <= 0 for j <= t, as the chunkwise form makes them, and a floor of the read-out
    above |n^T q| in some rows and below it in others."""
    g = torch.Generator().manual_seed(seed)
    randn = lambda *s, d=dtype: torch.randn(*s, generator=g, dtype=d)
    q, k, v = randn(N, L, dk), randn(N, L, dk), randn(N, L, dv)
    a = randn(N, L, d=torch.float64)
    a[0, L // 2] = float("-inf")
    neg_M = -(a.cummax(-1).values + randn(N, L, d=torch.float64).abs())
    w0, C0, n0, floor = randn(N, L).abs(), randn(N, dk, dv), randn(N, dk), 2 * randn(N, L).abs()
    return q, k, v, a, neg_M, w0, C0, n0, floor


EPS = 1e-3


def test_equals_its_equations(products):
    """The outputs recomputed from the module's equations in float64, for float32 inputs."""
    q, k, v, a, neg_M, w0, C0, n0, floor = chunk_inputs(3, 7, 5, 4, torch.float32, seed=1)
    q64, k64, v64, w64, C64, n64, floor64 = (x.double() for x in (q, k, v, w0, C0, n0, floor))
    D = torch.exp(a[:, None, :] + neg_M[:, :, None]).tril()  # [t, j], causal
    S = (q64 @ k64.transpose(1, 2)) * D
    numerator = S @ v64 + w64[..., None] * (q64 @ C64)
    qn = S.sum(-1) + w64 * (q64 @ n64[..., None])[..., 0]
    h = numerator / (torch.maximum(qn.abs(), floor64) + EPS)[..., None]
    assert (qn.abs() > floor64).any() and (qn.abs() < floor64).any()  # both sides of the maximum
    got = mlstm_chunk.inside_chunks(q, k, v, a, neg_M, w0, C0, n0, floor, EPS)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), h, rtol=1e-5, atol=1e-5)


def test_backward_gradcheck(products):
    """The hand-written backward against finite differences, every input (float64)."""
    args = [x.requires_grad_() for x in chunk_inputs(2, 5, 3, 2, torch.float64, seed=2)]
    assert torch.autograd.gradcheck(lambda *x: mlstm_chunk.inside_chunks(*x, EPS), args)


def test_a_tie_in_the_maximum_splits_its_gradient_as_torch_does():
    """Where |n^T q| equals the floor, half the gradient to each side (torch.maximum's rule): the
    kernel's gradients against autograd through the equations, float64."""
    q, k, v, a, neg_M, w0, C0, n0, floor = chunk_inputs(2, 5, 3, 2, torch.float64, seed=4)
    # exact ties whatever the order of the sums: zero keys (the chunk's own steps add exact zeros),
    # integer queries and starting state, w0 a power of two
    q, n0, k, w0 = 1 + q.abs().round(), 1 + n0.abs().round(), torch.zeros_like(k), torch.full_like(w0, 0.5)

    def equations(q, k, v, a, neg_M, w0, C0, n0, floor):
        S = (q @ k.transpose(1, 2)) * torch.exp(a[:, None, :] + neg_M[:, :, None]).tril()
        qn = S.sum(-1) + w0 * (q @ n0[..., None])[..., 0]
        return (S @ v + w0[..., None] * (q @ C0)) / (torch.maximum(qn.abs(), floor) + EPS)[..., None], qn

    with torch.no_grad():
        qn = equations(q, k, v, a, neg_M, w0, C0, n0, floor)[1]
        floor[:, ::2] = qn.abs()[:, ::2]  # ties in every other row
    assert (qn[:, ::2] != 0).all()
    weight = torch.randn(2, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    grads = []
    for fn in (lambda *x: mlstm_chunk.inside_chunks(*x, EPS), lambda *x: equations(*x)[0]):
        leaves = [x.detach().clone().requires_grad_() for x in (q, k, v, a, neg_M, w0, C0, n0, floor)]
        grads.append(torch.autograd.grad((fn(*leaves) * weight).sum(), leaves))
    for j, (ours, reference) in enumerate(zip(*grads)):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10, msg=lambda m: f"gradient {j}: {m}")


@pytest.mark.parametrize("N, L, dk, dv", [(3, 64, 64, 64), (2, 128, 64, 192), (2, 67, 64, 128)])
def test_tile_products_equal_blas(N, L, dk, dv):
    """float32 at sizes whose products take tile_gemm (64 columns at a time, rows in sixes,
    fours and ones): outputs and every gradient of both native parts equal the same kernels
    with every product through BLAS, and the float64 equations."""
    args = chunk_inputs(N, L, dk, dv, torch.float32, seed=9)
    g = torch.Generator().manual_seed(10)
    weight_h, weight_C, weight_n = torch.randn(N, L, dv, generator=g), torch.randn(N, dk, dv, generator=g), \
        torch.randn(N, dk, generator=g)  # fmt: skip
    results = []
    for tile in (True, False):
        fused.kernels().use_tile_gemm(tile)
        try:
            leaves = [x.detach().clone().requires_grad_() for x in args]
            h = mlstm_chunk.inside_chunks(*leaves, EPS)
            written_C, written_n = mlstm_chunk.chunk_writing(leaves[1], leaves[2], leaves[5])
            loss = (h * weight_h).sum() + (written_C * weight_C).sum() + (written_n * weight_n).sum()
            results.append((h, written_C, written_n, *torch.autograd.grad(loss, leaves)))
        finally:
            fused.kernels().use_tile_gemm(True)
    for j, (tile, blas) in enumerate(zip(*results)):
        torch.testing.assert_close(tile, blas, rtol=1e-4, atol=1e-4, msg=lambda m: f"output or gradient {j}: {m}")
    q, k, v, a, neg_M, w0, C0, n0, floor = (x.double() for x in args)
    S = (q @ k.transpose(1, 2)) * torch.exp(a[:, None, :] + neg_M[:, :, None]).tril()
    qn = S.sum(-1) + w0 * (q @ n0[..., None])[..., 0]
    h = (S @ v + w0[..., None] * (q @ C0)) / (torch.maximum(qn.abs(), floor) + EPS)[..., None]
    torch.testing.assert_close(results[0][0].double(), h, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(results[0][1].double(), (w0[..., None] * k).transpose(1, 2) @ v, rtol=1e-4, atol=1e-4)


def test_chunk_writing_equals_its_equations(products):
    """(w k)^T v and (w k)^T 1 per chunk recomputed in float64, for float32 inputs."""
    g = torch.Generator().manual_seed(6)
    k, v, w = torch.randn(3, 7, 5, generator=g), torch.randn(3, 7, 4, generator=g), torch.rand(3, 7, generator=g)
    kw = w.double()[..., None] * k.double()
    written_C, written_n = mlstm_chunk.chunk_writing(k, v, w)
    torch.testing.assert_close(written_C.double(), kw.transpose(1, 2) @ v.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(written_n.double(), kw.sum(1), rtol=1e-5, atol=1e-5)


def test_chunk_writing_gradcheck(products):
    g = torch.Generator().manual_seed(7)
    args = [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in ((2, 5, 3), (2, 5, 2), (2, 5))]
    assert torch.autograd.gradcheck(mlstm_chunk.chunk_writing, args)


def _form(args, state, chunk_size, native, monkeypatch):
    with monkeypatch.context() as patch:
        if not native:
            patch.setattr(mlstm_chunk, "applies", lambda q: False)
        h, final, _ = mlstm_sequence(*args, state, form="chunkwise", chunk_size=chunk_size)
    return h, final


@settings(max_examples=15, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.sampled_from([2, 9, 16, 33]), st.integers(1, 6),
                    st.integers(1, 6), st.sampled_from([1, 3, 8])),  # fmt: skip
    dtype=st.sampled_from([torch.float32, torch.float64]),
    with_state=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_chunkwise_form_equals_the_batched_python(shape, dtype, with_state, seed):
    """The chunkwise form with the native inside against its batched Python: h~, the final state
    and the gradients of q, k, v, both gates and the initial state."""
    B, K, T, dk, dv, chunk_size = shape
    g = torch.Generator().manual_seed(seed)
    randn = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    leaves = [randn(B, K, T, dk), randn(B, K, T, dk), randn(B, K, T, dv), 2 * randn(B, K, T), 2 * randn(B, K, T) + 1]
    if with_state:
        leaves += [randn(B, K, dk, dv), randn(B, K, dk), randn(B, K)]
    leaves = [x.requires_grad_() for x in leaves]
    weights = [randn(B, K, T, dv), randn(B, K, dk, dv), randn(B, K, dk), randn(B, K)]
    results = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for native in (True, False):
            h, final = _form(leaves[:5], tuple(leaves[5:]) if with_state else None, chunk_size, native, monkeypatch)
            loss = sum((x * w).sum() for x, w in zip((h, *final), weights))
            results[native] = (h, *final, *torch.autograd.grad(loss, leaves))
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 2e-4}
    for j, (ours, python) in enumerate(zip(results[True], results[False])):
        torch.testing.assert_close(ours, python, **tol, msg=lambda m: f"output or gradient {j}: {m}")


def test_applies_where_it_should():
    """Plain CPU float32 and float64 tensors take the native inside; other dtypes do not."""
    assert mlstm_chunk.applies(torch.zeros(2, 3, 4))
    assert mlstm_chunk.applies(torch.zeros(2, 3, 4, dtype=torch.float64))
    assert not mlstm_chunk.applies(torch.zeros(2, 3, 4, dtype=torch.bfloat16))


def test_float32_extreme_gates_stay_exact():
    """Forget pre-activations of -1e4 inside chunks (a and M near 1e4 in magnitude): float32 with
    the native inside equals the float64 chunkwise form to float32 accuracy."""
    g = torch.Generator().manual_seed(5)
    B, K, T, d = 2, 2, 40, 4
    q, k, v = (torch.randn(B, K, T, d, generator=g, dtype=torch.float64) for _ in range(3))
    i_raw = torch.randn(B, K, T, generator=g, dtype=torch.float64)
    f_raw = torch.randn(B, K, T, generator=g, dtype=torch.float64) + 1
    f_raw[:, :, 5::9] = -1e4
    h64 = mlstm_sequence(q, k, v, i_raw, f_raw, form="chunkwise", chunk_size=16)[0]
    h32 = mlstm_sequence(*(x.float() for x in (q, k, v, i_raw, f_raw)), form="chunkwise", chunk_size=16)[0]
    torch.testing.assert_close(h32.double(), h64, rtol=1e-4, atol=1e-5)


def test_bad_input_names_what_it_wanted():
    q, k, v, a, neg_M, w0, C0, n0, floor = chunk_inputs(2, 4, 3, 2, torch.float32, seed=3)
    with pytest.raises(RuntimeError, match="a and neg_M in float64"):
        mlstm_chunk.inside_chunks(q, k, v, a.float(), neg_M, w0, C0, n0, floor, EPS)
    with pytest.raises(RuntimeError, match=r"C0 \(N, dk, dv\)"):
        mlstm_chunk.inside_chunks(q, k, v, a, neg_M, w0, C0[:, :, :1], n0, floor, EPS)
    with pytest.raises(RuntimeError, match=r"floor \(N, L\)"):
        mlstm_chunk.inside_chunks(q, k, v, a, neg_M, w0, C0, n0, floor[:, :1], EPS)
    with pytest.raises(RuntimeError, match=r"w \(N, L\)"):
        mlstm_chunk.chunk_writing(k, v, w0[:, :1])
