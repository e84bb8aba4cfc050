r"""Flax's recurrent cells in and out of gatedrnn, linen and nnx, weights copied exactly.

Flax (``flax.linen.recurrent``, ``flax.nnx.nn.recurrent``) keeps a dense layer per gate, its
kernels ``(in, out)`` (torch's ``(out, in)`` transposed), the carry of an LSTM as ``(c, h)``
(gatedrnn's as ``(h, c)``) and **one** bias per gate where gatedrnn, as torch, keeps two:

=====================  ========================================  =========================================
Flax                   its parameters                            gatedrnn
=====================  ========================================  =========================================
``LSTMCell``           ``ii if ig io`` kernels; ``hi hf hg ho``  :class:`~gatedrnn.LSTMCell`, rows i, f, g, o;
                       kernels and biases                        the bias in ``bias_hh``, ``bias_ih = 0``
``OptimizedLSTMCell``  linen: as ``LSTMCell``; nnx: ``dense_i``  :class:`~gatedrnn.LSTMCell`
                       ``(I, 4H)``, ``dense_h`` ``(H, 4H)`` + b
``GRUCell``            ``ir iz in`` kernels and biases;          :class:`~gatedrnn.GRUCell` (``reset_after``);
                       ``hr hz`` kernels; ``hn`` kernel + bias   ``bias_hh = [0; 0; b_hn]``
                       (nnx: ``dense_i``, ``dense_h``, no
                       ``b_hn``)
``SimpleCell``         ``i`` kernel + bias, ``h`` kernel         :class:`~gatedrnn.RNNCell` (tanh, or relu)
``ConvLSTMCell``       ``ih``, ``hh`` convolutions               :class:`~gatedrnn.ConvLSTMCell`; Flax's
                       ``(kh, kw, C_in, 4C)``, gates i, g, f, o  fixed ``+1`` on ``f`` in ``bias_ih``
``MGUCell``            ``if in`` kernels + biases, ``hf hn``     refused: gatedrnn's MGU (Zhou et al.) is a
                                                                 different function; ``as_gru=True`` gives
                                                                 the equal :class:`~gatedrnn.GRUCell`
``RNN(cell)``          ``{"cell": ...}``                         :class:`~gatedrnn.LSTM` / ``GRU`` / ``RNN``
                                                                 / ``ConvLSTM``, one layer, ``batch_first``
``Bidirectional``      ``{"forward_rnn": {"cell"}, ...}``        the same, ``bidirectional=True``
=====================  ========================================  =========================================

Flax's GRU gates ``r`` and ``z`` have no recurrent bias and its LSTM no input bias: converting
to Flax adds gatedrnn's two biases into the one Flax keeps (``b_ih + b_hh``, rounded once in
float32), and converting back puts that sum where Flax has it. So Flax -> gatedrnn -> Flax is
bitwise, and gatedrnn -> Flax -> gatedrnn gives back every weight bitwise and each gate's
``b_ih + b_hh`` bitwise (split between the two as Flax would). ConvLSTM: Flax adds ``1`` to the
forget gate inside the cell, gatedrnn keeps it in ``bias_ih`` (a round trip may move the forget
biases by one rounding, ``(b + 1) - 1``).

MGU: Flax's ``MGUCell`` computes :math:`n = \tanh(W_{in} x + b_{in} + f \odot (W_{hn} h + b_{hn}))`,
:math:`h' = (1 - f) \odot n + f \odot h` (reset after the product, by the gate that keeps
``h``); Zhou et al.'s, gatedrnn's, :math:`n = \tanh(W_{in} x + b_{in} + W_{hn}(f \odot h) + b_{hn})`,
:math:`h' = (1 - f) \odot h + f \odot n`. No choice of weights makes one the other. Flax's is a GRU
whose ``r`` and ``z`` are one gate: ``as_gru=True`` converts it into that
:class:`~gatedrnn.GRUCell` (the gate's rows written twice), exactly.

Refused, each with a ``ValueError`` naming the option (a module of a kind Flax lacks: ``TypeError``): activation functions other than
sigmoid gates and tanh (``SimpleCell`` also relu), ``SimpleCell(residual=True)``,
``MGUCell(reset_gate=False)``, a ConvLSTM that is not 2-D, has an even kernel, strides, or a
padding other than ``"SAME"``, ``RNN(reverse=True)`` alone, a ``Bidirectional`` whose merge is
not concatenation; converting to Flax: several layers, ``proj_size``, the variants
(peepholes, coupled gates, layer norm, ``reset_after=False``), zoneout, an MGU, a ConvGRU, and
for nnx's GRU a nonzero ``b_hn`` (nnx has none).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from gatedrnn.cells import GRUCell, LSTMCell, RNNCell
from gatedrnn.cells.conv import ConvGRUCell, ConvLSTMCell
from gatedrnn.cells.mgu import MGUCell
from gatedrnn.conv import ConvGRU, ConvLSTM
from gatedrnn.layers import GRU, LSTM, MGU, RNN

# cell_type as given (class name, or the command's --cell) -> Flax's class name
CELL_NAMES = {
    "lstm": "LSTMCell", "lstmcell": "LSTMCell", "optimizedlstm": "OptimizedLSTMCell",
    "optimizedlstmcell": "OptimizedLSTMCell", "gru": "GRUCell", "grucell": "GRUCell", "mgu": "MGUCell",
    "mgucell": "MGUCell", "simple": "SimpleCell", "simplecell": "SimpleCell", "rnn": "SimpleCell",
    "convlstm": "ConvLSTMCell", "convlstmcell": "ConvLSTMCell",
}  # fmt: skip
LSTM_GATES = ("i", "f", "g", "o")  # Flax's and torch's order in LSTMCell; ConvLSTMCell's is i, g, f, o
GRU_GATES = ("r", "z", "n")


# -- arrays ----------------------------------------------------------------------------------------


def _tensor(array) -> torch.Tensor:
    """A jax or numpy array as a torch tensor of its dtype (bfloat16 through float32, exactly)."""
    a = np.asarray(array)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(a, copy=True))


def _array(tensor: torch.Tensor):
    """A torch tensor as a jax array of its dtype."""
    import jax.numpy as jnp

    t = tensor.detach().cpu()
    if t.dtype == torch.bfloat16:
        return jnp.asarray(t.float().numpy(), dtype=jnp.bfloat16)
    return jnp.asarray(t.numpy().copy())


def _leaf(tree: Mapping, name: str, key: str, where: str, shape: tuple | None = None) -> torch.Tensor:
    if name not in tree:
        raise ValueError(f"params{where}: no {name!r} (has {sorted(tree)}): not the parameters of this Flax cell")
    sub = tree[name]
    if not isinstance(sub, Mapping) or key not in sub:
        raise ValueError(f"params{where}[{name!r}]: no {key!r} (has {sorted(sub) if isinstance(sub, Mapping) else sub})")
    t = _tensor(sub[key])
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"params{where}[{name!r}][{key!r}]: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    return t


def _has_bias(tree: Mapping, name: str) -> bool:
    return isinstance(tree.get(name), Mapping) and "bias" in tree[name]


def _expect_keys(tree: Mapping, names: set, where: str, cell: str) -> None:
    if set(tree) != names:
        raise ValueError(f"params{where}: a Flax {cell} has the dense layers {sorted(names)}, got {sorted(tree)}")


# -- what was given: params, a cell type, perhaps a module ----------------------------------------


def _is_nnx(value) -> bool:
    from flax import nnx

    return isinstance(value, (nnx.Module, nnx.State))


def _plain(tree) -> dict:
    """A nested plain dict of a linen params tree (a FrozenDict, or ``{"params": ...}``)."""
    if not isinstance(tree, Mapping):
        raise TypeError(f"params must be a Flax params dict (linen) or an nnx module or state, got {type(tree).__name__}")
    tree = {k: (_plain(v) if isinstance(v, Mapping) else v) for k, v in tree.items()}
    return tree["params"] if set(tree) == {"params"} else tree


def _cell_name(cell_type) -> str:
    """Flax's class name for ``cell_type``: a name, a Flax class, or a Flax module."""
    if isinstance(cell_type, str):
        key = cell_type.lower().replace("_", "").replace("-", "")
        if key not in CELL_NAMES:
            raise ValueError(f"cell_type must name a Flax cell ({', '.join(sorted(set(CELL_NAMES.values())))}), "
                             f"got {cell_type!r}")  # fmt: skip
        return CELL_NAMES[key]
    name = (cell_type if isinstance(cell_type, type) else type(cell_type)).__name__
    if name not in set(CELL_NAMES.values()):
        raise ValueError(f"cell_type: gatedrnn converts Flax's {', '.join(sorted(set(CELL_NAMES.values())))}, "
                         f"RNN and Bidirectional; got {name}")  # fmt: skip
    return name


