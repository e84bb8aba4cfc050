"""gatedrnn: gated recurrent networks (LSTM, GRU and the vanilla RNN they fix), written
from their equations, drop-ins for torch.nn, with every gate inspectable.

The names below are imported on first use (PEP 562), so that ``import gatedrnn`` (and the
``gatedrnn`` command's ``--help``) does not start torch; ``from gatedrnn import LSTM`` and
``gatedrnn.LSTM`` work as with any package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.4.0"

_HOMES = {  # public name: the module it lives in
    "ArgumentTypeError": "gatedrnn._checks", "DTypeError": "gatedrnn._checks", "DeviceError": "gatedrnn._checks",
    "ShapeError": "gatedrnn._checks",
    "RNNCell": "gatedrnn.cells", "LSTMCell": "gatedrnn.cells", "GRUCell": "gatedrnn.cells",
    "MGUCell": "gatedrnn.cells.mgu", "ConvLSTMCell": "gatedrnn.cells.conv", "ConvGRUCell": "gatedrnn.cells.conv",
    "RNN": "gatedrnn.layers", "LSTM": "gatedrnn.layers", "GRU": "gatedrnn.layers", "MGU": "gatedrnn.layers",
    "RNNBase": "gatedrnn.rnnbase", "to_torch": "gatedrnn.layers",
    "ConvLSTM": "gatedrnn.conv", "ConvGRU": "gatedrnn.conv",
    "MinGRU": "gatedrnn.minimal", "MinGRUCell": "gatedrnn.minimal", "MinLSTM": "gatedrnn.minimal",
    "MinLSTMCell": "gatedrnn.minimal",
    "sLSTM": "gatedrnn.xlstm.slstm", "sLSTMCell": "gatedrnn.cells.slstm", "mLSTM": "gatedrnn.xlstm.mlstm",
    "mLSTMCell": "gatedrnn.cells.mlstm", "xLSTM": "gatedrnn.xlstm.blocks", "sLSTMBlock": "gatedrnn.xlstm.blocks",
    "mLSTMBlock": "gatedrnn.xlstm.blocks",
    "Trace": "gatedrnn.trace",
    "set_autotune": "gatedrnn.autotune", "autotune_enabled": "gatedrnn.autotune",
    "TrainedRun": "gatedrnn.trained", "load": "gatedrnn.trained",
    "Prediction": "gatedrnn.trained", "predict": "gatedrnn.trained",
}  # fmt: skip
_SUBMODULES = ("init", "convert")  # gatedrnn.init.chrono_, as torch.nn.init; gatedrnn.convert.from_keras

# What torch.load's weights_only unpickler must be allowed to build for a saved gatedrnn
# model: ``with torch.serialization.safe_globals([*gatedrnn.SAFE_GLOBALS, ...]): torch.load(path)``
_SAFE_GLOBALS = ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "ConvLSTM", "ConvGRU", "ConvLSTMCell",
                 "ConvGRUCell", "MinGRU", "MinLSTM", "MinGRUCell", "MinLSTMCell", "MGU", "MGUCell", "sLSTM", "sLSTMCell",
                 "mLSTM", "mLSTMCell", "xLSTM", "sLSTMBlock", "mLSTMBlock")  # fmt: skip

__all__ = [
    "ArgumentTypeError", "DTypeError", "DeviceError", "GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNBase",
    "RNNCell", "SAFE_GLOBALS", "ShapeError", "Trace", "TrainedRun", "load", "to_torch",
    "Prediction", "predict", "set_autotune", "autotune_enabled",
    "sLSTM", "sLSTMCell", "mLSTM", "mLSTMCell", "xLSTM", "sLSTMBlock", "mLSTMBlock",
    "MGU", "MGUCell", "ConvGRU", "ConvGRUCell", "ConvLSTM", "ConvLSTMCell", "MinGRU", "MinGRUCell", "MinLSTM", "MinLSTMCell",
]  # fmt: skip


def __getattr__(name: str):
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"gatedrnn.{name}")
    elif name == "SAFE_GLOBALS":
        value = [__getattr__(n) for n in _SAFE_GLOBALS]
    else:
        raise AttributeError(f"module 'gatedrnn' has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__():
    return sorted({*globals(), *__all__, *_SUBMODULES})


if TYPE_CHECKING:  # what static tools (type checkers, the API reference) read
    from gatedrnn import init  # noqa: F401
    from gatedrnn._checks import ArgumentTypeError, DeviceError, DTypeError, ShapeError  # noqa: F401
    from gatedrnn.cells import GRUCell, LSTMCell, RNNCell  # noqa: F401
    from gatedrnn.cells.conv import ConvGRUCell, ConvLSTMCell  # noqa: F401
    from gatedrnn.cells.mgu import MGUCell  # noqa: F401
    from gatedrnn.conv import ConvGRU, ConvLSTM  # noqa: F401
    from gatedrnn.layers import GRU, LSTM, MGU, RNN, to_torch  # noqa: F401
    from gatedrnn.rnnbase import RNNBase  # noqa: F401
    from gatedrnn.trained import Prediction, TrainedRun, load, predict  # noqa: F401
    from gatedrnn.minimal import MinGRU, MinGRUCell, MinLSTM, MinLSTMCell  # noqa: F401
    from gatedrnn.trace import Trace  # noqa: F401
    from gatedrnn.autotune import autotune_enabled, set_autotune  # noqa: F401
    from gatedrnn import convert  # noqa: F401
    from gatedrnn.cells.mlstm import mLSTMCell  # noqa: F401
    from gatedrnn.cells.slstm import sLSTMCell  # noqa: F401
    from gatedrnn.xlstm.blocks import mLSTMBlock, sLSTMBlock, xLSTM  # noqa: F401
    from gatedrnn.xlstm.mlstm import mLSTM  # noqa: F401
    from gatedrnn.xlstm.slstm import sLSTM  # noqa: F401
