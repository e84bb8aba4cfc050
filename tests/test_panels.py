"""The float32 per-step products from a weight laid out in column panels, by the project's own
AVX-512 kernels (``csrc/panels.h`` on ``csrc/tile_gemm.h``, and in bfloat16 on
``csrc/tile_bf16.h``): one product against float64 matrix products (of the bfloat16-rounded
operands for the bfloat16 panels) over hypothesis-drawn sizes (every width of the last panel, every count of
leftover rows, depths across the kernel's 128-row blocks), from a weight given as it is and
as its transpose, accumulating or not, with row strides wider than the rows; the rule that
chooses them; the errors. The whole loops with the panels on and off are in
``test_fused_variants.py`` (``test_packed_weights_and_split_steps_equal_the_reference_loop``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gatedrnn import fused

pytestmark = pytest.mark.skipif(
    not fused.native_available() or not fused.kernels().panel_gemm_available(),
    reason="the panels' kernel needs the native kernels built for AVX-512 (this build has none)",
)


def strided(rows, cols, pad, g):
    """A (rows, cols) float32 matrix whose rows are `pad` values further apart than its width."""
    return torch.randn(rows, cols + pad, generator=g)[:, :cols]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 20),
    K=st.integers(1, 300),
    N=st.integers(1, 200),
    transposed=st.booleans(),
    accumulate=st.booleans(),
    pad=st.integers(0, 5),
    bf16=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_a_product_from_panels_equals_the_float64_product(rows, K, N, transposed, accumulate, pad, bf16, seed):
    if bf16 and not fused.kernels().panel_bf16_available():
        bf16 = False  # this CPU has no AVX-512 BF16: the float32 panels only
    g = torch.Generator().manual_seed(seed)
    a = strided(rows, K, pad, g)
    b = strided(N, K, pad, g) if transposed else strided(K, N, pad, g)
    out = strided(rows, N, pad, g)
    before = out.clone()
    # the bfloat16 panels multiply the operands rounded to bfloat16, exactly, and sum in float32
    a64, b64 = (a.bfloat16().double(), b.bfloat16().double()) if bf16 else (a.double(), b.double())
    expected = a64 @ (b64.t() if transposed else b64)
    if accumulate:
        expected += before.double()
    result = fused.kernels().panel_product(a, b, transposed, out, accumulate, bf16)
    assert result.data_ptr() == out.data_ptr()  # written in place, through the strides
    # one float32 sum over K per output: within K roundings of the largest partial sum
    scale = (a64.abs() @ (b64.abs().t() if transposed else b64.abs())) + before.double().abs()
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=float((scale * K * 2**-23).max()) + 1e-6)


@pytest.mark.parametrize("bf16", [False, True])
def test_the_panels_leave_the_columns_past_each_row_untouched(bf16):
    """The last panel is zero-padded to 64 columns and its store masked: the values between one
    row's N columns and the next row's start (a row stride wider than N) are not written."""
    if bf16 and not fused.kernels().panel_bf16_available():
        pytest.skip("this CPU has no AVX-512 BF16")
    a, b = torch.randn(7, 33), torch.randn(33, 70)
    storage = torch.full((7, 75), 123.0)
    fused.kernels().panel_product(a, b, False, storage[:, :70], False, bf16)
    assert torch.equal(storage[:, 70:], torch.full((7, 5), 123.0))
    want = a.bfloat16().float() @ b.bfloat16().float() if bf16 else a @ b
    torch.testing.assert_close(storage[:, :70], want, rtol=1e-5, atol=1e-4)


def test_a_product_over_no_depth_is_zero_or_leaves_the_sum():
    kernels = fused.kernels()
    out = torch.randn(3, 5)
    before = out.clone()
    kernels.panel_product(torch.empty(3, 0), torch.empty(0, 5), False, out, True, False)
    assert torch.equal(out, before)
    kernels.panel_product(torch.empty(3, 0), torch.empty(0, 5), False, out, False, False)
    assert torch.equal(out, torch.zeros(3, 5))


def test_the_rule_lays_out_weights_used_twice_and_the_switch_overrides_it():
    kernels = fused.kernels()
    assert kernels.uses_panels(2) and kernels.uses_panels(500)
    assert not kernels.uses_panels(1)  # one product: laying out the weight would cost as much as it
    try:
        kernels.use_panel_gemm(1)
        assert kernels.uses_panels(1)
        kernels.use_panel_gemm(-1)
        assert not kernels.uses_panels(1000)
    finally:
        kernels.use_panel_gemm(0)


@pytest.mark.parametrize(
    "a, b, out, match",
    [
        (torch.randn(3, 4, dtype=torch.float64), torch.randn(4, 5), torch.empty(3, 5), "float32"),
        (torch.randn(3, 4), torch.randn(6, 5), torch.empty(3, 5), r"a \[3, 4\], b \[6, 5\]"),
        (torch.randn(3, 4), torch.randn(4, 5), torch.empty(3, 6), r"out \[3, 6\]"),
        (torch.randn(4, 3).t(), torch.randn(4, 5), torch.empty(3, 5), "contiguous rows"),
    ],
)
def test_a_product_of_the_wrong_matrices_says_what_it_got(a, b, out, match):
    with pytest.raises(RuntimeError, match=match):
        fused.kernels().panel_product(a, b, False, out, False, False)


def as_layout(t: torch.Tensor, transposed: bool) -> torch.Tensor:
    """t itself, or the same values as the transposed view of a contiguous copy of t'."""
    return t.t().contiguous().t() if transposed else t


