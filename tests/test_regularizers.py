"""Recurrent regularizers as layer keywords: recurrent (variational) dropout, weight dropout
(DropConnect on W_hh) and zoneout. Each recomputed from its paper's equations with masks
drawn as the layer draws them (same seed), the plain layer recovered at p = 0 and in eval
mode (zoneout's eval: the expectation), reproducible under a seed, and the backends' rules."""

import pytest
import torch
import torch.nn.functional as F

import gatedrnn

sig, tanh = torch.sigmoid, torch.tanh


def _lstm_unrolled(layer, x, mask=None, w_hh=None, keep_h=None, keep_c=None):
    """One-layer LSTM from the equations: ``mask`` on h_{t-1} in the recurrent product,
    ``w_hh`` in place of the layer's, zoneout keeps ``keep_h[t]``, ``keep_c[t]`` (tensors or
    floats)."""
    W, b = layer.weight_ih_l0, layer.bias_ih_l0 + layer.bias_hh_l0
    U = layer.weight_hh_l0 if w_hh is None else w_hh
    H = layer.hidden_size
    h = c = torch.zeros(x.shape[1], H, dtype=x.dtype)
    outs = []
    for t in range(x.shape[0]):
        a = x[t] @ W.T + (h if mask is None else h * mask) @ U.T + b
        i, f, g, o = sig(a[:, :H]), sig(a[:, H : 2 * H]), tanh(a[:, 2 * H : 3 * H]), sig(a[:, 3 * H :])
        c_new = f * c + i * g
        h_new = o * tanh(c_new)  # from the new, not yet zoned-out c (Krueger et al. 2017, eq. 7)
        if keep_c is not None:
            k_c, k_h = (k[t] if torch.is_tensor(k) else k for k in (keep_c, keep_h))
            c_new, h_new = k_c * c + (1 - k_c) * c_new, k_h * h + (1 - k_h) * h_new
        h, c = h_new, c_new
        outs.append(h)
    return torch.stack(outs), h, c


def _layer(**kw):
    torch.manual_seed(0)
    return gatedrnn.LSTM(3, 5, **kw).double()


X = torch.randn(6, 4, 3, dtype=torch.float64)


def test_recurrent_dropout_is_one_mask_per_sequence_on_the_recurrent_product():
    layer = _layer(recurrent_dropout=0.4)
    torch.manual_seed(11)
    out, (h_n, c_n) = layer(X)
    torch.manual_seed(11)
    mask = F.dropout(torch.ones(4, 5, dtype=torch.float64), 0.4, training=True)  # the layer's draw
    expected, h_e, c_e = _lstm_unrolled(layer, X, mask=mask)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(c_n[0], c_e)
    assert (mask == 0).any() and (out - _lstm_unrolled(layer, X)[0]).abs().max() > 1e-3  # it did something


def test_weight_dropout_drops_w_hh_once_per_forward_on_every_backend():
    ref = _layer(weight_dropout=0.5, backend="reference")
    torch.manual_seed(12)
    out = ref(X)[0]
    torch.manual_seed(12)
    w_hh = F.dropout(ref.weight_hh_l0, 0.5, training=True)
    torch.testing.assert_close(out, _lstm_unrolled(ref, X, w_hh=w_hh)[0])
    for backend in ("fused", "auto"):  # auto's float32 LSTM must leave torch's kernel, which reads W_hh itself
        other = gatedrnn.LSTM(3, 5, weight_dropout=0.5, backend=backend)
        other.load_state_dict(ref.float().state_dict())
        ref_f = gatedrnn.LSTM(3, 5, weight_dropout=0.5, backend="reference")
        ref_f.load_state_dict(ref.state_dict())
        torch.manual_seed(13)
        a = other(X.float())[0]
        torch.manual_seed(13)
        b = ref_f(X.float())[0]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=backend)
        ref.double()


