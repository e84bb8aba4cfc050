"""Keras 3 ⇄ gatedrnn (gatedrnn.convert.keras): every layer type against Keras itself on its
torch backend (outputs, final states, gradients w.r.t. inputs and weights), both directions,
bitwise round trips, whole models (Sequential, functional, a .keras file), and every refusal."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_TORCH_DEVICE", "cpu")  # beside gatedrnn's CPU modules (and no cuDNN TF32)
keras = pytest.importorskip("keras", reason="Keras 3 (the interop extra) converts to and from gatedrnn")
if keras.backend.backend() != "torch":  # pragma: no cover - KERAS_BACKEND was set to another before
    pytest.skip("these tests run Keras on its torch backend", allow_module_level=True)

import gatedrnn
from gatedrnn.convert import from_keras, to_keras
from gatedrnn.convert.keras import KerasModel, KerasRecurrent

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
L = keras.layers
ATOL = 2e-5  # float32, a few dozen steps of tanh/sigmoid
KINDS = {
    "simple_tanh": lambda units, **kw: L.SimpleRNN(units, **kw),
    "simple_relu": lambda units, **kw: L.SimpleRNN(units, activation="relu", **kw),
    "lstm": lambda units, **kw: L.LSTM(units, **kw),
    "gru_after": lambda units, **kw: L.GRU(units, **kw),
    "gru_before": lambda units, **kw: L.GRU(units, reset_after=False, **kw),
}
MERGE = ["concat", "sum", "mul", "ave", None]


def randomize(layer, rng) -> None:
    """Every weight uniform in (-0.6, 0.6): biases too, so no bias stays at Keras' zeros."""
    for v in layer.weights:
        v.assign(rng.uniform(-0.6, 0.6, v.shape).astype(v.dtype))


def as_list(result):
    return list(result) if isinstance(result, (list, tuple)) else [result]


def right_mask(rng, B, T, empty=False) -> torch.Tensor:
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T
    if empty and B > 2:
        lengths[2] = 0  # a sequence with no valid step: Keras keeps its initial state
    return torch.arange(T)[None, :] < torch.as_tensor(lengths)[:, None]  # (B, T)


def assert_same(theirs, ours, atol=ATOL):
    theirs, ours = as_list(theirs), as_list(ours)
    assert len(theirs) == len(ours)
    for a, b in zip(theirs, ours):
        a = torch.as_tensor(a).detach().cpu()
        assert a.shape == b.shape
        torch.testing.assert_close(b.detach(), a, atol=atol, rtol=1e-5)


def draw(seed: int):
    """A random configuration: sizes, bias, return_sequences, return_state, go_backwards, mask."""
    rng = np.random.default_rng(seed)
    config = {"units": int(rng.integers(1, 7)), "I": int(rng.integers(1, 6)), "B": int(rng.integers(1, 5)),
              "T": int(rng.integers(1, 8)), "use_bias": bool(rng.integers(2)),
              "return_sequences": bool(rng.integers(2)), "return_state": bool(rng.integers(2)),
              "mask": ("none", "right", "empty")[int(rng.integers(3))], "initial_state": bool(rng.integers(2))}  # fmt: skip
    return rng, config


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_recurrent_layer_computes_what_keras_computes_both_ways(kind, go_backwards, seed):
    rng, c = draw(seed)
    layer = KINDS[kind](c["units"], use_bias=c["use_bias"], return_sequences=c["return_sequences"],
                        return_state=c["return_state"], go_backwards=go_backwards)  # fmt: skip
    layer.build((None, c["T"], c["I"]))
    randomize(layer, rng)
    x = torch.as_tensor(rng.normal(size=(c["B"], c["T"], c["I"])).astype("float32"))
    mask = None if c["mask"] == "none" else right_mask(rng, c["B"], c["T"], empty=c["mask"] == "empty")
    states = 2 if kind == "lstm" else 1
    initial = [torch.randn(c["B"], c["units"]) for _ in range(states)] if c["initial_state"] else None
    theirs = layer(x, initial_state=initial, mask=mask)
    ours = from_keras(layer)
    assert isinstance(ours, KerasRecurrent) and not ours.training
    assert_same(theirs, ours(x, initial, mask=mask))
    back = to_keras(ours)  # Keras → gatedrnn → Keras: the same weights, bit for bit, and the same function
    assert type(back) is type(layer) and back.get_config()["go_backwards"] == go_backwards
    for w0, w1 in zip(layer.weights, back.weights):
        assert w0.path.split("/")[-1] == w1.path.split("/")[-1]
        assert np.array_equal(keras.ops.convert_to_numpy(w0), keras.ops.convert_to_numpy(w1))
    assert_same(theirs, back(x, initial_state=initial, mask=mask), atol=0)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("kind", list(KINDS))
