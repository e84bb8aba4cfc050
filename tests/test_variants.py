"""Cell variants on the reference loop: the LSTM's peepholes (Gers & Schmidhuber 2000), the
coupled-gate LSTM (CIFG, Greff et al. 2017) and Cho et al.'s GRU (``reset_after=False``). Every gate recomputed from the weights and the
paper's equations (float64), the plain cell recovered where the variant's own parameters
are zero, a Keras-layout GRU converted and matched, gradcheck, and the backends' rules."""

import numpy as np
import pytest
import torch

import gatedrnn
from helpers import gradcheck_layer

sig, tanh = torch.sigmoid, torch.tanh


def _peephole_equations(layer, x, hx, lengths):
    """(output, h_n, c_n, trace) of a peephole and/or coupled LSTM, unrolled here from the
    equations (coupled: blocks f, g, o and i = 1 - f)."""
    T, B = x.shape[:2]
    H = layer.hidden_size
    trace = {k: [] for k in ("input", "forget", "candidate", "output", "cell", "hidden")}
    finals_h, finals_c = [], []
    inp = x
    for k in range(layer.num_layers):
        outs = []
        for d, suffix in enumerate(("", "_reverse")[: layer.num_directions]):
            W, U = getattr(layer, f"weight_ih_l{k}{suffix}"), getattr(layer, f"weight_hh_l{k}{suffix}")
            b = getattr(layer, f"bias_ih_l{k}{suffix}") + getattr(layer, f"bias_hh_l{k}{suffix}")
            zero = torch.zeros(H, dtype=x.dtype)
            w_ci, w_cf, w_co = (getattr(layer, f"weight_c{g}_l{k}{suffix}", zero) for g in "ifo")
            h, c = hx[0][k * layer.num_directions + d], hx[1][k * layer.num_directions + d]
            steps = range(T - 1, -1, -1) if d else range(T)
            out, gates = [None] * T, {n: [None] * T for n in trace}
            for t in steps:
                a = inp[t] @ W.T + h @ U.T + b
                if layer.coupled:  # f g o
                    f = sig(a[:, :H] + w_cf * c)
                    i = 1 - f
                    a = torch.cat([a[:, :H], a], 1)  # so that g and o sit where they do below
                else:
                    i = sig(a[:, :H] + w_ci * c)
                    f = sig(a[:, H : 2 * H] + w_cf * c)
                g = tanh(a[:, 2 * H : 3 * H])
                c_new = f * c + i * g
                o = sig(a[:, 3 * H :] + w_co * c_new)
                h_new = o * tanh(c_new)
                valid = (t < lengths)[:, None]
                h, c = torch.where(valid, h_new, h), torch.where(valid, c_new, c)
                for name, v in zip(trace, (i, f, g, o, c_new, h_new)):
                    gates[name][t] = torch.where(valid, v, 0.0)
                out[t] = torch.where(valid, h_new, 0.0)
            outs.append(torch.stack(out))
            finals_h.append(h)
            finals_c.append(c)
            for name in trace:
                trace[name].append(torch.stack(gates[name]))
        inp = torch.cat(outs, -1)
    return inp, torch.stack(finals_h), torch.stack(finals_c), {n: torch.stack(v) for n, v in trace.items()}


@pytest.mark.parametrize("backend", ["reference", "fused"])  # the Python reference and the native loop, each
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("variant", [{"peephole": True}, {"coupled": True}, {"peephole": True, "coupled": True}])
def test_peephole_and_coupled_lstm_recomputed_from_the_equations(bidirectional, variant, backend):
    torch.manual_seed(0)
    layer = gatedrnn.LSTM(3, 4, num_layers=2, bidirectional=bidirectional, backend=backend, **variant).double()
    with torch.no_grad():  # peepholes start at zero; give them values so their terms count
        for name, p in layer.named_parameters():
            if name.startswith("weight_c"):
                p.normal_()
    D = 2 if bidirectional else 1
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    hx = (torch.randn(2 * D, 3, 4, dtype=torch.float64), torch.randn(2 * D, 3, 4, dtype=torch.float64))
    lengths = torch.tensor([6, 2, 4])
    out, (h_n, c_n), trace = layer(x, hx, lengths=lengths, return_trace=True)
    out_e, h_e, c_e, trace_e = _peephole_equations(layer, x, hx, lengths)
    torch.testing.assert_close(out, out_e, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(h_n, h_e, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(c_n, c_e, atol=1e-12, rtol=1e-12)
    for name in trace_e:
        torch.testing.assert_close(trace[name], trace_e[name], atol=1e-12, rtol=1e-12, msg=name)


def test_peephole_at_zero_is_torch_nn_and_seeded_weights_are_torchs():
    torch.manual_seed(3)
    theirs = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    torch.manual_seed(3)
    ours = gatedrnn.LSTM(3, 5, num_layers=2, bidirectional=True, peephole=True)
    for name, p in theirs.named_parameters():
        assert torch.equal(p, getattr(ours, name)), name
    assert all((p == 0).all() for n, p in ours.named_parameters() if n.startswith("weight_c"))
    missing = ours.load_state_dict(theirs.state_dict(), strict=False).missing_keys
    assert sorted(missing) == sorted(n for n, _ in ours.named_parameters() if n.startswith("weight_c"))
    x = torch.randn(7, 2, 3)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], atol=1e-6, rtol=1e-6)


