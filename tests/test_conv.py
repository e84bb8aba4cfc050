"""ConvLSTM and ConvGRU: gate maps recomputed from the weights with conv2d and the
equations (float64), the 1x1 kernel against gatedrnn's LSTM/GRU per pixel, gradcheck,
lengths / hx / batch_first / unbatched as in the other layers, and clear errors."""

import pytest
import torch
import torch.nn.functional as F

import gatedrnn

sig, tanh = torch.sigmoid, torch.tanh


def _equations(layer, x, hx, lengths):
    """Every gate of every layer and step, from the papers' equations (torch's GRU blend)."""
    T, B = x.shape[:2]
    pad = layer.padding
    names = ("input", "forget", "candidate", "output", "cell", "hidden") if layer.mode == "LSTM" else (
        "reset", "update", "candidate", "hidden")
    trace = {n: [] for n in names}
    finals = []
    inp = x
    for k in range(layer.num_layers):
        w_ih, w_hh, b_ih, b_hh = layer.weights(k)
        h = hx[0][k]
        c = hx[1][k] if layer.mode == "LSTM" else None
        outs, per = [], {n: [] for n in names}
        for t in range(T):
            a = F.conv2d(inp[t], w_ih, b_ih, padding=pad)
            C = layer.hidden_channels
            if layer.mode == "LSTM":
                u = F.conv2d(h, w_hh, b_hh, padding=pad)
                i = sig(a[:, :C] + u[:, :C])
                f = sig(a[:, C:2 * C] + u[:, C:2 * C])
                g = tanh(a[:, 2 * C:3 * C] + u[:, 2 * C:3 * C])
                o = sig(a[:, 3 * C:] + u[:, 3 * C:])
                c_new = f * c + i * g
                h_new = o * tanh(c_new)
                vals = (i, f, g, o, c_new, h_new)
            else:
                if layer.reset_after:
                    u = F.conv2d(h, w_hh, b_hh, padding=pad)
                    r = sig(a[:, :C] + u[:, :C])
                    z = sig(a[:, C:2 * C] + u[:, C:2 * C])
                    n = tanh(a[:, 2 * C:] + r * u[:, 2 * C:])
                else:
                    r = sig(a[:, :C] + F.conv2d(h, w_hh[:C], b_hh[:C], padding=pad))
                    z = sig(a[:, C:2 * C] + F.conv2d(h, w_hh[C:2 * C], b_hh[C:2 * C], padding=pad))
                    n = tanh(a[:, 2 * C:] + F.conv2d(r * h, w_hh[2 * C:], b_hh[2 * C:], padding=pad))
                h_new = (1 - z) * n + z * h
                vals = (r, z, n, h_new)
            valid = (t < lengths)[:, None, None, None]
            h = torch.where(valid, h_new, h)
            if c is not None:
                c = torch.where(valid, c_new, c)
            for name, v in zip(names, vals):
                per[name].append(torch.where(valid, v, 0.0))
            outs.append(torch.where(valid, h_new, 0.0))
        inp = torch.stack(outs)
        finals.append((h, c))
        for name in names:
            trace[name].append(torch.stack(per[name]))
    return inp, finals, {n: torch.stack(v) for n, v in trace.items()}


LAYERS = [("ConvLSTM", {}), ("ConvGRU", {}), ("ConvGRU", {"reset_after": False})]


@pytest.mark.parametrize("name,kw", LAYERS)
def test_trace_recomputed_from_the_equations(name, kw):
    torch.manual_seed(0)
    layer = getattr(gatedrnn, name)(2, 3, 3, num_layers=2, **kw).double()
    T, B = 5, 3
    x = torch.randn(T, B, 2, 6, 7, dtype=torch.float64)
    n_states = 2 if name == "ConvLSTM" else 1
    hx = tuple(torch.randn(2, B, 3, 6, 7, dtype=torch.float64) for _ in range(n_states))
    lengths = torch.tensor([5, 2, 4])
    out, final, trace = layer(x, hx if n_states == 2 else hx[0], lengths=lengths, return_trace=True)
    out_e, finals_e, trace_e = _equations(layer, x, hx, lengths)
    torch.testing.assert_close(out, out_e, atol=1e-12, rtol=1e-12)
    assert set(trace) == set(trace_e)
    for k in trace:
        assert trace[k].shape == (2, T, B, 3, 6, 7), k
        torch.testing.assert_close(trace[k], trace_e[k], atol=1e-12, rtol=1e-12, msg=k)
    h_n = final[0] if name == "ConvLSTM" else final
    torch.testing.assert_close(h_n, torch.stack([h for h, _ in finals_e]), atol=1e-12, rtol=1e-12)
    if name == "ConvLSTM":
        torch.testing.assert_close(final[1], torch.stack([c for _, c in finals_e]), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_one_by_one_kernel_is_the_dense_cell_at_every_pixel(name):
    """With a 1x1 kernel a conv layer is the dense layer applied to each pixel's channels."""
    torch.manual_seed(1)
    conv = getattr(gatedrnn, "Conv" + name)(3, 4, 1, num_layers=2).double()
    dense = getattr(gatedrnn, name)(3, 4, num_layers=2, backend="reference").double()
    with torch.no_grad():
        for pname, p in dense.named_parameters():
            p.copy_(getattr(conv, pname).reshape(p.shape))
    x = torch.randn(6, 2, 3, 4, 5, dtype=torch.float64)  # (T, B, C, H, W)
    out_c, final_c = conv(x)
    pixels = x.permute(0, 1, 3, 4, 2).reshape(6, 2 * 4 * 5, 3)  # (T, B*H*W, C)
    out_d, final_d = dense(pixels)
    torch.testing.assert_close(out_c.permute(0, 1, 3, 4, 2).reshape(6, 40, 4), out_d)
    h_c = final_c[0] if name == "LSTM" else final_c
    h_d = final_d[0] if name == "LSTM" else final_d
    torch.testing.assert_close(h_c.permute(0, 1, 3, 4, 2).reshape(2, 40, 4), h_d)


@pytest.mark.parametrize("name,kw", LAYERS)
def test_gradcheck(name, kw):
    torch.manual_seed(0)
    layer = getattr(gatedrnn, name)(1, 2, 3, **kw).double()
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(3, 2, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])

    def f(x, *params):
        out, final, trace = torch.func.functional_call(layer, dict(zip(names, params)), (x,),
                                                       {"lengths": lengths, "return_trace": True})
        return (out, *(final if isinstance(final, tuple) else (final,)), trace["candidate"])

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)


