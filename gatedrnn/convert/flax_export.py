"""gatedrnn → Flax: :func:`to_flax`, the way back of :func:`gatedrnn.convert.flax.from_flax`
(whose module gives the conventions, parameter by parameter), and the Flax modules a params
tree belongs to (:func:`linen_module`, :func:`nnx_module`), which ``gatedrnn convert`` runs to
measure a conversion.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gatedrnn.cells import GRUCell, LSTMCell, RNNCell
from gatedrnn.cells.conv import ConvGRUCell, ConvLSTMCell
from gatedrnn.cells.mgu import MGUCell
from gatedrnn.conv import ConvGRU, ConvLSTM
from gatedrnn.convert.flax_common import GRU_GATES, LSTM_GATES, array_of, cell_name, conv_reorder, leaf, plain, unwrap
from gatedrnn.layers import GRU, LSTM, MGU, RNN


def _refuse_variants(module: nn.Module, what: str) -> None:
    for option in ("peephole", "coupled", "layer_norm"):
        if getattr(module, option, False):
            raise ValueError(f"{what}({option}=True): Flax has no such cell")
    if getattr(module, "reset_after", True) is False:
        raise ValueError(f"{what}(reset_after=False): Flax's GRUCell resets after the recurrent product only")
    if any(getattr(module, "zoneout", ()) or ()):
        raise ValueError(f"{what}(zoneout={module.zoneout_given()}): Flax's RNN has no zoneout (it changes "
                         "the eval function too)")  # fmt: skip


def _biases(w_ih, w_hh, b_ih, b_hh):
    zero = w_ih.new_zeros(w_ih.shape[0])
    return (zero if b_ih is None else b_ih.detach()), (zero if b_hh is None else b_hh.detach())


def _cell_params(kind: str, w_ih, w_hh, b_ih, b_hh, api: str) -> dict:
    """One direction's tensors (torch layout) as a Flax cell's params tree (numpy-free: jax arrays)."""
    w_ih, w_hh = w_ih.detach(), w_hh.detach()
    b_ih, b_hh = _biases(w_ih, w_hh, b_ih, b_hh)
    A = array_of
    if kind == "LSTM":
        b = b_ih + b_hh  # Flax's one bias per gate, on the recurrent layer
        if api == "nnx":
            return {"dense_i": {"kernel": A(w_ih.T)}, "dense_h": {"kernel": A(w_hh.T), "bias": A(b)}}
        out = {}
        for gate, wi, wh, bg in zip(LSTM_GATES, w_ih.chunk(4), w_hh.chunk(4), b.chunk(4)):
            out[f"i{gate}"] = {"kernel": A(wi.T)}
            out[f"h{gate}"] = {"kernel": A(wh.T), "bias": A(bg)}
        return out
    if kind == "GRU":
        H = w_hh.shape[1]
        b_x = torch.cat([b_ih[: 2 * H] + b_hh[: 2 * H], b_ih[2 * H :]])  # r and z: one bias; n keeps b_in
        b_hn = b_hh[2 * H :]
        if api == "nnx":
            if bool((b_hn != 0).any()):
                raise ValueError("GRU: nnx's GRUCell has no b_hn (the recurrent bias of the candidate, "
                                 "bias_hh[2H:]), and this one's is not zero; convert to linen (api='linen')")  # fmt: skip
            return {"dense_i": {"kernel": A(w_ih.T), "bias": A(b_x)}, "dense_h": {"kernel": A(w_hh.T)}}
        out = {}
        for gate, wi, wh, bg in zip(GRU_GATES, w_ih.chunk(3), w_hh.chunk(3), b_x.chunk(3)):
            out[f"i{gate}"] = {"kernel": A(wi.T), "bias": A(bg)}
            out[f"h{gate}"] = {"kernel": A(wh.T)}
        out["hn"]["bias"] = A(b_hn)
        return out
    if kind == "RNN":
        i, h = ("dense_i", "dense_h") if api == "nnx" else ("i", "h")
        return {i: {"kernel": A(w_ih.T), "bias": A(b_ih + b_hh)}, h: {"kernel": A(w_hh.T)}}
    # ConvLSTM (linen only): Flax adds 1 to f itself
    b_ih = conv_reorder(b_ih.clone(), 0)
    C = w_hh.shape[1]
    b_ih[2 * C : 3 * C] -= 1.0  # Flax's order i, g, f, o: f is the third block
    return {"ih": {"kernel": A(conv_reorder(w_ih, 0).permute(2, 3, 1, 0)), "bias": A(b_ih)},
            "hh": {"kernel": A(conv_reorder(w_hh, 0).permute(2, 3, 1, 0)), "bias": A(conv_reorder(b_hh, 0))}}  # fmt: skip


def _kind(module: nn.Module) -> tuple[str, str]:
    """``(kind, nonlinearity)`` of a gatedrnn module Flax has a cell for, else a TypeError."""
    name = type(module).__name__
    if isinstance(module, (MGUCell, MGU)):
        raise TypeError(f"{name}: Flax's MGUCell is another function than gatedrnn's MGU (Zhou et al.), "
                         "see gatedrnn.convert.flax; an MGU cannot be converted")  # fmt: skip
    if isinstance(module, (ConvGRUCell, ConvGRU)):
        raise TypeError(f"{name}: Flax has no convolutional GRU cell")
    for cls, kind in ((LSTMCell, "LSTM"), (GRUCell, "GRU"), (RNNCell, "RNN"), (ConvLSTMCell, "ConvLSTM"),
                      (LSTM, "LSTM"), (GRU, "GRU"), (RNN, "RNN"), (ConvLSTM, "ConvLSTM")):  # fmt: skip
        if isinstance(module, cls):
            _refuse_variants(module, name)
            nonlinearity = getattr(module, "nonlinearity", "tanh")
            return kind, nonlinearity
    raise TypeError(f"module: gatedrnn converts LSTM, GRU, RNN and ConvLSTM cells and layers to Flax, got {name}")


def to_flax(module: nn.Module, *, api: str = "linen"):
    """A gatedrnn cell or one-layer layer as Flax's equal cell (or ``RNN``/``Bidirectional``), with its weights.

    Args:
        module: a :class:`~gatedrnn.LSTMCell`, :class:`~gatedrnn.GRUCell`,
            :class:`~gatedrnn.RNNCell`, :class:`~gatedrnn.ConvLSTMCell`, or a one-layer
            :class:`~gatedrnn.LSTM`, :class:`~gatedrnn.GRU`, :class:`~gatedrnn.RNN` or
            :class:`~gatedrnn.ConvLSTM` (bidirectional or not). The torch.nn classes convert
            too (through ``from_torch``).
        api (str): ``"linen"`` or ``"nnx"`` (nnx has no ConvLSTM cell). Keyword only.
            Default: ``"linen"``.

    Returns:
        ``(params, flax_module)``: linen: the params tree (``flax_module.apply({"params":
        params}, ...)``) and an unbound ``flax.linen`` module (``LSTMCell``, ``GRUCell``,
        ``SimpleCell``, ``ConvLSTMCell``; a layer: ``RNN(cell)`` or ``Bidirectional``). nnx:
        the ``nnx.Param`` values as a plain dict, and the nnx module holding them. Flax keeps
        one bias per gate: the params hold ``b_ih + b_hh``. A layer's dropouts (training
        only) are left behind, as ``to_torch`` does.

    Raises:
        TypeError: a module Flax has no cell for: an MGU, a ConvGRU, a MinGRU...
        ValueError: an option Flax's cells lack: several layers,
            ``proj_size``, peepholes, coupled gates, layer norm, ``reset_after=False``,
            zoneout; for nnx, a ConvLSTM and a GRU with a nonzero ``b_hn``.
    """
    if api not in ("linen", "nnx"):
        raise ValueError(f"api must be 'linen' or 'nnx', got {api!r}")
    if type(module) in (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell):
        ours = {nn.LSTM: LSTM, nn.GRU: GRU, nn.RNN: RNN, nn.LSTMCell: LSTMCell, nn.GRUCell: GRUCell,
                nn.RNNCell: RNNCell}  # fmt: skip
        module = ours[type(module)].from_torch(module)
    kind, nonlinearity = _kind(module)
    is_layer = isinstance(module, (LSTM, GRU, RNN, ConvLSTM))
    if is_layer:
        if module.num_layers != 1:
            raise ValueError(f"{type(module).__name__}(num_layers={module.num_layers}): Flax's RNN runs one cell; "
                             "convert each layer (a one-layer module per layer)")  # fmt: skip
        if getattr(module, "proj_size", 0):
            raise ValueError(f"{type(module).__name__}(proj_size={module.proj_size}): Flax's cells have no projection")
        directions = ("_l0", "_l0_reverse")[: 2 if getattr(module, "bidirectional", False) else 1]
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        trees = [_cell_params(kind, *(getattr(module, f"{n}{s}", None) for n in names), api) for s in directions]
    else:
        trees = [_cell_params(kind, module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh, api)]
    if kind == "ConvLSTM":
        size = (module.hidden_channels, tuple(module.kernel_size))
        I = module.in_channels
    else:
        size = (module.hidden_size,)
        I = module.input_size
    if api == "linen":
        import flax.linen as fnn
        import jax

        cls = {"LSTM": fnn.LSTMCell, "GRU": fnn.GRUCell, "RNN": fnn.SimpleCell, "ConvLSTM": fnn.ConvLSTMCell}[kind]
        extra = {"activation_fn": jax.nn.relu} if nonlinearity == "relu" else {}
        make = (lambda: cls(*size, **extra)) if kind != "ConvLSTM" else (lambda: cls(size[0], size[1]))
        if not is_layer:
            return trees[0], make()
        if len(trees) == 1:
            return {"cell": trees[0]}, fnn.RNN(make())
        params = {"forward_rnn": {"cell": trees[0]}, "backward_rnn": {"cell": trees[1]}}
        return params, fnn.Bidirectional(fnn.RNN(make()), fnn.RNN(make()))
    from flax import nnx

    if kind == "ConvLSTM":
        raise ValueError(f"{type(module).__name__}: nnx has no ConvLSTM cell; convert to linen (api='linen')")
    cls = {"LSTM": nnx.OptimizedLSTMCell, "GRU": nnx.GRUCell, "RNN": nnx.SimpleCell}[kind]
    extra = {"activation_fn": nnx.relu} if nonlinearity == "relu" else {}
    import jax.numpy as jnp

    weight = module.weight_ih_l0 if is_layer else module.weight_ih
    dtype = {torch.float64: "float64", torch.bfloat16: "bfloat16"}.get(weight.dtype, "float32")

    def make(seed):
        return cls(I, *size, rngs=nnx.Rngs(seed), param_dtype=getattr(jnp, dtype), **extra)

    if not is_layer:
        flax_module, params = make(0), trees[0]
    elif len(trees) == 1:
        flax_module, params = nnx.RNN(make(0)), {"cell": trees[0]}
    else:
        flax_module = nnx.Bidirectional(nnx.RNN(make(0)), nnx.RNN(make(1)))
        params = {"forward_rnn": {"cell": trees[0]}, "backward_rnn": {"cell": trees[1]}}
    state = nnx.state(flax_module, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(flax_module, state)
    return params, flax_module


def linen_module(params, cell_type, *, activation: str = "tanh"):
    """The unbound ``flax.linen`` module that a linen params tree belongs to, sized from it: the
    cell, or its ``RNN`` or ``Bidirectional`` (concatenating), ready for ``apply({"params":
    params}, ...)``. ``gatedrnn convert`` runs it to measure a conversion.

    Args:
        params: a linen params tree of a cell, ``RNN`` or ``Bidirectional``.
        cell_type: the cell's name or class, as :func:`from_flax` takes it.
        activation (str): a ``SimpleCell``'s ``"tanh"`` or ``"relu"``. Keyword only.
            Default: ``"tanh"``.
    """
    import flax.linen as fnn
    import jax

    name = cell_name(cell_type)
    _, cells, wrapper, _ = unwrap(None, plain(params))
    tree = cells[0]
    if name == "ConvLSTMCell":
        kernel = np.asarray(leaf(tree, "hh", "kernel", ""))  # (kh, kw, C, 4C)
        make = lambda: fnn.ConvLSTMCell(features=kernel.shape[-2], kernel_size=tuple(kernel.shape[:-2]))
    else:
        recurrent = next((k for k in ("hi", "hr", "hf", "h", "dense_h") if k in tree), None)
        if recurrent is None:
            raise ValueError(f"params: no recurrent kernel of a Flax {name} (has {sorted(tree)})")
        H = leaf(tree, recurrent, "kernel", "").shape[0]
        extra = {"activation_fn": jax.nn.relu} if activation == "relu" else {}
        make = lambda: getattr(fnn, name)(features=H, **extra)
    if wrapper == "bidirectional":
        return fnn.Bidirectional(fnn.RNN(make()), fnn.RNN(make()))
    return fnn.RNN(make()) if wrapper == "rnn" else make()


def is_nnx_layout(params) -> bool:
    """Whether a plain params tree holds nnx's names (``dense_i``, ``if_``) rather than linen's.

    Args:
        params: a params tree of a cell, ``RNN`` or ``Bidirectional``, as a plain dict.
    """
    _, cells, _, _ = unwrap(None, plain(params))
    return any(key in cells[0] for key in ("dense_i", "if_"))


def nnx_module(params, cell_type, *, activation: str = "tanh"):
    """The nnx module (cell, ``RNN`` or ``Bidirectional``) holding a plain nnx params tree (as
    ``nnx.to_pure_dict`` writes it), sized from it: :func:`linen_module`'s twin for nnx.

    Args:
        params: the plain nnx params tree of a cell, ``RNN`` or ``Bidirectional``.
        cell_type: the cell's name or class, as :func:`from_flax` takes it (nnx has
            ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell``).
        activation (str): a ``SimpleCell``'s ``"tanh"`` or ``"relu"``. Keyword only.
            Default: ``"tanh"``.
    """
    from flax import nnx

    name = cell_name(cell_type)
    tree = plain(params)
    _, cells, wrapper, _ = unwrap(None, tree)
    cell = cells[0]
    first = "dense_i" if "dense_i" in cell else "ii"
    recurrent = "dense_h" if "dense_h" in cell else "hi"
    I = leaf(cell, first, "kernel", "").shape[0]
    H = leaf(cell, recurrent, "kernel", "").shape[0]
    extra = {"activation_fn": nnx.relu} if activation == "relu" else {}
    make = lambda seed: getattr(nnx, name)(I, H, rngs=nnx.Rngs(seed), **extra)
    if wrapper == "bidirectional":
        module = nnx.Bidirectional(nnx.RNN(make(0)), nnx.RNN(make(1)))
    else:
        module = nnx.RNN(make(0)) if wrapper == "rnn" else make(0)
    state = nnx.state(module, nnx.Param)
    nnx.replace_by_pure_dict(state, tree)
    nnx.update(module, state)
    return module
