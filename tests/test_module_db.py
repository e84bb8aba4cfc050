"""torch's own test samples for its recurrent modules (``module_db`` in
torch.testing._internal.common_modules), run on gatedrnn's twins on every backend: each
sample gives torch.nn's outputs and gradients, each error sample torch.nn's error type."""

import warnings

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence
from torch.testing._internal.common_modules import ModuleErrorEnum, module_db

import gatedrnn

NAMES = ("RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell")
INFOS = {info.module_cls.__name__: info for info in module_db if info.module_cls in [getattr(torch.nn, n) for n in NAMES]}
DTYPE = torch.float64  # float64 alone keeps this quick; test_layers covers float32


def _backends(name):
    return (None,) if name.endswith("Cell") else ("reference", "fused", "auto")


def _describe(module_input):
    c = module_input.constructor_input
    args = ", ".join([repr(a) for a in c.args] + [f"{k}={v!r}" for k, v in c.kwargs.items() if k != "device"])
    f = module_input.forward_input
    shapes = [type(a).__name__ if isinstance(a, PackedSequence) else tuple(a.shape) if torch.is_tensor(a)
              else tuple(tuple(t.shape) for t in a) for a in f.args] if f is not None else []  # fmt: skip
    return f"({args})" + (f"{shapes}" if shapes else "")


def _samples():
    for name in NAMES:
        info = INFOS[name]
        kw = {"with_packed_sequence": True} if name in ("RNN", "GRU") else {}
        samples = info.module_inputs_func(info, device="cpu", dtype=DTYPE, requires_grad=True, training=False, **kw)
        for k, sample in enumerate(samples):
            for backend in _backends(name):
                yield pytest.param(name, sample, backend, id=f"{name}-{k}-{backend}-{_describe(sample)}")


def _error_samples():
    for name in NAMES:
        info = INFOS[name]
        for dtype in (torch.float32, torch.float64):
            samples = info.module_error_inputs_func(info, device="cpu", dtype=dtype, requires_grad=False, training=True)
            for k, sample in enumerate(samples):
                for backend in _backends(name):
                    label = f"{name}-{str(dtype)[6:]}-{k}-{backend}-{_describe(sample.module_error_input)}"
                    yield pytest.param(name, sample, backend, id=label)


def _build(name, constructor_input, backend):
    kwargs = dict(constructor_input.kwargs)
    if backend is not None:
        kwargs["backend"] = backend
    return getattr(gatedrnn, name)(*constructor_input.args, **kwargs)


def _tensors(value):
    """Every tensor in a (nested) result, a PackedSequence as its data."""
    if isinstance(value, PackedSequence):
        return [value.data]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return [value]


def _clone_inputs(args):
    def clone(a):
        if isinstance(a, PackedSequence):
            return a._replace(data=a.data.detach().clone().requires_grad_())
        if isinstance(a, (tuple, list)):
            return type(a)(clone(v) for v in a)
        return a.detach().clone().requires_grad_()

    return [clone(a) for a in args]


@pytest.mark.parametrize("name,sample,backend", list(_samples()))
def test_module_db_sample_matches_torch(name, sample, backend):
    c = sample.constructor_input
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        theirs = getattr(torch.nn, name)(*c.args, **c.kwargs).to(DTYPE).eval()
        ours = _build(name, c, backend).to(DTYPE).eval()
    ours.load_state_dict(theirs.state_dict())
    g = torch.Generator().manual_seed(1)
    results = []
    for module in (theirs, ours):
        args = _clone_inputs(sample.forward_input.args)
        outputs = _tensors(module(*args, **sample.forward_input.kwargs))
        grads_out = [torch.randn(o.shape, generator=g.manual_seed(k), dtype=DTYPE) for k, o in enumerate(outputs)]
        leaves = _tensors(args) + list(module.parameters())
        grads = torch.autograd.grad(outputs, leaves, grads_out, allow_unused=True)
        results.append((outputs, grads))
    (out_t, grads_t), (out_o, grads_o) = results
    assert len(out_o) == len(out_t)
    for a, b in zip(out_o + list(grads_o), out_t + list(grads_t)):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def _string_bias(name, constructor_input):
    """torch's samples ``RNNCell(10, 20, 'relu')`` pass 'relu' where the cells take ``bias``.
    torch.nn's cells accept any bias (a truthy string means True) and fail later; gatedrnn's
    check that bias is a bool, as torch.nn's layers do (README, Differences from torch.nn)."""
    args = constructor_input.args
    return name.endswith("Cell") and len(args) > 2 and isinstance(args[2], str)


@pytest.mark.parametrize("name,sample,backend", list(_error_samples()))
def test_module_db_error_sample_raises_torchs_error_type(name, sample, backend):
    module_input = sample.module_error_input
    if _string_bias(name, module_input.constructor_input):
        with pytest.raises(TypeError, match="bias must be a bool, got str"):
            _build(name, module_input.constructor_input, backend)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if sample.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
            with pytest.raises(Exception) as info:
                _build(name, module_input.constructor_input, backend)
        else:
            module = _build(name, module_input.constructor_input, backend)
            with pytest.raises(Exception) as info:
                module(*module_input.forward_input.args, **module_input.forward_input.kwargs)
    assert isinstance(info.value, sample.error_type), (
        f"torch.nn raises {sample.error_type.__name__} ({sample.error_regex}); gatedrnn raised "
        f"{type(info.value).__name__}: {info.value}"
    )
