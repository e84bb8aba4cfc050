"""float16 / bfloat16 layers and ``torch.autocast``: torch.nn's output dtypes on every
backend, values within the half types' rounding of torch.nn's, gradients that reach the
parameters in their own dtype. The fused loops compute half types in float32."""

import warnings

import pytest
import torch

import gatedrnn

BACKENDS = ["reference", "fused", "auto"]
HALF = {torch.bfloat16: 3e-2, torch.float16: 5e-3}  # tolerance: a few ulps of the type at |x| ~ 1


def _twins(name, backend, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, name)(6, 16, **kw).to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = getattr(gatedrnn, name).from_torch(theirs, backend=backend)
    return theirs, ours


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("dtype", list(HALF))
def test_half_module_matches_float32_math(name, backend, dtype):
    """A half-precision layer: output, states and every gradient in the layer's dtype, and
    values equal to the same weights and input run in float32, within the type's rounding."""
    _, ours = _twins(name, backend, dtype, num_layers=2, bidirectional=True)
    exact = type(ours).from_torch(ours.to_torch().float(), backend="reference")
    x = torch.randn(7, 3, 6).to(dtype)
    lengths = torch.tensor([7, 3, 5])
    for kw in ({}, {"lengths": lengths}):
        out, final = ours(x.clone().requires_grad_(), **kw)[:2]
        out_f, final_f = exact(x.float(), **kw)[:2]
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), out_f, atol=HALF[dtype], rtol=HALF[dtype])
        for s, s_f in zip(final if name == "LSTM" else (final,), final_f if name == "LSTM" else (final_f,)):
            assert s.dtype == dtype
            torch.testing.assert_close(s.float(), s_f, atol=HALF[dtype], rtol=HALF[dtype])
    ours.zero_grad()
    exact.zero_grad()
    ours(x)[0].float().square().sum().backward()
    exact(x.float())[0].square().sum().backward()
    for (n, p), p_f in zip(ours.named_parameters(), exact.parameters()):
        assert p.grad.dtype == dtype, n
        scale = p_f.grad.abs().max().item() + 1
        torch.testing.assert_close(p.grad.float(), p_f.grad, atol=4 * HALF[dtype] * scale, rtol=4 * HALF[dtype], msg=n)


@pytest.mark.parametrize("backend", ["fused", "auto"])
@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_half_trace_has_the_output_dtype(name, backend):
    _, ours = _twins(name, backend, torch.bfloat16)
    out, _, trace = ours(torch.randn(5, 2, 6).bfloat16(), return_trace=True)
    assert all(v.dtype == torch.bfloat16 for v in trace.values()), {k: v.dtype for k, v in trace.items()}
    torch.testing.assert_close(trace.hidden[0], out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_autocast_gives_torch_nn_dtypes_and_values(name, backend):
    """CPU autocast runs torch.nn's LSTM and RNN in bfloat16 and its GRU's state in float32;
    gatedrnn gives the same dtypes, values within bfloat16 rounding of torch.nn's, and float32
    gradients on the float32 parameters."""
    theirs, ours = _twins(name, backend)
    x = torch.randn(7, 3, 6)
    with torch.autocast("cpu", torch.bfloat16):
        out_t, final_t = theirs(x)
        out_o, final_o = ours(x)
        out_l, _ = ours(x, lengths=torch.tensor([7, 2, 5]))
    assert out_o.dtype == out_t.dtype == out_l.dtype
    finals_o = final_o if name == "LSTM" else (final_o,)
    finals_t = final_t if name == "LSTM" else (final_t,)
    assert [s.dtype for s in finals_o] == [s.dtype for s in finals_t]
    torch.testing.assert_close(out_o.float(), out_t.float(), atol=3e-2, rtol=3e-2)
    out_o.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in ours.parameters())


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_autocast_packed_input(name):
    """torch.nn's packed forms are not on autocast's list: their output stays float32."""
    theirs, ours = _twins(name, "fused")
    x = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(6, 3, 6), torch.tensor([6, 4, 2]))
    with torch.autocast("cpu", torch.bfloat16):
        out_t, _ = theirs(x)
        out_o, _ = ours(x)
    assert out_o.data.dtype == out_t.data.dtype
    torch.testing.assert_close(out_o.data.float(), out_t.data.float(), atol=3e-2, rtol=3e-2)
