"""torch.jit.trace of gatedrnn layers and models runs at lengths and batch sizes other than the
traced ones on every backend (a plain cell runs torch's kernel or the fused ops under the
tracer, MinGRU/MinLSTM the parallel scan; before, the reference loop was unrolled over the
traced T and the fused ops failed the tracer's check); a variant runs its native loop there
too, and where only the Python loops exist its unrolled loop says so; torch.jit.script fails
with an error pointing to torch.export."""

from __future__ import annotations

import warnings

import pytest
import torch

import gatedrnn
from gatedrnn.models import SequenceModel

ATOL = 1e-5


def trace(module, *inputs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*is deprecated", category=DeprecationWarning)
        return torch.jit.trace(module, inputs)


def flat(value):
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flat(v)]
    return [value]


def assert_same(got, want, what):
    for g, w in zip(flat(got), flat(want), strict=True):
        assert g.shape == w.shape, f"{what}: shape {tuple(g.shape)}, expected {tuple(w.shape)}"
        assert float((g - w).abs().max()) <= ATOL, f"{what}: max abs difference {float((g - w).abs().max()):.2e}"


PLAIN = {
    "rnn_tanh": lambda backend: gatedrnn.RNN(3, 4, 2, batch_first=True, bidirectional=True, backend=backend),
    "rnn_relu": lambda backend: gatedrnn.RNN(3, 4, nonlinearity="relu", batch_first=True, backend=backend),
    "lstm": lambda backend: gatedrnn.LSTM(3, 4, 2, batch_first=True, bidirectional=True, backend=backend),
    "lstm_proj": lambda backend: gatedrnn.LSTM(3, 4, batch_first=True, proj_size=2, backend=backend),
    "gru": lambda backend: gatedrnn.GRU(3, 4, 2, batch_first=True, bidirectional=True, backend=backend),
}


@pytest.mark.parametrize("backend", ["auto", "reference", "fused"])
@pytest.mark.parametrize("name", PLAIN)
def test_a_traced_plain_layer_runs_at_other_lengths_and_batches_on_every_backend(name, backend):
    torch.manual_seed(0)
    layer = PLAIN[name](backend).eval()
    traced = trace(layer, torch.randn(2, 5, 3))
    for B, T in [(3, 9), (1, 1), (2, 5)]:
        x = torch.randn(B, T, 3)
        with torch.no_grad():
            assert_same(traced(x), layer(x), f"{name} ({backend}) traced at T=5, run at B={B}, T={T}")


def test_a_traced_layer_with_lengths_and_hx_runs_at_other_lengths():
    """lengths (and a given hx) go to the fused ops under the tracer: still any T."""
    torch.manual_seed(0)
    layer = gatedrnn.GRU(3, 4, 2, backend="reference").eval()
    traced = trace(layer, torch.randn(5, 2, 3), torch.randn(2, 2, 4), torch.tensor([5, 3]))  # lengths by position
    x, h, lengths = torch.randn(9, 3, 3), torch.randn(2, 3, 4), torch.tensor([9, 1, 4])
    with torch.no_grad():
        assert_same(traced(x, h, lengths), layer(x, h, lengths=lengths), "GRU with lengths traced at T=5, run at T=9")


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
@pytest.mark.parametrize("backend", ["auto", "reference", "scan"])
def test_a_traced_minimal_layer_runs_at_other_lengths(cell, backend):
    torch.manual_seed(0)
    layer = {"mingru": gatedrnn.MinGRU, "minlstm": gatedrnn.MinLSTM}[cell](3, 4, 2, bidirectional=True,
                                                                          backend=backend).eval()  # fmt: skip
    traced = trace(layer, torch.randn(5, 2, 3))
    for B, T in [(3, 9), (1, 1)]:
        x = torch.randn(T, B, 3)
        with torch.no_grad():
            assert_same(traced(x), layer(x), f"{cell} ({backend}) traced at T=5, run at B={B}, T={T}")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "mingru"])
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_a_traced_trainer_model_runs_at_other_lengths(cell, backend):
    """The trainer's models: token inputs with a readout at every step, features with the last."""
    torch.manual_seed(0)
    backend = "scan" if cell == "mingru" and backend != "auto" else backend
    lm = SequenceModel(cell, 6, 8, 11, num_layers=2, vocab_size=11, backend=backend).eval()
    regressor = SequenceModel(cell, 2, 8, 1, readout="last", backend=backend).eval()
    for model, make in ((lm, lambda B, T: torch.randint(0, 11, (B, T))), (regressor, lambda B, T: torch.randn(B, T, 2))):
        traced = trace(model, make(2, 5))
        for B, T in [(3, 12), (1, 1)]:
            x = make(B, T)
            with torch.no_grad():
                assert_same(traced(x), model(x), f"{cell} model traced at T=5, run at B={B}, T={T}")


@pytest.mark.parametrize("make", [lambda: gatedrnn.LSTM(3, 4, peephole=True, layer_norm=False),
                                  lambda: gatedrnn.LSTM(3, 4, layer_norm=True, zoneout=0.1),
                                  lambda: gatedrnn.GRU(3, 4, reset_after=False), lambda: gatedrnn.MGU(3, 4)],
                         ids=["peephole", "layer-norm+zoneout", "cho-gru", "mgu"])  # fmt: skip
def test_a_traced_variant_runs_its_native_loop_at_every_length(make):
    if not gatedrnn.fused.native_available():
        pytest.skip("native kernels not built on this machine")
    torch.manual_seed(0)
    layer = make().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(layer, (torch.randn(5, 2, 3),))
    assert not [w for w in caught if "unrolls the time loop" in str(w.message)]
    for T, B in ((5, 3), (1, 1), (12, 4)):
        x = torch.randn(T, B, 3)
        with torch.no_grad():
            assert_same(traced(x), layer(x), f"variant traced at T=5, run at B={B}, T={T}")


def test_tracing_a_variant_without_native_loops_warns_that_its_loop_is_unrolled():
    torch.manual_seed(0)
    layer = gatedrnn.LSTM(3, 4, peephole=True).eval()
    gatedrnn.fused.use_python_loops(True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            traced = torch.jit.trace(layer, (torch.randn(5, 2, 3),))
    finally:
        gatedrnn.fused.use_python_loops(False)
    messages = [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert any("torch.jit.trace unrolls the time loop of gatedrnn.LSTM(peephole=True)" in m and "T=5" in m
               and "torch.export.export" in m for m in messages), messages  # fmt: skip
    x = torch.randn(5, 3, 3)
    with torch.no_grad():
        assert_same(traced(x), layer(x), "peephole LSTM traced at T=5, run at T=5 with another batch")


@pytest.mark.parametrize("module", [gatedrnn.LSTM(3, 4), gatedrnn.MinGRU(3, 4), gatedrnn.GRUCell(3, 4),
                                    gatedrnn.MinLSTMCell(3, 4), SequenceModel("gru", 3, 4, 2)],
                         ids=["LSTM", "MinGRU", "GRUCell", "MinLSTMCell", "SequenceModel"])  # fmt: skip
def test_script_fails_with_an_error_that_points_to_torch_export(module):
    with pytest.raises(RuntimeError, match=r"torch\.jit\.script cannot compile gatedrnn's .*torch\.export\.export"):
        torch.jit.script(module)
