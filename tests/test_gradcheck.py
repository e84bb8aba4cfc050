"""torch.autograd.gradcheck in float64 on each layer configuration family."""

import pytest
import torch

import gatedrnn

FAMILIES = [
    ("RNN", {}),
    ("RNN", {"nonlinearity": "relu", "bias": False}),
    ("GRU", {}),
    ("GRU", {"bias": False}),
    ("LSTM", {}),
    ("LSTM", {"proj_size": 2}),
]


@pytest.mark.parametrize("name,kw", FAMILIES)
@pytest.mark.parametrize("use_lengths", [False, True])
def test_layer_gradcheck(name, kw, use_lengths, backend="reference"):
    torch.manual_seed(0)
    layer = getattr(gatedrnn, name)(2, 3, num_layers=2, bidirectional=True, backend=backend, **kw).double()
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    P = kw.get("proj_size") or 3
    h0 = torch.randn(4, 2, P, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2]) if use_lengths else None

    def f(x, h0, c0, *params):
        hx = (h0, c0) if name == "LSTM" else h0
        out, final = torch.func.functional_call(layer, dict(zip(names, params)), (x, hx), {"lengths": lengths})
        return (out,) + (final if isinstance(final, tuple) else (final,))

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params))
