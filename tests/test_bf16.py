"""The products in bfloat16 (csrc/lowp.h, fused/_ops.py): a bfloat16 layer, or a float32 one
under ``torch.autocast("cpu", torch.bfloat16)``, has every GEMM of the native loops computed
from bfloat16 operands while the gate math and the carried states stay float32. Against the
float32 layer, for every cell and variant: outputs, final states and every gradient within
bfloat16's rounding (norm-relative), a counter that proves the bfloat16 products ran forward
and backward, none of them with the mode at -1, and no switch left on after a call. The
per-step products run on both engines: the bfloat16 panels of our own kernel (csrc/panels.h,
on a CPU with AVX-512 BF16) and oneDNN's bfloat16 product (the panels off)."""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn import fused
from gatedrnn.fused._ops import call_kernel, native_bf16
from gatedrnn.fused.slstm import slstm_sequence

if not fused.native_available():
    pytest.skip("native kernels not built on this machine", allow_module_level=True)
if not native_bf16():
    pytest.skip("this CPU has no native bfloat16 GEMMs (AVX-512 BF16 or AMX): the products stay float32",
                allow_module_level=True)  # fmt: skip

KERNELS = fused.kernels()
# ||a - b|| / ||b||: bfloat16 keeps 8 bits (2^-9 ~ 2e-3 a rounding), a few roundings deep; the
# largest seen at these sizes was 0.015 (a layer-norm LSTM's gradients), most below 0.01
TOL = 2e-2

CELLS = {
    "lstm": (gatedrnn.LSTM, {}),
    "gru": (gatedrnn.GRU, {}),
    "rnn-tanh": (gatedrnn.RNN, {"nonlinearity": "tanh"}),
    "rnn-relu": (gatedrnn.RNN, {"nonlinearity": "relu"}),
    "peephole": (gatedrnn.LSTM, {"peephole": True}),
    "cifg": (gatedrnn.LSTM, {"coupled": True}),
    "ln-lstm": (gatedrnn.LSTM, {"layer_norm": True}),
    "ln-gru": (gatedrnn.GRU, {"layer_norm": True}),
    "proj": (gatedrnn.LSTM, {"proj_size": 5}),
    "cho-gru": (gatedrnn.GRU, {"reset_after": False}),
    "mgu": (gatedrnn.MGU, {}),
    "lstm-bidirectional": (gatedrnn.LSTM, {"bidirectional": True}),
    "gru-bidirectional": (gatedrnn.GRU, {"bidirectional": True}),
    "lstm-2-layers": (gatedrnn.LSTM, {"num_layers": 2}),
    "gru-2-layers": (gatedrnn.GRU, {"num_layers": 2}),
    "lstm-zoneout": (gatedrnn.LSTM, {"zoneout": 0.2}),
    "gru-zoneout": (gatedrnn.GRU, {"zoneout": 0.2}),
    "lstm-recurrent-dropout": (gatedrnn.LSTM, {"recurrent_dropout": 0.3}),
    "gru-recurrent-dropout": (gatedrnn.GRU, {"recurrent_dropout": 0.3}),
}
TRAINING = {"lstm-zoneout", "gru-zoneout", "lstm-recurrent-dropout", "gru-recurrent-dropout"}


@pytest.fixture(autouse=True)
def every_product_in_bf16():
    """Mode 1 (every product in bfloat16, whatever its size) for the test, the rule after."""
    KERNELS.use_bf16_gemm(1)
    KERNELS.reset_bf16_product_count()
    yield
    KERNELS.use_bf16_gemm(0)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def assert_near(a, b, what, tol=TOL):
    assert a.shape == b.shape, what
    assert torch.isfinite(a).all(), what
    err = relative_error(a, b)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol}"


def _layers(name, input_size=6, hidden=16, seed=0):
    """The float32 layer (its weights rounded to bfloat16, so that only the computation differs)
    and its bfloat16 copy, both on the fused backend."""
    cls, config = CELLS[name]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f32 = cls(input_size, hidden, **config, backend="fused")
        with torch.no_grad():
            for p in f32.parameters():
                p.copy_(p.to(torch.bfloat16).float())
        bf16 = cls(input_size, hidden, **config, backend="fused", dtype=torch.bfloat16)
        bf16.load_state_dict({k: v.to(torch.bfloat16) for k, v in f32.state_dict().items()})
    f32.train(name in TRAINING)
    bf16.train(name in TRAINING)
    return f32, bf16