def test_bidirectional_layers_and_every_merge_mode(kind, merge_mode):
    rng, c = draw(100 + 7 * list(KINDS).index(kind) + MERGE.index(merge_mode))
    inner = KINDS[kind](c["units"], use_bias=c["use_bias"], return_sequences=c["return_sequences"],
                        return_state=c["return_state"])  # fmt: skip
    layer = L.Bidirectional(inner, merge_mode=merge_mode)
    layer.build((None, c["T"], c["I"]))
    randomize(layer, rng)
    x = torch.as_tensor(rng.normal(size=(c["B"], c["T"], c["I"])).astype("float32"))
    mask = None if c["mask"] == "none" else right_mask(rng, c["B"], c["T"], empty=c["mask"] == "empty")
    states = 4 if kind == "lstm" else 2  # Keras' order: the forward direction's h (c), the backward's
    initial = [torch.randn(c["B"], c["units"]) for _ in range(states)] if c["initial_state"] else None
    theirs = layer(x, initial_state=initial, mask=mask)
    ours = from_keras(layer)
    assert ours.rnn.bidirectional and ours.merge_mode == merge_mode
    assert_same(theirs, ours(x, initial, mask=mask))
    back = to_keras(ours)
    assert isinstance(back, L.Bidirectional) and back.merge_mode == merge_mode
    assert_same(theirs, back(x, initial_state=initial, mask=mask), atol=0)


