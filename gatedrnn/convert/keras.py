"""Keras 3 ⇄ gatedrnn: recurrent layers and small sequence models, weights copied exactly.

:func:`from_keras` takes a Keras layer, a ``keras.Sequential`` or functional model (or the path
of a ``.keras`` file) and returns a torch module that computes the same function in eval mode;
:func:`to_keras` goes back. The modules it returns live in
:mod:`gatedrnn.convert.keras_modules` (they need no Keras). A recurrent layer becomes a
:class:`KerasRecurrent`: a gatedrnn
layer (``.rnn``: :class:`gatedrnn.RNN`, :class:`gatedrnn.LSTM`, :class:`gatedrnn.GRU` or
:class:`gatedrnn.ConvLSTM`, batch first) called the way Keras calls its layer
(``return_sequences``, ``return_state``, ``go_backwards``, the ``Bidirectional`` merge mode,
channels-last frames, a right-padding mask as ``lengths``). A model becomes a
:class:`KerasModel`, its layers in order under their Keras names.

The conventions, Keras → gatedrnn (``W.T``: a Keras kernel ``(I, kH)`` is a torch weight ``(kH, I)``):

=================  ===================================  =========================================
Keras              gatedrnn                             weights
=================  ===================================  =========================================
``SimpleRNN``      ``RNN`` (``tanh`` or ``relu``)       ``kernel.T → weight_ih``, ``bias → bias_ih``
``LSTM``           ``LSTM``                             gates i, f, c, o = torch's i, f, g, o;
                                                        ``bias → bias_ih``, ``bias_hh = 0``
``GRU`` (after)    ``GRU``                              gates z, r, h → r, z, n; ``bias[0] → bias_ih``,
                                                        ``bias[1] → bias_hh``
``GRU`` (before)   ``GRU(reset_after=False)``           gates z, r, h → r, z, n; ``bias → bias_ih``,
                                                        ``bias_hh = 0``
``ConvLSTM2D``     ``ConvLSTM``                         kernel ``(kh, kw, C_in, 4C) → (4C, C_in, kh, kw)``
``Bidirectional``  ``bidirectional=True``               backward layer → ``*_reverse``
=================  ===================================  =========================================

Going back, a gatedrnn layer's two biases become Keras' one as ``bias_ih + bias_hh`` (LSTM,
SimpleRNN, GRU with ``reset_after=False``); ``bias_ih`` alone, bit for bit, when ``bias_hh`` is
zero, as it is in every layer that came from Keras. What gatedrnn cannot compute is refused
with an error that names the layer and the option.
"""

from __future__ import annotations

import os
import pathlib
import re

import torch
from torch import nn

from gatedrnn.conv import ConvLSTM
from gatedrnn.convert.keras_modules import KerasModel, KerasRecurrent, MaskedEmbedding, Masking
from gatedrnn.layers import GRU, LSTM, RNN
from gatedrnn.models import SequenceModel
from gatedrnn.rnnbase import RNNBase

# Keras' activations with a torch twin (the name Keras serializes → the module computing it)
ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "selu": nn.SELU,
    "softplus": nn.Softplus, "silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU,
    "softmax": lambda: nn.Softmax(dim=-1), "log_softmax": lambda: nn.LogSoftmax(dim=-1),
}  # fmt: skip
_BACK = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ELU: "elu", nn.SELU: "selu",
         nn.Softplus: "softplus", nn.SiLU: "silu", nn.GELU: "gelu", nn.Softmax: "softmax",
         nn.LogSoftmax: "log_softmax"}  # fmt: skip
RECURRENT = ("SimpleRNN", "LSTM", "GRU", "ConvLSTM2D")


def _keras():
    """Keras, imported on first use (on its torch backend unless one was chosen already)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as error:  # pragma: no cover - the test extra installs it
        raise ImportError("gatedrnn.convert.from_keras/to_keras need Keras 3: pip install keras") from error
    return keras


def _tensor(variable) -> torch.Tensor:
    """A Keras variable's value as a CPU torch tensor of its dtype (a copy)."""
    value = getattr(variable, "value", None)
    if isinstance(value, torch.Tensor):  # Keras on its torch backend: a parameter
        return value.detach().cpu().clone()
    return torch.as_tensor(_keras().ops.convert_to_numpy(variable)).clone()


def _assign(variable, value: torch.Tensor) -> None:
    variable.assign(value.detach().cpu().numpy())


def _who(layer) -> str:
    return f"Keras layer {layer.name!r} ({type(layer).__name__})"


def _activation_name(fn) -> str:
    name = _keras().activations.serialize(fn)
    return name if isinstance(name, str) else repr(name)


# -- Keras → gatedrnn -----------------------------------------------------------------------


