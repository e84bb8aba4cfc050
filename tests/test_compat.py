"""Where torch.nn's behaviour is the reference beyond numbers: devices and dtypes of every
argument, type checks, argument checks and their error types, quantization and loading a
saved model."""

import inspect
import io

import pytest
import torch
from torch import nn

import gatedrnn

BACKENDS = ("reference", "fused", "auto")
LAYERS = ("RNN", "LSTM", "GRU")
CELLS = ("RNNCell", "LSTMCell", "GRUCell")


def _states(name, *shape, **kw):
    """hx for a layer or cell of kind ``name``: a tuple (h, c) for the LSTMs."""
    h = torch.zeros(*shape, **kw)
    return (h, torch.zeros(*shape)) if name.startswith("LSTM") else h


# -- devices and dtypes of every tensor argument ------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", LAYERS)
def test_state_on_another_device_raises_before_any_kernel(name, backend):
    layer = getattr(gatedrnn, name)(3, 4, backend=backend)
    x = torch.randn(5, 2, 3)
    with pytest.raises(gatedrnn.DeviceError, match="on device meta, but the parameters are on cpu"):
        layer(x, _states(name, 1, 2, 4, device="meta"))
    if name == "LSTM":  # c_0 alone on the meta device
        with pytest.raises(gatedrnn.DeviceError, match=r"hx\[1\] \(c_0\) is on device meta"):
            layer(x, (torch.zeros(1, 2, 4), torch.empty(1, 2, 4, device="meta")))
    with pytest.raises(gatedrnn.DeviceError, match="input is on device meta, but the parameters are on cpu"):
        layer(torch.empty(5, 2, 3, device="meta"))
    with pytest.raises(gatedrnn.DeviceError, match="lengths is on device meta"):
        layer(x, lengths=torch.tensor([5, 3], device="meta"))
    with pytest.raises(RuntimeError):  # what torch.nn raises
        layer(x, _states(name, 1, 2, 4, device="meta"))


@pytest.mark.parametrize("name", CELLS)
def test_cell_state_on_another_device_raises(name):
    cell = getattr(gatedrnn, name)(3, 4)
    with pytest.raises(gatedrnn.DeviceError, match="on device meta, but the parameters are on cpu"):
        cell(torch.randn(2, 3), _states(name, 2, 4, device="meta"))
    with pytest.raises(gatedrnn.DeviceError, match="input is on device meta"):
        cell(torch.empty(2, 3, device="meta"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", LAYERS)
def test_state_of_another_dtype_raises_torchs_error_type(name, backend):
    layer = getattr(gatedrnn, name)(3, 4, backend=backend)
    with pytest.raises(gatedrnn.DTypeError, match="float64 but the parameters are torch.float32") as info:
        layer(torch.randn(5, 2, 3), _states(name, 1, 2, 4, dtype=torch.float64))
    assert isinstance(info.value, (TypeError, RuntimeError))  # ours documented, torch.nn's


# -- type checks, torch.nn's attributes, repr -------------------------------------------


@pytest.mark.parametrize("name", LAYERS + CELLS)
def test_layers_and_cells_are_torch_nn_modules_of_their_kind(name):
    ours = getattr(gatedrnn, name)(3, 4)
    if name in CELLS:
        assert isinstance(ours, getattr(nn, name)) and isinstance(ours, nn.RNNCellBase)
    else:
        # torch.nn.RNNBase, not torch.nn.LSTM: Dynamo refuses to trace those (see README)
        assert isinstance(ours, nn.RNNBase) and not isinstance(ours, getattr(nn, name))


@pytest.mark.parametrize("name", LAYERS)
def test_flat_weights_and_all_weights_are_torchs(name):
    kw = {"proj_size": 2} if name == "LSTM" else {}
    theirs = getattr(nn, name)(3, 4, num_layers=2, bidirectional=True, bias=False, **kw)
    ours = getattr(gatedrnn, name)(3, 4, num_layers=2, bidirectional=True, bias=False, **kw)
    assert ours._all_weights == theirs._all_weights
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert [w.shape for w in ours.all_weights[1]] == [w.shape for w in theirs.all_weights[1]]
    new = nn.Parameter(torch.zeros_like(ours.weight_hh_l1))
    ours.weight_hh_l1 = new  # kept in step, as torch.nn does
    assert ours._flat_weights[ours._flat_weights_names.index("weight_hh_l1")] is new
    ours._flat_weights = list(ours._flat_weights)  # assignable, as torch.nn's is
    ours.double()
    assert all(w.dtype == torch.float64 for w in ours._flat_weights)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.RNN(3, 4, nonlinearity="relu"),
        lambda m: m.RNN(3, 4, 2, "relu", False, True, 0.5, True),
        lambda m: m.LSTM(3, 4, proj_size=2, bias=False),
        lambda m: m.GRU(3, 4, batch_first=True, bidirectional=True),
        lambda m: m.RNNCell(3, 4, nonlinearity="relu"),
        lambda m: m.LSTMCell(3, 4, bias=False),
        lambda m: m.GRUCell(3, 4),
    ],
)
def test_repr_is_torchs(make):
    assert repr(make(gatedrnn)) == repr(make(nn))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:torch.quantize_per_tensor:UserWarning")