@pytest.mark.parametrize("kind", list(KINDS) + ["bidirectional_lstm", "bidirectional_gru_before"])
def test_gradients_equal_keras_wrt_inputs_and_every_weight(kind):
    """Keras' variables are torch parameters on its torch backend: one loss, both backward passes."""
    rng = np.random.default_rng(7)
    B, T, I, H = 3, 5, 4, 6
    if kind.startswith("bidirectional"):
        layer = L.Bidirectional(KINDS[kind.split("_", 1)[1] if "gru" in kind else "lstm"](H, return_sequences=True))
        cells = [("", layer.forward_layer.cell), ("_reverse", layer.backward_layer.cell)]
    else:
        layer = KINDS[kind](H, return_sequences=True)
        cells = [("", layer.cell)]
    layer.build((None, T, I))
    randomize(layer, rng)
    ours = from_keras(layer)
    x = torch.randn(B, T, I)
    grad_out = torch.randn(B, T, H * (2 if kind.startswith("bidirectional") else 1))
    x_theirs, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    (torch.as_tensor(layer(x_theirs)) * grad_out).sum().backward()
    (ours(x_ours) * grad_out).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad.cpu(), atol=ATOL, rtol=1e-5)
    gru = "gru" in kind

    def keras_order(w):  # torch's r, z, n → Keras' z, r, h (rows)
        if not gru:
            return w
        r, z, n = w.chunk(3, 0)
        return torch.cat([z, r, n], 0)

    for suffix, cell in cells:
        rnn = ours.rnn
        g = {name: getattr(rnn, f"{name}_l0{suffix}").grad for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        torch.testing.assert_close(keras_order(g["weight_ih"]).T, cell.kernel.value.grad.cpu(), atol=ATOL, rtol=1e-5)
        torch.testing.assert_close(keras_order(g["weight_hh"]).T, cell.recurrent_kernel.value.grad.cpu(), atol=ATOL, rtol=1e-5)
        if gru and cell.reset_after:
            expected = torch.stack([keras_order(g["bias_ih"]), keras_order(g["bias_hh"])])
        else:  # one Keras bias feeds bias_ih; bias_hh (zero) sits beside it in the same sums
            expected = keras_order(g["bias_ih"])
            if not gru:
                torch.testing.assert_close(g["bias_hh"], g["bias_ih"])
        torch.testing.assert_close(expected, cell.bias.value.grad.cpu(), atol=ATOL, rtol=1e-5)


def test_the_equations_recomputed_in_float64_match_a_converted_lstm_and_gru():
    """The mapping written out once by hand, independently of the converter: Keras' LSTM
    (i, f, c, o, one bias) and GRU reset_after=False (z, r, h, r before the product)."""
    rng = np.random.default_rng(3)
    I, H, T = 3, 4, 6
    x = rng.normal(size=(1, T, I))
    sig = lambda v: 1 / (1 + np.exp(-v))
    lstm = L.LSTM(H, return_sequences=True, dtype="float64")
    lstm.build((None, T, I))
    randomize(lstm, rng)
    W, U, b = (keras.ops.convert_to_numpy(v) for v in (lstm.cell.kernel, lstm.cell.recurrent_kernel, lstm.cell.bias))
    h, c, hs = np.zeros(H), np.zeros(H), []
    for t in range(T):
        z = x[0, t] @ W + h @ U + b
        i, f, g, o = sig(z[:H]), sig(z[H : 2 * H]), np.tanh(z[2 * H : 3 * H]), sig(z[3 * H :])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    ours = from_keras(lstm)(torch.as_tensor(x))
    np.testing.assert_allclose(ours[0].detach().numpy(), np.stack(hs), atol=1e-12)
    gru = L.GRU(H, return_sequences=True, reset_after=False, dtype="float64")
    gru.build((None, T, I))
    randomize(gru, rng)
    W, U, b = (keras.ops.convert_to_numpy(v) for v in (gru.cell.kernel, gru.cell.recurrent_kernel, gru.cell.bias))
    h, hs = np.zeros(H), []
    for t in range(T):
        xz = x[0, t] @ W + b
        z = sig(xz[:H] + h @ U[:, :H])
        r = sig(xz[H : 2 * H] + h @ U[:, H : 2 * H])
        n = np.tanh(xz[2 * H :] + (r * h) @ U[:, 2 * H :])
        h = z * h + (1 - z) * n
        hs.append(h)
    ours = from_keras(gru)
    assert ours.rnn.reset_after is False
    np.testing.assert_allclose(ours(torch.as_tensor(x))[0].detach().numpy(), np.stack(hs), atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gru_after", "gru_before", "simple_relu"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_gatedrnn_to_keras_to_gatedrnn_is_bitwise(kind, bidirectional):
    torch.manual_seed(0)
    cls, extra = {"lstm": (gatedrnn.LSTM, {}), "gru_after": (gatedrnn.GRU, {}),
                  "gru_before": (gatedrnn.GRU, {"reset_after": False}),
                  "simple_relu": (gatedrnn.RNN, {"nonlinearity": "relu"})}[kind]  # fmt: skip
    layer = cls(3, 5, batch_first=True, bidirectional=bidirectional, **extra)
    x = torch.randn(2, 6, 3)
    out, state = layer(x)
    keras_layer = to_keras(layer)
    assert isinstance(keras_layer, L.Bidirectional) == bidirectional
    theirs = as_list(keras_layer(x))
    torch.testing.assert_close(torch.as_tensor(theirs[0]), out, atol=ATOL, rtol=1e-5)
    h = state[0] if isinstance(state, tuple) else state
    torch.testing.assert_close(torch.as_tensor(theirs[1]), h[0], atol=ATOL, rtol=1e-5)
    back = from_keras(keras_layer).rnn
    if kind == "gru_after":  # Keras keeps both GRU biases: the round trip is the identity
        expected = layer.state_dict()
    else:  # Keras has one bias: it holds bias_ih + bias_hh, and bias_hh comes back zero
        expected = {k: v.clone() for k, v in layer.state_dict().items()}
        for k in [k for k in expected if k.startswith("bias_ih")]:
            hh = k.replace("bias_ih", "bias_hh")
            expected[k], expected[hh] = expected[k] + expected[hh], torch.zeros_like(expected[hh])
    assert back.state_dict().keys() == expected.keys()
    assert all(torch.equal(back.state_dict()[k], expected[k]) for k in expected)
    # what came from Keras goes back and forth bit for bit
    again = from_keras(to_keras(from_keras(keras_layer))).rnn
    assert all(torch.equal(again.state_dict()[k], back.state_dict()[k]) for k in expected)


def test_a_stack_goes_to_a_keras_sequential_with_dropout_between_layers():
    torch.manual_seed(1)
    layer = gatedrnn.GRU(3, 4, num_layers=3, dropout=0.25, bidirectional=True, batch_first=True).eval()
    seq = to_keras(layer)
    assert isinstance(seq, keras.Sequential)
    assert [type(v).__name__ for v in seq.layers] == ["Bidirectional", "Dropout"] * 2 + ["Bidirectional"]
    x = torch.randn(2, 5, 3)
    assert_same(seq(x), layer(x)[0])
    assert_same(seq(x), from_keras(seq)(x))


@pytest.mark.parametrize("options", [{"return_sequences": True, "return_state": True}, {"go_backwards": True},
                                     {"kernel_size": (3, 1), "use_bias": False, "return_sequences": True},
                                     {"kernel_size": 1, "padding": "valid", "return_state": True}])  # fmt: skip
def test_conv_lstm_2d_channels_last_both_ways(options):
    rng = np.random.default_rng(5)
    options = {"kernel_size": 3, "padding": "same"} | options
    layer = L.ConvLSTM2D(3, **options)
    x = torch.as_tensor(rng.normal(size=(2, 4, 5, 6, 2)).astype("float32"))  # (B, T, H, W, C)
    layer.build(tuple(x.shape))
    randomize(layer, rng)
    ours = from_keras(layer)
    assert isinstance(ours.rnn, gatedrnn.ConvLSTM)
    theirs = layer(x)
    assert_same(theirs, ours(x))
    assert_same(theirs, to_keras(ours)(x), atol=0)
    mask = right_mask(rng, 2, 4)
    assert_same(layer(x, mask=mask), ours(x, mask=mask))


def test_conv_lstm_2d_gradients_and_a_model_of_frames():
    rng = np.random.default_rng(8)
    model = keras.Sequential([keras.Input((3, 5, 4, 2)), L.ConvLSTM2D(3, 3, padding="same", return_sequences=True),
                              L.Dense(2)])  # fmt: skip
    randomize(model, rng)
    ours = from_keras(model)
    x = torch.as_tensor(rng.normal(size=(2, 3, 5, 4, 2)).astype("float32"))
    x_theirs, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad_out = torch.randn(2, 3, 5, 4, 2)
    (torch.as_tensor(model(x_theirs)) * grad_out).sum().backward()
    (ours(x_ours) * grad_out).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad.cpu(), atol=ATOL, rtol=1e-5)
    cell = model.layers[0].cell
    rnn = next(m for m in ours.layers.values() if isinstance(m, KerasRecurrent)).rnn
    torch.testing.assert_close(rnn.weight_ih_l0.grad.permute(2, 3, 1, 0), cell.kernel.value.grad.cpu(), atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(rnn.weight_hh_l0.grad.permute(2, 3, 1, 0), cell.recurrent_kernel.value.grad.cpu(),
                               atol=ATOL, rtol=1e-5)  # fmt: skip
    torch.testing.assert_close(rnn.bias_ih_l0.grad, cell.bias.value.grad.cpu(), atol=ATOL, rtol=1e-5)
    assert_same(model(x), to_keras(ours)(x), atol=0)


def test_a_gatedrnn_conv_lstm_needs_its_frame_size_for_keras():
    torch.manual_seed(2)
    layer = gatedrnn.ConvLSTM(2, 3, 3, num_layers=2, batch_first=True)
    with pytest.raises(ValueError, match=r"frame_size=\(H, W\)"):
        to_keras(layer)
    seq = to_keras(layer, frame_size=(5, 6))
    x = torch.randn(2, 4, 2, 5, 6)  # (B, T, C, H, W)
    assert_same(seq(x.permute(0, 1, 3, 4, 2)), layer(x)[0].permute(0, 1, 3, 4, 2))


@pytest.mark.parametrize("activation", ["linear", "relu", "tanh", "sigmoid", "softmax", "log_softmax", "elu", "selu",
                                        "softplus", "silu", "gelu"])  # fmt: skip
def test_dense_activations(activation):
    model = keras.Sequential([keras.Input((4, 3)), L.Dense(5, activation=activation)])
    randomize(model, np.random.default_rng(9))
    x = torch.randn(2, 4, 3)
    ours = from_keras(model)
    assert_same(model(x), ours(x))
    assert_same(model(x), to_keras(ours)(x), atol=0)


@pytest.fixture(scope="module")
def text_models():
    """A Sequential and a functional text model (Embedding with mask_zero, recurrent layers,
    Dropout, Dense, TimeDistributed(Dense), Masking), random weights."""
    rng = np.random.default_rng(11)
    sequential = keras.Sequential([keras.Input((None,), dtype="int32"), L.Embedding(40, 6, mask_zero=True),
                                   L.Dropout(0.3), L.Bidirectional(L.LSTM(5, return_sequences=True), merge_mode="sum"),
                                   L.GRU(4, return_sequences=True, reset_after=False), L.SimpleRNN(3),
                                   L.Dense(2, activation="softmax")])  # fmt: skip
    tokens = keras.Input((None,), dtype="int32")
    h = L.Embedding(40, 6, mask_zero=True)(tokens)
    h = L.LSTM(7, return_sequences=True, go_backwards=True)(h)
    h = L.Dropout(0.1)(h)
    h = L.Bidirectional(L.GRU(5, return_sequences=True))(h)
    h = L.TimeDistributed(L.Dense(3, activation="tanh"))(h)
    functional = keras.Model(tokens, L.Dense(4)(h))
    stacked = keras.Sequential([keras.Input((None,), dtype="int32"), L.Embedding(40, 6, mask_zero=True),
                                L.LSTM(5, return_sequences=True), L.Dropout(0.25), L.LSTM(5, return_sequences=True),
                                L.Dropout(0.25), L.LSTM(5), L.Dense(3)])  # fmt: skip
    tokens = keras.Input((None,), dtype="int32")
    h = L.Embedding(40, 6, mask_zero=True)(tokens)
    h = L.Bidirectional(L.GRU(4, return_sequences=True, reset_after=False))(h)
    h = L.Bidirectional(L.GRU(4, return_sequences=True, reset_after=False), merge_mode="ave")(h)
    stacked_bidirectional = keras.Model(tokens, L.TimeDistributed(L.Dense(2))(h))
    features = keras.Input((7, 3))
    masked = keras.Model(features, L.LSTM(4)(L.Masking(0.0)(features)))
    models = {"sequential": sequential, "functional": functional, "masked": masked, "stacked": stacked,
              "stacked_bidirectional": stacked_bidirectional}  # fmt: skip
    for model in models.values():
        randomize(model, rng)
    return models


def token_batch(seed=0, B=5, T=9):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 40, (B, T), generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    return torch.where(torch.arange(T)[None, :] < lengths[:, None], tokens, 0)  # right padding with 0


@pytest.mark.parametrize("name", ["sequential", "functional"])
def test_whole_text_models_compute_what_keras_computes_and_go_back(name, text_models):
    model = text_models[name]
    ours = from_keras(model)
    assert isinstance(ours, KerasModel) and not ours.training
    for seed in range(2):
        tokens = token_batch(seed)
        assert_same(model(tokens), ours(tokens))
    back = to_keras(ours)
    tokens = token_batch(7)
    assert_same(model(tokens), back(tokens), atol=0)
    again = from_keras(back)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ours.state_dict().items())
    out, traces = ours(tokens, return_trace=True)
    assert_same(model(tokens), out)
    recurrent = [k for k, v in ours.layers.items() if isinstance(v, KerasRecurrent)]
    assert list(traces) == recurrent


@pytest.mark.parametrize("name, layers", [("stacked", 3), ("stacked_bidirectional", 2)])
def test_a_run_of_keras_layers_becomes_one_gatedrnn_stack_and_comes_back(name, layers, text_models):
    model = text_models[name]
    ours = from_keras(model)
    stacks = [v for v in ours.layers.values() if isinstance(v, KerasRecurrent)]
    assert len(stacks) == 1 and stacks[0].rnn.num_layers == layers
    assert stacks[0].rnn.dropout == (0.25 if name == "stacked" else 0.0)
    for seed in range(2):
        tokens = token_batch(seed)
        assert_same(model(tokens), ours(tokens))
    _, traces = ours(tokens, return_trace=True)
    assert next(iter(traces.values())).hidden.shape[0] == layers * (2 if "bidirectional" in name else 1)
    back = to_keras(ours)  # the Keras layers again, names and Dropout layers included
    recurrent = ("LSTM", "GRU", "Bidirectional", "Dropout")
    assert [(type(v).__name__, v.name) for v in back.layers if type(v).__name__ in recurrent] == [
        (type(v).__name__, v.name) for v in model.layers if type(v).__name__ in recurrent]
    assert len(back.weights) == len(model.weights)
    for w0, w1 in zip(model.weights, back.weights):  # in layer order, bit for bit
        assert w0.path.split("/")[-1] == w1.path.split("/")[-1]
        assert np.array_equal(keras.ops.convert_to_numpy(w0), keras.ops.convert_to_numpy(w1))
    assert_same(model(tokens), back(tokens), atol=0)


def test_a_masking_layer_becomes_lengths(text_models):
    model = text_models["masked"]
    x = torch.randn(4, 7, 3)
    x[1, 4:] = 0.0
    x[2, 1:] = 0.0
    ours = from_keras(model)
    assert_same(model(x), ours(x))
    assert_same(model(x), to_keras(ours)(x), atol=0)
    x[3, 2] = 0.0  # a padded step in the middle: no lengths say that
    with pytest.raises(ValueError, match="right-padding mask"):
        ours(x)


def test_a_keras_file_loads(tmp_path, text_models):
    model = text_models["functional"]
    path = tmp_path / "model.keras"
    model.save(path)
    tokens = token_batch(3)
    assert_same(model(tokens), from_keras(path)(tokens))
    assert_same(model(tokens), from_keras(str(path))(tokens))
    with pytest.raises(FileNotFoundError, match="no such Keras file"):
        from_keras(tmp_path / "missing.keras")


def test_left_padding_is_refused_at_the_call(text_models):
    ours = from_keras(text_models["sequential"])
    tokens = token_batch(1)
    tokens[0, 3] = 0  # sequence 0 is full: a padded step in its middle
    with pytest.raises(ValueError, match=r"right-padding mask .* rows \[0\]"):
        ours(tokens)


def built(layer, shape=(None, 5, 3)):
    layer.build(shape)
    return layer


REFUSALS = [
    (lambda: built(L.LSTM(4, activation="relu")), ValueError, r"'lstm\w*' \(LSTM\): activation='relu'"),
    (lambda: built(L.GRU(4, recurrent_activation="hard_sigmoid")), ValueError, r"recurrent_activation='hard_sigmoid'"),
    (lambda: built(L.SimpleRNN(4, activation="sigmoid")), ValueError, r"\(SimpleRNN\): activation='sigmoid'.*tanh or relu"),
    (lambda: built(L.LSTM(4, stateful=True), (2, 5, 3)), ValueError, r"stateful=True"),
    (lambda: built(L.LSTM(4, dtype="mixed_bfloat16")), ValueError, r"dtype policy 'mixed_bfloat16'"),
    (lambda: built(L.RNN(L.LSTMCell(4))), TypeError, r"generic keras.layers.RNN \(its cell LSTMCell\)"),
    (lambda: built(L.RNN([L.GRUCell(4), L.GRUCell(4)])), TypeError, r"generic keras.layers.RNN"),
    (lambda: L.LSTM(4), ValueError, r"is not built"),
    (lambda: built(L.ConvLSTM1D(2, 3, padding="same"), (None, 4, 6, 2)), TypeError, r"\(ConvLSTM1D\): gatedrnn has 2-D"),
    (lambda: built(L.ConvLSTM3D(2, 3, padding="same"), (None, 4, 5, 5, 5, 2)), TypeError, r"ConvLSTM3D cannot"),
    (lambda: built(L.ConvLSTM2D(2, 3), (None, 4, 6, 6, 2)), ValueError, r"padding='valid'.*odd kernel with padding='same'"),
    (lambda: built(L.ConvLSTM2D(2, 2, padding="same"), (None, 4, 6, 6, 2)), ValueError, r"kernel_size=\(2, 2\)"),
    (lambda: built(L.ConvLSTM2D(2, 3, strides=2, padding="same"), (None, 4, 6, 6, 2)), ValueError, r"strides=\(2, 2\)"),
    (lambda: built(L.ConvLSTM2D(2, 3, dilation_rate=2, padding="same"), (None, 4, 6, 6, 2)), ValueError,
     r"dilation_rate=\(2, 2\)"),
    (lambda: built(L.ConvLSTM2D(2, 3, padding="same", data_format="channels_first"), (None, 4, 2, 6, 6)), ValueError,
     r"data_format='channels_first'"),
    (lambda: built(L.Bidirectional(L.ConvLSTM2D(2, 3, padding="same")), (None, 4, 6, 6, 2)), ValueError,
     r"Bidirectional\(ConvLSTM2D\) cannot"),
    (lambda: built(L.Bidirectional(L.LSTM(4), backward_layer=L.GRU(4, go_backwards=True))), ValueError,
     r"backward layer of another type \(GRU beside LSTM\)"),
    (lambda: built(L.Bidirectional(L.LSTM(4), backward_layer=L.LSTM(4, use_bias=False, go_backwards=True))),
     ValueError, r"backward layer's settings differ"),
    (lambda: built(L.Conv1D(4, 3)), TypeError, r"\(Conv1D\) has no gatedrnn equivalent"),
    (lambda: keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(9, 3), L.Conv1D(4, 3), L.LSTM(2)]),
     TypeError, r"Keras layer 'conv1d\w*' \(Conv1D\) cannot be converted"),
    (lambda: keras.Sequential([keras.Input((5, 3)), L.TimeDistributed(L.Dropout(0.1))]), TypeError,
     r"TimeDistributed\(Dropout\) cannot be converted"),
    (lambda: keras.Sequential([keras.Input((5, 3)), L.Dense(2, activation="hard_sigmoid")]), ValueError,
     r"activation='hard_sigmoid' has no converter"),
    (lambda: _state_model(), ValueError, r"\(LSTM\) returns several tensors"),
    (lambda: _residual_model(), ValueError, r"\(Add\) does not read the previous layer's output alone"),
    (lambda: _two_input_model(), ValueError, r"has 2 inputs and 1 outputs"),
    (lambda: 3, TypeError, r"source must be a Keras layer"),
]  # fmt: skip


