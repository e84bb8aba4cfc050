"""The curriculum on the length of the synthetic tasks: its stages, its rule for advancing,
its state across a resume, and the errors for a bad --curriculum."""

import json
import math

import pytest
import torch

from gatedrnn import checkpoint
from gatedrnn.tasks import curriculum as curriculum_module
from gatedrnn.tasks.adding import Adding
from gatedrnn.tasks.copy import Copy
from gatedrnn.tasks.curriculum import Curriculum, parse_lengths
from gatedrnn.train import TrainConfig, build, train


def test_lengths_are_parsed_and_end_at_the_task_length():
    assert parse_lengths("100,200,400", 1000) == [100, 200, 400, 1000]
    assert parse_lengths("5", 8) == [5, 8]


@pytest.mark.parametrize("text,message", [
    ("100;200", "comma-separated lengths"), ("a,b", "comma-separated lengths"), ("", "comma-separated lengths"),
    ("200,100", "must be increasing"), ("100,100", "must be increasing"), ("0,10", "at least 1 for this task"),
    ("-5,10", "at least 1 for this task"),
    ("100,1000", "below --length 1000"), ("2000", "below --length 1000"),
])  # fmt: skip
def test_bad_lengths_name_the_option_and_what_was_given(text, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_lengths(text, 1000)
    assert "--curriculum" in str(error.value)


def test_a_stage_ends_when_its_window_mean_reaches_the_fraction_of_that_length_baseline():
    baseline = Copy.baseline_at
    c = Curriculum([10, 50, 100], baseline, fraction=0.2, window=4)
    bar = 0.2 * 10 * math.log(8) / 30  # the copy baseline at delay 10, recomputed
    assert c.length == 10
    for loss in (bar * 1.1,) * 4:  # above: the stage goes on
        assert not c.observe(loss)
    assert c.length == 10
    # the window slides: with three at 0.97 of the bar it averages 1.0025 bars, then one at 1.05 takes it under
    assert [c.observe(bar * 0.97) for _ in range(3)] == [False, False, False]
    assert c.observe(bar * 1.05)
    assert c.length == 50 and c.state_dict() == {"stage": 1, "recent": []}
    # the next stage is judged against its own, lower baseline (delay 50)
    for loss in (bar,) * 4:
        assert not c.observe(loss)
    low = 0.2 * baseline(50)
    assert [c.observe(low) for _ in range(4)] == [False, False, False, True]
    assert c.length == 100
    assert not any(c.observe(0.0) for _ in range(10))  # the last stage is the task's: it never ends
    assert c.length == 100 and c.state_dict()["recent"] == []


def test_the_state_round_trips_through_json_and_a_bad_stage_is_refused():
    a = Curriculum([4, 8], lambda n: 1.0, fraction=0.5, window=3)
    a.observe(0.4)
    b = Curriculum([4, 8], lambda n: 1.0, fraction=0.5, window=3)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert [a.observe(0.6), a.observe(0.45)] == [b.observe(0.6), b.observe(0.45)] == [False, True]
    with pytest.raises(ValueError, match="stage 5 does not exist"):
        b.load_state_dict({"stage": 5, "recent": []})


@pytest.mark.parametrize("task_class,shape", [(Copy, lambda L: (6, L + 20)), (Adding, lambda L: (6, L, 2))])
def test_training_batches_follow_the_stage_and_evaluation_keeps_the_full_length(task_class, shape):
    task = task_class(length=40, curriculum="10,20")
    assert task.train_batch(0, 6, seed=0)[0].shape == shape(10)
    task.curriculum.stage = 1
    assert task.train_batch(0, 6, seed=0)[0].shape == shape(20)
    task.curriculum.stage = 2
    assert task.train_batch(0, 6, seed=0)[0].shape == shape(40)
    assert task.split("valid", 0)[0].shape[1:] == shape(40)[1:]
    assert task_class(length=40).curriculum is None
    assert task_class(length=40).train_batch(0, 6, seed=0)[0].shape == shape(40)


def test_the_adding_problem_needs_two_steps_in_every_stage():
    with pytest.raises(ValueError, match="--curriculum lengths must be at least 2 for this task"):
        Adding(length=40, curriculum="1,10")
    assert Adding(length=40, curriculum="2,10").train_batch(0, 4, seed=0)[0].shape == (4, 2, 2)


def test_a_config_error_names_the_option():
    with pytest.raises(ValueError, match="--curriculum lengths must be below --length 30"):
        build(TrainConfig(task="copy", length=30, extra={"curriculum": "10,40"}))


def tiny(**kw):
    base = {"task": "adding", "cell": "gru", "length": 12, "hidden_size": 16, "batch_size": 16, "steps": 40,
            "eval_every": 10, "lr": 1e-2, "seed": 3, "extra": {"curriculum": "3,6"}}  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def test_a_run_advances_logs_its_lengths_and_resumes_to_the_same_result(tmp_path, monkeypatch):
    # every window of 4 batches ends a stage (the bar is 10 baselines): lengths 3, 6, then 12
    monkeypatch.setattr(curriculum_module, "FRACTION", 10.0)
    monkeypatch.setattr(curriculum_module, "WINDOW", 4)
    straight = train(tiny(), tmp_path / "straight", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"]: r["length"] for r in rows if r["split"] == "train"} == {10: 12, 20: 12, 30: 12, 40: 12}
    # killed at step 7, after the checkpoint of step 5: one batch into the second stage (steps 5-8 at length 6)
    killed = train(tiny(eval_every=5), tmp_path / "killed", progress=False, stop_at=7)
    assert killed.status == "killed"
    _, model = build(tiny())
    saved = checkpoint.load_model(tmp_path / "killed", model)
    assert saved["step"] == 5 and saved["curriculum"]["stage"] == 1 and len(saved["curriculum"]["recent"]) == 1
    resumed = train(tiny(eval_every=5), tmp_path / "killed", resume=True, progress=False)
    assert resumed.step == straight.step == 40
    a, b = build(tiny())[1], build(tiny())[1]
    checkpoint.load_model(tmp_path / "straight", a)
    checkpoint.load_model(tmp_path / "killed", b)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7, msg=name)
