"""gatedrnn: gated recurrent networks (LSTM, GRU and the vanilla RNN they fix), written
from their equations, drop-ins for torch.nn, with every gate inspectable."""

from gatedrnn.cells import GRUCell, LSTMCell, RNNCell
from gatedrnn.cells.conv import ConvGRUCell, ConvLSTMCell
from gatedrnn.conv import ConvGRU, ConvLSTM
from gatedrnn.layers import GRU, LSTM, RNN, RNNBase
from gatedrnn.trace import Trace

__version__ = "0.1.0"

__all__ = [
    "GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNBase", "RNNCell", "Trace",
    "ConvGRU", "ConvGRUCell", "ConvLSTM", "ConvLSTMCell",
]  # fmt: skip
