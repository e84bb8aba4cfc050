"""The MQAR task: each query's target looked up from the pairs shown, the layout, batches fixed by
seed, the baseline, and a run through the command that trains, evaluates and predicts."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gatedrnn.cli import main
from gatedrnn.tasks.mqar import BLANK, IGNORE, MQAR, features, mqar_batch


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(0, 10), st.sampled_from([20, 32, 64]), st.integers(0, 2**31))
def test_each_query_asks_a_key_shown_once_and_its_target_is_that_keys_value(D, spare, vocab, seed):
    D = min(D, vocab // 2 - 1)
    T = 3 * D + spare
    inputs, targets = mqar_batch(6, T, D, vocab, torch.Generator().manual_seed(seed))
    assert inputs.shape == targets.shape == (6, T)
    half = vocab // 2
    for x, y in zip(inputs.tolist(), targets.tolist()):
        keys, values = x[0 : 2 * D : 2], x[1 : 2 * D : 2]
        assert all(0 < k < half for k in keys) and all(half <= v < vocab for v in values)
        assert len(set(keys)) == D and len(set(values)) == D  # drawn without replacement
        pairs = dict(zip(keys, values))
        assert all(t == IGNORE for t in y[: 2 * D])
        asked = [(token, target) for token, target in zip(x[2 * D :], y[2 * D :]) if target != IGNORE]
        assert sorted(k for k, _ in asked) == sorted(keys)  # every key asked once
        assert all(target == pairs[key] for key, target in asked)  # looked up here from the pairs
        assert all(token == BLANK for token, target in zip(x[2 * D :], y[2 * D :]) if target == IGNORE)


def test_batches_are_fixed_by_seed_and_step_and_splits_differ():
    task = MQAR(length=40, kv_pairs=8, vocab=64, test_size=50)
    a = task.train_batch(3, 8, seed=1)
    assert torch.equal(a[0], task.train_batch(3, 8, seed=1)[0]) and torch.equal(a[1], task.train_batch(3, 8, seed=1)[1])
    assert not torch.equal(a[0], task.train_batch(4, 8, seed=1)[0])
    assert not torch.equal(a[0], task.train_batch(3, 8, seed=2)[0])
    test, valid = task.split("test", 0), task.split("valid", 0)
    assert test[0].shape == (50, 40, 128) and valid[0].shape == (25, 40, 128)
    assert torch.equal(test[0], task.split("test", 0)[0]) and not torch.equal(test[0][:25], valid[0])


def test_the_query_positions_spread_over_the_query_segment():
    _, targets = mqar_batch(400, 30, 4, 32, torch.Generator().manual_seed(0))
    steps = torch.nonzero(targets != IGNORE)[:, 1]
    counts = torch.bincount(steps, minlength=30)[8:].float()  # 22 query slots, 1,600 queries
    assert counts.min() > 0.5 * counts.mean() and counts.max() < 1.6 * counts.mean()


def test_each_step_shows_its_token_and_the_one_before():
    tokens, _ = mqar_batch(5, 20, 4, 32, torch.Generator().manual_seed(3))
    x = features(tokens, 32)
    assert x.shape == (5, 20, 64) and torch.all(x.sum(-1) == 2)
    assert torch.equal(x[..., :32].argmax(-1), tokens)
    assert torch.equal(x[:, 1:, 32:].argmax(-1), tokens[:, :-1]) and torch.all(x[:, 0, 32 + BLANK] == 1)
    task = MQAR(length=20, kv_pairs=4, vocab=32)
    assert torch.equal(task.tokens(task.inputs(tokens)), tokens)
    plain = MQAR(length=20, kv_pairs=4, vocab=32, no_shift=True)
    assert torch.equal(plain.inputs(tokens), tokens) and plain.vocab_size == 32 and task.vocab_size is None


class _Lookup(torch.nn.Module):
    """A model that recalls perfectly: the logits of the value of each key shown earlier."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, x, **kwargs):
        x = x[..., : self.vocab].argmax(-1)  # the tokens of the one-hot features
        out = torch.zeros(*x.shape, self.vocab)
        for b, row in enumerate(x.tolist()):
            pairs = {}
            for t, token in enumerate(row):
                if 0 < token < self.vocab // 2 and token in pairs:
                    out[b, t, pairs[token]] = 10.0
                elif t + 1 < len(row) and 0 < token < self.vocab // 2 and token not in pairs:
                    pairs[token] = row[t + 1]
        return out


def test_accuracy_counts_the_queries_and_the_baseline_is_a_guess_among_the_values_shown():
    task = MQAR(length=24, kv_pairs=4, vocab=32, test_size=200)
    perfect = task.evaluate(_Lookup(32), "test", seed=0)
    assert perfect["accuracy"] == 1.0 and task.solved(perfect)
    inputs, targets = task.split("test", seed=0)
    generator = torch.Generator().manual_seed(1)
    guesses = torch.zeros(*targets.shape, 32)  # a guess among the values shown, per query
    for b in range(len(inputs)):
        values = task.tokens(inputs)[b, 1:8:2]
        guesses[b, :, values[torch.randint(0, 4, (1,), generator=generator)]] = 1.0
    guessed = task.metrics(guesses, targets)["accuracy"]
    assert abs(guessed - task.baseline) < 0.05 and task.baseline == 0.25  # 800 queries: sd ~0.015
    asked = targets != IGNORE
    assert guessed == pytest.approx((guesses.argmax(-1) == targets)[asked].float().mean().item())


def test_bad_options_are_errors_naming_them():
    with pytest.raises(ValueError, match="--length must be at least 3 x --kv-pairs = 48"):
        MQAR(length=40, kv_pairs=16)
    with pytest.raises(ValueError, match="--vocab"):
        MQAR(length=64, kv_pairs=16, vocab=20)
    with pytest.raises(ValueError, match="--kv-pairs"):
        MQAR(kv_pairs=0)


def test_introduction_names_the_metric_and_baseline():
    text = " ".join(MQAR(length=64, kv_pairs=16).introduction())
    assert "T = 64" in text and "1/16 = 0.0625, the baseline" in text and "accuracy" in text


def test_a_tiny_run_through_the_command_trains_evaluates_and_predicts(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--task", "mqar", "--cell", "lstm", "--length", "12", "--kv-pairs", "2", "--vocab", "16",
            "--test-size", "20", "--hidden-size", "8", "--steps", "20", "--eval-every", "10",
            "--batch-size", "8", "--no-report", "--out", str(run)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    assert "lstm on mqar" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1

    queries = tmp_path / "queries.txt"
    queries.write_text("3 9 5 12 0 5 0 3\n")  # pairs (3, 9) and (5, 12), then 5 and 3 asked
    written = tmp_path / "recall.json"
    assert main(["predict", str(run), "--input", str(queries), "--out", str(written)]) == 0
    rows = json.loads(written.read_text())["rows"]
    assert [(r["step"], r["key"]) for r in rows] == [(6, 5), (8, 3)]
    assert all(8 <= r["value"] < 16 and r["right"] == (r["value"] == {5: 12, 3: 9}[r["key"]]) for r in rows)
    bad = tmp_path / "bad.txt"
    bad.write_text("3 99\n")
    assert main(["predict", str(run), "--input", str(bad), "--out", str(tmp_path / "p.json")]) == 2
    assert "token ids must be in [0, 16)" in capsys.readouterr().err
