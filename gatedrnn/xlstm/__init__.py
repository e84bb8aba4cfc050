"""xLSTM (Beck et al., NeurIPS 2024): the sLSTM and mLSTM layers, their blocks and the stack.

The cells' steps, the specification, live in :mod:`gatedrnn.cells.slstm` and
:mod:`gatedrnn.cells.mlstm`; this package runs them over time (:mod:`.slstm`, :mod:`.mlstm`)
and builds the paper's residual blocks and the ``xLSTM`` stack (:mod:`.blocks`). The names
below are imported on first use.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "sLSTM": "gatedrnn.xlstm.slstm", "sLSTMCell": "gatedrnn.cells.slstm",
    "mLSTM": "gatedrnn.xlstm.mlstm", "mLSTMCell": "gatedrnn.cells.mlstm",
    "sLSTMBlock": "gatedrnn.xlstm.blocks", "mLSTMBlock": "gatedrnn.xlstm.blocks", "xLSTM": "gatedrnn.xlstm.blocks",
}  # fmt: skip

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'gatedrnn.xlstm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
