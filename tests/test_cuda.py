"""On a CUDA device (skipped without one; CI has none): every layer and variant gives the CPU's
results (outputs, final states, traces, every gradient), auto's cuDNN path equals torch.nn's,
the minimal cells' scan (the GPU path) equals their loop, the conv layers and the trainer run
there. float64 throughout, so the comparisons are tight and TF32 plays no part."""

import pytest
import torch

import gatedrnn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

LAYERS = {
    "rnn": (gatedrnn.RNN, {}),
    "lstm": (gatedrnn.LSTM, {}),
    "lstm-proj": (gatedrnn.LSTM, {"proj_size": 3}),
    "gru": (gatedrnn.GRU, {}),
    "peephole": (gatedrnn.LSTM, {"peephole": True}),
    "coupled": (gatedrnn.LSTM, {"coupled": True}),
    "ln-lstm": (gatedrnn.LSTM, {"layer_norm": True}),
    "cho-gru": (gatedrnn.GRU, {"reset_after": False}),
    "ln-gru": (gatedrnn.GRU, {"layer_norm": True}),
    "mgu": (gatedrnn.MGU, {}),
    "zoneout": (gatedrnn.LSTM, {"zoneout": (0.1, 0.2)}),
    "recurrent-dropout": (gatedrnn.GRU, {"recurrent_dropout": 0.3}),
    "mingru": (gatedrnn.MinGRU, {}),
    "minlstm": (gatedrnn.MinLSTM, {}),
}


def _forward_backward(layer, x, lengths, seed):
    torch.manual_seed(seed)
    x = x.clone().requires_grad_()
    out, _, trace = layer(x, lengths=lengths, return_trace=True)
    loss = out.square().sum() + sum(v.sin().sum() for v in trace.values())
    grads = torch.autograd.grad(loss, [x, *layer.parameters()])
    return [out, *trace.values(), *grads]


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("training", [False, True])
def test_every_layer_on_cuda_equals_the_cpu(name, backend, training):
    cls, config = LAYERS[name]
    torch.manual_seed(0)
    cpu = cls(4, 5, num_layers=2, bidirectional=True, backend=backend, **config).double().train(training)
    gpu = cls(4, 5, num_layers=2, bidirectional=True, backend=backend, **config).double().train(training).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x, lengths = torch.randn(7, 3, 4, dtype=torch.float64), torch.tensor([7, 4, 6])
    if training and any(k in config for k in ("zoneout", "recurrent_dropout")):
        pytest.skip("masks are drawn from each device's own generator: the two sides differ by design")
    expected = _forward_backward(cpu, x, lengths, seed=1)
    actual = _forward_backward(gpu, x.cuda(), lengths, seed=1)
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert a.device.type == "cuda"
        torch.testing.assert_close(a.cpu(), e, atol=1e-10, rtol=1e-10, msg=f"{name} value {k}")


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_auto_on_cuda_is_torch_nn(name):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, name)(4, 6, num_layers=2, bidirectional=True).double().cuda()
    ours = getattr(gatedrnn, name).from_torch(theirs)
    x = torch.randn(9, 5, 4, dtype=torch.float64, device="cuda")
    for a, b in zip(ours(x), theirs(x)):
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            torch.testing.assert_close(u, v, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["MinGRU", "MinLSTM"])
def test_minimal_cells_scan_on_cuda_equals_the_loop(name):
    torch.manual_seed(3)
    loop = getattr(gatedrnn, name)(4, 8, backend="reference").double().cuda()
    scan = getattr(gatedrnn, name)(4, 8).double().cuda()  # auto: the scan on a GPU
    scan.load_state_dict(loop.state_dict())
    x = torch.randn(2000, 4, 4, dtype=torch.float64, device="cuda")
    torch.testing.assert_close(scan(x)[0], loop(x)[0], atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("cls", [gatedrnn.ConvLSTM, gatedrnn.ConvGRU])
def test_conv_layers_on_cuda_equal_the_cpu(cls):
    torch.manual_seed(4)
    cpu = cls(2, 3, kernel_size=3).double()
    gpu = cls(2, 3, kernel_size=3).double().cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(5, 2, 2, 8, 8, dtype=torch.float64)
    expected = _conv_forward_backward(cpu, x)
    actual = _conv_forward_backward(gpu, x.cuda())
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a.cpu(), e, atol=1e-10, rtol=1e-10)


def _conv_forward_backward(layer, x):
    x = x.clone().requires_grad_()
    out = layer(x)[0]
    return [out, *torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])]


def test_train_command_on_cuda(tmp_path):
    from gatedrnn.cli import main

    for cell in ("lstm", "gru", "mingru"):
        run = tmp_path / cell
        args = ["train", "--task", "adding", "--cell", cell, "--length", "20", "--hidden-size", "16", "--steps", "20",
                "--eval-every", "10", "--batch-size", "8", "--device", "cuda", "--no-report", "--out", str(run)]  # fmt: skip
        assert main(args) == 0, cell
        assert main(["evaluate", str(run)]) == 0, cell  # a CUDA-trained checkpoint, read on the CPU
