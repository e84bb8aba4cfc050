"""backend="auto" by measurement (gatedrnn/autotune.py): the winner is remembered in memory and
in a cache file written atomically, a corrupt or foreign file is ignored, the switch works, the
candidates agree, nothing of the caller's changes (random state, .grad), and nothing is timed
where it must not be. No timing is asserted: the candidates' timings are replaced by fixed ones."""

import json
import os
import subprocess
import sys

import pytest
import torch

import gatedrnn
from gatedrnn import autotune, backends, fused, rnnbase

pytestmark = pytest.mark.skipif(not fused.native_available(), reason="native kernels not built on this machine")


@pytest.fixture
def tuning(tmp_path, monkeypatch):
    """Autotuning on, a cache file in tmp_path, nothing remembered; the calls to time_candidates
    recorded, each answering with fixed seconds (``fixed["torch"]``, ``fixed["fused"]``)."""
    monkeypatch.setattr(autotune, "cache_path", lambda: tmp_path / "autotune.json")
    monkeypatch.setattr(autotune, "CONFIRM_S", 0.0)  # a provisional winner is confirmed at the next call
    autotune.forget()
    gatedrnn.set_autotune(True)
    calls, fixed = [], {"torch": 2.0, "fused": 1.0}

    def timed(candidates, T):
        calls.append(list(candidates))
        for run in candidates.values():
            run(min(T, 3))  # they must run, on a prefix of the call's steps
        return {name: fixed[name] for name in candidates}

    monkeypatch.setattr(autotune, "time_candidates", timed)
    yield calls, fixed, tmp_path / "autotune.json"
    gatedrnn.set_autotune(False)  # the suite's setting (conftest.py)
    autotune.forget()


def _chosen(layer, x, want_grad=False):
    states = layer._check_hx(None, x.shape[1], False, x)
    with torch.set_grad_enabled(want_grad):
        return backends.auto_backend(layer, x, None, False, states)


def test_the_winner_is_remembered_and_written_to_the_cache_file(tuning):
    calls, fixed, path = tuning
    layer, x = gatedrnn.LSTM(8, 16).eval(), torch.randn(20, 4, 8)
    assert _chosen(layer, x) == "fused"  # provisional (it beat torch's kernel)
    assert _chosen(layer, x) == "fused" and len(calls) == 2  # confirmed by a second look
    assert _chosen(layer, x) == "fused" and len(calls) == 2  # the third call remembers
    data = json.loads(path.read_text())
    assert data["identity"]["torch"] == torch.__version__ and data["identity"]["gatedrnn"] == gatedrnn.__version__
    assert list(data["choices"].values()) == ["fused"]
    autotune.forget()  # a new process: the file answers, nothing is timed
    fixed.update(torch=0.5)
    assert _chosen(layer, x) == "fused" and len(calls) == 2
    # a new shape class is timed again (torch's kernel wins: remembered at once), and the file keeps both
    assert _chosen(layer, torch.randn(20, 64, 8)) == "torch" and len(calls) == 3
    assert sorted(json.loads(path.read_text())["choices"].values()) == ["fused", "torch"]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # renamed into place


@pytest.mark.parametrize("content", ["{not json", json.dumps({"identity": {"torch": "0.0"}, "choices": {}}),
                                     json.dumps([1, 2])])  # fmt: skip
def test_a_corrupt_or_foreign_cache_file_is_ignored_and_replaced(tuning, content):
    calls, _, path = tuning
    layer, x = gatedrnn.GRU(8, 16).eval(), torch.randn(10, 2, 8)
    key = autotune.shape_class("GRU", torch.float32, False, 1, 1, 2, 10, 8, 16)
    path.write_text(content if "choices" not in content else json.dumps(
        {"identity": {"torch": "0.0"}, "choices": {key: "torch"}}))  # fmt: skip
    assert _chosen(layer, x) == "fused" and len(calls) == 1  # timed: the file's answer was not trusted
    assert _chosen(layer, x) == "fused" and len(calls) == 2  # confirmed, and written
    assert json.loads(path.read_text())["choices"] == {key: "fused"}


def test_the_switch_turns_measuring_off(tuning, monkeypatch):
    calls, _, _ = tuning
    layer, x = gatedrnn.LSTM(8, 16).eval(), torch.randn(20, 4, 8)
    gatedrnn.set_autotune(False)
    with torch.no_grad():
        static = backends.static_backend(layer, x, None, False)
    assert _chosen(layer, x) == static and calls == []  # the static rule's choice (a fitted table)
    autotune._enabled = None  # the environment decides
    monkeypatch.setenv("GATEDRNN_AUTOTUNE", "0")
    assert not gatedrnn.autotune_enabled() and _chosen(layer, x) == static and calls == []
    monkeypatch.setenv("GATEDRNN_AUTOTUNE", "1")
    assert gatedrnn.autotune_enabled() and _chosen(layer, x) == "fused" and len(calls) == 1
    with pytest.raises(TypeError, match="enabled must be True or False"):
        gatedrnn.set_autotune("yes")


