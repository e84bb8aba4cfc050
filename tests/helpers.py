"""What the tests share: tolerances (one table), twin torch.nn/gatedrnn layers, and one
forward + backward with a shared random gradient."""

from __future__ import annotations

import warnings

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import gatedrnn
from hypothesis import strategies as st

# Agreement demanded between two implementations of the same function, per dtype.
TOL = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float64: {"atol": 1e-10, "rtol": 1e-10},
}

CLASSES = {"RNN": gatedrnn.RNN, "LSTM": gatedrnn.LSTM, "GRU": gatedrnn.GRU}
INPUT_KINDS = ("padded", "unbatched", "packed", "lengths")


def twin_layers(name, dtype, backend="reference", **config):
    """A torch.nn layer and a gatedrnn layer with the same weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropout with one layer
        theirs = getattr(torch.nn, name)(**config, dtype=dtype)
    return theirs, CLASSES[name].from_torch(theirs, backend=backend)


def assert_close(actual, expected, dtype, what):
    torch.testing.assert_close(actual, expected, **TOL[dtype], msg=lambda m: f"{what}: {m}")


class Case:
    """Random inputs for one layer configuration: ``x`` time-major (T, B, I), lengths,
    initial states, and the gradients to send back through output and final states."""

    def __init__(self, layer, kind, T, B, with_hx, seed):
        g = torch.Generator().manual_seed(seed)
        dtype = layer.weight_ih_l0.dtype
        LD = layer.num_layers * (2 if layer.bidirectional else 1)
        H, P = layer.hidden_size, getattr(layer, "proj_size", 0) or layer.hidden_size
        self.kind, self.layer_batch_first = kind, layer.batch_first
        B = 1 if kind == "unbatched" else B
        self.T, self.B = T, B
        randn = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
        self.x = randn(T, B, layer.input_size)
        self.lengths = torch.randint(1, T + 1, (B,), generator=g) if kind in ("packed", "lengths") else None
        state_sizes = (P, H) if layer.mode == "LSTM" else (H,)
        self.hx = tuple(randn(LD, B, s) for s in state_sizes) if with_hx else None
        out_size = P * (2 if layer.bidirectional else 1)
        self.grad_output = randn(T, B, out_size)
        self.grad_finals = tuple(randn(LD, B, s) for s in state_sizes)
        if self.lengths is not None:  # no gradient flows into padding
            self.grad_output = self.grad_output * (torch.arange(T)[:, None] < self.lengths)[..., None]

    def run(self, layer, use_lengths=None, **kwargs):
        """Forward and backward; returns (output (T, B, F) padded time-major, finals,
        gradients of x, hx and every parameter, the raw result)."""
        use_lengths = self.kind == "lengths" if use_lengths is None else use_lengths
        x = self.x.clone().requires_grad_()
        hx = None if self.hx is None else tuple(s.clone().requires_grad_() for s in self.hx)
        bf = layer.batch_first
        inp = x.transpose(0, 1) if bf else x
        if self.kind == "unbatched":
            inp = x[:, 0]
        hx_in = None if hx is None else tuple(s[:, 0] if self.kind == "unbatched" else s for s in hx)
        if self.kind == "packed" or (self.kind == "lengths" and not use_lengths):
            inp = pack_padded_sequence(inp, self.lengths, batch_first=bf, enforce_sorted=False)
        elif use_lengths:
            kwargs["lengths"] = self.lengths
        if hx_in is not None and layer.mode != "LSTM":
            hx_in = hx_in[0]
        result = layer(inp, hx_in, **kwargs)
        output, final = result[0], result[1]
        if isinstance(output, PackedSequence):
            output = pad_packed_sequence(output, total_length=self.T)[0]
        elif self.kind == "unbatched":
            output = output[:, None]
        elif bf:
            output = output.transpose(0, 1)
        finals = final if isinstance(final, tuple) else (final,)
        if self.kind == "unbatched":
            finals = tuple(s[:, None] for s in finals)
        loss = (output * self.grad_output).sum()
        loss = loss + sum((s * g).sum() for s, g in zip(finals, self.grad_finals))
        leaves = [x] + list(hx or ()) + list(layer.parameters())
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        return output, finals, grads, result


def check_parity(name, config, dtype, kind, with_hx, T, B, seed, backend="reference"):
    theirs, ours = twin_layers(name, dtype, backend, **config)
    case = Case(ours, kind, T, B, with_hx, seed)
    out_t, finals_t, grads_t, _ = case.run(theirs, use_lengths=False)
    out_o, finals_o, grads_o, _ = case.run(ours)
    assert_close(out_o, out_t, dtype, "output")
    for k, (a, b) in enumerate(zip(finals_o, finals_t)):
        assert_close(a, b, dtype, f"final state {k}")
    names = ["input"] + [f"hx[{k}]" for k in range(len(case.hx or ()))] + [n for n, _ in ours.named_parameters()]
    assert len(grads_o) == len(grads_t) == len(names)
    for what, a, b in zip(names, grads_o, grads_t):
        assert a is not None and b is not None, what
        assert_close(a, b, dtype, f"gradient of {what}")


@st.composite
def configurations(draw):
    name = draw(st.sampled_from(["RNN", "LSTM", "GRU"]))
    hidden = draw(st.integers(2, 7))
    config = {
        "input_size": draw(st.integers(1, 6)),
        "hidden_size": hidden,
        "num_layers": draw(st.integers(1, 3)),
        "bias": draw(st.booleans()),
        "batch_first": draw(st.booleans()),
        "bidirectional": draw(st.booleans()),
    }
    if name == "LSTM":
        config["proj_size"] = draw(st.sampled_from([0, 0, 1, hidden - 1]))
    if name == "RNN":
        config["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    return name, config


def gradcheck_layer(layer, T: int = 4, B: int = 2, lengths=(4, 2), seed: int = 0) -> bool:
    """``torch.autograd.gradcheck`` of a float64 layer's output with respect to its input and
    every parameter, with ``lengths`` (a torch.func.functional_call, so no parameter is
    mutated)."""
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, layer.input_size, generator=g, dtype=torch.float64, requires_grad=True)
    kwargs = {"lengths": torch.tensor(lengths)} if lengths is not None else {}

    def f(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (x,), kwargs)[0]

    return torch.autograd.gradcheck(f, (x, *params))
