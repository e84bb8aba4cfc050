"""Each step's input projection computed inside the native loop (csrc/input.h): against the
reference loop over hypothesis-drawn cells and variants, with the projection forced into the
loop and forced before it, in inference (outputs, final states, traces) and in training (every
gradient); gradcheck and double backward of the ops when they project; the rule; layers with
only some parameters trainable; the Python loops' twin of the contract; torch.compile's fake
shapes."""

import pytest
import torch
import torch.nn.functional as F
from helpers import Case, assert_close
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_fused_variants import CELLS, _twins, variant_configurations

import gatedrnn
from gatedrnn import fused
from gatedrnn.fused import loops

pytestmark = pytest.mark.skipif(not fused.native_available(), reason="native kernels not built on this machine")


def _inference(layer, x, lengths, seed, trace):
    torch.manual_seed(seed)  # the same zoneout and dropout masks for both layers in training mode
    with torch.no_grad():
        result = layer(x, lengths=lengths, return_trace=trace) if lengths is not None else layer(x, return_trace=trace)
    return result


def _compare(result_o, result_r, dtype, what):
    out_o, out_r = result_o[0], result_r[0]
    assert_close(out_o, out_r, dtype, f"{what} output")
    finals_o = result_o[1] if isinstance(result_o[1], tuple) else (result_o[1],)
    finals_r = result_r[1] if isinstance(result_r[1], tuple) else (result_r[1],)
    for k, (a, b) in enumerate(zip(finals_o, finals_r)):
        assert_close(a, b, dtype, f"{what} final state {k}")
    if len(result_r) > 2:
        assert list(result_o[2]) == list(result_r[2])
        for name in result_r[2]:
            assert_close(result_o[2][name], result_r[2][name], dtype, f"{what} trace {name}")


def _forced(mode, split=False):
    """Runs with the input projection forced in the loop (1) or before it (-1); ``split``: each
    step's rows in two blocks on two threads, as large shapes run."""
    kernels = fused.kernels()

    class Forced:
        def __enter__(self):
            self.threads, self.work = torch.get_num_threads(), kernels.min_shared_work()
            kernels.use_input_projection_in_loop(mode)
            if split:
                torch.set_num_threads(2)
                kernels.set_min_shared_work(0)

        def __exit__(self, *exc):
            kernels.use_input_projection_in_loop(0)
            kernels.set_min_shared_work(self.work)
            torch.set_num_threads(self.threads)

    return Forced()


@settings(max_examples=60, deadline=None)
@given(
    variant_configurations(),
    st.sampled_from([torch.float32, torch.float64]),
    st.sampled_from([1, -1]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(1, 6),
    st.integers(1, 5),
    st.integers(0, 2**31 - 1),
)
def test_inference_equals_the_reference_loop_either_way(config, dtype, mode, split, trace, training, with_lengths, T,
                                                         B, seed):  # fmt: skip
    cell, cls, config = config
    ours, ref = _twins(cls, config, dtype, seed)
    ours.train(training)
    ref.train(training)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, config["input_size"], generator=g, dtype=dtype)
    if not config["batch_first"]:
        x = x.transpose(0, 1)  # a strided input: the loop reads it through a contiguous copy
    lengths = torch.randint(1, T + 1, (B,), generator=g) if with_lengths else None
    with _forced(mode, split):
        result_o = _inference(ours, x, lengths, seed, trace)
    result_r = _inference(ref, x, lengths, seed, trace)
    _compare(result_o, result_r, dtype, f"{cell} ({'in loop' if mode == 1 else 'before'})")


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru", "cho-gru", "mgu", "rnn-tanh", "peephole", "ln-gru"])
def test_chunks_of_steps_projected_at_once_equal_the_reference_loop(cell, split):
    """Chunks of 3 steps of 7 (3, 3, then a short one), both directions, lengths: each block
    projects a chunk's rows in one product, in (row, step) order (csrc/input.h)."""
    cls, config = CELLS[cell]
    config = config | {"input_size": 4, "hidden_size": 5, "num_layers": 2, "bidirectional": True}
    ours, ref = _twins(cls, config, torch.float64, seed=4)
    kernels = fused.kernels()
    for training in (False, True):
        case = Case(ours, "lengths", 7, 5, True, seed=4)
        kernels.set_input_chunk_steps(3)
        try:
            with _forced(1, split):
                if training:
                    out_o, finals_o, grads_o, _ = case.run(ours)
                else:
                    result_o = _inference(ours, case.x, case.lengths, 0, True)
        finally:
            kernels.set_input_chunk_steps(0)
        if training:
            out_r, finals_r, grads_r, _ = case.run(ref)
            assert_close(out_o, out_r, torch.float64, f"{cell} output")
            for a, b in zip(grads_o, grads_r):
                if a is not None or b is not None:
                    assert_close(a, b, torch.float64, f"{cell} gradient")
        else:
            _compare(result_o, _inference(ref, case.x, case.lengths, 0, True), torch.float64, cell)