def from_keras(source):
    """A torch module computing what a Keras layer or model computes, with its weights.

    Args:
        source: a Keras recurrent layer (``SimpleRNN``, ``LSTM``, ``GRU``, ``ConvLSTM2D``,
            ``Bidirectional`` of one), a ``keras.Sequential`` or functional model made of a chain
            of ``Embedding``, ``Masking``, recurrent layers, ``Dropout``, ``Dense`` and
            ``TimeDistributed(Dense)``, or the path (``str`` or ``pathlib.Path``) of a
            ``.keras`` file holding one.

    Returns:
        A :class:`KerasRecurrent` for a layer, a :class:`KerasModel` for a model, in eval mode.

    Raises:
        TypeError: a layer type with no gatedrnn equivalent, named.
        ValueError: an option gatedrnn cannot compute (an activation, ``stateful``, strides...),
            named with the layer.

    Examples:
        >>> import os; _ = os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported
        >>> import keras, torch
        >>> from gatedrnn.convert import from_keras
        >>> theirs = keras.layers.GRU(8, return_sequences=True)
        >>> x = torch.randn(2, 5, 3)
        >>> y = theirs(x)  # (builds it)
        >>> ours = from_keras(theirs)
        >>> ours.rnn
        GRU(3, 8, batch_first=True)
        >>> torch.allclose(ours(x), y, atol=1e-6)
        True
    """
    keras = _keras()
    if isinstance(source, (str, pathlib.Path)):
        path = pathlib.Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"source: no such Keras file {str(path)!r}")
        source = keras.saving.load_model(path)
    if isinstance(source, keras.Model):
        return _model(source).eval()
    if isinstance(source, keras.layers.Layer):
        return _recurrent(source).eval()
    raise TypeError(f"source must be a Keras layer, a Keras model or the path of a .keras file, "
                    f"got {type(source).__name__}")  # fmt: skip


def _recurrent(layer) -> KerasRecurrent:
    keras = _keras()
    if not layer.built:
        raise ValueError(f"{_who(layer)} is not built: call it on an input or build(input_shape) first")
    if isinstance(layer, keras.layers.Bidirectional):
        forward, backward = layer.forward_layer, layer.backward_layer
        if forward.go_backwards or not backward.go_backwards:
            raise ValueError(f"{_who(layer)}: its forward layer must run forward and its backward layer backward")
        if type(forward) is not type(backward):
            raise ValueError(f"{_who(layer)}: a backward layer of another type ({type(backward).__name__} beside "
                             f"{type(forward).__name__}) has no gatedrnn equivalent")  # fmt: skip
        if type(forward).__name__ == "ConvLSTM2D":
            raise ValueError(f"{_who(layer)}: gatedrnn.ConvLSTM has no bidirectional form; Bidirectional(ConvLSTM2D) "
                             f"cannot be converted")  # fmt: skip
        spec = _spec(forward)
        if _spec(backward)["config"] != spec["config"]:
            raise ValueError(f"{_who(layer)}: its backward layer's settings differ from its forward layer's "
                             f"({_spec(backward)['config']} vs {spec['config']}); gatedrnn's two "
                             f"directions share them")  # fmt: skip
        rnn = _build(spec, bidirectional=True)
        _load(rnn, forward, direction=0)
        _load(rnn, backward, direction=1)
        inner_name = forward.name.removeprefix("forward_")
        keras_config = {"name": layer.name, "inner_name": inner_name, "layer": spec["keras"]}
        return KerasRecurrent(rnn, return_sequences=layer.return_sequences, return_state=layer.return_state,
                              merge_mode=layer.merge_mode, keras_config=keras_config)  # fmt: skip
    if type(layer).__name__ in ("ConvLSTM1D", "ConvLSTM3D"):
        raise TypeError(f"{_who(layer)}: gatedrnn has 2-D convolutional layers only (gatedrnn.ConvLSTM, "
                        f"ConvLSTM2D); {type(layer).__name__} cannot be converted")  # fmt: skip
    spec = _spec(layer)
    rnn = _build(spec, bidirectional=False)
    _load(rnn, layer, direction=0)
    return KerasRecurrent(rnn, return_sequences=layer.return_sequences, return_state=layer.return_state,
                          go_backwards=layer.go_backwards, zero_output_for_mask=layer.zero_output_for_mask,
                          keras_config={"name": layer.name, **spec["keras"]})  # fmt: skip


