"""What a layer remembers of its plain calls (RNNBase._remember_plan, backends.plan_key): a
second call of the same kind skips the input checks and the choice of backend, and nothing
that changes either may leave a stale plan. Each test compares a layer that remembers with
one that never does, call by call, errors included."""

import copy
import pickle

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings
from torch.nn.utils import parametrize

import gatedrnn
from gatedrnn import autotune, backends, rnnbase

MODES = {"LSTM": gatedrnn.LSTM, "GRU": gatedrnn.GRU, "RNN": gatedrnn.RNN}


def _pair(kind, *args, **kwargs):
    """Two layers with the same weights: the first remembers its plans, the second never does."""
    torch.manual_seed(0)
    planned = MODES[kind](*args, **kwargs)
    slow = MODES[kind](*args, **kwargs)
    slow.load_state_dict(planned.state_dict())
    slow._remember_plan = lambda plans, key, name: None
    return planned, slow


def _outcome(layer, *args, **kwargs):
    """The layer's result, or the type and message of what it raised."""
    try:
        out, state = layer(*args, **kwargs)[:2]
    except Exception as error:  # noqa: BLE001 - compared as they are
        return type(error), str(error)
    return out, state


def _same(a, b):
    if isinstance(a, tuple) and a and isinstance(a[0], type):
        assert a == b
        return
    for x, y in zip(torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.fixture(autouse=True)
def static_choices(monkeypatch):
    """Autotuning off (the suite's setting, whatever an earlier test left): the static rule decides."""
    monkeypatch.setattr(autotune, "_enabled", False)


@pytest.fixture
def choices(monkeypatch):
    """The backend each call of a layer ran on, as select_backend chose it (only the full path
    calls it)."""
    chosen = []
    original = rnnbase.select_backend

    def spy(*args, **kwargs):
        chosen.append(original(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(rnnbase, "select_backend", spy)
    return chosen


def test_a_second_call_of_the_same_kind_skips_the_checks_and_the_choice(choices):
    layer, slow = _pair("GRU", 8, 16)
    x = torch.randn(5, 3, 8)
    first, second = layer(x), layer(x)
    assert len(choices) == 1 and list(layer._plans.values()) == choices
    _same(first, second)
    layer(torch.randn(6, 3, 8))  # another length: another key
    assert len(choices) == 2 and len(layer._plans) == 2
    _same(second, slow(x))
    _same(second, slow(x))
    assert len(choices) == 4  # the one that never remembers chooses on every call


@pytest.mark.parametrize("kind", MODES)
def test_assignments_and_conversions_forget_the_plans(kind):
    layer, slow = _pair(kind, 4, 6)
    x = torch.randn(3, 2, 4)
    for change in (
        lambda m: m.double(),  # the weights' dtype: the float32 input is refused now
        lambda m: m.float(),
        lambda m: setattr(m, "batch_first", True),  # the output's layout
        lambda m: m.train(False),
        lambda m: setattr(m, "backend", "reference"),
        lambda m: setattr(m, "weight_hh_l0", torch.nn.Parameter(torch.ones_like(m.weight_hh_l0))),
    ):
        _same(_outcome(layer, x), _outcome(slow, x))  # layer remembers this call
        change(layer)
        change(slow)
        _same(_outcome(layer, x), _outcome(slow, x))


def test_a_plan_checks_the_states_on_every_call():
    layer, slow = _pair("LSTM", 4, 6)
    x = torch.randn(3, 2, 4)
    layer(x)
    layer(x)
    wrong = (torch.zeros(1, 3, 6), torch.zeros(1, 3, 6))
    with pytest.raises(gatedrnn.ShapeError, match=r"hx\[0\] \(h_0\) must have shape \(1, 2, 6\)"):
        layer(x, wrong)
    hx = (torch.randn(1, 2, 6), torch.randn(1, 2, 6))
    _same(layer(x, hx), slow(x, hx))


def _torch_nn(layer):
    """torch.nn's GRU with the weights ``layer`` reads now (a parametrization's included)."""
    module = torch.nn.GRU(layer.input_size, layer.hidden_size)
    module.load_state_dict({name: getattr(layer, name).detach() for name in layer._flat_weights_names})
    return module


@pytest.mark.parametrize("backend", ["torch", "fused"])
def test_a_swapped_or_parametrized_weight_is_read_on_every_call(backend, monkeypatch):
    monkeypatch.setattr(backends, "static_backend", lambda *args: backend)  # torch's kernel reads _flat_weights
    layer, _ = _pair("GRU", 4, 6)
    x = torch.randn(3, 2, 4)
    layer(x)
    layer(x)
    zeros = {name: torch.zeros_like(w) for name, w in layer.named_parameters()}
    out, h = torch.func.functional_call(layer, zeros, (x,))
    assert not out.any()  # every weight zero: h stays zero
    torch.testing.assert_close(layer(x), _torch_nn(layer)(x))  # and the layer's own weights are back
    assert list(layer._plans.values()) == [backend]

    class Doubled(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    parametrize.register_parametrization(layer, "weight_hh_l0", Doubled())
    torch.testing.assert_close(layer(x), _torch_nn(layer)(x))
    with torch.no_grad():
        layer.parametrizations.weight_hh_l0.original.mul_(0.5)  # in place: no assignment
    torch.testing.assert_close(layer(x), _torch_nn(layer)(x))
    with torch.no_grad():
        layer._parameters["weight_ih_l0"] = torch.nn.Parameter(torch.zeros(18, 4))  # past __setattr__
    torch.testing.assert_close(layer(x), _torch_nn(layer)(x))


@pytest.mark.parametrize("backend", ["torch", "fused"])
def test_the_old_weight_swapped_back_in_after_an_assignment_is_read(backend, monkeypatch):
    """An assignment updates _flat_weights but not torch.nn's weak references to them, which its
    own check reads: a functional_call of the old weight afterwards must still run on it."""
    monkeypatch.setattr(backends, "static_backend", lambda *args: backend)
    layer, _ = _pair("GRU", 4, 6)
    x = torch.randn(3, 2, 4)
    old = layer.weight_ih_l0
    layer.weight_ih_l0 = torch.nn.Parameter(torch.randn(18, 4))
    layer(x)
    layer(x)
    expected = _torch_nn(layer)
    expected.weight_ih_l0.data.copy_(old.detach())
    torch.testing.assert_close(torch.func.functional_call(layer, {"weight_ih_l0": old}, (x,)), expected(x))


def test_transforms_autocast_and_the_switch_after_a_plan(choices):
    layer, slow = _pair("RNN", 4, 6)
    x = torch.randn(3, 2, 4)
    layer(x)
    layer(x)
    n = len(choices)
    with torch.autocast("cpu", torch.bfloat16):  # torch.nn runs the RNN wholly in bfloat16
        assert layer(x)[0].dtype == slow(x)[0].dtype == torch.bfloat16

    def loss(weights, m):
        return torch.func.functional_call(m, weights, (x,))[0].square().sum()

    weights = dict(layer.named_parameters())
    _same(torch.func.grad(loss)(weights, layer), torch.func.grad(loss)(weights, slow))
    layer(x)  # (functional_call assigned the weights: the plans were forgotten)
    n = len(choices)
    layer(x)
    assert len(choices) == n  # the plan holds
    autotune.forget()  # what the autotuner chose is gone: chosen again
    layer(x)
    layer(x)
    assert len(choices) == n + 1
    gatedrnn.set_autotune(False)  # the suite's setting, set again
    layer(x)
    assert len(choices) == n + 2


def test_freezing_the_weights_in_place_is_another_kind_of_call():
    layer, _ = _pair("LSTM", 4, 6)
    x = torch.randn(3, 2, 4)
    layer(x)
    (trained,) = layer._plans
    layer.requires_grad_(False)  # in place: no assignment
    assert layer(x)[0].grad_fn is None
    (key,) = set(layer._plans) - {trained}
    assert key[4] is False and trained[4] is True  # whether a gradient is wanted


def test_plans_are_bounded_and_not_pickled():
    layer, _ = _pair("GRU", 4, 6)
    for T in range(1, rnnbase.MAX_PLANS + 5):
        layer(torch.randn(T, 1, 4))
    assert 0 < len(layer._plans) <= rnnbase.MAX_PLANS
    x = torch.randn(2, 1, 4)
    for copied in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert "_plans" not in copied.__dict__  # another process chooses for itself
        _same(copied(x), layer(x))
    assert "_plans" in layer.__dict__


def test_no_plan_under_a_capture_or_for_other_inputs():
    layer, _ = _pair("GRU", 4, 6)
    x = torch.randn(3, 2, 4)
    assert backends.plan_key(layer, x) is not None
    assert backends.plan_key(layer, torch.nn.Parameter(x)) is None  # a subclass: the full path
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([3, 2]))
    assert backends.plan_key(layer, packed) is None
    with torch.autograd.forward_ad.dual_level():
        assert backends.plan_key(layer, x) is None
    layer(x, lengths=torch.tensor([3, 2]))
    layer(x, return_trace=True)
    assert not layer.__dict__.get("_plans")  # lengths and traces take the full path


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(sorted(MODES)),
    calls=st.lists(
        st.tuples(
            st.sampled_from(["call", "unbatched", "float64_input", "hx", "wrong_hx", "grad", "batch_first",
                             "train", "eval", "double", "float", "freeze"]),  # fmt: skip
            st.integers(1, 4),
        ),
        min_size=1, max_size=12,
    ),  # fmt: skip
)
def test_random_sequences_of_calls_and_changes_match_a_layer_that_never_remembers(kind, calls):
    layer, slow = _pair(kind, 3, 5)
    for what, T in calls:
        dtype = layer.weight_ih_l0.dtype
        x = torch.randn(T, 2, 3, dtype=dtype)
        if layer.batch_first:
            x = x.transpose(0, 1).contiguous()
        if what in ("batch_first", "train", "eval", "double", "float", "freeze"):
            for m in (layer, slow):
                {"batch_first": lambda: setattr(m, "batch_first", not m.batch_first), "train": m.train,
                 "eval": m.eval, "double": m.double, "float": m.float,
                 "freeze": lambda: m.requires_grad_(False)}[what]()  # fmt: skip
            continue
        args = {"call": (x,), "unbatched": (x[0] if layer.batch_first else x[:, 0],),
                "float64_input": (x.to(torch.float64 if dtype == torch.float32 else torch.float32),),
                "grad": (x.clone().requires_grad_(),)}.get(what)  # fmt: skip
        if args is None:
            h = torch.randn(1, 2 if what == "hx" else 3, 5, dtype=dtype)
            args = (x, (h, torch.randn_like(h)) if kind == "LSTM" else h)
        _same(_outcome(layer, *args), _outcome(slow, *args))


def test_an_assignment_during_a_call_leaves_no_stale_plan(monkeypatch):
    """Another thread assigns an attribute while a call chooses its backend: what the call then
    remembers goes to the plans it began with, forgotten already."""
    layer, _ = _pair("GRU", 4, 6)
    original = rnnbase.select_backend

    def assigning(*args, **kwargs):
        chosen = original(*args, **kwargs)
        layer.recurrent_dropout = 0.3  # as if from another thread, after the choice
        return chosen

    monkeypatch.setattr(rnnbase, "select_backend", assigning)
    layer(torch.randn(3, 2, 4))
    assert not layer.__dict__.get("_plans")


def test_what_a_patch_restores_by_deleting_it_forgets_the_plans(choices):
    from unittest import mock

    layer, _ = _pair("LSTM", 4, 6)
    x = torch.randn(3, 2, 4)
    with mock.patch.object(layer, "beyond_torch", lambda: True):  # set on the instance, deleted on exit
        layer(x)
    layer(x)
    assert len(choices) == 2


def test_switching_to_the_python_loops_is_another_kind_of_call():
    from gatedrnn import fused

    layer, _ = _pair("GRU", 4, 6)
    x = torch.randn(3, 2, 4)
    built, native = fused.native_available(), backends.plan_key(layer, x)
    fused.use_python_loops(True)
    try:
        assert (backends.plan_key(layer, x) != native) == built  # auto's choices read which loops run
    finally:
        fused.use_python_loops(False)
