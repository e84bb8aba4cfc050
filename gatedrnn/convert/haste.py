r"""haste's LSTM, GRU, LayerNormLSTM and LayerNormGRU in and out of gatedrnn, weights copied exactly.

haste (LMNT's ``haste_pytorch``, Nov 2020, github.com/lmnt-com/haste) builds only against CUDA;
gatedrnn reads and writes its state dicts without it, from haste's documented layout:

================================  ==========================  ==========================================
haste                             shape                       gatedrnn
================================  ==========================  ==========================================
``kernel``                        ``(I, G*H)``                ``weight_ih_l0 (G*H, I)``, transposed
``recurrent_kernel``              ``(H, G*H)``                ``weight_hh_l0 (G*H, H)``, transposed
``bias`` (LSTM: the only bias)    ``(G*H,)``                  ``bias_ih_l0``; an LSTM's ``bias_hh_l0 = 0``
``recurrent_bias`` (GRU)          ``(3H,)``                   ``bias_hh_l0``
``gamma`` (LayerNorm*)            ``(2, G*H)``                ``layer_norm_ih_l0 = gamma[0]``,
                                                              ``layer_norm_hh_l0 = gamma[1]``
``gamma_h``, ``beta_h``           ``(H,)``                    ``layer_norm_c_weight_l0``,
(LayerNormLSTM)                                               ``layer_norm_c_bias_l0``
================================  ==========================  ==========================================

Gate blocks: haste's LSTM is **i, g, f, o** (torch's and gatedrnn's i, f, g, o), its GRU
**z, r, h** (gatedrnn's r, z, n); every gate-blocked tensor is reordered. haste's equations
(its documentation and reference loop), with ``x W`` its row-vector products:

.. math::

    \begin{aligned}
    \text{LSTM:}\quad & [i; g; f; o] = x_t K + h_{t-1} R + b, \quad
        c_t = \sigma(f) c_{t-1} + \sigma(i) \tanh(g), \quad h_t = \sigma(o) \tanh(c_t) \\
    \text{GRU:}\quad & [z; r; \tilde h]_x = x_t K + b, \quad [z; r; \tilde h]_h = h_{t-1} R + b_R, \\
        & z = \sigma(z_x + z_h), \; r = \sigma(r_x + r_h), \; n = \tanh(\tilde h_x + r \odot \tilde h_h), \;
        h_t = z h_{t-1} + (1 - z) n
    \end{aligned}

LayerNormLSTM normalizes ``x K`` and ``h R`` (gains ``gamma[0]``, ``gamma[1]``, no bias, over
all ``4H`` values) before adding ``b``, and ``h_t = \sigma(o) \tanh(LN(c_t) \gamma_h + \beta_h)``;
LayerNormGRU normalizes ``x K`` and ``h R`` before their biases. These are gatedrnn's
``layer_norm=True`` steps (:mod:`gatedrnn.cells.layernorm`), epsilon ``1e-5`` as haste's kernels.

Settings: haste's ``zoneout=p`` zones out ``h`` only (the LSTM's ``c`` never): gatedrnn's
``zoneout=(0.0, p)`` for an LSTM (``(p_c, p_h)``), ``zoneout=p`` for a GRU; its ``dropout``
is DropConnect on ``recurrent_kernel``, gatedrnn's ``weight_dropout``; ``batch_first`` is
carried; ``forget_bias`` only initializes (the trained bias holds it) and is ignored.

Refused: haste's ``IndRNN``/``LayerNormIndRNN`` (gatedrnn has no IndRNN),
``return_state_sequence=True``; converting to haste: several layers, bidirectional,
``proj_size``, peepholes, coupled gates, ``reset_after=False``, an LSTM's zoneout on ``c``,
recurrent (variational) dropout, an RNN or MGU. Two differences remain outside the weights:
haste leaves the outputs past a sequence's ``lengths`` unmasked where gatedrnn writes zeros,
and haste's zoneout mask keeps the new value where it is 1, gatedrnn's the old one (each
draws its own masks; the eval function, the expectation, is the same).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from gatedrnn.layers import GRU, LSTM

CELLS = {"lstm": "LSTM", "gru": "GRU", "layernormlstm": "LayerNormLSTM", "layernormgru": "LayerNormGRU",
         "lnlstm": "LayerNormLSTM", "lngru": "LayerNormGRU"}  # fmt: skip
KEYS = {  # each haste class's state dict
    "LSTM": {"kernel", "recurrent_kernel", "bias"},
    "GRU": {"kernel", "recurrent_kernel", "bias", "recurrent_bias"},
    "LayerNormLSTM": {"kernel", "recurrent_kernel", "bias", "gamma", "gamma_h", "beta_h"},
    "LayerNormGRU": {"kernel", "recurrent_kernel", "bias", "recurrent_bias", "gamma"},
}


def lstm_order(t: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """haste's LSTM gate blocks i, g, f, o as i, f, g, o (the swap is its own inverse).

    Args:
        t (Tensor): four gate blocks along ``dim``.
        dim (int): the gate axis. Default: ``-1``.

    Examples:
        >>> import torch
        >>> lstm_order(torch.tensor([0, 1, 2, 3])).tolist()  # i g f o -> i f g o
        [0, 2, 1, 3]
    """
    i, g, f, o = t.chunk(4, dim=dim)
    return torch.cat([i, f, g, o], dim=dim)


def gru_order(t: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """haste's GRU gate blocks z, r, h as r, z, n (the swap is its own inverse).

    Args:
        t (Tensor): three gate blocks along ``dim``.
        dim (int): the gate axis. Default: ``-1``.

    Examples:
        >>> import torch
        >>> gru_order(torch.tensor([0, 1, 2])).tolist()  # z r h -> r z n
        [1, 0, 2]
    """
    a, b, n = t.chunk(3, dim=dim)
    return torch.cat([b, a, n], dim=dim)


def _cell_name(cell_type: str) -> str:
    key = str(cell_type).lower().replace("_", "").replace("-", "")
    if key in ("indrnn", "layernormindrnn"):
        raise ValueError(f"cell_type {cell_type!r}: gatedrnn has no IndRNN (haste's IndRNN, LayerNormIndRNN)")
    if key not in CELLS:
        raise ValueError(f"cell_type must be one of haste's LSTM, GRU, LayerNormLSTM, LayerNormGRU, got {cell_type!r}")
    return CELLS[key]


def _strip_prefix(state_dict: Mapping, prefix: str | None) -> dict:
    """The haste layer's own entries of ``state_dict``: those under ``prefix`` (found when one
    layer's ``kernel`` is in the dict, e.g. ``encoder.rnn.kernel``)."""
    if prefix is None:
        found = sorted(k[: -len("kernel")] for k in state_dict if k.endswith("kernel") and not k.endswith("recurrent_kernel"))
        if len(found) != 1:
            raise ValueError(f"state_dict holds {'no' if not found else len(found)} haste layers "
                             f"({', '.join(repr(p + 'kernel') for p in found) or 'no key ending in kernel'}): "
                             "pass prefix= to name the one to convert")  # fmt: skip
        prefix = found[0]
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _guess(entries: Mapping) -> str:
    ln, gru = "gamma" in entries, "recurrent_bias" in entries
    return ("LayerNorm" if ln else "") + ("GRU" if gru else "LSTM")


