"""Keras 3 ⇄ gatedrnn: recurrent layers and small sequence models, weights copied exactly.

:func:`from_keras` takes a Keras layer, a ``keras.Sequential`` or functional model (or the path
of a ``.keras`` file) and returns a torch module that computes the same function in eval mode;
:func:`~gatedrnn.convert.keras_export.to_keras` goes back (:mod:`gatedrnn.convert.keras_export`,
re-exported here). The modules it returns live in
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

import pathlib
import re

import torch
from torch import nn

from gatedrnn.conv import ConvLSTM
from gatedrnn.convert.keras_common import ACTIVATIONS, activation_name, gru_order, import_keras, tensor_of, who
from gatedrnn.convert.keras_export import to_keras
from gatedrnn.convert.keras_modules import KerasModel, KerasRecurrent, MaskedEmbedding, Masking
from gatedrnn.layers import GRU, LSTM, RNN

__all__ = ["from_keras", "to_keras"]

RECURRENT = ("SimpleRNN", "LSTM", "GRU", "ConvLSTM2D")


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
    keras = import_keras()
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
    keras = import_keras()
    if not layer.built:
        raise ValueError(f"{who(layer)} is not built: call it on an input or build(input_shape) first")
    if isinstance(layer, keras.layers.Bidirectional):
        forward, backward = layer.forward_layer, layer.backward_layer
        if forward.go_backwards or not backward.go_backwards:
            raise ValueError(f"{who(layer)}: its forward layer must run forward and its backward layer backward")
        if type(forward) is not type(backward):
            raise ValueError(f"{who(layer)}: a backward layer of another type ({type(backward).__name__} beside "
                             f"{type(forward).__name__}) has no gatedrnn equivalent")  # fmt: skip
        if type(forward).__name__ == "ConvLSTM2D":
            raise ValueError(f"{who(layer)}: gatedrnn.ConvLSTM has no bidirectional form; Bidirectional(ConvLSTM2D) "
                             f"cannot be converted")  # fmt: skip
        spec = _spec(forward)
        if _spec(backward)["config"] != spec["config"]:
            raise ValueError(f"{who(layer)}: its backward layer's settings differ from its forward layer's "
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
        raise TypeError(f"{who(layer)}: gatedrnn has 2-D convolutional layers only (gatedrnn.ConvLSTM, "
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
    keras = import_keras()
    kind = type(layer).__name__
    if kind not in RECURRENT or not isinstance(layer, keras.layers.RNN):
        if isinstance(layer, keras.layers.RNN):
            raise TypeError(f"{who(layer)}: a generic keras.layers.RNN (its cell {type(layer.cell).__name__}) "
                            f"cannot be converted; use SimpleRNN, LSTM, GRU or ConvLSTM2D")  # fmt: skip
        raise TypeError(f"{who(layer)} has no gatedrnn equivalent; recurrent layers that convert: "
                        f"{', '.join(RECURRENT)} and Bidirectional of one")  # fmt: skip
    cell = layer.cell
    if layer.stateful:
        raise ValueError(f"{who(layer)}: stateful=True (state carried between batches) has no gatedrnn equivalent; "
                         f"pass the state explicitly (initial_state)")  # fmt: skip
    activation = activation_name(cell.activation)
    allowed = ("tanh", "relu") if kind == "SimpleRNN" else ("tanh",)
    if activation not in allowed:
        raise ValueError(f"{who(layer)}: activation={activation!r} has no gatedrnn equivalent (gatedrnn's {kind} "
                         f"computes {' or '.join(allowed)})")  # fmt: skip
    if kind != "SimpleRNN":
        recurrent = activation_name(cell.recurrent_activation)
        if recurrent != "sigmoid":
            raise ValueError(f"{who(layer)}: recurrent_activation={recurrent!r} has no gatedrnn equivalent "
                             f"(gatedrnn's gates are 'sigmoid')")  # fmt: skip
    if cell.variable_dtype not in ("float32", "float64") or cell.compute_dtype != cell.variable_dtype:
        raise ValueError(f"{who(layer)}: dtype policy {layer.dtype_policy.name!r} (variables "
                         f"{cell.variable_dtype}, compute {cell.compute_dtype}) has no gatedrnn equivalent; "
                         f"use float32 or float64")  # fmt: skip
    config = {"kind": kind, "units": cell.filters if kind == "ConvLSTM2D" else cell.units, "bias": cell.use_bias,
              "activation": activation, "recurrent_dropout": float(cell.recurrent_dropout),
              "dtype": cell.variable_dtype}  # fmt: skip
    if kind == "GRU":
        config["reset_after"] = bool(cell.reset_after)
    if kind == "ConvLSTM2D":
        if cell.data_format != "channels_last":
            raise ValueError(f"{who(layer)}: data_format={cell.data_format!r}; gatedrnn converts channels_last "
                             f"ConvLSTM2D (Keras' default) only")  # fmt: skip
        if tuple(cell.strides) != (1, 1) or tuple(cell.dilation_rate) != (1, 1):
            raise ValueError(f"{who(layer)}: strides={tuple(cell.strides)}, dilation_rate={tuple(cell.dilation_rate)}; "
                             f"gatedrnn.ConvLSTM convolves with strides 1 and no dilation")  # fmt: skip
        kh, kw = cell.kernel_size
        if kh % 2 == 0 or kw % 2 == 0 or (cell.padding != "same" and (kh, kw) != (1, 1)):
            raise ValueError(f"{who(layer)}: kernel_size={(kh, kw)}, padding={cell.padding!r}; gatedrnn.ConvLSTM "
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


def _load(rnn, layer, direction: int) -> None:
    """Copies a built Keras recurrent layer's weights into one direction of ``rnn``."""
    cell, kind = layer.cell, type(layer).__name__
    suffix = "_l0" + ("_reverse" if direction else "")
    kernel, recurrent = tensor_of(cell.kernel), tensor_of(cell.recurrent_kernel)
    if kind == "ConvLSTM2D":  # (kh, kw, C_in, 4C) → (4C, C_in, kh, kw); gates i, f, c, o = torch's i, f, g, o
        w_ih, w_hh = kernel.permute(3, 2, 0, 1), recurrent.permute(3, 2, 0, 1)
    else:
        w_ih, w_hh = kernel.T, recurrent.T  # (G*H, I), (G*H, H)
    bias_ih = bias_hh = None
    if cell.use_bias:
        bias = tensor_of(cell.bias)
        if kind == "GRU" and cell.reset_after:
            bias_ih, bias_hh = bias[0], bias[1]
        else:
            bias_ih, bias_hh = bias, torch.zeros_like(bias)
    if kind == "GRU":
        w_ih, w_hh = gru_order(w_ih, 0), gru_order(w_hh, 0)
        bias_ih, bias_hh = (None, None) if bias_ih is None else (gru_order(bias_ih, 0), gru_order(bias_hh, 0))
    values = {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": bias_ih, "bias_hh": bias_hh}
    with torch.no_grad():
        for name, value in values.items():
            if value is not None:
                getattr(rnn, name + suffix).copy_(value)


def _dense(layer) -> nn.Module:
    cfg = layer.get_config()
    if getattr(layer, "lora_enabled", False):
        raise ValueError(f"{who(layer)}: LoRA (lora_rank) cannot be converted; merge it into the kernel first")
    kernel = tensor_of(layer.kernel)  # (I, O)
    linear = nn.Linear(kernel.shape[0], kernel.shape[1], bias=cfg["use_bias"], dtype=kernel.dtype)
    with torch.no_grad():
        linear.weight.copy_(kernel.T)
        if cfg["use_bias"]:
            linear.bias.copy_(tensor_of(layer.bias))
    activation = activation_name(layer.activation)
    if activation == "linear":
        return linear
    if activation not in ACTIVATIONS:
        raise ValueError(f"{who(layer)}: activation={activation!r} has no converter; those that convert: "
                         f"linear, {', '.join(ACTIVATIONS)}")  # fmt: skip
    return nn.Sequential(linear, ACTIVATIONS[activation]())


def _layer(layer) -> nn.Module:
    """One layer of a model chain as a torch module, or a refusal naming it."""
    keras = import_keras()
    L = keras.layers
    if isinstance(layer, L.Embedding):
        cfg = layer.get_config()
        if getattr(layer, "lora_enabled", False):
            raise ValueError(f"{who(layer)}: LoRA cannot be converted")
        table = tensor_of(layer.embeddings)
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
            raise TypeError(f"{who(layer)}: TimeDistributed({type(layer.layer).__name__}) cannot be converted; "
                            f"TimeDistributed(Dense) can")  # fmt: skip
        return _dense(layer.layer)
    if isinstance(layer, (L.RNN, L.Bidirectional)):
        return _recurrent(layer)
    raise TypeError(f"{who(layer)} cannot be converted: a model converts when made of Embedding, Masking, "
                    f"SimpleRNN, LSTM, GRU, ConvLSTM2D, Bidirectional, Dropout, Dense and TimeDistributed(Dense)")  # fmt: skip


def _chain(model) -> list:
    """The model's layers in order, when they form one chain from its one input to its one output."""
    keras = import_keras()
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
            raise ValueError(f"{who(layer)} is called {len(nodes)} times; a model converts when each layer is "
                             f"called once, in one chain")  # fmt: skip
        arguments = nodes[0].arguments
        first = arguments.args[0] if arguments.args else None
        extra = [k for k, v in arguments.kwargs.items() if k != "mask" and v is not None and k != "training"]
        if (first is None or not isinstance(first, keras.KerasTensor) or len(arguments.args) != 1 or extra
                or first._keras_history.operation is not previous):  # fmt: skip
            raise ValueError(f"{who(layer)} does not read the previous layer's output alone (it reads "
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
            raise ValueError(f"{who(layer)} returns several tensors (return_state=True or merge_mode=None); a model "
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