def _run(layer, x, dtype, seed, lengths=None, autocast=False):
    """Output, final states and the gradients of the input and every parameter (all float32) of a
    loss weighting the output and the final states with fixed random tensors."""
    layer.zero_grad()
    x = x.detach().to(dtype).clone().requires_grad_()
    torch.manual_seed(seed)  # the same dropout and zoneout masks for every run
    with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
        out, final = layer(x, lengths=lengths)[:2]
    finals = list(final) if isinstance(final, tuple) else [final]
    g = torch.Generator().manual_seed(seed + 1)
    loss = sum((t.float() * torch.randn(t.shape, generator=g)).sum() for t in [out, *finals])
    loss.backward()
    grads = [x.grad] + [p.grad for p in layer.parameters()]
    return out.float(), [f.float() for f in finals], [g.float() for g in grads]


def _compare(got, want, name):
    out, finals, grads = got
    out_w, finals_w, grads_w = want
    assert_near(out, out_w, f"{name} output")
    for k, (a, b) in enumerate(zip(finals, finals_w)):
        assert_near(a, b, f"{name} final state {k}")
    assert len(grads) == len(grads_w)
    for k, (a, b) in enumerate(zip(grads, grads_w)):
        assert_near(a, b, f"{name} gradient {k}")


@pytest.fixture(params=["panels", "onednn"])
def engine(request):
    """The per-step products from bfloat16 panels (our kernel), then from oneDNN (panels off)."""
    if request.param == "panels" and not KERNELS.panel_bf16_available():
        pytest.skip("the bfloat16 panels need AVX-512 BF16")
    KERNELS.use_panel_gemm(0 if request.param == "panels" else -1)
    yield request.param
    KERNELS.use_panel_gemm(0)


@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_a_bf16_layer_computes_its_products_in_bf16_near_float32(name, lengths, engine):
    f32, bf16 = _layers(name)
    x = torch.randn(9, 3, 6).to(torch.bfloat16).float()
    lens = torch.tensor([9, 4, 7]) if lengths else None
    want = _run(f32, x, torch.float32, seed=3, lengths=lens)
    assert KERNELS.bf16_product_count() == 0  # a float32 layer: today's path
    KERNELS.reset_bf16_product_count()
    with torch.no_grad():
        out = bf16(x.to(torch.bfloat16), lengths=lens)[0]
    assert out.dtype == torch.bfloat16
    forward = KERNELS.bf16_product_count()
    assert forward > 0
    got = _run(bf16, x, torch.bfloat16, seed=3, lengths=lens)
    assert bf16.weight_hh_l0.grad.dtype == torch.bfloat16
    assert KERNELS.bf16_product_count() > 2 * forward  # the backward's products too
    _compare(got, want, name)
    assert not KERNELS.bf16_products()  # the switch is off after the call


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn-tanh", "cho-gru", "proj", "lstm-zoneout", "gru-2-layers",
                                  "gru-bidirectional"])  # fmt: skip
def test_a_float32_layer_under_autocast_computes_its_products_in_bf16(name, engine):
    f32, _ = _layers(name)
    x = torch.randn(9, 3, 6)
    want = _run(f32, x, torch.float32, seed=4)
    KERNELS.reset_bf16_product_count()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        f32(x)
    forward = KERNELS.bf16_product_count()
    assert forward > 0
    got = _run(f32, x, torch.float32, seed=4, autocast=True)
    assert KERNELS.bf16_product_count() > 2 * forward  # the backward too (a GRU's d_out is float32)
    _compare(got, want, name)
    assert not KERNELS.bf16_products()


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn-relu", "mgu", "ln-lstm", "proj"])
def test_mode_minus_one_keeps_every_product_in_float32(name):
    KERNELS.use_bf16_gemm(-1)
    f32, bf16 = _layers(name)
    x = torch.randn(9, 3, 6)
    _run(bf16, x, torch.bfloat16, seed=5)
    _run(f32, x, torch.float32, seed=5, autocast=True)
    assert KERNELS.bf16_product_count() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_other_dtypes_take_no_bf16_products(dtype):
    torch.manual_seed(0)
    layer = gatedrnn.LSTM(6, 16, backend="fused", dtype=dtype)
    layer(torch.randn(9, 3, 6, dtype=dtype).requires_grad_())[0].float().sum().backward()
    assert KERNELS.bf16_product_count() == 0