def from_haste(state_dict, cell_type: str | None = None, *, batch_first: bool = False, zoneout: float = 0.0,
               dropout: float = 0.0, forget_bias: float | None = None, return_state_sequence: bool = False,
               prefix: str | None = None) -> nn.Module:  # fmt: skip
    """A gatedrnn layer computing what a haste layer with this state dict computes.

    Args:
        state_dict: the haste layer's ``state_dict()`` (``kernel``, ``recurrent_kernel``,
            ``bias``, ...), a model's state dict holding one haste layer (or several, with
            ``prefix``), or a haste module itself (its settings are then read from it).
        cell_type (str, optional): ``"LSTM"``, ``"GRU"``, ``"LayerNormLSTM"`` or
            ``"LayerNormGRU"`` (any case, ``_`` ignored: ``"layer_norm_lstm"``); checked
            against the state dict's keys. Default: ``None``, read from the keys.
        batch_first (bool): haste's ``batch_first``, kept. Keyword only. Default: ``False``.
        zoneout (float): haste's ``zoneout`` (on ``h`` only): gatedrnn's ``zoneout``, ``(0.0, p)``
            for an LSTM. Keyword only. Default: ``0.0``.
        dropout (float): haste's ``dropout``, DropConnect on the recurrent kernel: gatedrnn's
            ``weight_dropout``. Keyword only. Default: ``0.0``.
        forget_bias (float, optional): haste's ``forget_bias``, an initialization only (the
            trained ``bias`` holds it): ignored. Keyword only. Default: ``None``.
        return_state_sequence (bool): haste's option; ``True`` is refused. Keyword only.
            Default: ``False``.
        prefix (str, optional): the keys' prefix of the layer to convert (``"encoder.rnn."``).
            Default: found when the state dict holds one haste layer.

    Returns:
        :class:`~gatedrnn.LSTM` or :class:`~gatedrnn.GRU`, one layer, one direction,
        ``layer_norm=True`` for haste's LayerNorm classes, in the state dict's dtype, on the
        CPU, in training mode.

    Raises:
        ValueError: an IndRNN, ``return_state_sequence=True``, keys or shapes that are not
            the named class's.

    Examples:
        >>> import torch
        >>> from gatedrnn.convert import from_haste
        >>> H, I = 8, 3
        >>> haste_state = {"kernel": torch.randn(I, 4 * H), "recurrent_kernel": torch.randn(H, 4 * H),
        ...                "bias": torch.zeros(4 * H)}
        >>> lstm = from_haste(haste_state, "LSTM", zoneout=0.1)
        >>> lstm.weight_ih_l0.shape, lstm.zoneout_given()
        (torch.Size([32, 3]), (0.0, 0.1))
    """
    if isinstance(state_dict, nn.Module):  # a haste layer itself
        haste = state_dict
        cell_type = type(haste).__name__ if cell_type is None else cell_type
        batch_first = bool(getattr(haste, "batch_first", batch_first))
        zoneout = float(getattr(haste, "zoneout", zoneout))
        dropout = float(getattr(haste, "dropout", dropout))
        return_state_sequence = bool(getattr(haste, "return_state_sequence", return_state_sequence))
        state_dict, prefix = haste.state_dict(), ""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a haste layer's state dict (a mapping), got {type(state_dict).__name__}")
    if return_state_sequence:
        raise ValueError("return_state_sequence=True: gatedrnn's layers return the final state; the sequence of h "
                         "is their output (and of c, their trace: return_trace=True)")  # fmt: skip
    entries = _strip_prefix(state_dict, prefix)
    name = _guess(entries) if cell_type is None else _cell_name(cell_type)
    if set(entries) != KEYS[name]:
        raise ValueError(f"state_dict: haste's {name} has {sorted(KEYS[name])}, got {sorted(entries)}"
                         + ("" if cell_type is None else f" (is it a {_guess(entries)}?)"))  # fmt: skip
    t = {k: torch.as_tensor(v).detach() for k, v in entries.items()}
    G = 3 if name.endswith("GRU") else 4
    kernel = t["kernel"]
    if kernel.dim() != 2 or kernel.shape[1] % G:
        raise ValueError(f"state_dict['kernel'] has shape {tuple(kernel.shape)}: expected (I, {G}H) for haste's {name}")
    I, H = kernel.shape[0], kernel.shape[1] // G
    expected = {"recurrent_kernel": (H, G * H), "bias": (G * H,), "recurrent_bias": (G * H,), "gamma": (2, G * H),
                "gamma_h": (H,), "beta_h": (H,)}  # fmt: skip
    for key, tensor in t.items():
        if key in expected and tuple(tensor.shape) != expected[key]:
            raise ValueError(f"state_dict[{key!r}] has shape {tuple(tensor.shape)}, expected {expected[key]} "
                             f"(input_size {I}, hidden_size {H})")  # fmt: skip
    order = gru_order if G == 3 else lstm_order
    layer_norm = name.startswith("LayerNorm")
    dtype = kernel.dtype
    if G == 4:
        layer = LSTM(I, H, batch_first=batch_first, layer_norm=layer_norm, zoneout=(0.0, zoneout),
                     weight_dropout=dropout, dtype=dtype)  # fmt: skip
    else:
        layer = GRU(I, H, batch_first=batch_first, layer_norm=layer_norm, zoneout=zoneout, weight_dropout=dropout,
                    dtype=dtype)  # fmt: skip
    values = {
        "weight_ih_l0": order(kernel).T,  # (G*H, I)
        "weight_hh_l0": order(t["recurrent_kernel"]).T,  # (G*H, H)
        "bias_ih_l0": order(t["bias"]),
        "bias_hh_l0": order(t["recurrent_bias"]) if G == 3 else torch.zeros_like(t["bias"]),  # the LSTM's one bias
    }
    if layer_norm:
        values |= {"layer_norm_ih_l0": order(t["gamma"][0]), "layer_norm_hh_l0": order(t["gamma"][1])}
        if G == 4:
            values |= {"layer_norm_c_weight_l0": t["gamma_h"], "layer_norm_c_bias_l0": t["beta_h"]}
    with torch.no_grad():
        for key, value in values.items():
            getattr(layer, key).copy_(value)
    return layer


