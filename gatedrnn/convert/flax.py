r"""Flax's recurrent cells in and out of gatedrnn, linen and nnx, weights copied exactly:
:func:`from_flax` here, :func:`~gatedrnn.convert.flax_export.to_flax` back
(:mod:`gatedrnn.convert.flax_export`).

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

import numpy as np
import torch
from torch import nn

from gatedrnn.cells import GRUCell, LSTMCell, RNNCell
from gatedrnn.cells.conv import ConvLSTMCell
from gatedrnn.conv import ConvLSTM
from gatedrnn.convert.flax_common import (cell_name, conv_reorder, expect_keys, has_bias, is_nnx, leaf, plain,
                                          same_function, unwrap)  # fmt: skip
from gatedrnn.layers import GRU, LSTM, RNN


def _check_cell_module(cell, name: str) -> str:
    """Refuses what a Flax cell module sets that its parameters do not show; returns the
    nonlinearity (``"tanh"``, or ``"relu"`` for a SimpleCell)."""
    import jax
    import jax.numpy as jnp

    sigmoid, tanh = (jax.nn.sigmoid,), (jnp.tanh,)  # Flax's defaults (flax.linen.sigmoid, .tanh are these)
    gate_fn = getattr(cell, "gate_fn", None)
    if gate_fn is not None and not same_function(gate_fn, *sigmoid):
        raise ValueError(f"{name}(gate_fn={getattr(gate_fn, '__name__', gate_fn)}): gatedrnn's gates are sigmoids")
    activation = getattr(cell, "activation_fn", None)
    nonlinearity = "tanh"
    if activation is not None and not same_function(activation, *tanh):
        if name == "SimpleCell" and same_function(activation, jax.nn.relu):
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


# -- Flax params -> torch's layout -----------------------------------------------------------------


def _dense_rows(tree, names, where, key="kernel"):
    """The kernels of the dense layers ``names`` as torch's stacked rows ``(G*H, in)``."""
    return torch.cat([leaf(tree, n, key, where).T for n in names], dim=0)