def test_the_environment_variable_reaches_a_new_process():
    code = "import gatedrnn; print(gatedrnn.autotune_enabled())"
    for value, expected in (("0", "False"), ("off", "False"), ("1", "True")):
        env = {**os.environ, "GATEDRNN_AUTOTUNE": value}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        assert out.stdout.strip() == expected


def test_what_is_never_timed(tuning):
    """A variant, lengths, a trace, a layer torch has no kernel for, torch.compile's tracing,
    torch.func and saved-tensor hooks: the static rule, and no timing."""
    calls, _, _ = tuning
    x = torch.randn(12, 3, 8)
    for layer in (gatedrnn.LSTM(8, 16, peephole=True), gatedrnn.GRU(8, 16, zoneout=0.1), gatedrnn.MGU(8, 16)):
        layer(x)
    gatedrnn.LSTM(8, 16)(x, lengths=torch.tensor([12, 5, 3]))
    gatedrnn.LSTM(8, 16)(x, return_trace=True)
    lstm = gatedrnn.LSTM(8, 16)
    torch.func.grad(lambda w: torch.func.functional_call(lstm, {"weight_hh_l0": w}, (x,))[0].sum())(lstm.weight_hh_l0)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        lstm(x)[0].sum().backward()
    assert calls == []
    torch.utils.checkpoint.checkpoint(lambda v: lstm(v)[0], x.requires_grad_(), use_reentrant=False).sum().backward()
    assert calls == []


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("train", [False, True])
def test_the_candidates_agree_whichever_wins(tuning, mode, train):
    """The same layer and input under each winner: outputs, final states and gradients equal
    within float32 rounding."""
    calls, fixed, path = tuning
    torch.manual_seed(0)
    layer = getattr(gatedrnn, mode)(6, 12, num_layers=2, bidirectional=mode == "GRU").train(train)
    x = torch.randn(15, 3, 6, requires_grad=train)
    results = []
    for winner in ("torch", "fused"):
        autotune.forget()
        path.unlink(missing_ok=True)
        fixed.update({winner: 0.1, ("fused" if winner == "torch" else "torch"): 1.0})
        layer.zero_grad()
        x.grad = None
        with torch.set_grad_enabled(train):
            out, h = layer(x)
            got = [out, *(h if isinstance(h, tuple) else (h,))]
            if train:
                (out.square().sum() + got[1].sum()).backward()
                got += [x.grad, *(p.grad for p in layer.parameters())]
        results.append(got)
    assert len(calls) == 2
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_timing_changes_nothing_of_the_caller(tmp_path, monkeypatch):
    """The real timing (not replaced): torch's random state is as it was (dropout between
    layers draws from it), and no parameter's .grad is touched by the timed backward."""
    monkeypatch.setattr(autotune, "cache_path", lambda: tmp_path / "autotune.json")
    autotune.forget()
    gatedrnn.set_autotune(True)
    try:
        layer = gatedrnn.LSTM(4, 8, num_layers=2, dropout=0.5)
        x = torch.randn(40, 2, 4)
        torch.manual_seed(1)
        looked = len(autotune.looks())
        out_tuned = layer(x)[0]
        after_tuned = torch.rand(3)
        assert all(p.grad is None for p in layer.parameters())
        assert len(autotune.looks()) > looked  # it timed
        gatedrnn.set_autotune(False)
        torch.manual_seed(1)
        out_static = layer(x)[0]
        torch.testing.assert_close(torch.rand(3), after_tuned, rtol=0, atol=0)
        torch.testing.assert_close(out_tuned, out_static, rtol=1e-5, atol=1e-5)  # the same masks
    finally:
        gatedrnn.set_autotune(False)
        autotune.forget()


def test_shape_classes_round_to_half_octaves():
    assert autotune.bucket(256) == 16 and autotune.bucket(300) == 16 and autotune.bucket(400) == 17
    key = autotune.shape_class("LSTM", torch.float32, True, 1, 1, 4, 300, 16, 256)
    assert key.startswith("LSTM-float32-train-L1-D1-B4-T16-I8-H16-threads")


