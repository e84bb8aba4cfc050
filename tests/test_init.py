"""gatedrnn.init.chrono_: the bias blocks it sets (and those it leaves), the time constants
they give, reproducibility, every kind of module it takes, and clear errors."""

import math

import pytest
import torch

import gatedrnn
from gatedrnn.diagnostics.gates import ewma_time_constants


def test_lstm_forget_and_input_biases_every_layer_and_direction():
    torch.manual_seed(0)
    lstm = gatedrnn.LSTM(3, 8, num_layers=2, bidirectional=True)
    before = {n: p.clone() for n, p in lstm.named_parameters()}
    assert gatedrnn.init.chrono_(lstm, 100) is lstm
    H = 8
    for layer in range(2):
        for suffix in ("", "_reverse"):
            b_ih, b_hh = getattr(lstm, f"bias_ih_l{layer}{suffix}"), getattr(lstm, f"bias_hh_l{layer}{suffix}")
            b_f = b_ih[H : 2 * H]
            assert (b_f >= 0).all() and (b_f <= math.log(99) + 1e-6).all()
            torch.testing.assert_close(b_ih[:H], -b_f)  # b_i = -b_f
            assert (b_hh[: 2 * H] == 0).all()
            torch.testing.assert_close(b_ih[2 * H :], before[f"bias_ih_l{layer}{suffix}"][2 * H :])  # g, o untouched
            torch.testing.assert_close(b_hh[2 * H :], before[f"bias_hh_l{layer}{suffix}"][2 * H :])
    for n, p in lstm.named_parameters():
        if n.startswith("weight"):
            assert torch.equal(p, before[n]), n


def test_gru_update_gates_get_time_constants_spread_up_to_t_max():
    """With the weights zeroed, each unit's update gate is sigma(b_z): its time constant
    1/(1 - z) = 1 + u lies in [2, t_max] and the units spread over that range."""
    torch.manual_seed(1)
    gru = gatedrnn.GRU(4, 512, backend="reference")
    gatedrnn.init.chrono_(gru, 200)
    with torch.no_grad():
        gru.weight_ih_l0.zero_()
        gru.weight_hh_l0.zero_()
    _, _, trace = gru(torch.randn(3, 1, 4), return_trace=True)
    tau = ewma_time_constants(trace.update[0])
    assert tau.min() >= 2 - 1e-3 and tau.max() <= 200 + 1e-2
    assert tau.min() < 20 and tau.max() > 180  # uniform over [2, 200]: both ends are reached
    assert (gru.bias_hh_l0[512:1024] == 0).all()


def test_reproducible_and_every_kind_of_module():
    def init(module):
        torch.manual_seed(5)
        return gatedrnn.init.chrono_(module, 50)

    a, b = init(torch.nn.LSTM(3, 6)), init(torch.nn.LSTM(3, 6))
    assert torch.equal(a.bias_ih_l0[:12], b.bias_ih_l0[:12])  # the chrono blocks (the rest: each LSTM's own init)
    cell = init(gatedrnn.LSTMCell(3, 6))
    assert (cell.bias_hh[:12] == 0).all() and (cell.bias_ih[6:12] > 0).any()
    conv = init(gatedrnn.ConvGRU(2, 5, 3, num_layers=2))
    assert (conv.bias_hh_l1[5:10] == 0).all() and (conv.bias_ih_l1[5:10] >= 0).all()
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), gatedrnn.GRUCell(3, 4), gatedrnn.ConvLSTM(1, 2, 3))
    init(model)
    assert (model[1].bias_hh[4:8] == 0).all() and (model[2].bias_hh_l0[:4] == 0).all()


@pytest.mark.parametrize("module,t_max,error,match", [
    (gatedrnn.LSTM(2, 3), 1, ValueError, "t_max must be a number of steps >= 2"),
    (gatedrnn.LSTM(2, 3), float("inf"), ValueError, "t_max"),
    (gatedrnn.RNN(2, 3), 10, TypeError, "holds none"),
    (gatedrnn.GRU(2, 3, bias=False), 10, ValueError, "bias=False"),
])  # fmt: skip
def test_errors(module, t_max, error, match):
    with pytest.raises(error, match=match):
        gatedrnn.init.chrono_(module, t_max)


def test_train_chrono_option_initializes_the_gates_and_is_refused_where_it_has_none(tmp_path, capsys):
    from gatedrnn.cli import main
    from gatedrnn.train import TrainConfig, build

    for cell in ("lstm", "gru"):
        chrono = build(TrainConfig(task="adding", cell=cell, length=20, hidden_size=8, chrono=50))[1]
        plain = build(TrainConfig(task="adding", cell=cell, length=20, hidden_size=8))[1]
        gatedrnn.init.chrono_(plain, 50)  # the same draws, after the same seeded initialization
        expected, actual = plain.state_dict(), chrono.state_dict()
        assert all(torch.equal(actual[k], expected[k]) for k in expected), cell
        fresh = build(TrainConfig(task="adding", cell=cell, length=20, hidden_size=8))[1].state_dict()
        assert any(not torch.equal(actual[k], fresh[k]) for k in fresh), cell  # chrono changed the biases
    common = ["train", "--task", "adding", "--length", "8", "--hidden-size", "4", "--steps", "2", "--no-report"]
    assert main([*common, "--cell", "rnn", "--chrono", "10", "--out", str(tmp_path / "r")]) == 2
    assert "--chrono initializes the gates of the LSTM and the GRU, got --cell rnn" in capsys.readouterr().err
    assert main([*common, "--cell", "gru", "--chrono", "1", "--out", str(tmp_path / "g")]) == 2
    assert "--chrono must be at least 2" in capsys.readouterr().err