def test_zoneout_training_masks_and_eval_expectation():
    layer = _layer(zoneout=(0.3, 0.6))  # (p_c, p_h)
    torch.manual_seed(14)
    out, (h_n, c_n), trace = layer(X, return_trace=True)
    torch.manual_seed(14)  # the layer draws h's masks, then c's: the states' order
    keep_h = (torch.rand(6, 4, 5) < 0.6).double()  # Bernoulli(p) as a uniform draw below p
    keep_c = (torch.rand(6, 4, 5) < 0.3).double()
    expected, h_e, c_e = _lstm_unrolled(layer, X, keep_h=keep_h, keep_c=keep_c)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(c_n[0], c_e)
    torch.testing.assert_close(trace.hidden[0], out)  # the trace holds the zoned-out states
    layer.eval()
    expected, _, c_e = _lstm_unrolled(layer, X, keep_h=0.6, keep_c=0.3)
    out, (_, c_n) = layer(X)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(c_n[0], c_e)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_plain_at_zero_and_dropouts_off_in_eval(name):
    torch.manual_seed(1)
    plain = getattr(gatedrnn, name)(3, 4, num_layers=2, bidirectional=True).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    zero = getattr(gatedrnn, name)(3, 4, num_layers=2, bidirectional=True, recurrent_dropout=0.0,
                                   weight_dropout=0.0, zoneout=0.0).double()  # fmt: skip
    zero.load_state_dict(plain.state_dict())
    torch.testing.assert_close(zero(x)[0], plain(x)[0], atol=0, rtol=0)
    dropping = getattr(gatedrnn, name)(3, 4, num_layers=2, bidirectional=True, recurrent_dropout=0.5,
                                       weight_dropout=0.5).double()  # fmt: skip
    dropping.load_state_dict(plain.state_dict())
    assert (dropping(x)[0] - plain(x)[0]).abs().max() > 1e-3  # training: masks
    dropping.eval()
    torch.testing.assert_close(dropping(x)[0], plain(x)[0])  # eval: the plain layer


def test_masks_reproducible_under_a_seed_and_different_across_seeds():
    layer = _layer(recurrent_dropout=0.3, weight_dropout=0.3, zoneout=0.2)
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(layer(X)[0])
    torch.testing.assert_close(runs[0], runs[1], atol=0, rtol=0)
    assert (runs[0] - runs[2]).abs().max() > 1e-3


def test_gradcheck_with_masks():
    layer = gatedrnn.GRU(2, 3, recurrent_dropout=0.3, weight_dropout=0.3, zoneout=0.2).double()
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)

    def f(x, *params):
        torch.manual_seed(3)  # the same masks at every evaluation
        return torch.func.functional_call(layer, dict(zip(names, params)), (x,))[0]

    assert torch.autograd.gradcheck(f, (x, *params))


def test_rules_and_errors():
    for regularizer in ({"zoneout": 0.1}, {"recurrent_dropout": 0.2}, {"weight_dropout": 0.2}):
        gatedrnn.GRU(2, 3, backend="fused", **regularizer)  # the native loops take every regularizer
    with pytest.raises(ValueError, match="zoneout must be a float in"):
        gatedrnn.LSTM(2, 3, zoneout=1.5)
    with pytest.raises(ValueError, match="a pair"):
        gatedrnn.LSTM(2, 3, zoneout=(0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="cannot be converted"):
        gatedrnn.LSTM(2, 3, zoneout=(0.1, 0.2)).to_torch()
    assert isinstance(gatedrnn.LSTM(2, 3, recurrent_dropout=0.5).to_torch(), torch.nn.LSTM)  # eval-equivalent
    assert repr(gatedrnn.LSTM(2, 3, zoneout=(0.1, 0.2))) == "LSTM(2, 3, zoneout=(0.1, 0.2))"


def test_train_command_takes_the_regularizers(tmp_path, capsys):
    import json

    from gatedrnn.cli import main

    run = tmp_path / "r"
    args = ["train", "--task", "adding", "--cell", "gru", "--length", "8", "--hidden-size", "4", "--steps", "3",
            "--eval-every", "3", "--batch-size", "4", "--no-report", "--zoneout", "0.1", "--recurrent-dropout", "0.2",
            "--weight-dropout", "0.3", "--out", str(run)]  # fmt: skip
    assert main(args) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["zoneout"], config["recurrent_dropout"], config["weight_dropout"]) == (0.1, 0.2, 0.3)
    assert main(["evaluate", str(run)]) == 0
    bad = ["train", "--task", "adding", "--cell", "lstm", "--zoneout", "1.0", "--out", str(tmp_path / "b")]
    assert main(bad) == 2 and "--zoneout must be in [0, 1)" in capsys.readouterr().err