def test_a_carried_state_keeps_its_graph(tmp_path, monkeypatch):
    """A state carried from the previous call (truncated BPTT, streaming) still has its graph:
    the timed backward must not run through it, or the caller's own backward finds the graph
    freed ("backward through the graph a second time")."""
    monkeypatch.setattr(autotune, "cache_path", lambda: tmp_path / "autotune.json")
    autotune.forget()
    gatedrnn.set_autotune(True)
    try:
        lstm = gatedrnn.LSTM(3, 6)
        first, state = lstm(torch.randn(5, 2, 3))
        second, _ = lstm(torch.randn(40, 2, 3), state)  # another T: another shape class, timed
        (first.sum() + second.sum()).backward()
        assert lstm.weight_hh_l0.grad is not None
    finally:
        gatedrnn.set_autotune(False)
        autotune.forget()


def test_a_long_call_is_estimated_from_two_prefixes(monkeypatch):
    """A call's time is a fixed part plus a part per step. Timed at T <= LONG whole; beyond, at
    SHORT and LONG steps and extrapolated along the line through them, so that a candidate with
    a larger fixed part and a smaller per-step part wins the long calls it is faster at (one
    short prefix alone chose the other)."""
    cost = {"a": (1.0, 0.1), "b": (3.0, 0.05)}  # (fixed, per step): a wins short calls, b long ones
    lengths = []

    def medians(candidates, steps):
        lengths.append(steps)
        return {name: cost[name][0] + cost[name][1] * steps for name in candidates}

    monkeypatch.setattr(autotune, "_medians", medians)
    candidates = {"a": lambda steps: None, "b": lambda steps: None}
    assert autotune.time_candidates(candidates, 20) == pytest.approx({"a": 3.0, "b": 4.0})
    assert lengths == [20]
    lengths.clear()
    estimated = autotune.time_candidates(candidates, 1000)  # (over WHOLE_S: too long to time whole)
    assert lengths == [autotune.LONG, autotune.SHORT]
    assert estimated == pytest.approx({"a": 1.0 + 0.1 * 1000, "b": 3.0 + 0.05 * 1000})
    assert min(estimated, key=estimated.get) == "b"
    short = medians(candidates, autotune.SHORT)
    assert min(short, key=short.get) == "a"  # what the short prefix alone would have chosen


def test_a_long_call_cheap_enough_is_timed_whole(monkeypatch):
    """The time per step grows once a call's activations outgrow the caches, and not alike for
    both candidates: a long call whose whole time should stay within WHOLE_S is timed whole,
    and that timing decides (here against what the two prefixes predict)."""
    lengths = []

    def medians(candidates, steps):  # "a" is faster per step up to LONG steps, slower beyond
        lengths.append(steps)
        return {"a": 1e-5 * steps if steps <= autotune.LONG else 5e-5 * steps, "b": 2e-5 * steps}

    monkeypatch.setattr(autotune, "_medians", medians)
    candidates = {"a": lambda steps: None, "b": lambda steps: None}
    T = 1000  # the slowest at LONG steps, 2.56 ms, gives 20 ms for the whole call: timed whole
    timed = autotune.time_candidates(candidates, T)
    assert lengths == [autotune.LONG, T]
    assert min(timed, key=timed.get) == "b"


def test_the_candidates_run_on_prefixes_of_the_call(tmp_path, monkeypatch):
    """auto_backend hands time_candidates the call's T, and each candidate runs the layer on the
    first ``steps`` steps of the call's own input."""
    monkeypatch.setattr(autotune, "cache_path", lambda: tmp_path / "autotune.json")
    autotune.forget()
    gatedrnn.set_autotune(True)
    seen = []

    def timed(candidates, T):
        seen.append(T)
        for run in candidates.values():
            run(5)
        return {name: 1.0 for name in candidates}

    monkeypatch.setattr(autotune, "time_candidates", timed)
    lengths = []
    original = backends.run

    def spy(name, layer, x, *args):
        lengths.append((name, x.shape[0]))
        return original(name, layer, x, *args)

    monkeypatch.setattr(backends, "run", spy)
    try:
        layer, x = gatedrnn.GRU(4, 8), torch.randn(300, 2, 4)
        _chosen(layer, x, want_grad=True)
    finally:
        gatedrnn.set_autotune(False)
        autotune.forget()
    assert seen == [300]
    assert sorted(lengths) == [("fused", 5), ("torch", 5)]