def to_haste(module: nn.Module, *, with_settings: bool = False):
    """The state dict of the haste layer that computes what a one-layer gatedrnn LSTM or GRU computes.

    Args:
        module: a :class:`~gatedrnn.LSTM` or :class:`~gatedrnn.GRU` (``layer_norm`` or not),
            one layer, one direction, no ``proj_size``, no peepholes or coupled gates, GRU
            with ``reset_after=True``; torch.nn's LSTM and GRU too.
        with_settings (bool): also return haste's class and constructor arguments. Keyword
            only. Default: ``False``.

    Returns:
        The state dict (tensors on the CPU, in the module's dtype) for haste's ``LSTM``,
        ``GRU``, ``LayerNormLSTM`` or ``LayerNormGRU``; with ``with_settings``, ``(state_dict,
        settings)``, ``settings`` a dict of ``class`` (haste's class name), ``input_size``,
        ``hidden_size``, ``batch_first``, ``zoneout`` and ``dropout`` (from
        ``weight_dropout``). An LSTM's two biases become haste's one, ``b_ih + b_hh``.

    Raises:
        TypeError: a module of another kind than LSTM and GRU.
        ValueError: an option haste's layers lack (see the module's list).
    """
    if type(module) in (nn.LSTM, nn.GRU):
        module = {nn.LSTM: LSTM, nn.GRU: GRU}[type(module)].from_torch(module)
    if not isinstance(module, (LSTM, GRU)):
        raise TypeError(f"module: haste has LSTM and GRU layers (and LayerNorm ones), got {type(module).__name__}")
    name = type(module).__name__
    for option, refused in (("num_layers", module.num_layers != 1), ("bidirectional", module.bidirectional),
                            ("proj_size", bool(getattr(module, "proj_size", 0))),
                            ("peephole", getattr(module, "peephole", False)),
                            ("coupled", getattr(module, "coupled", False)),
                            ("reset_after", getattr(module, "reset_after", True) is False),
                            ("recurrent_dropout", module.recurrent_dropout > 0)):  # fmt: skip
        if refused:
            raise ValueError(f"{name}({option}={getattr(module, option)}): haste's layers have no such option")
    G = 4 if isinstance(module, LSTM) else 3
    if G == 4:
        p_h, p_c = module.zoneout
        if p_c:
            raise ValueError(f"{name}(zoneout={module.zoneout_given()}): haste zones out h only; "
                             "(p_c, p_h) = (0.0, p) converts")  # fmt: skip
    else:
        (p_h,) = module.zoneout
    order = gru_order if G == 3 else lstm_order
    w_ih, w_hh = module.weight_ih_l0.detach().cpu(), module.weight_hh_l0.detach().cpu()
    zero = w_ih.new_zeros(w_ih.shape[0])
    b_ih = zero if module.bias_ih_l0 is None else module.bias_ih_l0.detach().cpu()
    b_hh = zero if module.bias_hh_l0 is None else module.bias_hh_l0.detach().cpu()
    state = {"kernel": order(w_ih.T).contiguous(), "recurrent_kernel": order(w_hh.T).contiguous()}  # (I, GH), (H, GH)
    if G == 4:
        state["bias"] = order(b_ih + b_hh)  # haste's one bias
    else:
        state |= {"bias": order(b_ih), "recurrent_bias": order(b_hh)}
    layer_norm = bool(getattr(module, "layer_norm", False))
    if layer_norm:
        gains = [order(getattr(module, f"layer_norm_{k}_l0").detach().cpu()) for k in ("ih", "hh")]
        state["gamma"] = torch.stack(gains)  # (2, G*H)
        if G == 4:
            state["gamma_h"] = module.layer_norm_c_weight_l0.detach().cpu().clone()
            state["beta_h"] = module.layer_norm_c_bias_l0.detach().cpu().clone()
    if not with_settings:
        return state
    settings = {"class": ("LayerNorm" if layer_norm else "") + name, "input_size": module.input_size,
                "hidden_size": module.hidden_size, "batch_first": module.batch_first, "zoneout": p_h,
                "dropout": module.weight_dropout}  # fmt: skip
    return state, settings


