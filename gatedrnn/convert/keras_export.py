"""gatedrnn → Keras 3: :func:`to_keras`, the way back of :func:`gatedrnn.convert.keras.from_keras`
(whose module gives the conventions, weight by weight). A layer or model that came from Keras
comes back as it was, its weights bit for bit; a gatedrnn layer, stack or
:class:`gatedrnn.models.SequenceModel` becomes the Keras layer or ``keras.Sequential`` that
computes what it computes. What Keras has no layer for (peepholes, CIFG, layer norm, a
projection, zoneout, an MGU...) is refused with an error naming the layer and the option.
"""

from __future__ import annotations

import torch
from torch import nn

from gatedrnn.conv import ConvLSTM
from gatedrnn.convert.keras_common import ACTIVATION_NAMES, assign, gru_order, import_keras
from gatedrnn.convert.keras_modules import KerasModel, KerasRecurrent, MaskedEmbedding, Masking
from gatedrnn.layers import GRU, LSTM, RNN
from gatedrnn.models import SequenceModel
from gatedrnn.rnnbase import RNNBase


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
    keras = import_keras()
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
    keras = import_keras()
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
    keras = import_keras()
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
        assign(cell.kernel, w_ih.permute(2, 3, 1, 0))
        assign(cell.recurrent_kernel, w_hh.permute(2, 3, 1, 0))
    else:
        if isinstance(rnn, GRU):
            w_ih, w_hh = gru_order(w_ih, 0), gru_order(w_hh, 0)
            b_ih, b_hh = (None, None) if b_ih is None else (gru_order(b_ih, 0), gru_order(b_hh, 0))
        assign(cell.kernel, w_ih.T)
        assign(cell.recurrent_kernel, w_hh.T)
    if b_ih is None:
        return
    if isinstance(rnn, GRU) and rnn.reset_after:
        assign(cell.bias, torch.stack([b_ih, b_hh]))
    else:  # one bias: exact when bias_hh is zero, as in every layer that came from Keras
        assign(cell.bias, b_ih if not bool(b_hh.any()) else b_ih + b_hh)


def _to_recurrent(wrapper: KerasRecurrent, frame_size=None):
    keras = import_keras()
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
    keras = import_keras()
    linear, activation = module, "linear"
    if isinstance(module, nn.Sequential):
        linear, act = module[0], module[1]
        activation = ACTIVATION_NAMES[type(act)]
    layer = keras.layers.Dense(linear.out_features, activation=activation, use_bias=linear.bias is not None,
                               name=name, dtype=str(linear.weight.dtype).replace("torch.", ""))  # fmt: skip
    layer.build((None, linear.in_features))
    assign(layer.kernel, linear.weight.detach().T)
    if linear.bias is not None:
        assign(layer.bias, linear.bias.detach())
    return layer


def _frames(shape):
    return tuple(shape[1:3]) if len(shape) == 4 and None not in shape[1:3] else None


def _to_model(model: KerasModel):
    keras = import_keras()
    layers = [keras.Input(shape=model.input_shape, dtype=model.input_dtype)]
    for name, module in model.layers.items():
        if isinstance(module, MaskedEmbedding):
            layer = keras.layers.Embedding(module.num_embeddings, module.embedding_dim, mask_zero=module.mask_zero,
                                           name=name, dtype=str(module.weight.dtype).replace("torch.", ""))  # fmt: skip
            layer.build((None, None))
            assign(layer.embeddings, module.weight.detach())
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
                                               and isinstance(module[0], nn.Linear) and type(module[1]) in ACTIVATION_NAMES):  # fmt: skip
            layer = _to_dense(module, name)
        else:
            raise TypeError(f"layer {name!r} ({type(module).__name__}) has no Keras equivalent")
        layers.append(layer)
    return keras.Sequential(layers)


def _to_sequence_model(model: SequenceModel):
    """A SequenceModel as ``keras.Sequential``: Embedding, Dropout, the recurrent layers (the last
    returning sequences for readout "all", its last step for "last"), Dropout, Dense."""
    keras = import_keras()
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
        assign(embedding.embeddings, model.embed.weight.detach())
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


def _unstacked(wrapper: KerasRecurrent, frame_size=None) -> list:
    """A stack's Keras layers again, with the Dropout layers between them."""
    keras = import_keras()
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