def _residual_model():
    x = keras.Input((5, 3))
    h = L.LSTM(3, return_sequences=True)(x)
    return keras.Model(x, L.Add()([x, h]))


def _sequence_model(cell, **options):
    from gatedrnn.models import SequenceModel

    return SequenceModel(cell, 8, 8, 20, vocab_size=20, **options)


def _state_model():
    x = keras.Input((5, 3))
    return keras.Model(x, L.Dense(2)(L.LSTM(3, return_state=True)(x)[0]))


def _two_input_model():
    a, b = keras.Input((5, 3)), keras.Input((5, 3))
    return keras.Model([a, b], L.LSTM(2)(L.Concatenate()([a, b])))


@pytest.mark.parametrize("make, error, message", REFUSALS, ids=[m for _, _, m in REFUSALS])
def test_from_keras_refuses_clearly(make, error, message):
    source = make()
    with pytest.raises(error, match=message):
        from_keras(source)


@pytest.mark.parametrize("cell, readout, tokens", [("lstm", "last", True), ("gru", "all", True), ("rnn", "all", False)])
def test_a_sequence_model_of_the_built_in_tasks_goes_to_keras(cell, readout, tokens):
    from gatedrnn.models import SequenceModel

    torch.manual_seed(4)
    model = SequenceModel(cell, 6, 8, 3, num_layers=2, vocab_size=20 if tokens else None, readout=readout,
                          dropout=0.2).eval()  # fmt: skip
    theirs = to_keras(model)
    x = torch.randint(0, 20, (3, 7)) if tokens else torch.randn(3, 7, 6)
    assert_same(theirs(x), model(x))
    assert [type(v).__name__ for v in theirs.layers].count("Dropout") == 2 + tokens