def test_peephole_layer_equals_its_cell_step_by_step():
    torch.manual_seed(4)
    layer = gatedrnn.LSTM(3, 4, peephole=True).double()
    cell = gatedrnn.LSTMCell(3, 4, peephole=True).double()
    with torch.no_grad():
        for name, p in cell.named_parameters():
            p.copy_(torch.randn_like(p))
            getattr(layer, name + "_l0").copy_(p)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, _ = layer(x)
    h = c = torch.zeros(2, 4, dtype=torch.float64)
    for t in range(5):
        h, c = cell(x[t], (h, c))
        torch.testing.assert_close(out[t], h)


def _keras_gru_reset_before(x, kernel, recurrent, bias):
    """Keras' GRU with reset_after=False, from its documented equations, in NumPy:
    kernel (I, 3H) and recurrent (H, 3H) columns in Keras' order z, r, h; bias (3H,)."""
    H = recurrent.shape[0]
    h = np.zeros((x.shape[1], H))
    out = []
    for x_t in x:
        xz, xr, xh = np.split(x_t @ kernel + bias, 3, axis=1)
        z = 1 / (1 + np.exp(-(xz + h @ recurrent[:, :H])))
        r = 1 / (1 + np.exp(-(xr + h @ recurrent[:, H : 2 * H])))
        hh = np.tanh(xh + (r * h) @ recurrent[:, 2 * H :])
        h = z * h + (1 - z) * hh
        out.append(h)
    return np.stack(out)


def test_cho_gru_is_keras_reset_after_false():
    rng = np.random.default_rng(0)
    I, H = 3, 5
    kernel, recurrent, bias = rng.normal(size=(I, 3 * H)), rng.normal(size=(H, 3 * H)) * 0.5, rng.normal(size=3 * H)
    x = rng.normal(size=(6, 2, I))
    expected = _keras_gru_reset_before(x, kernel, recurrent, bias)

    def reorder(m):  # Keras' z, r, h blocks -> torch's r, z, n
        z, r, h = np.split(m, 3, axis=-1)
        return np.concatenate([r, z, h], axis=-1)

    gru = gatedrnn.GRU(I, H, reset_after=False).double()
    with torch.no_grad():
        gru.weight_ih_l0.copy_(torch.from_numpy(reorder(kernel).T))
        gru.weight_hh_l0.copy_(torch.from_numpy(reorder(recurrent).T))
        gru.bias_ih_l0.copy_(torch.from_numpy(reorder(bias)))
        gru.bias_hh_l0.zero_()
    out, _ = gru(torch.from_numpy(x))
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-12)
    # and torch's form on the same weights is another function
    torch_form = gatedrnn.GRU(I, H).double()
    torch_form.load_state_dict(gru.state_dict())  # the same names and shapes: loads either way
    assert (torch_form(torch.from_numpy(x))[0] - out).abs().max() > 1e-3


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_cho_gru_trace_recomputed_and_cell_matches(backend):
    torch.manual_seed(5)
    layer = gatedrnn.GRU(3, 4, reset_after=False, backend=backend).double()
    cell = gatedrnn.GRUCell(3, 4, reset_after=False).double()
    cell.load_state_dict({k[: -len("_l0")]: v for k, v in layer.state_dict().items()})
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    out, _, trace = layer(x, return_trace=True)
    W, U, b_i, b_h = layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0
    h = torch.zeros(2, 4, dtype=torch.float64)
    for t in range(4):
        a = x[t] @ W.T + b_i
        r = sig(a[:, :4] + h @ U[:4].T + b_h[:4])
        z = sig(a[:, 4:8] + h @ U[4:8].T + b_h[4:8])
        n = tanh(a[:, 8:] + (r * h) @ U[8:].T + b_h[8:])
        h = (1 - z) * n + z * h
        for name, v in (("reset", r), ("update", z), ("candidate", n), ("hidden", h)):
            torch.testing.assert_close(trace[name][0, t], v, msg=name)
        torch.testing.assert_close(cell(x[t], out[t - 1] if t else None), h)