def test_pick_takes_the_fastest_and_torch_keeps_a_near_tie():
    """pick: the fastest wins, a tie goes to the first candidate, and the preferred one keeps any
    call no candidate beats by more than the margin (auto_backend prefers torch's kernel)."""
    assert autotune.pick({"fused": 2.0, "torch": 1.0}) == "torch"
    assert autotune.pick({"fused": 1.0, "torch": 1.0}) == "fused"  # a tie: the first (the static choice)
    margin = autotune.TORCH_MARGIN
    assert autotune.pick({"fused": 1.0 - margin / 2, "torch": 1.0}, "torch", margin) == "torch"
    assert autotune.pick({"fused": 1.0 - 2 * margin, "torch": 1.0}, "torch", margin) == "fused"
    assert autotune.pick({"fused": 1.0, "torch": 1.5}, "missing", margin) == "fused"


@pytest.mark.parametrize("fused_seconds, winner", [(1.0 - autotune.TORCH_MARGIN / 2, "torch"),
                                                   (1.0 - 2 * autotune.TORCH_MARGIN, "fused")])  # fmt: skip
def test_auto_keeps_torchs_kernel_on_a_near_tie(tuning, fused_seconds, winner):
    calls, fixed, _ = tuning
    fixed.update(torch=1.0, fused=fused_seconds)
    assert _chosen(gatedrnn.GRU(8, 16).eval(), torch.randn(20, 4, 8)) == winner


@pytest.mark.parametrize("first, second, winner, timings", [
    (1.0 - 2 * autotune.TORCH_MARGIN, 1.02, "torch", 2),  # a close win, not seen again: torch's kernel stays
    (1.0 - 2 * autotune.TORCH_MARGIN, 1.0 - 2 * autotune.TORCH_MARGIN, "fused", 2),  # seen again: it wins
    (0.5, 2.0, "fused", 1),  # a clear win is believed at once
])  # fmt: skip
def test_a_close_win_over_torchs_kernel_is_timed_again(tuning, monkeypatch, first, second, winner, timings):
    """choose: a candidate that beats torch's kernel by less than CLOSE is timed a second time
    and the mean of its two times decides; a clear win is not timed again."""
    answers = iter([first, second])
    calls = []

    def timed(candidates, T):
        calls.append(T)
        return {"torch": 1.0, "fused": next(answers)}

    monkeypatch.setattr(autotune, "time_candidates", timed)
    assert _chosen(gatedrnn.GRU(8, 16).eval(), torch.randn(20, 4, 8)) == winner
    assert len(calls) == timings


def test_each_candidate_is_warmed_up_before_its_rounds(monkeypatch):
    """_medians: WARMUPS interleaved calls of each candidate, then its rounds; the warm-ups are
    not in the median."""
    seen = []
    candidates = {name: (lambda steps, name=name: seen.append(name)) for name in ("a", "b")}
    autotune._medians(candidates, 4)
    warm = 2 * autotune.WARMUPS
    assert seen[:warm] == ["a", "b"] * autotune.WARMUPS
    rounds = [sorted(seen[k : k + 2]) for k in range(warm, len(seen), 2)]
    assert rounds == [["a", "b"]] * autotune.MAX_ROUNDS  # (instant candidates: every round fits)


def test_each_round_runs_the_candidates_in_a_drawn_order():
    """_medians: every candidate once per round, the order drawn afresh (not always the same
    one first), and drawn the same way in every run."""

    def orders():
        seen = []
        candidates = {name: (lambda steps, name=name: seen.append(name)) for name in ("a", "b", "c")}
        autotune._medians(candidates, 4)
        timed = seen[3 * autotune.WARMUPS :]
        return [tuple(timed[k : k + 3]) for k in range(0, len(timed), 3)]

    first = orders()
    assert all(sorted(order) == ["a", "b", "c"] for order in first)
    assert len({order[0] for order in first}) > 1
    assert orders() == first


@pytest.mark.parametrize("seconds, rounds", [(1e-3, "MAX_ROUNDS"), (0.02, "ROUNDS"), (0.1, 2), (1.0, 1)])
def test_cheap_calls_get_more_rounds_and_dear_ones_fewer(monkeypatch, seconds, rounds):
    """_medians' rounds from the slowest candidate's warm-up call: MAX_ROUNDS where they fit in
    FAST_S, ROUNDS where those fit in BUDGET_S, fewer below that, never none (a clock that each
    call of the slower candidate moves by ``seconds``, of the other by a tenth of it)."""
    now = [0.0]
    monkeypatch.setattr(autotune.time, "perf_counter", lambda: now[0])
    calls = {"slow": 0, "fast": 0}

    def run(name, cost):
        def call(steps):
            calls[name] += 1
            now[0] += cost

        return call

    autotune._medians({"fast": run("fast", seconds / 10), "slow": run("slow", seconds)}, 4)
    expected = getattr(autotune, rounds) if isinstance(rounds, str) else rounds
    assert calls == {"slow": autotune.WARMUPS + expected, "fast": autotune.WARMUPS + expected}