@settings(max_examples=40, deadline=None)
@given(
    M=st.integers(1, 250),
    K=st.integers(1, 200),
    N=st.integers(1, 150),
    a_transposed=st.booleans(),
    b_transposed=st.booleans(),
    bias=st.booleans(),
    threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**31 - 1),
)
def test_a_whole_sequence_product_on_the_panels_equals_the_float64_product(M, K, N, a_transposed, b_transposed, bias,
                                                                           threads, seed):  # fmt: skip
    """panel_matmul (the input projection before the loop): each thread a block of rows, 96 at a
    time, from a and b given row-major or as transposed views, with a bias or without."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(M, K, generator=g), torch.randn(K, N, generator=g)
    c = torch.randn(N, generator=g) if bias else None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = fused.kernels().panel_matmul(as_layout(a, a_transposed), as_layout(b, b_transposed), c)
    finally:
        torch.set_num_threads(before)
    expected = a.double() @ b.double() + (c.double() if bias else 0)
    scale = a.double().abs() @ b.double().abs() + (c.double().abs() if bias else 0)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=float((scale * K * 2**-23).max()) + 1e-6)


def test_sequence_mm_takes_the_panels_for_rows_as_they_are_and_at_mm_otherwise():
    """The weight gradients' products (a transposed a) stay with at::mm: bitwise torch.mm's result."""
    kernels = fused.kernels()
    a, b, c = torch.randn(300, 70), torch.randn(70, 90), torch.randn(90)
    assert torch.equal(kernels.sequence_mm(a, b, c), kernels.panel_matmul(a, b, c))
    d = torch.randn(70, 300)
    assert torch.equal(kernels.sequence_mm(d.t(), b, None), torch.mm(d.t(), b))
    try:
        kernels.use_panel_gemm(-1)
        assert torch.equal(kernels.sequence_mm(a, b, c), torch.addmm(c, a, b))
    finally:
        kernels.use_panel_gemm(0)


def test_the_projections_input_gradient_takes_the_panels_in_eager_mode_and_torch_elsewhere():
    """fused/_ops.py, sequence_product: d_xw W_ih on the panels for plain eager float32 tensors;
    under a dispatch mode (what torch.compile and export trace with) and for float64, torch's @."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from gatedrnn.fused._ops import sequence_product

    a, b = torch.randn(300, 70), torch.randn(70, 90)
    assert torch.equal(sequence_product(a, b), fused.kernels().panel_matmul(a, b, None))
    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Record():
        traced = sequence_product(a, b)
    assert any("mm" in name for name in seen)  # torch's product, visible to the mode
    torch.testing.assert_close(traced, a @ b)
    assert torch.equal(sequence_product(a.double(), b.double()), a.double() @ b.double())