def _same_function(given, *expected) -> bool:
    return any(given is e or getattr(given, "__wrapped__", None) is e for e in expected)


def _check_cell_module(cell, name: str) -> str:
    """Refuses what a Flax cell module sets that its parameters do not show; returns the
    nonlinearity (``"tanh"``, or ``"relu"`` for a SimpleCell)."""
    import jax
    import jax.numpy as jnp

    sigmoid, tanh = (jax.nn.sigmoid,), (jnp.tanh,)  # Flax's defaults (flax.linen.sigmoid, .tanh are these)
    gate_fn = getattr(cell, "gate_fn", None)
    if gate_fn is not None and not _same_function(gate_fn, *sigmoid):
        raise ValueError(f"{name}(gate_fn={getattr(gate_fn, '__name__', gate_fn)}): gatedrnn's gates are sigmoids")
    activation = getattr(cell, "activation_fn", None)
    nonlinearity = "tanh"
    if activation is not None and not _same_function(activation, *tanh):
        if name == "SimpleCell" and _same_function(activation, jax.nn.relu):
            nonlinearity = "relu"
        else:
            allowed = "tanh or relu" if name == "SimpleCell" else "tanh"
            raise ValueError(f"{name}(activation_fn={getattr(activation, '__name__', activation)}): "
                             f"gatedrnn's {name} computes with {allowed} only")  # fmt: skip
    if getattr(cell, "residual", False):
        raise ValueError("SimpleCell(residual=True): gatedrnn's RNNCell has no residual connection")
    if name == "MGUCell" and getattr(cell, "reset_gate", True) is False:
        raise ValueError("MGUCell(reset_gate=False): neither gatedrnn's MGU nor its GRU computes it")
    if name == "ConvLSTMCell":
        strides = getattr(cell, "strides", None)
        if strides is not None and any(s != 1 for s in np.atleast_1d(strides)):
            raise ValueError(f"ConvLSTMCell(strides={strides}): gatedrnn's ConvLSTM keeps the frame size (stride 1)")
        padding = getattr(cell, "padding", "SAME")
        kernel = tuple(getattr(cell, "kernel_size", ()))
        same = [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel]
        if not (padding == "SAME" or (not isinstance(padding, str) and [tuple(p) for p in padding] == same)):
            raise ValueError(f"ConvLSTMCell(padding={padding!r}): gatedrnn's ConvLSTM pads 'SAME'")
    return nonlinearity