@pytest.mark.parametrize("name", ["ConvLSTM", "ConvGRU"])
def test_layouts_lengths_and_state_continuation(name):
    torch.manual_seed(2)
    layer = getattr(gatedrnn, name)(2, 3, (3, 5), num_layers=2).double()
    x = torch.randn(6, 3, 2, 5, 4, dtype=torch.float64)
    out, final = layer(x)
    # batch_first: the same weights on (B, T, ...) give the transposed output
    bf = getattr(gatedrnn, name)(2, 3, (3, 5), num_layers=2, batch_first=True).double()
    bf.load_state_dict(layer.state_dict())
    torch.testing.assert_close(bf(x.transpose(0, 1))[0], out.transpose(0, 1))
    # unbatched: one sequence alone equals its row of the batch
    torch.testing.assert_close(layer(x[:, 1])[0], out[:, 1])
    # hx: running the first 4 steps, then the last 2 from that state, equals running all 6
    first, state = layer(x[:4])
    second, final2 = layer(x[4:], state)
    torch.testing.assert_close(torch.cat([first, second]), out)
    for a, b in zip(final2 if name == "ConvLSTM" else (final2,), final if name == "ConvLSTM" else (final,)):
        torch.testing.assert_close(a, b)
    # lengths: a sequence's final state is that of running its valid steps alone; zeros after
    lengths = torch.tensor([6, 2, 4])
    out_l, final_l = layer(x, lengths=lengths)
    assert out_l[2:, 1].abs().max() == 0 and out_l[4:, 2].abs().max() == 0
    alone = layer(x[:2, 1:2])[1]
    for a, b in zip(final_l if name == "ConvLSTM" else (final_l,), alone if name == "ConvLSTM" else (alone,)):
        torch.testing.assert_close(a[:, 1:2], b)


def test_cell_equals_one_step_of_the_layer():
    torch.manual_seed(3)
    for name in ("LSTM", "GRU"):
        layer = getattr(gatedrnn, "Conv" + name)(2, 3, 3).double()
        cell = getattr(gatedrnn, f"Conv{name}Cell")(2, 3, 3).double()
        with torch.no_grad():
            for pname, p in cell.named_parameters():
                p.copy_(getattr(layer, pname + "_l0"))
        x = torch.randn(1, 2, 2, 5, 5, dtype=torch.float64)
        out, final, trace = layer(x, return_trace=True)
        state, cell_trace = cell(x[0], return_trace=True)
        h = state[0] if name == "LSTM" else state
        torch.testing.assert_close(h, out[0])
        for k in cell_trace:
            torch.testing.assert_close(cell_trace[k], trace[k][0, 0], msg=k)
        unbatched = cell(x[0, 0])
        torch.testing.assert_close(unbatched[0] if name == "LSTM" else unbatched, h[0])


@pytest.mark.parametrize("call,error,match", [
    (lambda: gatedrnn.ConvLSTM(2, 3, 4), ValueError, "kernel_size must be odd"),
    (lambda: gatedrnn.ConvGRU(2, 3, (3, 2)), ValueError, "kernel_size must be odd"),
    (lambda: gatedrnn.ConvGRU(2, 3, 3.0), TypeError, "kernel_size must be an int"),
    (lambda: gatedrnn.ConvLSTM(2, 0, 3), ValueError, "hidden_channels must be a positive int"),
    (lambda: gatedrnn.ConvLSTM(2, 3, 3, batch_first=1), TypeError, "batch_first must be a bool"),
    (lambda: gatedrnn.ConvLSTM(2, 3, 3)(torch.randn(4, 2, 5, 5)[None, None]), ValueError, "must be 5-D"),
    (lambda: gatedrnn.ConvLSTM(2, 3, 3)(torch.randn(4, 1, 3, 5, 5)), ValueError, "2 channels"),
    (lambda: gatedrnn.ConvGRU(2, 3, 3)(torch.randn(4, 1, 2, 5, 5), torch.zeros(1, 1, 3, 4, 5)), ValueError,
     r"hx must have shape \(1, 1, 3, 5, 5\)"),
    (lambda: gatedrnn.ConvLSTM(2, 3, 3)(torch.randn(4, 1, 2, 5, 5), torch.zeros(1, 1, 3, 5, 5)), TypeError,
     "hx must be a tuple"),
    (lambda: gatedrnn.ConvGRU(2, 3, 3)(torch.randn(4, 2, 2, 5, 5), lengths=torch.tensor([5, 1])), ValueError,
     r"lengths must lie in \[1, T=4\]"),
    (lambda: gatedrnn.ConvGRU(2, 3, 3)(torch.randn(4, 2, 2, 5, 5, dtype=torch.float64)), TypeError, "dtype"),
    (lambda: gatedrnn.ConvGRUCell(2, 3, 3)(torch.randn(2, 5, 5, 5)), ValueError, "2 channels"),
])  # fmt: skip
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
