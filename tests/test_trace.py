"""Gate traces: every value recomputed in the test from the weights and the equations."""

import pytest
import torch

import gatedrnn

sig, tanh = torch.sigmoid, torch.tanh


def _layer_weights(layer, l, d):
    suffix = f"_l{l}" + ("_reverse" if d else "")
    get = lambda kind: getattr(layer, kind + suffix, None)  # noqa: E731
    return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"), get("weight_hr")


def _expected_trace(layer, x, lengths):
    """Recomputes every gate of every layer and direction, step by step, from the equations.
    x: (T, B, I). Returns {name: (L*D, T, B, H)}."""
    T, B, _ = x.shape
    D = 2 if layer.bidirectional else 1
    names = {"LSTM": ["input", "forget", "candidate", "output", "cell", "hidden"],
             "GRU": ["reset", "update", "candidate", "hidden"]}.get(layer.mode, ["hidden"])  # fmt: skip
    per_dir = []
    inp = x
    for l in range(layer.num_layers):
        outs = []
        for d in range(D):
            w_ih, w_hh, b_ih, b_hh, w_hr = _layer_weights(layer, l, d)
            b_ih = 0 if b_ih is None else b_ih
            b_hh = 0 if b_hh is None else b_hh
            P = w_hh.shape[1]
            H = layer.hidden_size
            vals = {n: torch.zeros(T, B, P if n == "hidden" else H, dtype=x.dtype) for n in names}
            for b in range(B):
                n_b = int(lengths[b])
                h = torch.zeros(P, dtype=x.dtype)
                c = torch.zeros(H, dtype=x.dtype)
                steps = range(n_b - 1, -1, -1) if d else range(n_b)
                for t in steps:
                    a = w_ih @ inp[t, b] + b_ih + w_hh @ h + b_hh
                    if layer.mode == "LSTM":
                        i, f, g, o = sig(a[:H]), sig(a[H:2*H]), tanh(a[2*H:3*H]), sig(a[3*H:])  # fmt: skip
                        c = f * c + i * g
                        h = o * tanh(c)
                        if w_hr is not None:
                            h = w_hr @ h
                        step = [i, f, g, o, c, h]
                    elif layer.mode == "GRU":
                        xr, xz, xn = (w_ih @ inp[t, b] + b_ih).split(H)
                        hr, hz, hn = (w_hh @ h + b_hh).split(H)
                        r, z = sig(xr + hr), sig(xz + hz)
                        n = tanh(xn + r * hn)
                        h = (1 - z) * n + z * h
                        step = [r, z, n, h]
                    else:
                        h = tanh(a) if layer.mode == "RNN_TANH" else torch.relu(a)
                        step = [h]
                    for name, v in zip(names, step):
                        vals[name][t, b] = v
            per_dir.append(vals)
            outs.append(vals["hidden"])
        inp = torch.cat(outs, -1)
    return {n: torch.stack([v[n] for v in per_dir]) for n in names}


@pytest.mark.parametrize(
    "name,kw",
    [("LSTM", {}), ("LSTM", {"proj_size": 2}), ("GRU", {}), ("RNN", {}), ("RNN", {"nonlinearity": "relu"})],
)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_trace_equals_the_equations(name, kw, batch_first, backend):
    torch.manual_seed(0)
    layer = getattr(gatedrnn, name)(3, 4, num_layers=2, bidirectional=True, batch_first=batch_first,
                                    backend=backend, **kw).double()  # fmt: skip
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    out, _, trace = layer(x.transpose(0, 1) if batch_first else x, lengths=lengths, return_trace=True)
    expected = _expected_trace(layer, x, lengths)
    assert list(trace) == list(expected)
    for key, value in expected.items():
        got = trace[key].transpose(1, 2) if batch_first else trace[key]
        assert got.shape == value.shape, key
        torch.testing.assert_close(got, value, msg=key)
        assert getattr(trace, key) is trace[key]
    # the output is the last layer's hidden trace, both directions side by side
    last = trace.hidden[-2:]  # forward and reverse of the last layer, in the output's layout
    torch.testing.assert_close(out, torch.cat([last[0], last[1]], -1))


def test_trace_checks_the_cell_state_equation_and_carries_gradients():
    torch.manual_seed(0)
    lstm = gatedrnn.LSTM(2, 3)
    x = torch.randn(5, 2, 2, requires_grad=True)
    _, (h_n, c_n), tr = lstm(x, return_trace=True)
    c_prev = torch.cat([torch.zeros(1, 1, 2, 3), tr.cell[:, :-1]], dim=1)
    torch.testing.assert_close(tr.cell, tr.forget * c_prev + tr.input * tr.candidate)
    torch.testing.assert_close(tr.cell[:, -1], c_n)
    # gradients flow through the trace
    tr.forget.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_trace_unbatched_and_packed_shapes():
    gru = gatedrnn.GRU(2, 3, num_layers=2, bidirectional=True)
    _, _, tr = gru(torch.randn(5, 2), return_trace=True)
    assert tr.update.shape == (4, 5, 3)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 2), torch.tensor([5, 3]))
    _, _, tr = gru(packed, return_trace=True)
    assert tr.update.shape == (4, 5, 2, 3)
    assert tr.update[:, 3:, 1].abs().max() == 0
    assert tr.update[:, :3, 1].abs().min() > 0


def test_trace_access_errors_name_what_it_holds():
    _, _, tr = gatedrnn.RNN(2, 3)(torch.randn(4, 2), return_trace=True)
    with pytest.raises(KeyError, match="holds hidden"):
        tr["forget"]
    with pytest.raises(AttributeError, match="holds hidden"):
        tr.forget
    assert len(tr) == 1 and dict(tr).keys() == {"hidden"}