@pytest.mark.parametrize("make, message", [
    (lambda: gatedrnn.LSTM(3, 4, batch_first=True, peephole=True), r"Keras' LSTM has no \{'peephole': True\}"),
    (lambda: gatedrnn.LSTM(3, 4, batch_first=True, coupled=True), r"no \{'coupled': True\}"),
    (lambda: gatedrnn.GRU(3, 4, batch_first=True, layer_norm=True), r"Keras' GRU has no \{'layer_norm': True\}"),
    (lambda: gatedrnn.LSTM(3, 4, batch_first=True, proj_size=2), r"no projection: proj_size=2"),
    (lambda: gatedrnn.GRU(3, 4, batch_first=True, zoneout=0.1), r"no zoneout: zoneout=0.1"),
    (lambda: gatedrnn.MGU(3, 4, batch_first=True), r"Keras has no MGU layer"),
    (lambda: gatedrnn.LSTM(3, 4), r"must be batch_first=True"),
    (lambda: torch.nn.Linear(3, 4), r"module must be a gatedrnn RNN, LSTM, GRU or ConvLSTM"),
    (lambda: _sequence_model("mgu"), r"SequenceModel of cell 'mgu': Keras has no MGU layer"),
    (lambda: _sequence_model("lstm", tie_weights=True), r"SequenceModel with tie_weights"),
])  # fmt: skip
def test_to_keras_refuses_clearly(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        to_keras(make())