def _lstm_weights(tree: dict, where: str, nnx_layout: bool) -> dict:
    if "dense_i" in tree:  # nnx's OptimizedLSTMCell: one kernel per side, gates i, f, g, o
        expect_keys(tree, {"dense_i", "dense_h"}, where, "OptimizedLSTMCell (nnx)")
        w_ih = leaf(tree, "dense_i", "kernel", where).T  # (4H, I)
        w_hh = leaf(tree, "dense_h", "kernel", where).T  # (4H, H)
        b_hh = leaf(tree, "dense_h", "bias", where)
    else:
        f_name = "if_" if "if_" in tree else "if"  # nnx names its input-forget layer if_ (if is a keyword)
        names_i = ["ii", f_name, "ig", "io"]
        expect_keys(tree, {*names_i, "hi", "hf", "hg", "ho"}, where, "LSTMCell")
        w_ih = _dense_rows(tree, names_i, where)  # (4H, I)
        w_hh = _dense_rows(tree, ["hi", "hf", "hg", "ho"], where)  # (4H, H)
        b_hh = torch.cat([leaf(tree, n, "bias", where) for n in ("hi", "hf", "hg", "ho")])
        if any(has_bias(tree, n) for n in names_i):
            raise ValueError(f"params{where}: a Flax LSTMCell has no bias on its input layers (ii, if, ig, io)")
    return {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": torch.zeros_like(b_hh), "bias_hh": b_hh}


def _gru_weights(tree: dict, where: str) -> dict:
    if "dense_i" in tree:  # nnx: fused kernels r, z, n, and no b_hn
        expect_keys(tree, {"dense_i", "dense_h"}, where, "GRUCell (nnx)")
        w_ih = leaf(tree, "dense_i", "kernel", where).T  # (3H, I)
        b_ih = leaf(tree, "dense_i", "bias", where)
        w_hh = leaf(tree, "dense_h", "kernel", where).T  # (3H, H)
        if has_bias(tree, "dense_h"):
            raise ValueError(f"params{where}['dense_h']: nnx's GRUCell has no recurrent bias")
        return {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih, "bias_hh": torch.zeros_like(b_ih)}
    expect_keys(tree, {"ir", "iz", "in", "hr", "hz", "hn"}, where, "GRUCell")
    w_ih = _dense_rows(tree, ["ir", "iz", "in"], where)  # (3H, I)
    w_hh = _dense_rows(tree, ["hr", "hz", "hn"], where)  # (3H, H)
    b_ih = torch.cat([leaf(tree, n, "bias", where) for n in ("ir", "iz", "in")])
    b_hn = leaf(tree, "hn", "bias", where)
    if has_bias(tree, "hr") or has_bias(tree, "hz"):
        raise ValueError(f"params{where}: a Flax GRUCell has no bias on hr and hz")
    b_hh = torch.cat([torch.zeros_like(b_hn), torch.zeros_like(b_hn), b_hn])  # [0; 0; b_hn]
    return {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih, "bias_hh": b_hh}


def _mgu_as_gru_weights(tree: dict, where: str) -> dict:
    expect_keys(tree, {"if", "in", "hf", "hn"}, where, "MGUCell")
    if not has_bias(tree, "hn"):
        raise ValueError(f"params{where}['hn'] has no bias: an MGUCell(reset_gate=False), which neither "
                         "gatedrnn's MGU nor its GRU computes")  # fmt: skip
    w_f, w_n = (leaf(tree, n, "kernel", where).T for n in ("if", "in"))  # (H, I) each
    u_f, u_n = (leaf(tree, n, "kernel", where).T for n in ("hf", "hn"))  # (H, H) each
    b_f, b_n, b_hn = leaf(tree, "if", "bias", where), leaf(tree, "in", "bias", where), leaf(tree, "hn", "bias", where)
    zero = torch.zeros_like(b_hn)
    return {"weight_ih": torch.cat([w_f, w_f, w_n]), "weight_hh": torch.cat([u_f, u_f, u_n]),  # r = z = f
            "bias_ih": torch.cat([b_f, b_f, b_n]), "bias_hh": torch.cat([zero, zero, b_hn])}  # fmt: skip


def _simple_weights(tree: dict, where: str) -> dict:
    i, h = ("dense_i", "dense_h") if "dense_i" in tree else ("i", "h")
    expect_keys(tree, {i, h}, where, "SimpleCell")
    if has_bias(tree, h):
        raise ValueError(f"params{where}[{h!r}]: a Flax SimpleCell has no recurrent bias")
    b_ih = leaf(tree, i, "bias", where)
    return {"weight_ih": leaf(tree, i, "kernel", where).T, "weight_hh": leaf(tree, h, "kernel", where).T,
            "bias_ih": b_ih, "bias_hh": torch.zeros_like(b_ih)}  # fmt: skip


def _conv_lstm_weights(tree: dict, where: str) -> dict:
    expect_keys(tree, {"ih", "hh"}, where, "ConvLSTMCell")
    k_ih, k_hh = leaf(tree, "ih", "kernel", where), leaf(tree, "hh", "kernel", where)
    if k_ih.dim() != 4:
        raise ValueError(f"params{where}['ih']['kernel'] has shape {tuple(k_ih.shape)}: a {k_ih.dim() - 2}-D "
                         "ConvLSTMCell; gatedrnn's ConvLSTM is 2-D (kernel (kh, kw, C_in, 4C))")  # fmt: skip
    kh, kw = k_ih.shape[:2]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"ConvLSTMCell kernel_size ({kh}, {kw}): gatedrnn's ConvLSTM takes odd kernel sizes "
                         "(a symmetric 'SAME' padding)")  # fmt: skip
    w_ih = conv_reorder(k_ih.permute(3, 2, 0, 1), 0)  # (kh, kw, C_in, 4C) -> (4C, C_in, kh, kw), i f g o
    w_hh = conv_reorder(k_hh.permute(3, 2, 0, 1), 0)  # (4C, C, kh, kw)
    C = w_hh.shape[1]
    zero = torch.zeros(4 * C, dtype=w_ih.dtype)
    b_ih = conv_reorder(leaf(tree, "ih", "bias", where), 0) if has_bias(tree, "ih") else zero.clone()
    b_hh = conv_reorder(leaf(tree, "hh", "bias", where), 0) if has_bias(tree, "hh") else zero.clone()
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
    if is_nnx(params):
        from flax import nnx

        if isinstance(params, nnx.Module):
            module = params
            params = nnx.state(params, nnx.Param)
        tree = nnx.to_pure_dict(params)
    else:
        tree = plain(params)
    if cell_type is not None and not isinstance(cell_type, (str, type)):
        module = cell_type  # a linen module: its options are checked
    module, cells, wrapper, batch_first = unwrap(module, tree)
    if cell_type is None or not isinstance(cell_type, (str, type)):
        if module is None:
            raise TypeError("cell_type is required for a params dict: the Flax cell's name, e.g. 'LSTMCell'")
        cell_type = module
    name = cell_name(cell_type)
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
