"""gatedrnn: gated recurrent networks (LSTM, GRU and the vanilla RNN they fix), written
from their equations, drop-ins for torch.nn, with every gate inspectable."""

from gatedrnn._checks import ArgumentTypeError, DeviceError, DTypeError, ShapeError
from gatedrnn.cells import GRUCell, LSTMCell, RNNCell
from gatedrnn.cells.conv import ConvGRUCell, ConvLSTMCell
from gatedrnn.conv import ConvGRU, ConvLSTM
from gatedrnn.cells.mgu import MGUCell
from gatedrnn.layers import GRU, LSTM, MGU, RNN, RNNBase, to_torch
from gatedrnn.load import TrainedRun, load
from gatedrnn.minimal import MinGRU, MinGRUCell, MinLSTM, MinLSTMCell
from gatedrnn.predict import Prediction, predict
from gatedrnn.trace import Trace
from gatedrnn import init  # noqa: F401  gatedrnn.init.chrono_, as torch.nn.init

__version__ = "0.1.0"

# What torch.load's weights_only unpickler must be allowed to build for a saved gatedrnn
# model: ``with torch.serialization.safe_globals([*gatedrnn.SAFE_GLOBALS, ...]): torch.load(path)``
SAFE_GLOBALS = [RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell, ConvLSTM, ConvGRU, ConvLSTMCell, ConvGRUCell,
                MinGRU, MinLSTM, MinGRUCell, MinLSTMCell, MGU, MGUCell]

__all__ = [
    "ArgumentTypeError", "DTypeError", "DeviceError", "GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNBase",
    "RNNCell", "SAFE_GLOBALS", "ShapeError", "Trace", "TrainedRun", "load", "to_torch",
    "Prediction", "predict",
    "MGU", "MGUCell", "ConvGRU", "ConvGRUCell", "ConvLSTM", "ConvLSTMCell", "MinGRU", "MinGRUCell", "MinLSTM", "MinLSTMCell",
]  # fmt: skip
