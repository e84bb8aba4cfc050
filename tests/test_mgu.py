"""The minimal gated unit (Zhou et al. 2016): every gate recomputed from the paper's
equations (float64) in a two-layer bidirectional layer with lengths, the cell against the
layer, gradcheck, the command, and the rules."""

import pytest
import torch

import gatedrnn
from helpers import gradcheck_layer

sig, tanh = torch.sigmoid, torch.tanh


def test_recomputed_from_the_equations():
    torch.manual_seed(0)
    layer = gatedrnn.MGU(3, 4, num_layers=2, bidirectional=True).double()
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    h0 = torch.randn(4, 3, 4, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 5])
    out, h_n, trace = layer(x, h0, lengths=lengths, return_trace=True)
    inp, H = x, 4
    for k in range(2):
        outs = []
        for d, suffix in enumerate(("", "_reverse")):
            W, U = getattr(layer, f"weight_ih_l{k}{suffix}"), getattr(layer, f"weight_hh_l{k}{suffix}")
            b_i, b_h = getattr(layer, f"bias_ih_l{k}{suffix}"), getattr(layer, f"bias_hh_l{k}{suffix}")
            h = h0[2 * k + d]
            o = [None] * 6
            for t in (range(5, -1, -1) if d else range(6)):
                a = inp[t] @ W.T + b_i
                f = sig(a[:, :H] + h @ U[:H].T + b_h[:H])  # eq. 6
                n = tanh(a[:, H:] + (f * h) @ U[H:].T + b_h[H:])  # eq. 7
                h_new = (1 - f) * h + f * n  # eq. 8
                valid = (t < lengths)[:, None]
                h = torch.where(valid, h_new, h)
                o[t] = torch.where(valid, h_new, 0.0)
                torch.testing.assert_close(trace.forget[2 * k + d, t], torch.where(valid, f, 0.0))
            torch.testing.assert_close(h_n[2 * k + d], h)
            outs.append(torch.stack(o))
        inp = torch.cat(outs, -1)
    torch.testing.assert_close(out, inp)


def test_cell_equals_the_layer_step_by_step():
    torch.manual_seed(1)
    layer, cell = gatedrnn.MGU(3, 4).double(), gatedrnn.MGUCell(3, 4).double()
    cell.load_state_dict({k[: -len("_l0")]: v for k, v in layer.state_dict().items()})
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, _ = layer(x)
    h = None
    for t in range(5):
        h = cell(x[t], h)
        torch.testing.assert_close(h, out[t])


def test_gradcheck():
    torch.manual_seed(2)
    layer = gatedrnn.MGU(2, 3, num_layers=2, bidirectional=True).double()
    assert gradcheck_layer(layer)


def test_rules_and_command(tmp_path):
    gatedrnn.MGU(2, 3, backend="fused")  # a native loop (tests/test_fused_variants.py)
    with pytest.raises(ValueError, match="cannot be converted"):
        gatedrnn.MGU(2, 3).to_torch()
    assert {n: tuple(p.shape) for n, p in gatedrnn.MGU(2, 3, bias=False).named_parameters()} == {
        "weight_ih_l0": (6, 2), "weight_hh_l0": (6, 3)}  # fmt: skip
    from gatedrnn.cli import main

    run = tmp_path / "m"
    args = ["train", "--task", "adding", "--cell", "mgu", "--length", "8", "--hidden-size", "4", "--steps", "3",
            "--eval-every", "3", "--batch-size", "4", "--out", str(run)]  # fmt: skip
    assert main(args) == 0 and main(["evaluate", str(run)]) == 0