@pytest.mark.parametrize("make", [
    lambda: gatedrnn.LSTM(2, 3, num_layers=2, bidirectional=True, peephole=True),
    lambda: gatedrnn.LSTM(2, 3, num_layers=2, bidirectional=True, peephole=True, coupled=True, proj_size=2),
    lambda: gatedrnn.GRU(2, 3, num_layers=2, bidirectional=True, reset_after=False),
])  # fmt: skip
def test_gradcheck_variants(make):
    torch.manual_seed(0)
    layer = make().double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.5)
    assert gradcheck_layer(layer)


def test_backends_and_conversions_of_variants():
    with pytest.raises(ValueError, match="cannot be converted"):
        gatedrnn.LSTM(2, 3, peephole=True).to_torch()
    with pytest.raises(ValueError, match="cannot be converted"):
        gatedrnn.GRUCell(2, 3, reset_after=False).to_torch()
    with pytest.raises(TypeError, match="peephole must be a bool"):
        gatedrnn.LSTM(2, 3, peephole=1)
    # auto and fused run the native loop for a variant, packed input included, as the reference does
    auto = gatedrnn.LSTM(2, 3, peephole=True)
    reference = gatedrnn.LSTM(2, 3, peephole=True, backend="reference")
    fused = gatedrnn.LSTM(2, 3, peephole=True, backend="fused")
    reference.load_state_dict(auto.state_dict())
    fused.load_state_dict(auto.state_dict())
    x = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 3, 2), torch.tensor([5, 3, 2]))
    torch.testing.assert_close(auto(x)[0].data, reference(x)[0].data)
    torch.testing.assert_close(fused(x)[0].data, reference(x)[0].data)
    assert repr(auto) == "LSTM(2, 3, peephole=True)"


def test_train_command_takes_the_variants(tmp_path, capsys):
    import json

    from gatedrnn.cli import main

    common = ["--task", "adding", "--length", "8", "--hidden-size", "4", "--steps", "3", "--eval-every", "3",
              "--batch-size", "4", "--no-report"]  # fmt: skip
    assert main(["train", *common, "--cell", "lstm", "--peephole", "--out", str(tmp_path / "p")]) == 0
    assert json.loads((tmp_path / "p" / "config.json").read_text())["peephole"] is True
    assert main(["evaluate", str(tmp_path / "p")]) == 0  # rebuilt with its peepholes: the checkpoint fits
    assert main(["train", *common, "--cell", "lstm", "--coupled", "--out", str(tmp_path / "c")]) == 0
    assert main(["evaluate", str(tmp_path / "c")]) == 0  # 3H rows: only a coupled model takes them
    assert main(["train", *common, "--cell", "gru", "--no-reset-after", "--out", str(tmp_path / "g")]) == 0
    assert json.loads((tmp_path / "g" / "config.json").read_text())["reset_after"] is False
    assert main(["train", *common, "--cell", "gru", "--peephole", "--out", str(tmp_path / "x")]) == 2
    assert "--peephole is a variant of the LSTM, got --cell gru" in capsys.readouterr().err


def test_coupled_shapes_forget_bias_chrono_and_cell():
    torch.manual_seed(6)
    layer = gatedrnn.LSTM(3, 4, proj_size=2, coupled=True, forget_bias=1.0)
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes == {"weight_ih_l0": (12, 3), "weight_hh_l0": (12, 2), "bias_ih_l0": (12,), "bias_hh_l0": (12,),
                      "weight_hr_l0": (2, 4)}  # fmt: skip
    assert (layer.bias_ih_l0[:4] > 0.4).all()  # forget_bias lands on the f block, first in f g o
    gatedrnn.init.chrono_(layer, 30)
    assert (layer.bias_ih_l0[:4] >= 0).all() and (layer.bias_hh_l0[:4] == 0).all()
    cell = gatedrnn.LSTMCell(3, 4, coupled=True, peephole=True)
    assert sorted(n for n, _ in cell.named_parameters()) == ["bias_hh", "bias_ih", "weight_cf", "weight_co",
                                                              "weight_hh", "weight_ih"]  # fmt: skip
    h, c, trace = cell(torch.randn(2, 3), return_trace=True)
    torch.testing.assert_close(trace.input, 1 - trace.forget)
    step = gatedrnn.LSTM(3, 4, coupled=True, peephole=True)
    step.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    x = torch.randn(1, 2, 3)
    torch.testing.assert_close(step(x)[0][0], cell(x[0])[0])
