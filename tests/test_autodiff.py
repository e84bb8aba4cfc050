"""Derivatives beyond one backward, on every backend: forward-mode AD (``torch.func.jvp``
and ``torch.autograd.forward_ad``), ``torch.func`` transforms (``grad``, ``jacrev``,
``vmap``) and double backward, each checked against reverse mode on the reference loop."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, jacrev, jvp, vmap

import gatedrnn

BACKENDS = ["reference", "fused", "auto"]
FAMILIES = [
    ("RNN", {}),
    ("RNN", {"nonlinearity": "relu"}),
    ("LSTM", {}),
    ("LSTM", {"proj_size": 2}),
    ("GRU", {}),
]


def _layer(name, kw, backend, dtype=torch.float64, **more):
    torch.manual_seed(0)
    return getattr(gatedrnn, name)(3, 4, backend=backend, **kw, **more).to(dtype)


def _loss(layer, params, x, lengths=None):
    out, final = functional_call(layer, params, (x,), {"lengths": lengths})
    final = final if isinstance(final, tuple) else (final,)
    return out.square().sum() + sum(s.sin().sum() for s in final)


def _reverse_mode_directional(layer, x, tangents, lengths=None):
    """<dL/dp, t> by reverse mode on the reference loop: what every jvp must equal."""
    reference = type(layer).from_torch(layer.to_torch(), backend="reference") if hasattr(layer, "to_torch") else None
    params = dict(reference.named_parameters())
    loss = _loss(reference, params, x, lengths)
    grads = torch.autograd.grad(loss, list(params.values()))
    return sum((g * tangents[n]).sum() for n, g in zip(params, grads))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,kw", FAMILIES)
def test_func_jvp_equals_reverse_mode(name, kw, backend):
    layer = _layer(name, kw, backend, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    tangents = {k: torch.randn_like(v) for k, v in params.items()}
    _, tangent = jvp(lambda p: _loss(layer, p, x), (params,), (tangents,))
    expected = _reverse_mode_directional(layer, x, tangents)
    assert tangent.abs() > 0
    torch.testing.assert_close(tangent, expected, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_forward_ad_dual_tensors_with_lengths(name, backend):
    """The other forward-mode API: dual tensors, here on the input, with lengths."""
    layer = _layer(name, {}, backend)
    x, t = torch.randn(5, 3, 3, dtype=torch.float64), torch.randn(5, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 4])
    with fwAD.dual_level():
        out = layer(fwAD.make_dual(x, t), lengths=lengths)[0]
        tangent = fwAD.unpack_dual(out).tangent
    assert tangent is not None and tangent.abs().sum() > 0
    reference = type(layer).from_torch(layer.to_torch(), backend="reference")
    expected = torch.func.jvp(lambda x: reference(x, lengths=lengths)[0], (x,), (t,))[1]
    torch.testing.assert_close(tangent, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,kw", FAMILIES)
def test_func_grad_and_jacrev_equal_autograd(name, kw, backend):
    layer = _layer(name, kw, backend)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    got = grad(lambda p: _loss(layer, p, x))(params)
    reference = type(layer).from_torch(layer.to_torch(), backend="reference")
    expected = torch.autograd.grad(_loss(reference, dict(reference.named_parameters()), x), list(reference.parameters()))
    for (k, g), e in zip(got.items(), expected):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-10, msg=k)

    jac = jacrev(lambda x: layer(x)[0])(x)  # (T, B, H, T, B, I)
    jac_ref = torch.autograd.functional.jacobian(lambda x: reference(x)[0], x)
    torch.testing.assert_close(jac, jac_ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_over_sequences_equals_a_loop(backend):
    layer = _layer("GRU", {}, backend)
    xs = torch.randn(3, 4, 2, 3, dtype=torch.float64)  # 3 independent (T, B, I) inputs
    out = vmap(lambda x: layer(x)[0])(xs)
    for k in range(3):
        torch.testing.assert_close(out[k], layer(xs[k])[0], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,kw", FAMILIES)
@pytest.mark.parametrize("use_lengths", [False, True])
def test_double_backward_equals_reference(name, kw, backend, use_lengths):
    """A gradient penalty: ||dL/dx||^2 differentiated again, against the reference."""
    torch.manual_seed(1)
    ours = getattr(gatedrnn, name)(3, 4, num_layers=2, bidirectional=True, backend=backend, **kw).double()
    reference = type(ours).from_torch(ours.to_torch(), backend="reference")
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    P = kw.get("proj_size") or 4
    h0 = torch.randn(4, 3, P, dtype=torch.float64)
    hx = (h0, torch.randn(4, 3, 4, dtype=torch.float64)) if name == "LSTM" else h0
    lengths = torch.tensor([5, 2, 4]) if use_lengths else None

    def penalty_grads(layer):
        xx = x.clone().requires_grad_()
        hh = tuple(s.clone().requires_grad_() for s in hx) if name == "LSTM" else hx.clone().requires_grad_()
        out, final = layer(xx, hh, lengths=lengths)
        final = final if isinstance(final, tuple) else (final,)
        loss = out.tanh().sum() + sum(s.square().sum() for s in final)
        (gx,) = torch.autograd.grad(loss, xx, create_graph=True)
        penalty = gx.square().sum()
        leaves = [xx, *(hh if name == "LSTM" else (hh,)), *layer.parameters()]
        return torch.autograd.grad(penalty, leaves, allow_unused=True)

    for k, (a, b) in enumerate(zip(penalty_grads(ours), penalty_grads(reference))):
        assert (a is None) == (b is None), k
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=f"leaf {k}")


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_gradgradcheck_fused_layer(name):
    torch.manual_seed(0)
    layer = getattr(gatedrnn, name)(2, 3, backend="fused").double()
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])

    def f(x, *params):
        return functional_call(layer, dict(zip(names, params)), (x,), {"lengths": lengths})[0]

    assert torch.autograd.gradgradcheck(f, (x, *params))


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_auto_float32_forward_mode_and_grad(name):
    """float32 is where ``auto`` calls torch's own kernel (LSTM), which has no forward-mode
    formula: under a transform it must take the reference loop instead."""
    layer = _layer(name, {}, "auto", dtype=torch.float32)
    x = torch.randn(6, 2, 3)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    tangents = {k: torch.randn_like(v) for k, v in params.items()}
    _, tangent = jvp(lambda p: _loss(layer, p, x), (params,), (tangents,))
    expected = _reverse_mode_directional(layer, x, tangents)
    torch.testing.assert_close(tangent, expected, atol=1e-4, rtol=1e-4)