def _layer_norm(v: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    mean = v.mean(-1, keepdim=True)
    var = ((v - mean) ** 2).mean(-1, keepdim=True)  # biased, as haste's kernels
    out = (v - mean) / torch.sqrt(var + 1e-5) * gain
    return out if bias is None else out + bias


def haste_equations(state_dict: Mapping, cell_type: str | None, x: torch.Tensor, state=None, zoneout: float = 0.0):
    """haste's forward in eval mode, computed from its documented equations in float64, in haste's
    own layout (gate orders, row-vector kernels): the yardstick ``gatedrnn convert`` measures a
    converted layer against, haste itself needing CUDA.

    Args:
        state_dict: the haste layer's state dict (as :func:`from_haste` takes it, one layer).
        cell_type (str, optional): haste's class; ``None`` reads it from the keys.
        x (Tensor): ``(T, B, I)``, time first.
        state: ``h_0`` (GRU) or ``(h_0, c_0)`` (LSTM), each ``(B, H)``. Default: zeros.
        zoneout (float): haste's ``zoneout``, applied in eval as haste does: ``h_t = p h_{t-1}
            + (1 - p) h~_t``.

    Returns:
        ``(output, state)``: ``output (T, B, H)``, ``state`` the final ``h`` (GRU) or ``(h, c)``,
        all float64.
    """
    entries = _strip_prefix(state_dict, None if "kernel" not in state_dict else "")
    name = _guess(entries) if cell_type is None else _cell_name(cell_type)
    t = {k: torch.as_tensor(v).detach().to(torch.float64) for k, v in entries.items()}
    K, R, b = t["kernel"], t["recurrent_kernel"], t["bias"]
    x = x.to(torch.float64)
    H, (T, B) = R.shape[0], x.shape[:2]
    ln = name.startswith("LayerNorm")
    lstm = name.endswith("LSTM")
    if state is None:
        state = (x.new_zeros(B, H), x.new_zeros(B, H)) if lstm else x.new_zeros(B, H)
    h, c = (state[0].double(), state[1].double()) if lstm else (state.double(), None)
    outputs = []
    for step in range(T):
        xk, hr = x[step] @ K, h @ R  # (B, G*H) each, haste's gate order
        if ln:
            xk, hr = _layer_norm(xk, t["gamma"][0]), _layer_norm(hr, t["gamma"][1])
        if lstm:
            i, g, f, o = (xk + hr + b).chunk(4, dim=-1)  # i, g, f, o
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            c_out = _layer_norm(c, t["gamma_h"], t["beta_h"]) if ln else c
            new_h = torch.sigmoid(o) * torch.tanh(c_out)
        else:
            z_x, r_x, n_x = (xk + b).chunk(3, dim=-1)  # z, r, h
            z_h, r_h, n_h = (hr + t["recurrent_bias"]).chunk(3, dim=-1)
            z, r = torch.sigmoid(z_x + z_h), torch.sigmoid(r_x + r_h)
            n = torch.tanh(n_x + r * n_h)
            new_h = z * h + (1 - z) * n
        h = zoneout * h + (1 - zoneout) * new_h if zoneout else new_h
        outputs.append(h)
    return torch.stack(outputs), ((h, c) if lstm else h)