def test_a_cpu_without_bf16_keeps_todays_path(monkeypatch):
    """Where native_bf16() says no, a bfloat16 layer and autocast take no bfloat16 product,
    even with the mode forcing every product that the switch allows."""
    from gatedrnn.fused import _ops

    monkeypatch.setattr(_ops, "native_bf16", lambda: False)
    f32, bf16 = _layers("gru")
    x = torch.randn(9, 3, 6)
    _run(bf16, x, torch.bfloat16, seed=2)
    _run(f32, x, torch.float32, seed=2, autocast=True)
    assert KERNELS.bf16_product_count() == 0


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn-tanh"])
def test_no_leak_into_the_next_float32_call(name):
    """A float32 call after a bfloat16 one gives bitwise the result it gave before."""
    f32, bf16 = _layers(name)
    x = torch.randn(9, 3, 6)
    before = _run(f32, x, torch.float32, seed=6)
    _run(bf16, x, torch.bfloat16, seed=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f32(x)
    KERNELS.reset_bf16_product_count()
    after = _run(f32, x, torch.float32, seed=6)
    assert KERNELS.bf16_product_count() == 0
    assert torch.equal(before[0], after[0])
    for a, b in zip(before[1] + before[2], after[1] + after[2]):
        assert torch.equal(a, b)


def test_the_switch_is_on_for_the_call_only_and_off_when_it_raises():
    seen = []

    def kernel(*args):
        seen.append(KERNELS.bf16_products())
        raise RuntimeError("the kernel failed")

    with pytest.raises(RuntimeError, match="the kernel failed"):
        call_kernel(kernel, torch.float32, torch.ones(2, dtype=torch.bfloat16))
    assert seen == [True] and not KERNELS.bf16_products()
    with pytest.raises(RuntimeError):
        call_kernel(kernel, torch.float32, torch.ones(2), torch.ones(2, dtype=torch.float16))
    assert seen == [True, False] and not KERNELS.bf16_products()


def test_the_rule_takes_bf16_where_it_pays():
    """The rule (mode 0) of csrc/lowp.h: a thread's product of 2^21 multiply-adds or more."""
    KERNELS.use_bf16_gemm(0)
    assert KERNELS.bf16_pays(8, 256, 1024)  # 52 against 76 µs measured
    assert KERNELS.bf16_pays(64, 256, 1024)
    assert not KERNELS.bf16_pays(16, 128, 512)  # 33 against 31
    assert not KERNELS.bf16_pays(1, 256, 1024)  # 36 against 26
    KERNELS.use_bf16_gemm(1)
    assert KERNELS.bf16_pays(1, 1, 1)
    KERNELS.use_bf16_gemm(-1)
    assert not KERNELS.bf16_pays(64, 1024, 1024)


def test_under_the_rule_small_products_stay_float32_and_large_ones_take_bf16():
    """oneDNN's product (the bfloat16 panels off) by the size rule: 30 µs a call does not pay below it."""
    KERNELS.use_bf16_gemm(0)
    KERNELS.use_panel_gemm(-1)
    try:
        small = gatedrnn.GRU(8, 16, backend="fused", dtype=torch.bfloat16)
        with torch.no_grad():
            small(torch.randn(20, 4, 8, dtype=torch.bfloat16))
        assert KERNELS.bf16_product_count() == 0
        large = gatedrnn.GRU(256, 256, backend="fused", dtype=torch.bfloat16)
        with torch.no_grad():
            large(torch.randn(3, 64, 256, dtype=torch.bfloat16))
        assert KERNELS.bf16_product_count() > 0
    finally:
        KERNELS.use_panel_gemm(0)


def test_under_the_rule_the_bf16_panels_take_the_per_step_products_of_every_size():
    """The bfloat16 panels cost nothing a call: the rule gives them the small layer's products too
    (the one product before the loop stays float32 below oneDNN's size rule)."""
    if not KERNELS.panel_bf16_available():
        pytest.skip("the bfloat16 panels need AVX-512 BF16")
    KERNELS.use_bf16_gemm(0)
    small = gatedrnn.GRU(8, 16, backend="fused", dtype=torch.bfloat16)
    with torch.no_grad():
        small(torch.randn(20, 4, 8, dtype=torch.bfloat16))
    assert KERNELS.bf16_product_count() > 0
    KERNELS.reset_bf16_product_count()
    KERNELS.use_bf16_gemm(-1)  # and mode -1 still keeps every product float32
    with torch.no_grad():
        small(torch.randn(20, 4, 8, dtype=torch.bfloat16))
    assert KERNELS.bf16_product_count() == 0


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [False, True])
def test_the_slstm_op_computes_its_products_in_bf16(reverse, lengths):
    g = torch.Generator().manual_seed(7)
    heads, d, T, B = 2, 8, 6, 3
    H = heads * d
    inputs = [torch.randn(T, B, 4 * H, generator=g), torch.randn(B, H, generator=g), torch.randn(B, H, generator=g),
              torch.rand(B, H, generator=g) + 0.5, torch.randn(B, H, generator=g),
              torch.randn(heads, 4 * d, d, generator=g) / d**0.5, torch.randn(4 * H, generator=g)]  # fmt: skip
    inputs = [t.to(torch.bfloat16) for t in inputs]
    lens = torch.tensor([6, 2, 4]) if lengths else None

    def run(dtype):
        args = [t.to(dtype).requires_grad_() for t in inputs]
        out = slstm_sequence(*args, lengths=lens, reverse=reverse)
        out = [r for r in out if r is not None]
        g = torch.Generator().manual_seed(8)
        sum((r.float() * torch.randn(r.shape, generator=g)).sum() for r in out).backward()
        return [r.float() for r in out] + [a.grad.float() for a in args]

    want = run(torch.float32)
    assert KERNELS.bf16_product_count() == 0
    got = run(torch.bfloat16)
    assert KERNELS.bf16_product_count() >= 2 * T  # forward and backward, each step
    for k, (a, b) in enumerate(zip(got, want)):
        assert_near(a, b, f"sLSTM result {k}")