def _spec(layer) -> dict:
    """What gatedrnn needs of a Keras recurrent layer ('config'), and the Keras settings it
    does not use ('keras'); refuses what it cannot compute."""
    keras = _keras()
    kind = type(layer).__name__
    if kind not in RECURRENT or not isinstance(layer, keras.layers.RNN):
        if isinstance(layer, keras.layers.RNN):
            raise TypeError(f"{_who(layer)}: a generic keras.layers.RNN (its cell {type(layer.cell).__name__}) "
                            f"cannot be converted; use SimpleRNN, LSTM, GRU or ConvLSTM2D")  # fmt: skip
        raise TypeError(f"{_who(layer)} has no gatedrnn equivalent; recurrent layers that convert: "
                        f"{', '.join(RECURRENT)} and Bidirectional of one")  # fmt: skip
    cell = layer.cell
    if layer.stateful:
        raise ValueError(f"{_who(layer)}: stateful=True (state carried between batches) has no gatedrnn equivalent; "
                         f"pass the state explicitly (initial_state)")  # fmt: skip
    activation = _activation_name(cell.activation)
    allowed = ("tanh", "relu") if kind == "SimpleRNN" else ("tanh",)
    if activation not in allowed:
        raise ValueError(f"{_who(layer)}: activation={activation!r} has no gatedrnn equivalent (gatedrnn's {kind} "
                         f"computes {' or '.join(allowed)})")  # fmt: skip
    if kind != "SimpleRNN":
        recurrent = _activation_name(cell.recurrent_activation)
        if recurrent != "sigmoid":
            raise ValueError(f"{_who(layer)}: recurrent_activation={recurrent!r} has no gatedrnn equivalent "
                             f"(gatedrnn's gates are 'sigmoid')")  # fmt: skip
    if cell.variable_dtype not in ("float32", "float64") or cell.compute_dtype != cell.variable_dtype:
        raise ValueError(f"{_who(layer)}: dtype policy {layer.dtype_policy.name!r} (variables "
                         f"{cell.variable_dtype}, compute {cell.compute_dtype}) has no gatedrnn equivalent; "
                         f"use float32 or float64")  # fmt: skip
    config = {"kind": kind, "units": cell.filters if kind == "ConvLSTM2D" else cell.units, "bias": cell.use_bias,
              "activation": activation, "recurrent_dropout": float(cell.recurrent_dropout),
              "dtype": cell.variable_dtype}  # fmt: skip
    if kind == "GRU":
        config["reset_after"] = bool(cell.reset_after)
    if kind == "ConvLSTM2D":
        if cell.data_format != "channels_last":
            raise ValueError(f"{_who(layer)}: data_format={cell.data_format!r}; gatedrnn converts channels_last "
                             f"ConvLSTM2D (Keras' default) only")  # fmt: skip
        if tuple(cell.strides) != (1, 1) or tuple(cell.dilation_rate) != (1, 1):
            raise ValueError(f"{_who(layer)}: strides={tuple(cell.strides)}, dilation_rate={tuple(cell.dilation_rate)}; "
                             f"gatedrnn.ConvLSTM convolves with strides 1 and no dilation")  # fmt: skip
        kh, kw = cell.kernel_size
        if kh % 2 == 0 or kw % 2 == 0 or (cell.padding != "same" and (kh, kw) != (1, 1)):
            raise ValueError(f"{_who(layer)}: kernel_size={(kh, kw)}, padding={cell.padding!r}; gatedrnn.ConvLSTM "
                             f"keeps the frame size: an odd kernel with padding='same'")  # fmt: skip
        config["kernel_size"] = (kh, kw)
    keras_cfg = {"dropout": float(cell.dropout), "unroll": bool(layer.unroll)}
    if kind == "ConvLSTM2D":  # Keras builds a ConvLSTM2D for one frame size
        keras_cfg |= {"padding": cell.padding, "frame_size": tuple(cell.spatial_dims)}
    return {"config": config, "keras": keras_cfg, "input_size": cell.kernel.shape[-2]}


def _build(spec: dict, bidirectional: bool):
    config, I = spec["config"], spec["input_size"]
    dtype = getattr(torch, config["dtype"])
    if config["kind"] == "ConvLSTM2D":
        return ConvLSTM(I, config["units"], config["kernel_size"], bias=config["bias"], batch_first=True, dtype=dtype)
    common = {"bias": config["bias"], "batch_first": True, "bidirectional": bidirectional, "dtype": dtype,
              "recurrent_dropout": config["recurrent_dropout"]}  # fmt: skip
    if config["kind"] == "SimpleRNN":
        return RNN(I, config["units"], nonlinearity=config["activation"], **common)
    if config["kind"] == "LSTM":
        return LSTM(I, config["units"], **common)
    return GRU(I, config["units"], reset_after=config["reset_after"], **common)