def _unwrap(module, tree: dict) -> tuple[object, list, str, bool]:
    """``(cell module or None, each direction's cell params, wrapper, batch_first)`` where
    wrapper is ``""``, ``"rnn"`` or ``"bidirectional"``; checks what the wrappers set."""
    batch_first = not getattr(module, "time_major", False)
    if module is not None and type(module).__name__ == "Bidirectional":
        from flax.linen.recurrent import _concatenate

        merge = getattr(module, "merge_fn", _concatenate)
        if not _same_function(merge, _concatenate) and getattr(merge, "__name__", "") != "_concatenate":
            raise ValueError(f"Bidirectional(merge_fn={getattr(merge, '__name__', merge)}): gatedrnn's "
                             "bidirectional layer concatenates the two directions (Flax's default merge)")  # fmt: skip
        forward, backward = module.forward_rnn, module.backward_rnn  # it sets each one's reverse itself
        if type(forward.cell) is not type(backward.cell):
            raise ValueError("Bidirectional: its two directions hold different cells "
                             f"({type(forward.cell).__name__}, {type(backward.cell).__name__})")  # fmt: skip
        module = forward.cell
    elif module is not None and type(module).__name__ == "RNN":
        if getattr(module, "reverse", False):
            raise ValueError("RNN(reverse=True): gatedrnn's layers read forward, or both ways with "
                             "bidirectional=True (Flax's Bidirectional)")  # fmt: skip
        module = module.cell
    if "forward_rnn" in tree or "backward_rnn" in tree:
        if set(tree) != {"forward_rnn", "backward_rnn"}:
            raise ValueError(f"params: a Flax Bidirectional has forward_rnn and backward_rnn, got {sorted(tree)}")
        directions = []
        for name in ("forward_rnn", "backward_rnn"):
            part = tree[name]
            if not (isinstance(part, Mapping) and set(part) == {"cell"}):
                raise ValueError(f"params[{name!r}]: expected a Flax RNN's {{'cell': ...}}, got {sorted(part)}")
            directions.append(part["cell"])
        return module, directions, "bidirectional", batch_first
    if set(tree) == {"cell"}:
        return module, [tree["cell"]], "rnn", batch_first
    return module, [tree], "", batch_first