@pytest.mark.parametrize("second, winner", [
    ({"torch": 2.0, "fused": 1.0}, "fused"),  # seen again: confirmed
    ({"torch": 0.5, "fused": 1.0}, "torch"),  # torch's kernel was slowed in the first look: it wins
    ({"torch": 2.0, "fused": 3.0}, "torch"),  # not seen again: torch's kernel
    ({"torch": 1.0, "fused": 1.0 - autotune.TORCH_MARGIN / 2}, "torch"),  # a near tie the second time: torch's
])  # fmt: skip
def test_a_win_over_torchs_kernel_is_provisional_until_a_second_look(tuning, monkeypatch, second, winner):
    """choose: a candidate that beats torch's kernel runs the calls of the next CONFIRM_S
    seconds without being remembered; the first call after them times again, the win stands
    only if seen again (by more than the margin), and only then is a choice remembered and
    written."""
    calls, fixed, path = tuning
    monkeypatch.setattr(autotune, "CONFIRM_S", 60.0)
    layer, x = gatedrnn.GRU(8, 16).eval(), torch.randn(20, 4, 8)
    key = autotune.shape_class("GRU", torch.float32, False, 1, 1, 4, 20, 8, 16)
    for _ in range(3):  # within CONFIRM_S: the provisional winner, not timed again, not written
        assert _chosen(layer, x) == "fused" and len(calls) == 1
    assert autotune.pending(key) and autotune.remembered(key) is None and not path.exists()
    monkeypatch.setattr(autotune, "CONFIRM_S", 0.0)
    fixed.update(second)
    assert _chosen(layer, x) == winner and len(calls) == 2
    assert not autotune.pending(key) and json.loads(path.read_text())["choices"] == {key: winner}
    assert _chosen(layer, x) == winner and len(calls) == 2  # remembered
    assert [look["winner"] for look in autotune.looks()[-2:]] == ["fused", winner]
    assert autotune.looks()[-1]["seconds"] == second


def test_a_win_of_torchs_kernel_is_remembered_at_once(tuning):
    calls, fixed, path = tuning
    fixed.update(torch=0.5)
    layer, x = gatedrnn.LSTM(8, 16).eval(), torch.randn(20, 4, 8)
    assert _chosen(layer, x) == "torch" and len(calls) == 1
    key = autotune.shape_class("LSTM", torch.float32, False, 1, 1, 4, 20, 8, 16)
    assert not autotune.pending(key) and json.loads(path.read_text())["choices"] == {key: "torch"}


def test_a_layer_plans_a_provisional_choice_until_its_second_look(tuning, monkeypatch):
    """While the choice is provisional a layer runs it from its plans (the plain call's short
    path: the calls of a small layer in that half second cost what later ones do); the first
    call after CONFIRM_S takes the whole path and the second look, and the plan then holds the
    confirmed choice. forget() drops a provisional choice too."""
    calls, fixed, _ = tuning
    monkeypatch.setattr(autotune, "CONFIRM_S", 60.0)
    layer, x = gatedrnn.LSTM(8, 16).eval(), torch.randn(20, 4, 8)
    key = autotune.shape_class("LSTM", torch.float32, False, 1, 1, 4, 20, 8, 16)
    full = []
    original = rnnbase.select_backend
    monkeypatch.setattr(rnnbase, "select_backend", lambda *a, **k: full.append(1) or original(*a, **k))
    with torch.no_grad():
        for _ in range(3):
            layer(x)
    assert list(layer._plans.values()) == [("fused", key)] and len(full) == 1 and len(calls) == 1
    monkeypatch.setattr(autotune, "CONFIRM_S", 0.0)
    fixed.update(torch=0.5)  # the second look finds torch's kernel faster
    with torch.no_grad():
        layer(x)
        layer(x)
    assert list(layer._plans.values()) == ["torch"] and len(full) == 2 and len(calls) == 2
    monkeypatch.setattr(autotune, "CONFIRM_S", 60.0)
    fixed.update(torch=2.0)
    with torch.no_grad():
        layer(torch.randn(20, 64, 8))  # another shape class, where the fused loop wins: provisional
    other = autotune.shape_class("LSTM", torch.float32, False, 1, 1, 64, 20, 8, 16)
    assert autotune.pending(other) and not autotune.due(other)
    autotune.forget()
    assert not autotune.pending(other) and autotune.due(other)
