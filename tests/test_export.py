"""torch.export and torch.onnx.export (dynamo and legacy exporters) on gatedrnn layers and models:
every cell and variant, bare or inside a model, exported at one batch size and length and run
at others, against eager PyTorch (1e-5); and `gatedrnn export`.

Exports are slow (seconds each), so one model holding every cell is exported once per exporter,
and the structural options (batch_first, bidirectional, layers, hx) are spread over it and over
two bare layers."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn
from torch.export import Dim

import gatedrnn

ATOL = 1e-5
SIZES = [(1, 1), (4, 13), (2, 21)]  # (B, T) run at; every export traces at (3, 6)


def onnx_packages():
    """onnx, onnxscript and onnxruntime, or a skip saying how to install them."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name, reason=f"{name} is not installed: pip install -e '.[export]'")
    import onnxruntime

    return onnxruntime


# every cell and variant, with the structural options spread over them
CELLS = {
    "rnn_tanh": lambda: gatedrnn.RNN(4, 5, batch_first=True),
    "rnn_relu": lambda: gatedrnn.RNN(4, 5, 2, nonlinearity="relu", batch_first=True),
    "lstm": lambda: gatedrnn.LSTM(4, 5, batch_first=True, bidirectional=True),
    "lstm_proj": lambda: gatedrnn.LSTM(4, 5, 2, batch_first=True, proj_size=3),
    "lstm_peephole": lambda: gatedrnn.LSTM(4, 5, batch_first=True, peephole=True),
    "lstm_coupled": lambda: gatedrnn.LSTM(4, 5, batch_first=True, coupled=True),
    "lstm_layer_norm": lambda: gatedrnn.LSTM(4, 5, batch_first=True, layer_norm=True),
    "gru": lambda: gatedrnn.GRU(4, 5, 2, batch_first=True, bidirectional=True),
    "gru_reset_before": lambda: gatedrnn.GRU(4, 5, batch_first=True, reset_after=False),
    "gru_layer_norm": lambda: gatedrnn.GRU(4, 5, batch_first=True, layer_norm=True),
    "mgu": lambda: gatedrnn.MGU(4, 5, batch_first=True),
    "mingru": lambda: gatedrnn.MinGRU(4, 5, batch_first=True, bidirectional=True),
    "minlstm": lambda: gatedrnn.MinLSTM(4, 5, batch_first=True),
}
PLAIN = ("rnn_tanh", "rnn_relu", "lstm", "gru")  # torch.nn's cells: the legacy exporter keeps T dynamic


class Zoo(nn.Module):
    """A model holding layers side by side: each reads x, their outputs and states come back."""

    def __init__(self, names):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(CELLS[name]() for name in names)
        with torch.no_grad():  # peepholes start at zero and layer-norm gains at one: move them
            for name, p in self.named_parameters():
                if "weight_c" in name or "layer_norm" in name:
                    p.add_(torch.empty_like(p).uniform_(-0.3, 0.3))

    def forward(self, x):
        return tuple(layer(x) for layer in self.layers)


def flat(value) -> list[torch.Tensor]:
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flat(v)]
    return [value]


def assert_outputs_equal(got, want, what):
    assert len(got) == len(want), what
    for k, (g, w) in enumerate(zip(got, want)):
        g = torch.as_tensor(g)
        assert g.shape == w.shape, f"{what}, output {k}: shape {tuple(g.shape)}, expected {tuple(w.shape)}"
        difference = float((g - w.detach()).abs().max())
        assert difference <= ATOL, f"{what}, output {k}: max abs difference {difference:.2e}"


def run_onnx(ort, model_bytes, inputs):
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)})


def test_every_cell_in_a_model_exports_to_an_exported_program_for_any_length_and_batch():
    zoo = Zoo(CELLS).eval()
    x = torch.randn(3, 6, 4)
    program = torch.export.export(zoo, (x,), dynamic_shapes=({0: Dim("B", min=1), 1: Dim("T", min=1)},))
    scans = [n for n in program.graph.nodes if n.target is torch.ops.higher_order.scan]
    assert len(scans) == 20  # one per layer and direction: the time loop is one node, not T copies
    exported = program.module()
    for B, T in SIZES:
        x = torch.randn(B, T, 4)
        with torch.no_grad():
            assert_outputs_equal(flat(exported(x)), flat(zoo(x)), f"exported program at B={B}, T={T}")