@settings(max_examples=12, deadline=None)
@given(
    st.sampled_from(["lstm", "gru", "rnn-tanh", "cho-gru", "proj", "peephole"]),
    st.integers(1, 8),
    st.integers(1, 5),
    st.integers(2, 24),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_random_configurations_stay_near_float32(name, T, B, hidden, bidirectional, seed):
    KERNELS.use_bf16_gemm(1)
    cls, config = CELLS[name]
    torch.manual_seed(seed)
    config = config | {"bidirectional": bidirectional}
    if "proj_size" in config:
        config["proj_size"] = max(1, hidden // 2)
    f32 = cls(5, hidden, **config, backend="fused")
    with torch.no_grad():
        for p in f32.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    bf16 = cls(5, hidden, **config, backend="fused", dtype=torch.bfloat16)
    bf16.load_state_dict({k: v.to(torch.bfloat16) for k, v in f32.state_dict().items()})
    x = torch.randn(T, B, 5).to(torch.bfloat16).float()
    KERNELS.reset_bf16_product_count()
    got = _run(bf16, x, torch.bfloat16, seed)
    assert KERNELS.bf16_product_count() > 0
    want = _run(f32, x, torch.float32, seed)
    # a few values: a norm over so few is as noisy as one rounding, so a looser bound
    out, finals, grads = got
    tol = 3 * TOL if T * B * hidden < 64 else TOL
    assert_near(out, want[0], f"{name} output", tol)
    for a, b in zip(finals + grads, want[1] + want[2]):
        assert_near(a, b, f"{name} state or gradient", 2 * tol)
