"""The synthetic tasks produce the right targets, fixed splits, and honest baselines."""

import math

import torch

from gatedrnn.tasks import make_task
from gatedrnn.tasks.adding import adding_batch
from gatedrnn.tasks.copy import BLANK, DELIMITER, copy_batch


def test_adding_targets_are_the_sum_of_the_two_marked_values():
    x, y = adding_batch(256, 50, torch.Generator().manual_seed(0))
    assert x.shape == (256, 50, 2) and y.shape == (256, 1)
    markers = x[..., 1]
    assert torch.all(markers.sum(1) == 2)
    assert torch.all(markers[:, :25].sum(1) == 1) and torch.all(markers[:, 25:].sum(1) == 1)
    for b in range(256):
        first, second = torch.nonzero(markers[b]).flatten().tolist()
        assert math.isclose(y[b, 0].item(), (x[b, first, 0] + x[b, second, 0]).item(), rel_tol=1e-6)
    assert x[..., 0].min() >= 0 and x[..., 0].max() <= 1


def test_adding_baseline_is_what_predicting_one_scores():
    task = make_task("adding", length=20)
    _, y = adding_batch(50_000, 20, torch.Generator().manual_seed(1))
    mse = ((y - 1) ** 2).mean().item()  # standard error ~0.0009
    assert abs(mse - task.baseline) < 0.004 and abs(task.baseline - 1 / 6) < 1e-12


def test_copy_layout_and_baseline():
    T = 30
    x, y = copy_batch(64, T, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (64, T + 20)
    assert torch.all((x[:, :10] >= 1) & (x[:, :10] <= 8))
    assert torch.all(x[:, 10 : T + 9] == BLANK) and torch.all(x[:, T + 9] == DELIMITER)
    assert torch.all(x[:, T + 10 :] == BLANK)
    assert torch.all(y[:, : T + 10] == BLANK) and torch.equal(y[:, -10:], x[:, :10])
    task = make_task("copy", length=T)
    # the memoryless predictor: blank for sure, then uniform over the 8 symbols
    logits = torch.full((64, T + 20, 10), -1e9)
    logits[:, : T + 10, BLANK] = 0
    logits[:, T + 10 :, 1:9] = 0
    assert math.isclose(task.loss(logits, y).item(), task.baseline, rel_tol=1e-5)


def test_batches_are_fixed_by_seed_and_step_and_splits_differ():
    task = make_task("adding", length=10)
    a, b = task.train_batch(5, 8, seed=1), task.train_batch(5, 8, seed=1)
    assert torch.equal(a[0], b[0])
    assert not torch.equal(task.train_batch(6, 8, seed=1)[0], a[0])
    assert not torch.equal(task.split("valid", 1)[0][:8], task.split("test", 1)[0][:8])


def test_solved_bars_follow_the_task_options():
    import pytest

    from gatedrnn.train import TrainConfig, build

    adding = make_task("adding", length=20, solved_mse=1e-3)
    assert adding.solved({"mse": 9e-4}) and not adding.solved({"mse": 2e-3})
    assert make_task("adding", length=20).solved({"mse": 2e-3})  # the default bar, 0.01
    copy = make_task("copy", length=20, solved_loss=0.002)
    assert copy.solved({"accuracy": 0.995, "loss": 0.001})
    assert not copy.solved({"accuracy": 0.995, "loss": 0.003})  # 99% recall, loss above the bar
    assert not copy.solved({"accuracy": 0.98, "loss": 0.001})
    assert make_task("copy", length=20).solved({"accuracy": 0.99, "loss": 0.05})
    task, _ = build(TrainConfig(task="adding", length=20, extra={"solved_mse": 1e-3}))
    assert task.solved_mse == 1e-3  # read from the config's task options
    for bad in (0.0, 0.2, -1.0):
        with pytest.raises(ValueError, match="--solved-mse must be in"):
            make_task("adding", length=20, solved_mse=bad)
    with pytest.raises(ValueError, match="--solved-loss must be in"):
        make_task("copy", length=20, solved_loss=1.0)
