"""The parity task: labels recomputed from the bits, lengths in their ranges, batches fixed by
seed, and a run through the command that trains, evaluates and predicts."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gatedrnn.cli import main
from gatedrnn.tasks import make_task
from gatedrnn.tasks.parity import ONE, PAD, QUERY, ZERO, Parity, parity_batch, sequence_lengths


def _bits(row: torch.Tensor) -> list[int]:
    """The bits of one padded sequence, read up to its query token."""
    tokens = row.tolist()
    end = tokens.index(QUERY)
    assert all(t in (ZERO, ONE) for t in tokens[:end]) and all(t == PAD for t in tokens[end + 1 :])
    return [1 if t == ONE else 0 for t in tokens[:end]]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=12), st.integers(0, 2**31))
def test_labels_are_the_parity_of_the_ones(lengths, seed):
    inputs, targets = parity_batch(torch.tensor(lengths), torch.Generator().manual_seed(seed))
    assert inputs.shape == (len(lengths), max(lengths) + 1) and targets.shape == (len(lengths),)
    for row, n, label in zip(inputs, lengths, targets.tolist()):
        bits = _bits(row)
        assert len(bits) == n
        assert label == sum(bits) % 2  # recomputed here from the tokens
    assert torch.equal(sequence_lengths(inputs), torch.tensor(lengths) + 1)


def test_training_lengths_are_uniform_in_their_range_and_batches_fixed_by_seed_and_step():
    task = Parity(length=12, min_length=3, test_max=30)
    seen = []
    for step in range(1, 60):
        inputs, targets = task.train_batch(step, 32, seed=4)
        seen += (sequence_lengths(inputs) - 1).tolist()
        again = task.train_batch(step, 32, seed=4)
        assert torch.equal(inputs, again[0]) and torch.equal(targets, again[1])
    assert min(seen) == 3 and max(seen) == 12 and set(seen) == set(range(3, 13))  # every length drawn
    counts = torch.bincount(torch.tensor(seen))[3:].float()
    assert counts.min() > 0.6 * counts.mean()  # uniform: 59 x 32 draws over 10 lengths, ~189 each
    assert not torch.equal(task.train_batch(1, 32, seed=4)[0][:4, :5], task.train_batch(1, 32, seed=5)[0][:4, :5])


def test_splits_hold_every_length_equally_and_are_fixed_by_seed():
    task = Parity(length=10, min_length=2, test_max=25, per_length=4)
    inputs, targets = task.split("test", seed=0)
    lengths = sequence_lengths(inputs) - 1
    assert torch.equal(torch.bincount(lengths)[2:], torch.full((24,), 4))  # 2..25, four each
    assert inputs.shape == (24 * 4, 26)
    valid, _ = task.split("valid", seed=0)
    assert torch.equal(torch.bincount(sequence_lengths(valid) - 1)[2:], torch.full((24,), 2))
    assert torch.equal(task.split("test", seed=0)[0], inputs)
    assert not torch.equal(task.split("test", seed=1)[0], inputs)
    assert all(label == sum(_bits(row)) % 2 for row, label in zip(inputs, targets.tolist()))


class _Counter(torch.nn.Module):
    """A model that counts the ones exactly: what a solved task looks like."""

    def forward(self, x, lengths=None):
        odd = ((x == ONE).sum(1) % 2).float()  # (B,)
        return torch.stack([1 - odd, odd], -1) * 10


class _Even(torch.nn.Module):
    """A model that always answers "even"."""

    def forward(self, x, lengths=None):
        return torch.tensor([1.0, 0.0]).expand(len(x), 2)


def test_evaluation_scores_the_test_lengths_and_their_buckets():
    task = Parity(length=40, test_max=150, per_length=4)
    perfect = task.evaluate(_Counter(), "test", seed=0)
    assert task.buckets() == [(40, 63), (64, 127), (128, 150)]
    assert set(perfect) == {"accuracy", "loss", "accuracy_train_lengths", "accuracy_T40-63", "accuracy_T64-127",
                            "accuracy_T128-150"}  # fmt: skip
    assert all(perfect[k] == 1.0 for k in perfect if k.startswith("accuracy")) and task.solved(perfect)
    inputs, targets = task.split("test", seed=0)
    bits = sequence_lengths(inputs) - 1
    even = task.evaluate(_Even(), "test", seed=0)
    for key, (a, b) in [("accuracy", (40, 150)), ("accuracy_train_lengths", (1, 40)), ("accuracy_T64-127", (64, 127))]:
        picked = (bits >= a) & (bits <= b)
        assert even[key] == pytest.approx((targets[picked] == 0).float().mean().item())  # recomputed here
    assert 0.4 < even["accuracy"] < 0.6 and not task.solved(even)


def test_bad_options_are_errors_naming_them():
    with pytest.raises(ValueError, match="--min-length"):
        Parity(length=10, min_length=11)
    with pytest.raises(ValueError, match="--test-max"):
        Parity(length=10, test_max=5)
    with pytest.raises(ValueError, match="--per-length"):
        Parity(per_length=1)
    assert make_task("parity", length=10).length == 10


def test_introduction_names_the_lengths_metric_and_baseline():
    text = " ".join(Parity(length=40).introduction())
    assert "T = 40" in text and "40 to 256" in text and "0.50, the baseline" in text and "accuracy" in text


def test_a_tiny_run_through_the_command_trains_evaluates_and_predicts(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--task", "parity", "--cell", "gru", "--length", "6", "--test-max", "12", "--per-length", "2",
            "--hidden-size", "8", "--steps", "20", "--eval-every", "10", "--batch-size", "16", "--no-report",
            "--out", str(run)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "gru on parity" in out and "accuracy_T6-12" in out
    config = json.loads((run / "config.json").read_text())
    assert config["extra"] == {"test_max": 12, "per_length": 2}

    assert main(["evaluate", str(run), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert 0 <= evaluated["accuracy"] <= 1 and "accuracy_train_lengths" in evaluated

    bits = tmp_path / "bits.txt"
    bits.write_text("1011\n\n0 0 0 1 1\n")
    written = tmp_path / "parity.json"
    assert main(["predict", str(run), "--input", str(bits), "--out", str(written)]) == 0
    rows = json.loads(written.read_text())["rows"]
    assert [(r["line"], r["bits"], r["length"]) for r in rows] == [(1, "1011", 4), (3, "00011", 5)]
    assert all(r["odd"] in (0, 1) and r["right"] == (r["odd"] == r["bits"].count("1") % 2) for r in rows)

    bad = tmp_path / "bad.txt"
    bad.write_text("10x1\n")
    assert main(["predict", str(run), "--input", str(bad), "--out", str(tmp_path / "p.json")]) == 2
    assert "line 1: holds 'x'" in capsys.readouterr().err


def test_the_xlstm_cells_train_on_it_with_the_heads_asked_for():
    pytest.importorskip("gatedrnn.xlstm.slstm", reason="the sLSTM layer is not in this checkout yet")
    from gatedrnn.config import TrainConfig

    task = Parity(length=6, test_max=8, per_length=2)
    for cell in ("slstm", "mlstm"):
        config = TrainConfig(task="parity", cell=cell, hidden_size=8, extra={"num_heads": 2})
        model = task.make_model(config)
        assert model.rnn.num_heads == 2
        inputs, targets = task.train_batch(1, 4, seed=0)
        loss = task.loss(task.forward(model, inputs), targets)
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None for p in model.rnn.parameters())
    with pytest.raises(ValueError, match="--slstm-at places sLSTM blocks in the xlstm cell"):
        task.make_model(TrainConfig(task="parity", cell="lstm", extra={"slstm_at": "1"}))