def test_the_chunk_rule_gives_a_product_up_to_128_rows_and_8_steps():
    kernels = fused.kernels()
    assert [kernels.input_chunk_steps(rows, 100) for rows in (1, 16, 32, 64, 128, 256)] == [8, 8, 4, 2, 1, 1]
    assert kernels.input_chunk_steps(32, 3) == 3  # never more steps than the sequence has


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn-tanh", "ln-lstm"])
def test_half_precision_inference_is_computed_in_float32_either_way(cell):
    cls, config = CELLS[cell]
    ours, _ = _twins(cls, config | {"input_size": 6, "hidden_size": 8}, torch.bfloat16, seed=1)
    x = torch.randn(9, 4, 6, dtype=torch.bfloat16)
    outs = []
    for mode in (1, -1):
        with _forced(mode):
            out = _inference(ours, x, None, 0, False)[0]
        assert out.dtype == torch.bfloat16
        outs.append(out)
    torch.testing.assert_close(outs[0], outs[1])  # the same float32 sums, rounded once at the end


def test_the_rule_projects_in_the_loop_from_8_rows_a_block():
    kernels = fused.kernels()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert kernels.input_projection_in_loop(64, 256, 1024, 100)  # 32 rows a block
        assert kernels.input_projection_in_loop(16, 32, 256, 500)  # 8
        assert not kernels.input_projection_in_loop(8, 32, 256, 500)  # 4
        assert not kernels.input_projection_in_loop(1, 32, 512, 1000)
        assert not kernels.input_projection_in_loop(64, 256, 1024, 4)  # too few steps to pack W_ih for
        torch.set_num_threads(1)
        assert kernels.input_projection_in_loop(8, 32, 256, 500)  # one block of 8
        with _forced(1):
            assert kernels.input_projection_in_loop(1, 32, 512, 1)
        with _forced(-1):
            assert not kernels.input_projection_in_loop(64, 256, 1024, 100)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("cell", ["peephole", "ln-lstm", "ln-gru"])
