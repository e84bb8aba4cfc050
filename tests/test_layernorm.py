"""Layer-norm LSTM and GRU (Ba et al. 2016, as haste's LayerNormLSTM / LayerNormGRU): every
gate recomputed from the equations with a hand-written normalization (float64), with the
gains and biases set away from their initial values, the initialization, gradcheck, and the
rules."""

import pytest
import torch

import gatedrnn
from helpers import gradcheck_layer

sig, tanh = torch.sigmoid, torch.tanh


def ln(v, gain, bias=0.0):
    mean = v.mean(-1, keepdim=True)
    var = ((v - mean) ** 2).mean(-1, keepdim=True)
    return gain * (v - mean) / torch.sqrt(var + 1e-5) + bias


def _randomize(layer):
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.3, 0.5)


@pytest.mark.parametrize("backend", ["reference", "fused"])  # the Python reference and the native loop, each
@pytest.mark.parametrize("proj", [0, 2])
def test_layer_norm_lstm_recomputed(proj, backend):
    torch.manual_seed(0)
    layer = gatedrnn.LSTM(3, 4, proj_size=proj, layer_norm=True, backend=backend).double()
    _randomize(layer)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 3])
    out, (h_n, c_n), trace = layer(x, lengths=lengths, return_trace=True)
    H = 4
    h, c = torch.zeros(2, proj or 4, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64)
    for t in range(6):
        a = (ln(x[t] @ layer.weight_ih_l0.T, layer.layer_norm_ih_l0) + ln(h @ layer.weight_hh_l0.T, layer.layer_norm_hh_l0)
             + layer.bias_ih_l0 + layer.bias_hh_l0)  # fmt: skip
        i, f, g, o = sig(a[:, :H]), sig(a[:, H : 2 * H]), tanh(a[:, 2 * H : 3 * H]), sig(a[:, 3 * H :])
        c_new = f * c + i * g
        h_new = o * tanh(ln(c_new, layer.layer_norm_c_weight_l0, layer.layer_norm_c_bias_l0))
        if proj:
            h_new = h_new @ layer.weight_hr_l0.T
        valid = (t < lengths)[:, None]
        h, c = torch.where(valid, h_new, h), torch.where(valid, c_new, c)
        torch.testing.assert_close(out[t], torch.where(valid, h_new, 0.0))
        torch.testing.assert_close(trace.forget[0, t], torch.where(valid, f, 0.0))
    torch.testing.assert_close(h_n[0], h)
    torch.testing.assert_close(c_n[0], c)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_layer_norm_gru_recomputed(backend):
    torch.manual_seed(1)
    layer = gatedrnn.GRU(3, 4, layer_norm=True, backend=backend).double()
    _randomize(layer)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, h_n, trace = layer(x, return_trace=True)
    h = torch.zeros(2, 4, dtype=torch.float64)
    for t in range(5):
        a_x = ln(x[t] @ layer.weight_ih_l0.T, layer.layer_norm_ih_l0) + layer.bias_ih_l0
        a_h = ln(h @ layer.weight_hh_l0.T, layer.layer_norm_hh_l0) + layer.bias_hh_l0
        r = sig(a_x[:, :4] + a_h[:, :4])
        z = sig(a_x[:, 4:8] + a_h[:, 4:8])
        n = tanh(a_x[:, 8:] + r * a_h[:, 8:])
        h = (1 - z) * n + z * h
        torch.testing.assert_close(out[t], h)
        torch.testing.assert_close(trace.update[0, t], z)
    torch.testing.assert_close(h_n[0], h)


def test_initialization_and_rules():
    torch.manual_seed(2)
    theirs = torch.nn.LSTM(3, 4)
    torch.manual_seed(2)
    ours = gatedrnn.LSTM(3, 4, layer_norm=True)
    for name, p in theirs.named_parameters():
        assert torch.equal(p, getattr(ours, name)), name  # torch's weights first, the same draws
    assert (ours.layer_norm_ih_l0 == 1).all() and (ours.layer_norm_c_bias_l0 == 0).all()
    ours.reset_parameters()
    assert (ours.layer_norm_hh_l0 == 1).all() and (ours.layer_norm_c_weight_l0 == 1).all()
    with pytest.raises(ValueError, match="layer_norm=True does not combine with peephole"):
        gatedrnn.LSTM(3, 4, layer_norm=True, peephole=True)


@pytest.mark.parametrize("make", [
    lambda: gatedrnn.LSTM(2, 3, num_layers=2, bidirectional=True, layer_norm=True),
    lambda: gatedrnn.GRU(2, 3, bias=False, layer_norm=True),
])  # fmt: skip
def test_gradcheck(make):
    torch.manual_seed(3)
    layer = make().double()
    _randomize(layer)
    assert gradcheck_layer(layer)


def test_train_command_takes_layer_norm(tmp_path, capsys):
    from gatedrnn.cli import main

    common = ["--task", "adding", "--length", "8", "--hidden-size", "4", "--steps", "3", "--eval-every", "3",
              "--batch-size", "4", "--no-report", "--layer-norm"]  # fmt: skip
    assert main(["train", *common, "--cell", "gru", "--out", str(tmp_path / "g")]) == 0
    assert main(["evaluate", str(tmp_path / "g")]) == 0
    assert main(["train", *common, "--cell", "rnn", "--out", str(tmp_path / "r")]) == 2
    assert "--layer-norm is a variant of the LSTM and the GRU" in capsys.readouterr().err