def test_every_cell_in_a_model_exports_to_onnx_with_the_dynamo_exporter_for_any_length_and_batch():
    ort = onnx_packages()
    zoo = Zoo(CELLS).eval()
    x = torch.randn(3, 6, 4)
    program = torch.onnx.export(zoo, (x,), dynamic_shapes=({0: Dim("B", min=1), 1: Dim("T", min=1)},),
                                dynamo=True, verbose=False)  # fmt: skip
    model = program.model_proto.SerializeToString()
    assert {n.op_type for n in program.model_proto.graph.node} >= {"Scan"}
    for B, T in SIZES:
        x = torch.randn(B, T, 4)
        with torch.no_grad():
            assert_outputs_equal(run_onnx(ort, model, [x]), flat(zoo(x)), f"onnxruntime at B={B}, T={T}")


BARE = {  # bare layers: time-major input, hx given, several layers and both directions
    "gru": (lambda: gatedrnn.GRU(4, 5, 2, bidirectional=True), lambda B: torch.randn(4, B, 5)),
    "lstm": (lambda: gatedrnn.LSTM(4, 5, 2), lambda B: (torch.randn(2, B, 5), torch.randn(2, B, 5))),
}


@pytest.mark.parametrize("name", BARE)
def test_a_bare_layer_with_hx_exports_with_both_onnx_exporters_and_torch_export(name):
    ort = onnx_packages()
    make, make_hx = BARE[name]
    torch.manual_seed(0)
    layer = make().eval()
    x, hx = torch.randn(6, 3, 4), make_hx(3)
    B, T = Dim("B", min=1), Dim("T", min=1)
    dynamic = ({0: T, 1: B}, tuple({1: B} for _ in hx) if isinstance(hx, tuple) else {1: B})
    exported = torch.export.export(layer, (x, hx), dynamic_shapes=dynamic).module()
    dynamo = torch.onnx.export(layer, (x, hx), dynamic_shapes=dynamic, dynamo=True, verbose=False)
    dynamo = dynamo.model_proto.SerializeToString()
    legacy = io.BytesIO()
    names = ["x"] + (["h0", "c0"] if isinstance(hx, tuple) else ["h0"])
    torch.onnx.export(layer, (x, hx), legacy, dynamo=False, input_names=names,
                      dynamic_axes={"x": {0: "T", 1: "B"}, **{n: {1: "B"} for n in names[1:]}})  # fmt: skip
    for B, T in SIZES:
        x, hx = torch.randn(T, B, 4), make_hx(B)
        with torch.no_grad():
            want = flat(layer(x, hx))
            assert_outputs_equal(flat(exported(x, hx)), want, f"exported program at B={B}, T={T}")
        inputs = flat((x, hx))
        assert_outputs_equal(run_onnx(ort, dynamo, inputs), want, f"dynamo ONNX at B={B}, T={T}")
        assert_outputs_equal(run_onnx(ort, legacy.getvalue(), inputs), want, f"legacy ONNX at B={B}, T={T}")


