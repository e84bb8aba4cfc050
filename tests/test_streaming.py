"""Streaming: a sequence fed a chunk (or a step) at a time, each call given the state the
previous one returned, gives what the whole sequence gives in one call, for every cell and
variant (layers: ``out, state = layer(chunk, state)``) and for the trainer's models
(``out, state = model.stream(chunk, state)``)."""

from __future__ import annotations

import pytest
import torch

import gatedrnn
from gatedrnn.models import SequenceModel

ATOL = 1e-6
# The layers stream in float64: a chunk boundary changes how the native loop blocks its products, so
# float32 results differ in rounding (the layer-norm LSTM by up to 2e-5 over five seeds, as much as
# native and reference loops differ); in float64 every path agrees to 1e-15, and a real difference stands out.
ATOL_FLOAT64 = 1e-12
CHUNKS = [1, 3, 2, 1, 4]  # T = 11, one step at a time included

LAYERS = {
    "rnn_tanh": lambda **kw: gatedrnn.RNN(3, 5, 2, **kw),
    "rnn_relu": lambda **kw: gatedrnn.RNN(3, 5, nonlinearity="relu", **kw),
    "lstm": lambda **kw: gatedrnn.LSTM(3, 5, 2, **kw),
    "lstm_proj": lambda **kw: gatedrnn.LSTM(3, 5, 2, proj_size=2, **kw),
    "lstm_peephole": lambda **kw: gatedrnn.LSTM(3, 5, peephole=True, **kw),
    "lstm_coupled": lambda **kw: gatedrnn.LSTM(3, 5, coupled=True, peephole=True, **kw),
    "lstm_layer_norm": lambda **kw: gatedrnn.LSTM(3, 5, 2, layer_norm=True, **kw),
    "lstm_zoneout": lambda **kw: gatedrnn.LSTM(3, 5, zoneout=(0.2, 0.1), **kw),
    "gru": lambda **kw: gatedrnn.GRU(3, 5, 2, **kw),
    "gru_reset_before": lambda **kw: gatedrnn.GRU(3, 5, reset_after=False, **kw),
    "gru_layer_norm": lambda **kw: gatedrnn.GRU(3, 5, layer_norm=True, **kw),
    "mgu": lambda **kw: gatedrnn.MGU(3, 5, 2, **kw),
    "mingru": lambda **kw: gatedrnn.MinGRU(3, 5, 2, **kw),
    "minlstm": lambda **kw: gatedrnn.MinLSTM(3, 5, **kw),
}
BACKENDS = {"mingru": ("auto", "scan"), "minlstm": ("auto", "scan"), "rnn_tanh": ("auto", "reference", "fused"),
            "lstm": ("auto", "reference", "fused"), "gru": ("auto", "reference", "fused")}  # fmt: skip


def assert_close(got, want, what, atol=ATOL):
    got, want = torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)
    assert len(got) == len(want), what
    for g, w in zip(got, want):
        assert g.shape == w.shape and float((g - w).abs().max()) <= atol, f"{what}: {float((g - w).abs().max()):.2e}"


def moved(module):
    """Every parameter moved off its initial value (peepholes start at zero, layer-norm gains at one)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.empty_like(p).uniform_(-0.2, 0.2))
    return module.eval()


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("name, backend", [(n, b) for n in LAYERS for b in BACKENDS.get(n, ("auto",))])
def test_a_layer_fed_chunk_by_chunk_equals_the_whole_sequence(name, backend, batch_first):
    torch.manual_seed(0)
    layer = moved(LAYERS[name](batch_first=batch_first, backend=backend).double())
    x = torch.randn(2, sum(CHUNKS), 3, dtype=torch.float64)
    x = x if batch_first else x.transpose(0, 1).contiguous()
    time = 1 if batch_first else 0
    with torch.no_grad():
        whole, final = layer(x)
        state, outs = None, []
        for chunk in x.split(CHUNKS, dim=time):
            out, state = layer(chunk, state)
            outs.append(out)
    assert_close((torch.cat(outs, dim=time), state), (whole, final), f"{name} ({backend}) streamed", ATOL_FLOAT64)


@pytest.mark.parametrize("cell, options", [("lstm", {}), ("gru", {"layer_norm": True}), ("rnn", {}), ("mgu", {}),
                                           ("mingru", {}), ("minlstm", {}), ("lstm", {"peephole": True})])  # fmt: skip
def test_a_trainer_model_streamed_equals_the_whole_sequence(cell, options):
    torch.manual_seed(0)
    models = {
        "language model": (SequenceModel(cell, 4, 6, 9, num_layers=2, vocab_size=9, cell_options=options),
                           torch.randint(0, 9, (2, sum(CHUNKS)))),
        "forecaster": (SequenceModel(cell, 3, 6, 1, readout="last", cell_options=options),
                       torch.randn(2, sum(CHUNKS), 3)),
    }  # fmt: skip
    for what, (model, x) in models.items():
        model = moved(model)
        with torch.no_grad():
            whole, final = model.stream(x)
            assert_close(whole, model(x), f"{cell} {what}: stream(x) is forward(x)")
            state, outs = None, []
            for chunk in x.split(CHUNKS, dim=1):
                out, state = model.stream(chunk, state)
                outs.append(out)
        streamed = torch.cat(outs, dim=1) if model.readout == "all" else outs[-1]  # "last": the last chunk's
        assert_close((streamed, state), (whole, final), f"{cell} {what} streamed")


def test_an_adaptive_softmax_language_model_streams():
    torch.manual_seed(0)
    model = moved(SequenceModel("gru", 16, 16, 40, vocab_size=40, adaptive_softmax=(10, 20)))
    x = torch.randint(0, 40, (3, sum(CHUNKS)))
    with torch.no_grad():
        whole, final = model.stream(x)
        state, outs = None, []
        for chunk in x.split(CHUNKS, dim=1):
            out, state = model.stream(chunk, state)
            outs.append(out)
    assert_close((torch.cat(outs, 1), state), (whole, final), "adaptive softmax streamed")