# -- Flax params -> torch's layout -----------------------------------------------------------------


def _dense_rows(tree, names, where, key="kernel"):
    """The kernels of the dense layers ``names`` as torch's stacked rows ``(G*H, in)``."""
    return torch.cat([_leaf(tree, n, key, where).T for n in names], dim=0)


def _lstm_weights(tree: dict, where: str, nnx_layout: bool) -> dict:
    if "dense_i" in tree:  # nnx's OptimizedLSTMCell: one kernel per side, gates i, f, g, o
        _expect_keys(tree, {"dense_i", "dense_h"}, where, "OptimizedLSTMCell (nnx)")
        w_ih = _leaf(tree, "dense_i", "kernel", where).T  # (4H, I)
        w_hh = _leaf(tree, "dense_h", "kernel", where).T  # (4H, H)
        b_hh = _leaf(tree, "dense_h", "bias", where)
    else:
        f_name = "if_" if "if_" in tree else "if"  # nnx names its input-forget layer if_ (if is a keyword)
        names_i = ["ii", f_name, "ig", "io"]
        _expect_keys(tree, {*names_i, "hi", "hf", "hg", "ho"}, where, "LSTMCell")
        w_ih = _dense_rows(tree, names_i, where)  # (4H, I)
        w_hh = _dense_rows(tree, ["hi", "hf", "hg", "ho"], where)  # (4H, H)
        b_hh = torch.cat([_leaf(tree, n, "bias", where) for n in ("hi", "hf", "hg", "ho")])
        if any(_has_bias(tree, n) for n in names_i):
            raise ValueError(f"params{where}: a Flax LSTMCell has no bias on its input layers (ii, if, ig, io)")
    return {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": torch.zeros_like(b_hh), "bias_hh": b_hh}


def _gru_weights(tree: dict, where: str) -> dict:
    if "dense_i" in tree:  # nnx: fused kernels r, z, n, and no b_hn
        _expect_keys(tree, {"dense_i", "dense_h"}, where, "GRUCell (nnx)")
        w_ih = _leaf(tree, "dense_i", "kernel", where).T  # (3H, I)
        b_ih = _leaf(tree, "dense_i", "bias", where)
        w_hh = _leaf(tree, "dense_h", "kernel", where).T  # (3H, H)
        if _has_bias(tree, "dense_h"):
            raise ValueError(f"params{where}['dense_h']: nnx's GRUCell has no recurrent bias")
        return {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih, "bias_hh": torch.zeros_like(b_ih)}
    _expect_keys(tree, {"ir", "iz", "in", "hr", "hz", "hn"}, where, "GRUCell")
    w_ih = _dense_rows(tree, ["ir", "iz", "in"], where)  # (3H, I)
    w_hh = _dense_rows(tree, ["hr", "hz", "hn"], where)  # (3H, H)
    b_ih = torch.cat([_leaf(tree, n, "bias", where) for n in ("ir", "iz", "in")])
    b_hn = _leaf(tree, "hn", "bias", where)
    if _has_bias(tree, "hr") or _has_bias(tree, "hz"):
        raise ValueError(f"params{where}: a Flax GRUCell has no bias on hr and hz")
    b_hh = torch.cat([torch.zeros_like(b_hn), torch.zeros_like(b_hn), b_hn])  # [0; 0; b_hn]
    return {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih, "bias_hh": b_hh}


def _mgu_as_gru_weights(tree: dict, where: str) -> dict:
    _expect_keys(tree, {"if", "in", "hf", "hn"}, where, "MGUCell")
    if not _has_bias(tree, "hn"):
        raise ValueError(f"params{where}['hn'] has no bias: an MGUCell(reset_gate=False), which neither "
                         "gatedrnn's MGU nor its GRU computes")  # fmt: skip
    w_f, w_n = (_leaf(tree, n, "kernel", where).T for n in ("if", "in"))  # (H, I) each
    u_f, u_n = (_leaf(tree, n, "kernel", where).T for n in ("hf", "hn"))  # (H, H) each
    b_f, b_n, b_hn = _leaf(tree, "if", "bias", where), _leaf(tree, "in", "bias", where), _leaf(tree, "hn", "bias", where)
    zero = torch.zeros_like(b_hn)
    return {"weight_ih": torch.cat([w_f, w_f, w_n]), "weight_hh": torch.cat([u_f, u_f, u_n]),  # r = z = f
            "bias_ih": torch.cat([b_f, b_f, b_n]), "bias_hh": torch.cat([zero, zero, b_hn])}  # fmt: skip


def _simple_weights(tree: dict, where: str) -> dict:
    i, h = ("dense_i", "dense_h") if "dense_i" in tree else ("i", "h")
    _expect_keys(tree, {i, h}, where, "SimpleCell")
    if _has_bias(tree, h):
        raise ValueError(f"params{where}[{h!r}]: a Flax SimpleCell has no recurrent bias")
    b_ih = _leaf(tree, i, "bias", where)
    return {"weight_ih": _leaf(tree, i, "kernel", where).T, "weight_hh": _leaf(tree, h, "kernel", where).T,
            "bias_ih": b_ih, "bias_hh": torch.zeros_like(b_ih)}  # fmt: skip


def _conv_reorder(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Flax ConvLSTM's gate blocks i, g, f, o as torch's i, f, g, o (or back: the swap is its own inverse)."""
    i, g, f, o = t.chunk(4, dim=dim)
    return torch.cat([i, f, g, o], dim=dim)


def _conv_lstm_weights(tree: dict, where: str) -> dict:
    _expect_keys(tree, {"ih", "hh"}, where, "ConvLSTMCell")
    k_ih, k_hh = _leaf(tree, "ih", "kernel", where), _leaf(tree, "hh", "kernel", where)
    if k_ih.dim() != 4:
        raise ValueError(f"params{where}['ih']['kernel'] has shape {tuple(k_ih.shape)}: a {k_ih.dim() - 2}-D "
                         "ConvLSTMCell; gatedrnn's ConvLSTM is 2-D (kernel (kh, kw, C_in, 4C))")  # fmt: skip
    kh, kw = k_ih.shape[:2]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"ConvLSTMCell kernel_size ({kh}, {kw}): gatedrnn's ConvLSTM takes odd kernel sizes "
                         "(a symmetric 'SAME' padding)")  # fmt: skip
    w_ih = _conv_reorder(k_ih.permute(3, 2, 0, 1), 0)  # (kh, kw, C_in, 4C) -> (4C, C_in, kh, kw), i f g o
    w_hh = _conv_reorder(k_hh.permute(3, 2, 0, 1), 0)  # (4C, C, kh, kw)
    C = w_hh.shape[1]
    zero = torch.zeros(4 * C, dtype=w_ih.dtype)
    b_ih = _conv_reorder(_leaf(tree, "ih", "bias", where), 0) if _has_bias(tree, "ih") else zero.clone()
    b_hh = _conv_reorder(_leaf(tree, "hh", "bias", where), 0) if _has_bias(tree, "hh") else zero.clone()
    b_ih[C : 2 * C] += 1.0  # Flax's f = sigmoid(f + 1), kept in gatedrnn's forget bias
    return {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih, "bias_hh": b_hh}


def _weights(name: str, tree: dict, where: str, as_gru: bool) -> dict:
    if name in ("LSTMCell", "OptimizedLSTMCell"):
        return _lstm_weights(tree, where, False)
    if name == "GRUCell":
        return _gru_weights(tree, where)
    if name == "SimpleCell":
        return _simple_weights(tree, where)
    if name == "ConvLSTMCell":
        return _conv_lstm_weights(tree, where)
    if not as_gru:  # MGUCell
        raise ValueError("MGUCell: Flax's MGU resets h after its recurrent product with the gate that keeps h, "
                         "n = tanh(W_in x + b_in + f*(W_hn h + b_hn)); gatedrnn's MGU (Zhou et al. 2016) before "
                         "it, W_hn (f*h), with the gate that writes n: no gatedrnn.MGUCell computes Flax's. "
                         "Pass as_gru=True (gatedrnn convert: --as-gru) for the gatedrnn.GRUCell that does (r and z one gate)")  # fmt: skip
    return _mgu_as_gru_weights(tree, where)


def _load(module: nn.Module, tensors: dict) -> nn.Module:
    with torch.no_grad():
        for name, value in tensors.items():
            getattr(module, name).copy_(value)
    return module


def from_flax(params, cell_type=None, *, as_gru: bool = False) -> nn.Module:
    """A gatedrnn cell or layer computing what a Flax cell (or ``RNN``/``Bidirectional`` of one) computes.

    Args:
        params: the cell's parameters: a linen params dict (``variables["params"]``, or
            ``variables`` itself), an nnx module, or its ``nnx.State``. A params tree of an
            ``RNN`` (``{"cell": ...}``) or a ``Bidirectional`` (``{"forward_rnn": ...,
            "backward_rnn": ...}``) gives a layer.
        cell_type: which Flax cell made ``params``: its class name (``"LSTMCell"``,
            ``"OptimizedLSTMCell"``, ``"GRUCell"``, ``"MGUCell"``, ``"SimpleCell"``,
            ``"ConvLSTMCell"``; or ``"lstm"``, ``"gru"``, ``"mgu"``, ``"simple"``,
            ``"conv_lstm"``), its class, or the linen module itself (then its options,
            activations, padding, the wrapper's merge, are checked too). ``None`` for an nnx
            module, which says what it is.
        as_gru (bool): convert an ``MGUCell`` into the :class:`~gatedrnn.GRUCell` that computes
            it (gatedrnn's own MGU is another function). Keyword only. Default: ``False``.

    Returns:
        :class:`~gatedrnn.LSTMCell`, :class:`~gatedrnn.GRUCell`, :class:`~gatedrnn.RNNCell` or
        :class:`~gatedrnn.ConvLSTMCell` for a cell; for an ``RNN`` or ``Bidirectional``,
        :class:`~gatedrnn.LSTM`, :class:`~gatedrnn.GRU`, :class:`~gatedrnn.RNN` or
        :class:`~gatedrnn.ConvLSTM` with ``num_layers=1`` and ``batch_first=True`` (Flax's
        layout; a ConvLSTM takes ``(B, T, C, H, W)`` where Flax takes ``(B, T, H, W, C)``), in
        the parameters' dtype, on the CPU, in training mode.

    Raises:
        ValueError: a cell or an option gatedrnn does not compute (see the module's list),
            or parameters that are not the named cell's.
        TypeError: ``params`` that is no params tree, or no ``cell_type`` for a dict.

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as fnn
        >>> from gatedrnn.convert import from_flax
        >>> flax_cell = fnn.LSTMCell(features=8)
        >>> x = jnp.ones((2, 3))
        >>> variables = flax_cell.init(jax.random.key(0), flax_cell.initialize_carry(jax.random.key(1), x.shape), x)
        >>> cell = from_flax(variables["params"], "LSTMCell")
        >>> cell.weight_ih.shape, cell.weight_hh.shape
        (torch.Size([32, 3]), torch.Size([32, 8]))
    """
    module = None
    if _is_nnx(params):
        from flax import nnx

        if isinstance(params, nnx.Module):
            module = params
            params = nnx.state(params, nnx.Param)
        tree = nnx.to_pure_dict(params)
    else:
        tree = _plain(params)
    if cell_type is not None and not isinstance(cell_type, (str, type)):
        module = cell_type  # a linen module: its options are checked
    module, cells, wrapper, batch_first = _unwrap(module, tree)
    if cell_type is None or not isinstance(cell_type, (str, type)):
        if module is None:
            raise TypeError("cell_type is required for a params dict: the Flax cell's name, e.g. 'LSTMCell'")
        cell_type = module
    name = _cell_name(cell_type)
    nonlinearity = _check_cell_module(module, name) if module is not None else "tanh"
    where = {"": "", "rnn": "['cell']"}.get(wrapper)
    weights = []
    for k, cell in enumerate(cells):
        at = where if where is not None else f"[{('forward_rnn', 'backward_rnn')[k]!r}]['cell']"
        weights.append(_weights(name, cell, at, as_gru))
    w = weights[0]
    if len(weights) == 2 and any(w[n].shape != weights[1][n].shape for n in w):
        raise ValueError("Bidirectional: its two directions have different sizes")
    dtype = w["weight_ih"].dtype
    if name == "ConvLSTMCell":
        C, C_in, kh, kw = w["weight_ih"].shape[0] // 4, *w["weight_ih"].shape[1:]
        if wrapper == "bidirectional":
            raise ValueError("Bidirectional(RNN(ConvLSTMCell)): gatedrnn's ConvLSTM reads one direction")
        if not wrapper:
            return _load(ConvLSTMCell(C_in, C, (kh, kw), dtype=dtype), w)
        layer = ConvLSTM(C_in, C, (kh, kw), batch_first=batch_first, dtype=dtype)
        return _load(layer, {f"{k}_l0": v for k, v in w.items()})
    gates = {"SimpleCell": 1, "GRUCell": 3, "MGUCell": 3}.get(name, 4)
    H, I = w["weight_ih"].shape[0] // gates, w["weight_ih"].shape[1]
    if w["weight_hh"].shape != (gates * H, H):
        raise ValueError(f"params: the recurrent kernels are {tuple(w['weight_hh'].T.shape)}, expected "
                         f"({H}, {gates * H}) for {H} features")  # fmt: skip
    extra = {"nonlinearity": nonlinearity} if name == "SimpleCell" else {}
    if not wrapper:
        cls = {"SimpleCell": RNNCell, "GRUCell": GRUCell, "MGUCell": GRUCell}.get(name, LSTMCell)
        return _load(cls(I, H, dtype=dtype, **extra), w)
    cls = {"SimpleCell": RNN, "GRUCell": GRU, "MGUCell": GRU}.get(name, LSTM)
    layer = cls(I, H, batch_first=batch_first, bidirectional=wrapper == "bidirectional", dtype=dtype, **extra)
    tensors = {}
    for suffix, wd in zip(("_l0", "_l0_reverse"), weights):
        tensors |= {f"{k}{suffix}": v for k, v in wd.items()}
    return _load(layer, tensors)


# -- gatedrnn -> Flax --------------------------------------------------------------------------------


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
    A = _array
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
    b_ih = _conv_reorder(b_ih.clone(), 0)
    C = w_hh.shape[1]
    b_ih[2 * C : 3 * C] -= 1.0  # Flax's order i, g, f, o: f is the third block
    return {"ih": {"kernel": A(_conv_reorder(w_ih, 0).permute(2, 3, 1, 0)), "bias": A(b_ih)},
            "hh": {"kernel": A(_conv_reorder(w_hh, 0).permute(2, 3, 1, 0)), "bias": A(_conv_reorder(b_hh, 0))}}  # fmt: skip


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

    name = _cell_name(cell_type)
    _, cells, wrapper, _ = _unwrap(None, _plain(params))
    tree = cells[0]
    if name == "ConvLSTMCell":
        kernel = np.asarray(_leaf(tree, "hh", "kernel", ""))  # (kh, kw, C, 4C)
        make = lambda: fnn.ConvLSTMCell(features=kernel.shape[-2], kernel_size=tuple(kernel.shape[:-2]))
    else:
        recurrent = next((k for k in ("hi", "hr", "hf", "h", "dense_h") if k in tree), None)
        if recurrent is None:
            raise ValueError(f"params: no recurrent kernel of a Flax {name} (has {sorted(tree)})")
        H = _leaf(tree, recurrent, "kernel", "").shape[0]
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
    _, cells, _, _ = _unwrap(None, _plain(params))
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

    name = _cell_name(cell_type)
    tree = _plain(params)
    _, cells, wrapper, _ = _unwrap(None, tree)
    cell = cells[0]
    first = "dense_i" if "dense_i" in cell else "ii"
    recurrent = "dense_h" if "dense_h" in cell else "hi"
    I = _leaf(cell, first, "kernel", "").shape[0]
    H = _leaf(cell, recurrent, "kernel", "").shape[0]
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
