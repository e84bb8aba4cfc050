"""One time step of each cell: the reference math."""

from gatedrnn.cells.gru import GRUCell, gru_step
from gatedrnn.cells.lstm import LSTMCell, lstm_step
from gatedrnn.cells.rnn import RNNCell, rnn_relu_step, rnn_tanh_step

__all__ = ["GRUCell", "LSTMCell", "RNNCell", "gru_step", "lstm_step", "rnn_relu_step", "rnn_tanh_step"]
