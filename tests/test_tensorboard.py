"""``gatedrnn train --tensorboard``: the events hold metrics.jsonl's numbers under the expected
tags and a histogram per gate, read back with TensorBoard's own EventAccumulator; a resumed
run shows each step once; without the package the flag is a one-line error naming the extra."""

import json
import sys

import pytest

from gatedrnn.cli import main
from gatedrnn.train import TrainConfig, train

TINY = ["--task", "adding", "--cell", "lstm", "--length", "8", "--hidden-size", "8", "--batch-size", "8",
        "--steps", "20", "--eval-every", "10", "--no-report"]  # fmt: skip


def events(run):
    """(scalars {tag: [(step, value)]}, histogram tags), as the TensorBoard app reads them."""
    pytest.importorskip("tensorboard", reason="tensorboard is absent: pip install 'gatedrnn[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0}).Reload()
    tags = accumulator.Tags()
    scalars = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags["scalars"]}
    return scalars, set(tags["histograms"])


def logged(run, split, key):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in rows if r["split"] == split]


def test_events_hold_the_logged_scalars_and_a_histogram_per_gate(tmp_path, capsys):
    pytest.importorskip("tensorboard", reason="tensorboard is absent: pip install 'gatedrnn[tensorboard]'")
    run = tmp_path / "run"
    assert main(["train", *TINY, "--layers", "2", "--tensorboard", "--out", str(run)]) == 0
    scalars, histograms = events(run)
    assert set(scalars) == {"train/loss", "train/grad_norm", "train/lr", "valid/mse"}
    for tag, (split, key) in {"train/loss": ("train", "loss"), "train/grad_norm": ("train", "grad_norm"),
                              "train/lr": ("train", "lr"), "valid/mse": ("valid", "mse")}.items():  # fmt: skip
        expected = logged(run, split, key)
        assert [s for s, _ in scalars[tag]] == [s for s, _ in expected] == [10, 20], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in expected], rel=1e-6), tag
    gates = ("input", "forget", "candidate", "output", "cell", "hidden")
    assert histograms == {f"gates/{gate}/layer{k}" for gate in gates for k in (0, 1)}


def test_a_resumed_run_shows_each_step_once(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is absent: pip install 'gatedrnn[tensorboard]'")
    config = TrainConfig(task="adding", cell="gru", length=8, hidden_size=8, batch_size=8, steps=40, eval_every=20)
    killed = train(config, tmp_path, progress=False, stop_at=35, tensorboard=True)  # logged step 30, saved step 20
    assert killed.status == "killed"
    assert [s for s, _ in events(tmp_path)[0]["train/loss"]] == [10, 20, 30]
    train(config, tmp_path, resume=True, progress=False, tensorboard=True)
    scalars, _ = events(tmp_path)
    assert scalars["train/loss"] == [(s, pytest.approx(v, rel=1e-6)) for s, v in logged(tmp_path, "train", "loss")]
    assert [s for s, _ in scalars["train/loss"]] == [10, 20, 30, 40]


def test_without_tensorboard_the_flag_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now fails, as when absent
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    run = tmp_path / "run"
    assert main(["train", *TINY, "--tensorboard", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err == "gatedrnn train: error: --tensorboard needs the tensorboard package: " \
                  "pip install 'gatedrnn[tensorboard]'\n"  # fmt: skip
    assert not run.exists()