def test_quantize_dynamic_recipe():
    """quantize_dynamic matches exact types; ``gatedrnn.to_torch`` hands it torch.nn's."""

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = gatedrnn.LSTM(3, 8, num_layers=2)
            self.cell = gatedrnn.GRUCell(8, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            y, _ = self.lstm(x)
            return self.head(self.cell(y[-1]))

    torch.manual_seed(0)
    model = Model().eval()
    x = torch.randn(5, 2, 3)
    expected = model(x)
    as_is = torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, nn.GRUCell, nn.Linear})
    assert type(as_is.lstm) is gatedrnn.LSTM  # the measured behaviour README states
    converted = gatedrnn.to_torch(model)
    assert type(converted.lstm) is nn.LSTM and type(converted.cell) is nn.GRUCell
    assert type(model.lstm) is gatedrnn.LSTM  # a copy: the model is left as it was
    torch.testing.assert_close(converted(x), expected, atol=1e-6, rtol=1e-6)
    quantized = torch.ao.quantization.quantize_dynamic(converted, {nn.LSTM, nn.GRUCell, nn.Linear})
    assert type(quantized.lstm) is torch.ao.nn.quantized.dynamic.LSTM
    assert type(quantized.cell) is torch.ao.nn.quantized.dynamic.GRUCell
    torch.testing.assert_close(quantized(x), expected, atol=0.05, rtol=0.05)
    assert type(gatedrnn.to_torch(gatedrnn.GRU(3, 4))) is nn.GRU


# -- argument checks as torch.nn's -------------------------------------------------------


FLAGS = [{"bias": "False"}, {"bias": 1}, {"batch_first": 1}, {"batch_first": "True"}]


@pytest.mark.parametrize(
    "name,kwargs", [(n, kw) for n in LAYERS + CELLS for kw in FLAGS if n in LAYERS or "bias" in kw]
)  # the cells take no batch_first
def test_flags_must_be_bool(name, kwargs):
    key = next(iter(kwargs))
    with pytest.raises(TypeError, match=f"{key} must be a bool, got"):
        getattr(gatedrnn, name)(3, 4, **kwargs)


