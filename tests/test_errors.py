"""Bad input raises a clear error naming the argument, what was expected and what came."""

import pytest
import torch

import gatedrnn


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"input_size": 0}, ValueError, "input_size must be a positive int, got 0"),
        ({"hidden_size": -3}, ValueError, "hidden_size must be a positive int, got -3"),
        ({"num_layers": 0}, ValueError, "num_layers must be a positive int, got 0"),
        ({"hidden_size": 2.5}, TypeError, "hidden_size must be a positive int, got float 2.5"),
        ({"dropout": 1.5}, ValueError, r"dropout must be a float in \[0, 1\], got 1.5"),
        ({"dropout": -0.1}, ValueError, r"dropout must be a float in \[0, 1\], got -0.1"),
        ({"proj_size": 4}, ValueError, "proj_size must be smaller than hidden_size=4, got 4"),
        ({"proj_size": -1}, ValueError, "proj_size must be 0"),
        ({"backend": "cuda-magic"}, ValueError, "backend must be one of .*got 'cuda-magic'"),
        ({"bias": False, "forget_bias": 1.0}, ValueError, "forget_bias=1.0 needs bias=True"),
    ],
)
def test_constructor_errors(kwargs, error, message):
    config = {"input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises(error, match=message):
        gatedrnn.LSTM(**config)


def test_constructor_errors_per_cell():
    with pytest.raises(ValueError, match="proj_size is only supported by LSTM"):
        gatedrnn.RNNBase("GRU", 3, 4, proj_size=2)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'gelu'"):
        gatedrnn.RNN(3, 4, nonlinearity="gelu")
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):  # torch.nn's text
        gatedrnn.GRU(3, 4, dropout=0.5)


@pytest.fixture
def lstm():
    return gatedrnn.LSTM(3, 4, num_layers=2)


@pytest.mark.parametrize(
    "make_input,error,message",
    [
        (lambda: torch.randn(5, 2, 7), ValueError, "input must have 3 features .* got 7"),
        (lambda: torch.randn(5), ValueError, r"input must be 3-D \(T, B, I\) or 2-D \(T, I\) unbatched, got 1-D"),
        (lambda: torch.randn(5, 2, 3, 1), ValueError, "got 4-D with shape"),
        (lambda: torch.ones(5, 2, 3, dtype=torch.int64), TypeError, "input must be a floating-point tensor, got dtype torch.int64"),
        (lambda: torch.ones(5, 2, 3, dtype=torch.bool), TypeError, "got dtype torch.bool"),
        (lambda: torch.randn(5, 2, 3, dtype=torch.float64), TypeError, "input has dtype torch.float64 but the parameters are torch.float32"),
        (lambda: [[1.0, 2.0, 3.0]], TypeError, "input must be a torch.Tensor, got list"),
        (lambda: torch.randn(0, 2, 3), ValueError, "at least one time step, got T=0"),
    ],
)  # fmt: skip
def test_input_errors(lstm, make_input, error, message):
    with pytest.raises(error, match=message):
        lstm(make_input())


def test_hx_errors(lstm):
    x = torch.randn(5, 2, 3)
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\) for an LSTM, got Tensor"):
        lstm(x, torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match=r"hx\[0\] \(h_0\) must have shape \(2, 2, 4\) .* got \(1, 2, 4\)"):
        lstm(x, (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match=r"hx\[1\] \(c_0\) must have shape \(2, 2, 4\)"):
        lstm(x, (torch.zeros(2, 2, 4), torch.zeros(2, 3, 4)))
    with pytest.raises(ValueError, match=r"must have shape \(2, 4\)"):
        lstm(torch.randn(5, 3), (torch.zeros(2, 1, 4), torch.zeros(2, 1, 4)))
    gru = gatedrnn.GRU(3, 4)
    with pytest.raises(TypeError, match="hx must be a tensor h_0 for GRU, got a tuple"):
        gru(x, (torch.zeros(1, 2, 4),))
    with pytest.raises(ValueError, match=r"hx must have shape \(1, 2, 4\)"):
        gru(x, torch.zeros(1, 2, 5))
    with pytest.raises(TypeError, match="hx must be a floating-point tensor"):
        gru(x, torch.zeros(1, 2, 4, dtype=torch.long))


def test_lengths_errors(lstm):
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\), one length per sequence, got \(3,\)"):
        lstm(x, lengths=torch.tensor([5, 4, 3]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=5\], got values from 0 to 5"):
        lstm(x, lengths=torch.tensor([5, 0]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=5\], got values from 3 to 6"):
        lstm(x, lengths=torch.tensor([6, 3]))
    with pytest.raises(TypeError, match="lengths must be an integer tensor, got dtype torch.float32"):
        lstm(x, lengths=torch.tensor([5.0, 3.0]))
    with pytest.raises(TypeError, match="lengths must be a 1-D integer tensor, got list"):
        lstm(x, lengths=[5, 3])
    with pytest.raises(ValueError, match="lengths is on device meta; it must be on the CPU or the input's device cpu"):
        lstm(x, lengths=torch.tensor([5, 3], device="meta"))
    with pytest.raises(ValueError, match="lengths is only accepted with batched input"):
        lstm(torch.randn(5, 3), lengths=torch.tensor([5]))
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 3]))
    with pytest.raises(ValueError, match="lengths must be None when input is a PackedSequence"):
        lstm(packed, lengths=torch.tensor([5, 3]))
