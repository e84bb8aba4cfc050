"""Initializations for gated cells, in the style of :mod:`torch.nn.init` (in place, returning
what they were given).

Tallec & Ollivier, "Can Recurrent Neural Networks Warp Time?", ICLR 2018 (chrono
initialization).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Which bias block keeps the state (LSTM: forget, i f g o; GRU: update, r z n) and, for the
# LSTM, which one writes to it (input), by the module's kind.
_KEEP = {"LSTM": 1, "GRU": 1}
_WRITE = {"LSTM": 0}


def _kind(module: nn.Module) -> str | None:
    """"LSTM", "GRU" or None, for torch.nn's and gatedrnn's layers, cells and conv layers."""
    from gatedrnn.cells.conv import ConvCellBase
    from gatedrnn.conv import ConvRNNBase

    if isinstance(module, (nn.LSTM, nn.LSTMCell)):
        return "LSTM"
    if isinstance(module, (nn.GRU, nn.GRUCell)):
        return "GRU"
    if isinstance(module, nn.RNNBase) and module.mode in ("LSTM", "GRU"):  # gatedrnn's layers
        return module.mode
    if isinstance(module, (ConvRNNBase, ConvCellBase)):
        return module.mode
    return None


def chrono_(module: nn.Module, t_max: float) -> nn.Module:
    r"""Chrono initialization (Tallec & Ollivier 2018) of every LSTM and GRU in ``module``.

    A gate that keeps the state at rate :math:`k = \sigma(b)` gives it a time constant
    :math:`\tau = 1 / (1 - k) = 1 + e^{b}` steps. Chrono draws :math:`b = \log u`,
    :math:`u \sim U[1, t_{max} - 1]` per unit, so the initial time constants spread over
    :math:`[2, t_{max}]`, the range of dependencies the data is expected to hold:

    - LSTM (and ConvLSTM): forget-gate bias :math:`b_f = \log u`, input-gate bias
      :math:`b_i = -b_f` (eq. 16 of the paper); a coupled LSTM (CIFG), whose input gate is
      :math:`1 - f`, gets :math:`b_f` alone;
    - GRU (and ConvGRU): update-gate bias :math:`b_z = \log u` (with
      :math:`h_t = (1 - z_t) n_t + z_t h_{t-1}`, :math:`z` is the gate that keeps).

    The value goes into ``bias_ih`` and that block of ``bias_hh`` is zeroed, for every layer
    and direction. Weights are left as they are. Draws from torch's global generator, so
    ``torch.manual_seed`` makes it reproducible. ``module`` may be a layer, a cell or any
    model holding them (torch.nn's or gatedrnn's); returns ``module``.

    Args:
        module (torch.nn.Module): a layer, a cell, or a model holding some; every LSTM and
            GRU in it (torch.nn's or gatedrnn's, conv layers and cells included) is set.
        t_max (float): the longest dependency expected, in steps, at least ``2``.

    Returns:
        ``module``, changed in place.

    Raises:
        ValueError: ``t_max`` below 2 or not a finite number; a layer built with
            ``bias=False``.
        TypeError: ``module`` holds no LSTM or GRU.

    Examples:
        >>> import math, torch, gatedrnn
        >>> _ = torch.manual_seed(0)
        >>> lstm = gatedrnn.init.chrono_(gatedrnn.LSTM(3, 16), t_max=100)
        >>> b_f = lstm.bias_ih_l0[16:32]  # the forget gate's block (i, f, g, o)
        >>> tau = 1 + b_f.exp()  # each unit's initial time constant, in steps
        >>> bool((tau >= 2).all() and (tau <= 100).all())
        True
    """
    if isinstance(t_max, bool) or not isinstance(t_max, (int, float)) or not math.isfinite(t_max) or t_max < 2:
        raise ValueError(f"t_max must be a number of steps >= 2 (the longest dependency expected), got {t_max!r}")
    found = [m for m in module.modules() if _kind(m) is not None]
    if not found:
        raise TypeError(f"chrono_ initializes LSTM and GRU layers and cells; {type(module).__name__} holds none")
    with torch.no_grad():
        for m in found:
            kind = _kind(m)
            size = getattr(m, "hidden_size", None) or m.hidden_channels
            names = sorted(n for n, _ in m.named_parameters(recurse=False) if n.startswith("bias_ih"))
            if not names:
                raise ValueError(f"chrono_ sets gate biases: {type(m).__name__} was built with bias=False")
            for name in names:
                b_ih, b_hh = getattr(m, name), getattr(m, name.replace("bias_ih", "bias_hh"))
                coupled = getattr(m, "coupled", False)  # a CIFG's blocks are f g o, its input gate 1 - f
                keep = 0 if coupled else _KEEP[kind]
                keep = slice(keep * size, (keep + 1) * size)
                u = torch.empty(size, dtype=b_ih.dtype, device=b_ih.device).uniform_(1.0, max(1.0, t_max - 1))
                b_ih[keep] = u.log()
                b_hh[keep] = 0.0
                if kind in _WRITE and not coupled:
                    write = slice(_WRITE[kind] * size, (_WRITE[kind] + 1) * size)
                    b_ih[write] = -u.log()
                    b_hh[write] = 0.0
    return module