def test_the_legacy_exporter_keeps_a_plain_cell_dynamic_and_unrolls_a_variant_with_a_warning():
    """torch.onnx.export(dynamo=False) traces with torch.jit: a plain cell runs torch's kernel
    (ONNX's own RNN, GRU, LSTM ops: any T); a variant's loop is unrolled over the traced T, said
    by a TracerWarning, and the graph is exact at that T for any batch."""
    ort = onnx_packages()
    x = torch.randn(3, 6, 4)
    for names, dynamic in ((PLAIN, True), ([n for n in CELLS if n not in PLAIN], False)):
        zoo = Zoo(names).eval()
        f = io.BytesIO()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.onnx.export(zoo, (x,), f, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "B", 1: "T"}})
        unrolled = [str(w.message) for w in caught if "unrolls the time loop" in str(w.message)]
        ops = {n.op_type for n in __import__("onnx").load_from_string(f.getvalue()).graph.node}
        if dynamic:
            assert not unrolled and {"RNN", "LSTM", "GRU"} <= ops
        else:
            assert len(unrolled) == len(names) and "T=6" in unrolled[0], unrolled
        for B, T in SIZES if dynamic else [(1, 6), (5, 6)]:
            x_run = torch.randn(B, T, 4)
            with torch.no_grad():
                assert_outputs_equal(run_onnx(ort, f.getvalue(), [x_run]), flat(zoo(x_run)), f"{names} at {B, T}")


def test_a_trained_models_stateful_form_exports_and_streams():
    """SequenceModel.stream as an exported program: chunk by chunk through the file equals
    the whole sequence in PyTorch."""
    from gatedrnn.export import Stateful, dynamic_shapes, example_inputs
    from gatedrnn.models import SequenceModel

    torch.manual_seed(0)
    model = SequenceModel("lstm", 3, 6, 2, num_layers=2, cell_options={"peephole": True}).eval()
    example = example_inputs(model, 2, 8, stateful=True)
    stream = torch.export.export(Stateful(model), example, dynamic_shapes=dynamic_shapes(example)).module()
    x = torch.randn(3, 11, 3)
    with torch.no_grad():
        whole, (h_n, c_n) = model.stream(x)
        h, c = torch.zeros(2, 3, 6), torch.zeros(2, 3, 6)
        outs = []
        for chunk in x.split([4, 1, 6], dim=1):
            out, h, c = stream(chunk, h, c)
            outs.append(out)
    assert_outputs_equal([torch.cat(outs, 1), h, c], [whole, h_n, c_n], "streamed through the exported program")


def test_lengths_and_zoneout_export_as_inputs_of_the_graph():
    """lengths is an input of the exported graph (its values are data: not checked there), and a
    variant with zoneout (its eval expectation), read in both directions, masks by it."""
    ort = onnx_packages()

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = gatedrnn.LSTM(3, 4, bidirectional=True, peephole=True, zoneout=0.2)

        def forward(self, x, lengths):
            return self.rnn(x, lengths=lengths)

    torch.manual_seed(0)
    model = Masked().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.empty_like(p).uniform_(-0.2, 0.2))
    example, B, T = (torch.randn(6, 3, 3), torch.tensor([6, 2, 4])), Dim("B", min=1), Dim("T", min=1)
    dynamic = ({0: T, 1: B}, {0: B})
    exported = torch.export.export(model, example, dynamic_shapes=dynamic).module()
    onnx_model = torch.onnx.export(model, example, dynamic_shapes=dynamic, dynamo=True, verbose=False)
    x, lengths = torch.randn(11, 4, 3), torch.tensor([3, 11, 1, 7])
    with torch.no_grad():
        want = flat(model(x, lengths))
        assert_outputs_equal(flat(exported(x, lengths)), want, "exported program with lengths")
    got = run_onnx(ort, onnx_model.model_proto.SerializeToString(), [x, lengths])
    assert_outputs_equal(got, want, "onnxruntime with lengths")


@pytest.mark.parametrize("name", ["gru", "lstm_peephole", "mingru"])
def test_strict_export_captures_the_scan_too(name):
    """strict=True: Dynamo traces the layer, and takes torch's scan wrapper (it refuses the bare op)."""
    torch.manual_seed(0)
    layer = CELLS[name]().eval()
    dynamic = ({0: Dim("B", min=1), 1: Dim("T", min=1)},)
    exported = torch.export.export(layer, (torch.randn(3, 6, 4),), dynamic_shapes=dynamic, strict=True).module()
    for B, T in SIZES:
        x = torch.randn(B, T, 4)
        with torch.no_grad():
            assert_outputs_equal(flat(exported(x)), flat(layer(x)), f"strict export of {name} at B={B}, T={T}")