def test_a_variant_with_only_its_own_parameters_trainable_gets_their_gradients(cell):
    """Fine-tuning only the peepholes or a layer norm's gains: the loop must keep its
    activations for the backward. It did not: gradients were wanted only when the input, the
    states or the five torch.nn weights wanted one, so the fused LSTM's backward read empty
    activations ("Dimension out of range")."""
    cls, config = CELLS[cell]
    ours, ref = _twins(cls, config | {"input_size": 3, "hidden_size": 4}, torch.float64, seed=2)
    standard = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    for layer in (ours, ref):
        for name, p in layer.named_parameters():
            p.requires_grad_(not name.startswith(standard))
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    trainable = [name for name, p in ours.named_parameters() if p.requires_grad]
    assert trainable
    for layer in (ours, ref):
        layer(x)[0].square().sum().backward()
    for (name, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
        if a.requires_grad:
            assert_close(a.grad, b.grad, torch.float64, f"{cell} gradient of {name}")


@pytest.mark.parametrize("cls", [gatedrnn.LSTM, gatedrnn.GRU, gatedrnn.RNN])
def test_frozen_weights_with_an_input_that_wants_a_gradient(cls):
    """All parameters frozen, the input wanting a gradient (an attack, an input saliency map):
    the ops hand xw's gradient on to x alone."""
    torch.manual_seed(0)
    ours = cls(3, 4, num_layers=2, backend="fused", dtype=torch.float64)
    ref = cls(3, 4, num_layers=2, backend="reference", dtype=torch.float64)
    ref.load_state_dict(ours.state_dict())
    for p in (*ours.parameters(), *ref.parameters()):
        p.requires_grad_(False)
    x = torch.randn(6, 40, 3, dtype=torch.float64)
    grads = []
    with _forced(1):
        for layer in (ours, ref):
            xi = x.clone().requires_grad_()
            layer(xi)[0].square().sum().backward()
            grads.append(xi.grad)
    assert_close(grads[0], grads[1], torch.float64, "gradient of the input")


def _projected_op(name, T=4, B=3, I=2, H=3):
    """One op called as run_direction calls it when the loop projects: x in the xw slot and in
    x's, with w_ih and b_ih; float64 inputs for gradcheck."""
    from gatedrnn.fused import gru as fused_gru
    from gatedrnn.fused import lstm as fused_lstm
    from gatedrnn.fused import rnn as fused_rnn

    g = torch.Generator().manual_seed(0)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[name] * H
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    inputs = (r(T, B, I), r(G, I), r(G), r(B, H), r(G, H), r(G))  # x, w_ih, b_ih, h0, w_hh, b_hh
    lengths = torch.tensor([4, 2, 3])[:B]

    def f(x, w_ih, b_ih, h0, w_hh, b_hh):
        if name == "lstm":
            out, h_n, c_n, _, cs, gates, _ = fused_lstm.lstm_forward(
                x, h0, h0 * 0.5, w_hh, b_hh, None, lengths, False, True, x=x, w_ih=w_ih, b_ih=b_ih, project=True)
            return out, h_n, c_n, cs, gates  # fmt: skip
        if name == "gru":
            out, h_n, _, act = fused_gru.gru_forward(x, h0, w_hh, b_hh, lengths, True, True, x=x, w_ih=w_ih,
                                                     b_ih=b_ih, project=True)  # fmt: skip
            return out, h_n, act[..., : 3 * H]
        out, h_n, _, _ = fused_rnn.rnn_forward(x, h0, w_hh, b_hh, lengths, False, True, False, x=x, w_ih=w_ih,
                                               b_ih=b_ih, project=True)  # fmt: skip
        return out, h_n

    return f, inputs


@pytest.mark.parametrize("mode", [1, -1])
@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_gradcheck_of_the_ops_when_the_loop_projects(name, mode):
    """The ops' backward hands xw's gradient on to x, W_ih and b_ih when their loop projected x
    (float64, both ways of projecting forced)."""
    f, inputs = _projected_op(name)
    with _forced(mode):
        assert torch.autograd.gradcheck(f, inputs)


def test_double_backward_when_the_loop_projects():
    f, inputs = _projected_op("lstm", T=3, B=2, I=2, H=2)
    with _forced(1):
        assert torch.autograd.gradgradcheck(lambda *a: f(*a)[0], inputs)


@settings(max_examples=40, deadline=None)
@given(
    variant_configurations(),
    st.sampled_from([1, -1]),
    st.booleans(),
    st.sampled_from(["padded", "lengths", "packed"]),
    st.integers(1, 6),
    st.integers(1, 4),
    st.integers(0, 2**31 - 1),
)
def test_training_equals_the_reference_loop_either_way(config, mode, split, kind, T, B, seed):
    """Forward and backward with the projection forced into the loop and before it: outputs,
    final states and every gradient (the input's, W_ih's and b_ih's through the ops' own
    backward now)."""
    cell, cls, config = config
    assume(not config.get("layer_norm"))  # float64 below; the layer norm keeps its activations: never projected
    ours, ref = _twins(cls, config, torch.float64, seed)
    case = Case(ours, kind, T, B, True, seed)
    with _forced(mode, split):
        torch.manual_seed(seed)  # the same weight dropout, recurrent dropout and zoneout masks
        out_o, finals_o, grads_o, _ = case.run(ours)
    torch.manual_seed(seed)
    out_r, finals_r, grads_r, _ = case.run(ref)
    assert_close(out_o, out_r, torch.float64, f"{cell} output")
    for a, b in zip(finals_o, finals_r):
        assert_close(a, b, torch.float64, f"{cell} final state")
    names = ["input", "hx"] + [n for n, _ in ours.named_parameters()]
    for what, a, b in zip(names, grads_o, grads_r):
        assert (a is None) == (b is None), what
        if a is not None:
            assert_close(a, b, torch.float64, f"{cell} gradient of {what}")


@pytest.mark.parametrize("name", ["lstm_forward", "gru_forward", "rnn_forward"])
def test_the_python_loops_take_the_input_and_its_weights_as_the_native_ones_do(name):
    torch.manual_seed(0)
    T, B, I, H = 5, 3, 4, 6
    G = {"lstm_forward": 4, "gru_forward": 3, "rnn_forward": 1}[name] * H
    x, w_ih, b_ih = torch.randn(T, B, I), torch.randn(G, I), torch.randn(G)
    h0, w_hh, b_hh = torch.randn(B, H), torch.randn(G, H), torch.randn(G)
    xw = F.linear(x, w_ih, b_ih)
    if name == "lstm_forward":
        args = lambda first: (first, h0, h0, w_hh, b_hh, None, None, False, None, None, None, None, None, None, None,
                              False, False)  # noqa: E731 fmt: skip
    elif name == "gru_forward":
        args = lambda first: (first, h0, w_hh, b_hh, 0, None, None, None, None, None, False, False)  # noqa: E731
    else:
        args = lambda first: (first, h0, w_hh, b_hh, False, None, None, None, False, False)  # noqa: E731
    for module in (loops, fused.kernels()):
        fn = getattr(module, name)
        given_xw = fn(*args(xw), None, None)
        projected = fn(*args(x), w_ih, b_ih)
        for a, b in zip(given_xw, projected):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_torch_compile_traces_a_projected_inference_with_an_input_of_another_width():
    """The ops' fake shapes come from the states, not from xw's width (which is I when the loop
    projects: the RNN's fake took H from it, and the layer after it then failed to trace)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(gatedrnn.RNN(3, 7, backend="fused"), Output(), torch.nn.Linear(7, 2)).eval()
    x = torch.randn(10, 32, 3)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad(), _forced(1):
        out = compiled(x)
        expected = model(x)
    assert out.shape == (10, 32, 2)
    torch.testing.assert_close(out, expected)


class Output(torch.nn.Module):
    def forward(self, result):
        return result[0]


def test_torch_compile_as_the_first_call_of_a_fresh_process():
    """The first forward of a process under torch.compile(fullgraph=True): nothing in the traced
    code may load or build the kernels (the projection's decision once asked which kernels run,
    and torch.backends.cpu.get_cpu_capability() inside the trace stopped Dynamo)."""
    import subprocess
    import sys

    script = (
        "import torch, gatedrnn\n"
        "model = torch.nn.Sequential(gatedrnn.GRU(3, 8, backend='fused'))\n"
        "x = torch.randn(12, 32, 3)\n"
        "out = torch.compile(model, backend='aot_eager', fullgraph=True)(x)[0]\n"
        "torch.testing.assert_close(out, model(x)[0])\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