def _gru_order(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Keras' GRU blocks z, r, h → torch's r, z, n along ``dim`` (the same swap goes back)."""
    z, r, h = w.chunk(3, dim=dim)
    return torch.cat([r, z, h], dim=dim)


def _load(rnn, layer, direction: int) -> None:
    """Copies a built Keras recurrent layer's weights into one direction of ``rnn``."""
    cell, kind = layer.cell, type(layer).__name__
    suffix = "_l0" + ("_reverse" if direction else "")
    kernel, recurrent = _tensor(cell.kernel), _tensor(cell.recurrent_kernel)
    if kind == "ConvLSTM2D":  # (kh, kw, C_in, 4C) → (4C, C_in, kh, kw); gates i, f, c, o = torch's i, f, g, o
        w_ih, w_hh = kernel.permute(3, 2, 0, 1), recurrent.permute(3, 2, 0, 1)
    else:
        w_ih, w_hh = kernel.T, recurrent.T  # (G*H, I), (G*H, H)
    bias_ih = bias_hh = None
    if cell.use_bias:
        bias = _tensor(cell.bias)
        if kind == "GRU" and cell.reset_after:
            bias_ih, bias_hh = bias[0], bias[1]
        else:
            bias_ih, bias_hh = bias, torch.zeros_like(bias)
    if kind == "GRU":
        w_ih, w_hh = _gru_order(w_ih, 0), _gru_order(w_hh, 0)
        bias_ih, bias_hh = (None, None) if bias_ih is None else (_gru_order(bias_ih, 0), _gru_order(bias_hh, 0))
    values = {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": bias_ih, "bias_hh": bias_hh}
    with torch.no_grad():
        for name, value in values.items():
            if value is not None:
                getattr(rnn, name + suffix).copy_(value)


def _dense(layer) -> nn.Module:
    cfg = layer.get_config()
    if getattr(layer, "lora_enabled", False):
        raise ValueError(f"{_who(layer)}: LoRA (lora_rank) cannot be converted; merge it into the kernel first")
    kernel = _tensor(layer.kernel)  # (I, O)
    linear = nn.Linear(kernel.shape[0], kernel.shape[1], bias=cfg["use_bias"], dtype=kernel.dtype)
    with torch.no_grad():
        linear.weight.copy_(kernel.T)
        if cfg["use_bias"]:
            linear.bias.copy_(_tensor(layer.bias))
    activation = _activation_name(layer.activation)
    if activation == "linear":
        return linear
    if activation not in ACTIVATIONS:
        raise ValueError(f"{_who(layer)}: activation={activation!r} has no converter; those that convert: "
                         f"linear, {', '.join(ACTIVATIONS)}")  # fmt: skip
    return nn.Sequential(linear, ACTIVATIONS[activation]())


def _layer(layer) -> nn.Module:
    """One layer of a model chain as a torch module, or a refusal naming it."""
    keras = _keras()
    L = keras.layers
    if isinstance(layer, L.Embedding):
        cfg = layer.get_config()
        if getattr(layer, "lora_enabled", False):
            raise ValueError(f"{_who(layer)}: LoRA cannot be converted")
        table = _tensor(layer.embeddings)
        embedding = MaskedEmbedding(table.shape[0], table.shape[1], mask_zero=cfg["mask_zero"], dtype=table.dtype)
        with torch.no_grad():
            embedding.weight.copy_(table)
        return embedding
    if isinstance(layer, L.Masking):
        return Masking(layer.mask_value)
    if isinstance(layer, L.Dropout) and type(layer) is L.Dropout:
        return nn.Dropout(layer.rate)
    if isinstance(layer, L.Dense) and type(layer) is L.Dense:
        return _dense(layer)
    if isinstance(layer, L.TimeDistributed):
        if type(layer.layer) is not L.Dense:
            raise TypeError(f"{_who(layer)}: TimeDistributed({type(layer.layer).__name__}) cannot be converted; "
                            f"TimeDistributed(Dense) can")  # fmt: skip
        return _dense(layer.layer)
    if isinstance(layer, (L.RNN, L.Bidirectional)):
        return _recurrent(layer)
    raise TypeError(f"{_who(layer)} cannot be converted: a model converts when made of Embedding, Masking, "
                    f"SimpleRNN, LSTM, GRU, ConvLSTM2D, Bidirectional, Dropout, Dense and TimeDistributed(Dense)")  # fmt: skip


def _chain(model) -> list:
    """The model's layers in order, when they form one chain from its one input to its one output."""
    keras = _keras()
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"Keras model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         f"a model converts when it is one chain of layers, one input to one output")  # fmt: skip
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if isinstance(model, keras.Sequential):
        return layers
    previous = model.inputs[0]._keras_history.operation
    for layer in layers:
        nodes = [node for node in layer._inbound_nodes if node.operation is layer]
        if len(nodes) != 1:
            raise ValueError(f"{_who(layer)} is called {len(nodes)} times; a model converts when each layer is "
                             f"called once, in one chain")  # fmt: skip
        arguments = nodes[0].arguments
        first = arguments.args[0] if arguments.args else None
        extra = [k for k, v in arguments.kwargs.items() if k != "mask" and v is not None and k != "training"]
        if (first is None or not isinstance(first, keras.KerasTensor) or len(arguments.args) != 1 or extra
                or first._keras_history.operation is not previous):  # fmt: skip
            raise ValueError(f"{_who(layer)} does not read the previous layer's output alone (it reads "
                             f"{len(arguments.keras_tensors)} tensors{', ' + ', '.join(extra) if extra else ''}); "
                             f"a model converts when it is one chain of layers")  # fmt: skip
        previous = layer
    if model.outputs[0]._keras_history.operation is not previous:
        raise ValueError(f"Keras model {model.name!r}: its output is not its last layer's; a model converts when it "
                         f"is one chain of layers")  # fmt: skip
    return layers


def _module_name(name: str) -> str:
    return re.sub(r"\W", "_", name) or "layer"


def _model(model) -> KerasModel:
    layers = {}
    for layer in _chain(model):
        name = _module_name(layer.name)
        while name in layers:
            name += "_"
        module = _layer(layer)
        if isinstance(module, KerasRecurrent) and (module.return_state or module.merge_mode is None):
            raise ValueError(f"{_who(layer)} returns several tensors (return_state=True or merge_mode=None); a model "
                             f"converts when each layer gives the next one tensor")  # fmt: skip
        layers[name] = module
    shape = tuple(model.inputs[0].shape[1:])
    return KerasModel(_stacked(list(layers.items())), input_shape=shape, input_dtype=model.inputs[0].dtype)


def _stackable(first: KerasRecurrent, other) -> bool:
    """Whether ``other`` can be the next layer of a stack that starts with ``first``."""
    a, b = first.rnn, getattr(other, "rnn", None)
    return (isinstance(other, KerasRecurrent) and type(a) is type(b) and not isinstance(a, ConvLSTM)
            and not other.go_backwards and not other.return_state and a.hidden_size == b.hidden_size
            and a.bias == b.bias and a.bidirectional == b.bidirectional and a.mode == b.mode
            and a.variant() == b.variant() and a.recurrent_dropout == b.recurrent_dropout
            and a.weight_ih_l0.dtype == b.weight_ih_l0.dtype)  # fmt: skip


def _stacked(items: list) -> dict:
    """Runs of recurrent layers of one kind and size, each returning sequences to the next
    (bidirectional ones concatenating), with the same Dropout or none between them, become one
    gatedrnn layer of ``num_layers`` (Keras' mask past a sequence's end never reaches the next
    layer's state, so the stack computes what the chain does)."""
    result, i = {}, 0
    while i < len(items):
        name, first = items[i]
        run, drops, j = [first], [], i + 1
        while isinstance(first, KerasRecurrent) and not first.go_backwards and not first.return_state:
            last = run[-1]
            if not last.return_sequences or (last.bidirectional and last.merge_mode != "concat"):
                break
            k, drop = j, None
            if k < len(items) and type(items[k][1]) is nn.Dropout:
                drop, k = items[k], k + 1
            if k >= len(items) or not _stackable(first, items[k][1]):
                break
            run.append(items[k][1])
            drops.append(drop)
            j = k + 1
        rates = {None if d is None else d[1].p for d in drops}
        if len(run) == 1 or len(rates) != 1 or 0.0 in rates:
            result[name] = first
            i += 1
            continue
        result[name] = _merge(run, drops)
        i = j
    return result


def _merge(run: list, drops: list) -> KerasRecurrent:
    first, last = run[0], run[-1]
    p = drops[0][1].p if drops[0] is not None else 0.0
    config = first.rnn._config() | {"num_layers": len(run), "dropout": p}
    extra = {"reset_after": first.rnn.reset_after} if isinstance(first.rnn, GRU) else {}
    rnn = type(first.rnn)(**config, dtype=first.rnn.weight_ih_l0.dtype, recurrent_dropout=first.rnn.recurrent_dropout,
                          **extra)  # fmt: skip
    with torch.no_grad():
        for k, layer in enumerate(run):
            for d in range(rnn.num_directions):
                for target, source in zip(rnn.weights(k, d), layer.rnn.weights(0, d)):
                    if source is not None:
                        target.copy_(source)
    stack = [dict(layer.keras_config, zero_output_for_mask=layer.zero_output_for_mask, merge_mode=layer.merge_mode)
             for layer in run]  # fmt: skip
    keras_config = {"stack": stack, "dropouts": [None if d is None else d[0] for d in drops]}
    return KerasRecurrent(rnn, return_sequences=last.return_sequences, merge_mode=last.merge_mode,
                          zero_output_for_mask=last.zero_output_for_mask, keras_config=keras_config).eval()  # fmt: skip


def _unstacked(wrapper: KerasRecurrent, frame_size=None) -> list:
    """A stack's Keras layers again, with the Dropout layers between them."""
    keras = _keras()
    rnn, stack = wrapper.rnn, wrapper.keras_config.get("stack")
    layers = []
    for k in range(rnn.num_layers):
        config = stack[k] if stack else {}
        one = KerasRecurrent(_one_layer(rnn, k), return_sequences=True if k < rnn.num_layers - 1 else
                             wrapper.return_sequences, merge_mode=config.get("merge_mode", "concat"),
                             zero_output_for_mask=config.get("zero_output_for_mask", False),
                             keras_config=config)  # fmt: skip
        layers.append(_to_recurrent(one, frame_size))
        if k < rnn.num_layers - 1 and rnn.dropout:
            names = wrapper.keras_config.get("dropouts") or [None] * rnn.num_layers
            layers.append(keras.layers.Dropout(rnn.dropout, **({"name": names[k]} if names[k] else {})))
    return layers


# -- gatedrnn → Keras -----------------------------------------------------------------------


def to_keras(module, *, frame_size=None):
    """The Keras layer or model computing what a gatedrnn module computes, with its weights.

    Args:
        module (nn.Module): a :class:`KerasRecurrent` or :class:`KerasModel` (what
            :func:`from_keras` returns: the Keras layer or model comes back as it was, its
            weights bit for bit), a :class:`gatedrnn.models.SequenceModel` (the built-in tasks'
            model: embedding, layer, linear readout), or a gatedrnn ``RNN``, ``LSTM``, ``GRU`` or ``ConvLSTM``
            (batch first; ``ConvLSTM`` frames become channels last). A one-layer gatedrnn layer
            becomes a Keras layer with ``return_sequences=True, return_state=True`` (a
            ``Bidirectional``, merge mode ``"concat"``, when bidirectional); a stack becomes a
            ``keras.Sequential`` of layers returning sequences, with ``Dropout`` between them
            when ``dropout > 0``.
        frame_size (tuple[int, int], optional): ``(H, W)`` of the frames, which Keras' ConvLSTM2D
            is built for: needed for a gatedrnn ``ConvLSTM`` that did not come from Keras.
            Keyword only. Default: ``None``.

    Returns:
        A built Keras layer or model.

    Raises:
        ValueError: a variant Keras has no layer for (peepholes, CIFG, layer norm, a
            projection, zoneout, an MGU...), a layer not batch first, named.
        TypeError: a module of another type.

    Examples:
        >>> import os; _ = os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported
        >>> import torch, gatedrnn
        >>> from gatedrnn.convert import to_keras
        >>> ours = gatedrnn.LSTM(3, 8, batch_first=True)
        >>> theirs = to_keras(ours)  # keras.layers.LSTM(8, return_sequences=True, return_state=True)
        >>> x = torch.randn(2, 5, 3)
        >>> output, h, c = theirs(x)
        >>> torch.allclose(output, ours(x)[0], atol=1e-6)
        True
    """
    keras = _keras()
    if frame_size is not None:
        frame_size = tuple(int(k) for k in frame_size)
    if isinstance(module, KerasModel):
        return _to_model(module)
    if isinstance(module, KerasRecurrent) and module.rnn.num_layers > 1:
        return keras.Sequential([keras.Input((None, module.rnn.input_size)), *_unstacked(module)])
    if isinstance(module, KerasRecurrent):
        return _to_recurrent(module, frame_size)
    if isinstance(module, SequenceModel):
        return _to_sequence_model(module)
    if isinstance(module, (RNNBase, ConvLSTM)):
        _check_plain(module)
        if not module.batch_first:
            raise ValueError(f"{type(module).__name__} must be batch_first=True for Keras, which takes (B, T, ...) "
                             f"input; got batch_first=False")  # fmt: skip
        if isinstance(module, ConvLSTM) and frame_size is None:
            raise ValueError("frame_size=(H, W) is needed to convert a gatedrnn ConvLSTM: Keras builds ConvLSTM2D "
                             "for one frame size")  # fmt: skip
        if module.num_layers == 1:
            return _to_recurrent(KerasRecurrent(module, return_sequences=True, return_state=True), frame_size)
        return _to_stack(module, frame_size)
    raise TypeError(f"module must be a gatedrnn RNN, LSTM, GRU or ConvLSTM layer, a SequenceModel, or what "
                    f"from_keras returns (KerasRecurrent, KerasModel), got {type(module).__name__}")  # fmt: skip


def _check_plain(rnn) -> None:
    name = type(rnn).__name__
    if isinstance(rnn, ConvLSTM) or name == "ConvLSTM":
        return
    if not isinstance(rnn, (RNN, LSTM, GRU)):
        raise TypeError(f"Keras has no {name} layer: only gatedrnn RNN, LSTM, GRU and ConvLSTM convert")
    variant = {k: v for k, v in rnn.variant().items() if k != "reset_after"}
    if variant:
        raise ValueError(f"Keras' {name} has no {variant}: this {name} cannot be converted")
    if getattr(rnn, "proj_size", 0):
        raise ValueError(f"Keras' LSTM has no projection: proj_size={rnn.proj_size} cannot be converted")
    if any(rnn.zoneout):
        raise ValueError(f"Keras' {name} has no zoneout: zoneout={rnn.zoneout_given()} cannot be converted")


def _to_stack(rnn, frame_size):
    keras = _keras()
    layers = []
    for k in range(rnn.num_layers):
        one = _one_layer(rnn, k)
        layers.append(_to_recurrent(KerasRecurrent(one, return_sequences=True), frame_size))
        if getattr(rnn, "dropout", 0.0) and k < rnn.num_layers - 1:
            layers.append(keras.layers.Dropout(rnn.dropout))
    I = rnn.in_channels if isinstance(rnn, ConvLSTM) else rnn.input_size
    shape = (None, *frame_size, I) if isinstance(rnn, ConvLSTM) else (None, I)
    return keras.Sequential([keras.Input(shape=shape), *layers])


def _one_layer(rnn, k: int):
    """Layer ``k`` of a stack as a one-layer gatedrnn layer with a copy of its weights."""
    if isinstance(rnn, ConvLSTM):
        one = ConvLSTM(rnn.in_channels if k == 0 else rnn.hidden_channels, rnn.hidden_channels, rnn.kernel_size,
                       bias=rnn.bias, batch_first=True, dtype=rnn.weight_ih_l0.dtype)  # fmt: skip
        sources = {name: getattr(rnn, f"{name}_l{k}", None) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        targets = {name: getattr(one, f"{name}_l0", None) for name in sources}
    else:
        config = rnn._config() | {"num_layers": 1, "dropout": 0.0}
        if k:
            config["input_size"] = rnn.hidden_size * rnn.num_directions
        extra = {"reset_after": rnn.reset_after} if isinstance(rnn, GRU) else {}
        one = type(rnn)(**config, dtype=rnn.weight_ih_l0.dtype, recurrent_dropout=rnn.recurrent_dropout, **extra)
        sources, targets = {}, {}
        for d in range(rnn.num_directions):
            for n, name in enumerate(("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
                sources[name, d] = rnn.weights(k, d)[n]
                targets[name, d] = one.weights(0, d)[n]
    with torch.no_grad():
        for key, value in sources.items():
            if value is not None:
                targets[key].copy_(value)
    return one


def _keras_layer(rnn, config: dict, go_backwards: bool, return_sequences: bool, return_state: bool,
                 zero_output_for_mask: bool, name=None):  # fmt: skip
    keras = _keras()
    dtype = str(rnn.weight_ih_l0.dtype).replace("torch.", "")
    common = {"return_sequences": return_sequences, "return_state": return_state, "go_backwards": go_backwards,
              "dropout": config.get("dropout", 0.0), "dtype": dtype, "unroll": config.get("unroll", False)}  # fmt: skip
    if name is not None:
        common["name"] = name
    if zero_output_for_mask:
        common["zero_output_for_mask"] = True
    if isinstance(rnn, ConvLSTM):
        return keras.layers.ConvLSTM2D(rnn.hidden_channels, rnn.kernel_size, padding=config.get("padding") or "same",
                                       use_bias=rnn.bias, **common)  # fmt: skip
    common |= {"units": rnn.hidden_size, "use_bias": rnn.bias, "recurrent_dropout": rnn.recurrent_dropout}
    if isinstance(rnn, RNN):
        return keras.layers.SimpleRNN(activation=rnn.nonlinearity, **common)
    if isinstance(rnn, LSTM):
        return keras.layers.LSTM(**common)
    return keras.layers.GRU(reset_after=rnn.reset_after, **common)


def _store(rnn, layer, direction: int) -> None:
    """Copies one direction of ``rnn`` into a built Keras recurrent layer."""
    cell = layer.cell
    suffix = "_l0" + ("_reverse" if direction else "")
    w_ih, w_hh = getattr(rnn, "weight_ih" + suffix).detach(), getattr(rnn, "weight_hh" + suffix).detach()
    b_ih, b_hh = (getattr(rnn, name + suffix, None) for name in ("bias_ih", "bias_hh"))
    b_ih, b_hh = (None, None) if b_ih is None else (b_ih.detach(), b_hh.detach())
    if isinstance(rnn, ConvLSTM):
        _assign(cell.kernel, w_ih.permute(2, 3, 1, 0))
        _assign(cell.recurrent_kernel, w_hh.permute(2, 3, 1, 0))
    else:
        if isinstance(rnn, GRU):
            w_ih, w_hh = _gru_order(w_ih, 0), _gru_order(w_hh, 0)
            b_ih, b_hh = (None, None) if b_ih is None else (_gru_order(b_ih, 0), _gru_order(b_hh, 0))
        _assign(cell.kernel, w_ih.T)
        _assign(cell.recurrent_kernel, w_hh.T)
    if b_ih is None:
        return
    if isinstance(rnn, GRU) and rnn.reset_after:
        _assign(cell.bias, torch.stack([b_ih, b_hh]))
    else:  # one bias: exact when bias_hh is zero, as in every layer that came from Keras
        _assign(cell.bias, b_ih if not bool(b_hh.any()) else b_ih + b_hh)


def _to_recurrent(wrapper: KerasRecurrent, frame_size=None):
    keras = _keras()
    rnn = wrapper.rnn
    _check_plain(rnn)
    config = wrapper.keras_config
    if wrapper.bidirectional:
        inner = config.get("layer", {})
        name = config.get("name")
        layer = _keras_layer(rnn, inner, False, wrapper.return_sequences, wrapper.return_state, False,
                             name=config.get("inner_name"))  # fmt: skip
        kwargs = {"merge_mode": wrapper.merge_mode}
        if name is not None:
            kwargs["name"] = name
        layer = keras.layers.Bidirectional(layer, **kwargs)
    else:
        layer = _keras_layer(rnn, config, wrapper.go_backwards, wrapper.return_sequences, wrapper.return_state,
                             wrapper.zero_output_for_mask, name=config.get("name"))  # fmt: skip
    I = rnn.in_channels if isinstance(rnn, ConvLSTM) else rnn.input_size
    if isinstance(rnn, ConvLSTM):
        frame_size = frame_size or config.get("frame_size")
        if frame_size is None:
            raise ValueError("frame_size=(H, W) is needed to convert a ConvLSTM: Keras builds ConvLSTM2D for one "
                             "frame size")  # fmt: skip
        layer.build((None, None, *frame_size, I))
    else:
        layer.build((None, None, I))
    if wrapper.bidirectional:
        _store(rnn, layer.forward_layer, 0)
        _store(rnn, layer.backward_layer, 1)
    else:
        _store(rnn, layer, 0)
    return layer


def _to_dense(module: nn.Module, name: str):
    keras = _keras()
    linear, activation = module, "linear"
    if isinstance(module, nn.Sequential):
        linear, act = module[0], module[1]
        activation = _BACK[type(act)]
    layer = keras.layers.Dense(linear.out_features, activation=activation, use_bias=linear.bias is not None,
                               name=name, dtype=str(linear.weight.dtype).replace("torch.", ""))  # fmt: skip
    layer.build((None, linear.in_features))
    _assign(layer.kernel, linear.weight.detach().T)
    if linear.bias is not None:
        _assign(layer.bias, linear.bias.detach())
    return layer


def _frames(shape):
    return tuple(shape[1:3]) if len(shape) == 4 and None not in shape[1:3] else None


def _to_model(model: KerasModel):
    keras = _keras()
    layers = [keras.Input(shape=model.input_shape, dtype=model.input_dtype)]
    for name, module in model.layers.items():
        if isinstance(module, MaskedEmbedding):
            layer = keras.layers.Embedding(module.num_embeddings, module.embedding_dim, mask_zero=module.mask_zero,
                                           name=name, dtype=str(module.weight.dtype).replace("torch.", ""))  # fmt: skip
            layer.build((None, None))
            _assign(layer.embeddings, module.weight.detach())
        elif isinstance(module, Masking):
            layer = keras.layers.Masking(module.mask_value, name=name)
        elif isinstance(module, nn.Dropout):
            layer = keras.layers.Dropout(module.p, name=name)
        elif isinstance(module, KerasRecurrent) and module.rnn.num_layers > 1:
            layers.extend(_unstacked(module))
            continue
        elif isinstance(module, KerasRecurrent):
            layer = _to_recurrent(module, _frames(model.input_shape))
        elif isinstance(module, nn.Linear) or (isinstance(module, nn.Sequential) and len(module) == 2
                                               and isinstance(module[0], nn.Linear) and type(module[1]) in _BACK):  # fmt: skip
            layer = _to_dense(module, name)
        else:
            raise TypeError(f"layer {name!r} ({type(module).__name__}) has no Keras equivalent")
        layers.append(layer)
    return keras.Sequential(layers)


def _to_sequence_model(model: SequenceModel):
    """A SequenceModel as ``keras.Sequential``: Embedding, Dropout, the recurrent layers (the last
    returning sequences for readout "all", its last step for "last"), Dropout, Dense."""
    keras = _keras()
    if model.adaptive or model.head_bias is not None:
        what = "adaptive_softmax" if model.adaptive else "tie_weights"
        raise ValueError(f"SequenceModel with {what}: Keras has no such readout layer; it cannot be converted")
    rnn = model.rnn
    if not isinstance(rnn, (RNN, LSTM, GRU)):
        raise TypeError(f"SequenceModel of cell {model.cell!r}: Keras has no {type(rnn).__name__} layer; "
                        f"only rnn, lstm and gru convert")  # fmt: skip
    _check_plain(rnn)
    dtype = str(rnn.weight_ih_l0.dtype).replace("torch.", "")
    layers = [keras.Input(shape=(None,), dtype="int32") if model.embed is not None else keras.Input((None, rnn.input_size))]
    if model.embed is not None:
        embedding = keras.layers.Embedding(model.embed.num_embeddings, model.embed.embedding_dim, dtype=dtype)
        embedding.build((None, None))
        _assign(embedding.embeddings, model.embed.weight.detach())
        layers.append(embedding)
        if model.drop.p:
            layers.append(keras.layers.Dropout(model.drop.p))
    for k in range(rnn.num_layers):
        last = k == rnn.num_layers - 1
        wrapper = KerasRecurrent(_one_layer(rnn, k), return_sequences=not last or model.readout == "all")
        layers.append(_to_recurrent(wrapper))
        if not last and rnn.dropout:
            layers.append(keras.layers.Dropout(rnn.dropout))
    if model.drop.p:
        layers.append(keras.layers.Dropout(model.drop.p))
    layers.append(_to_dense(model.head, None))
    return keras.Sequential(layers)