def _positional(cls):
    """The names a class takes positionally, in order."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind in kinds][1:]  # less self


def test_positional_order_is_torchs():
    """torch.nn.LSTM and GRU pass their arguments through to torch.nn.RNNBase (less
    ``mode``); torch.nn.RNN takes ``nonlinearity`` fourth and then does the same."""
    base = _positional(nn.RNNBase)[1:]  # less mode
    assert base[7:] == ["proj_size", "device", "dtype"]
    assert _positional(gatedrnn.LSTM) == base
    assert _positional(gatedrnn.GRU) == base
    assert _positional(gatedrnn.RNN) == base[:3] + ["nonlinearity"] + base[3:]
    for name in CELLS:
        assert _positional(getattr(gatedrnn, name)) == _positional(getattr(nn, name))
    kw_only = inspect.Parameter.KEYWORD_ONLY
    assert inspect.signature(gatedrnn.LSTM).parameters["forget_bias"].kind == kw_only
    assert inspect.signature(gatedrnn.GRU).parameters["backend"].kind == kw_only


def test_proj_size_in_torchs_positional_slot():
    gru = gatedrnn.GRU(3, 4, 1, True, False, 0.0, False, 0, "cpu", torch.float64)  # torch's order
    assert gru.weight_ih_l0.dtype == torch.float64
    with pytest.raises(ValueError, match="proj_size is only supported by LSTM"):
        gatedrnn.GRU(3, 4, 1, True, False, 0.0, False, 2)
    with pytest.raises(ValueError, match="proj_size is only supported by LSTM"):
        gatedrnn.RNN(3, 4, proj_size=2)
    with pytest.raises(TypeError, match="proj_size must be an int"):
        gatedrnn.GRU(3, 4, 1, True, False, 0.0, False, "cpu")  # the device where torch has proj_size


@pytest.mark.parametrize(
    "call,documented,torchs",
    [
        (lambda m: m.GRUCell(3, 4)(torch.randn(2, 5)), ValueError, RuntimeError),
        (lambda m: m.GRUCell(3, 4)(torch.randn(2, 3), torch.randn(5, 4)), ValueError, RuntimeError),
        (lambda m: m.GRUCell(3, 4)(torch.randn(2, 3, dtype=torch.float64)), TypeError, RuntimeError),
        (lambda m: m.GRU(3, 4)(torch.randn(5, 2, 3, dtype=torch.float64)), TypeError, ValueError),
        (lambda m: m.GRU(3, 4)(torch.randn(5, 2, 7)), ValueError, RuntimeError),
        (lambda m: m.GRU(3, 4)(torch.randn(5, 2, 3), torch.zeros(1, 3, 4)), ValueError, RuntimeError),
        (lambda m: m.LSTM(3, 4)(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4))), ValueError, RuntimeError),
        (lambda m: m.GRU(3, 4)(torch.randn(0, 2, 3)), ValueError, RuntimeError),
        (lambda m: m.GRU(3, 4, dropout=True), TypeError, ValueError),
        (lambda m: m.GRU(3, 4, num_layers=2, dropout="0.5"), TypeError, ValueError),
    ],
)  # fmt: skip
def test_errors_are_both_documented_and_torchs_type(call, documented, torchs):
    with pytest.raises(torchs):
        call(nn)
    with pytest.raises(documented) as info:
        call(gatedrnn)
    assert isinstance(info.value, torchs), f"{type(info.value).__name__} is not a {torchs.__name__}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_lengths_with_an_empty_batch(backend):
    layer = gatedrnn.LSTM(3, 4, num_layers=2, backend=backend)
    out, (h, c) = layer(torch.randn(5, 0, 3), lengths=torch.zeros(0, dtype=torch.long))
    assert out.shape == (5, 0, 4) and h.shape == c.shape == (2, 0, 4)


# -- loading a saved model with torch.load's weights_only unpickler -----------------------


def test_torch_load_with_safe_globals():
    torch.manual_seed(0)
    saved = [gatedrnn.LSTM(3, 4, proj_size=2, backend="reference", forget_bias=1.0), gatedrnn.RNN(3, 4, nonlinearity="relu"),
             gatedrnn.GRU(3, 4), gatedrnn.LSTMCell(3, 4), gatedrnn.GRUCell(3, 4), gatedrnn.RNNCell(3, 4)]  # fmt: skip
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals(gatedrnn.SAFE_GLOBALS):
        loaded = torch.load(buffer)
    x = torch.randn(5, 2, 3)
    for a, b in zip(saved, loaded):
        assert type(a) is type(b) and repr(a) == repr(b)
        inp = x if isinstance(a, nn.RNNBase) else x[0]
        torch.testing.assert_close(b(inp), a(inp), atol=0, rtol=0)
    assert loaded[0].backend == "reference" and loaded[0].forget_bias == 1.0


def test_a_layer_pickled_before_it_was_a_torch_rnnbase_loads():
    """gatedrnn 0.1's layers kept neither ``_all_weights`` nor ``_flat_weights`` in their state."""
    torch.manual_seed(0)
    layer = gatedrnn.LSTM(3, 4, num_layers=2, bidirectional=True)
    state = layer.__getstate__()
    del state["_all_weights"], state["_flat_weights"]
    loaded = gatedrnn.LSTM.__new__(gatedrnn.LSTM)
    loaded.__setstate__(state)
    assert loaded._all_weights == layer._all_weights
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(loaded(x)[0], layer(x)[0], atol=0, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_batch_runs_in_packing_order_and_comes_back_in_callers(backend):
    """A PackedSequence runs in its packing's order (torch.nn's, for dropout's masks); the
    final states and the trace come back in the caller's batch order."""
    torch.manual_seed(0)
    layer = gatedrnn.GRU(3, 4, num_layers=2, bidirectional=True, backend=backend)
    x, lengths = torch.randn(6, 4, 3), torch.tensor([3, 6, 1, 5])
    hx = torch.randn(4, 4, 4)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_p, h_p, trace_p = layer(packed, hx, return_trace=True)
    out_l, h_l, trace_l = layer(x, hx, lengths=lengths, return_trace=True)
    torch.testing.assert_close(torch.nn.utils.rnn.pad_packed_sequence(out_p)[0], out_l)
    torch.testing.assert_close(h_p, h_l)
    for name in trace_l:
        torch.testing.assert_close(trace_p[name], trace_l[name])
