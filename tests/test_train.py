"""The training engine: it learns, resumes to the same result, survives a kill mid-write,
and stops cleanly on a NaN."""

import json
import os

import pytest
import torch

from gatedrnn import checkpoint
from gatedrnn.train import TrainConfig, build, train


def tiny(**kw):
    base = {"task": "adding", "cell": "gru", "length": 8, "hidden_size": 16, "batch_size": 16, "steps": 40,
            "eval_every": 10, "lr": 1e-2, "seed": 3}  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def test_overfits_one_tiny_batch():
    task, model = build(tiny())
    x, y = task.train_batch(0, 8, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(300):
        loss = task.loss(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3 < first


@pytest.mark.parametrize("cell,length", [("lstm", 8), ("gru", 8), ("rnn", 4)])
def test_training_beats_the_baseline_and_writes_a_run(tmp_path, cell, length):
    result = train(tiny(cell=cell, length=length, steps=300, eval_every=50), tmp_path, progress=False)
    assert result.test["mse"] < 0.2 * 1 / 6
    for name in ("config.json", "metrics.jsonl", "checkpoint.safetensors", "result.json"):
        assert (tmp_path / name).exists(), name
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "valid"] == list(range(50, 301, 50))


def test_resume_equals_an_uninterrupted_run(tmp_path):
    config = tiny(cell="lstm", steps=40)
    straight = train(config, tmp_path / "straight", progress=False)
    killed = train(tiny(cell="lstm", steps=40), tmp_path / "killed", progress=False, stop_at=25)
    assert killed.status == "killed"
    resumed = train(tiny(cell="lstm", steps=40), tmp_path / "killed", resume=True, progress=False)
    assert resumed.step == straight.step == 40
    a, b = build(config)[1], build(config)[1]
    checkpoint.load_model(tmp_path / "straight", a)
    checkpoint.load_model(tmp_path / "killed", b)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7, msg=name)
    assert resumed.test["mse"] == pytest.approx(straight.test["mse"], rel=1e-5)
    def logged(run):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["split"], r["loss"] if "loss" in r else r["mse"]) for r in rows]

    resumed_log, straight_log = logged("killed"), logged("straight")
    assert [r[:2] for r in resumed_log] == [r[:2] for r in straight_log]  # no step logged twice or lost
    for a, b in zip(resumed_log, straight_log):
        assert a[2] == pytest.approx(b[2], rel=1e-5)


def test_a_checkpoint_write_killed_midway_leaves_the_old_one(tmp_path, monkeypatch):
    config = tiny(steps=10)
    train(config, tmp_path, progress=False)
    before = (tmp_path / "checkpoint.safetensors").read_bytes()

    def dies(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed in the middle of writing

    monkeypatch.setattr(checkpoint, "save_file", dies)
    _, model = build(config)
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, model, opt, None, {"step": 99})
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert checkpoint.load_model(tmp_path, model)["step"] == 10


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny(steps=30)
    from gatedrnn.tasks.adding import Adding

    real = Adding.train_batch

    def poisoned(self, step, batch_size, seed):
        x, y = real(self, step, batch_size, seed)
        return x, (y * float("nan") if step >= 15 else y)

    monkeypatch.setattr(Adding, "train_batch", poisoned)
    result = train(config, tmp_path, progress=False)
    assert result.status == "nan" and "step 16" in result.message and "step 10" in result.message
    _, model = build(config)
    assert checkpoint.load_model(tmp_path, model)["step"] == 10
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_corrupted_checkpoints_give_clear_errors(tmp_path):
    config = tiny(steps=10)
    train(config, tmp_path, progress=False)
    _, model = build(config)
    path = tmp_path / "checkpoint.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="unreadable"):
        checkpoint.load_model(tmp_path, model)
    path.unlink()
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.load_model(tmp_path, model)
    train(config, tmp_path / "other", progress=False)
    _, bigger = build(tiny(hidden_size=32))
    with pytest.raises(checkpoint.CheckpointError, match="does not fit the model"):
        checkpoint.load_model(tmp_path / "other", bigger)


def test_config_validation_names_the_option():
    with pytest.raises(ValueError, match="--hidden-size must be a positive integer, got 0"):
        tiny(hidden_size=0).validate()
    with pytest.raises(ValueError, match="--task must be one of"):
        tiny(task="chess").validate()


def test_written_files_have_a_normal_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        checkpoint.write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(umask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_wall_clock_budget_stops_the_run(tmp_path):
    result = train(tiny(steps=100_000, max_minutes=0.02), tmp_path, progress=False)
    assert result.status == "time-limit" and 0 < result.step < 100_000
    assert checkpoint.load_model(tmp_path, build(tiny())[1])["step"] == result.step


def test_nan_before_the_first_checkpoint_claims_none(tmp_path, monkeypatch):
    from gatedrnn.tasks.adding import Adding

    real = Adding.train_batch
    monkeypatch.setattr(Adding, "train_batch",
                        lambda self, step, b, seed: (lambda x, y: (x, y * float("nan")))(*real(self, step, b, seed)))
    result = train(tiny(steps=30), tmp_path, progress=False)
    assert result.status == "nan" and "at step 1;" in result.message
    assert "before any checkpoint was written, so none is kept" in result.message
    assert "last good checkpoint" not in result.message
    assert not (tmp_path / "checkpoint.safetensors").exists()


def _weights(run_dir, config):
    _, model = build(config)
    checkpoint.load_model(run_dir, model)
    return model.state_dict()


def test_early_stopping_killed_after_the_best_evaluation_resumes_to_the_same_model(tmp_path):
    config = tiny(length=8, hidden_size=8, batch_size=8, steps=200, eval_every=5, lr=5e-2, patience=2)
    best = {}

    def keep_best(step, metrics, model):
        if not best or metrics["mse"] < best["mse"]:
            best.update(mse=metrics["mse"], step=step, weights={k: v.clone() for k, v in model.state_dict().items()})

    straight = train(config, tmp_path / "straight", progress=False, on_eval=keep_best)
    assert straight.status == "early-stopped" and straight.step > best["step"] + config.eval_every
    killed_at = best["step"] + config.eval_every  # a checkpoint after the best one, before the stop
    assert train(config, tmp_path / "killed", progress=False, stop_at=killed_at).status == "killed"
    resumed = train(config, tmp_path / "killed", resume=True, progress=False)
    assert resumed.status == "early-stopped" and resumed.step == straight.step
    assert resumed.test["mse"] == pytest.approx(straight.test["mse"], rel=1e-6)
    for run in ("straight", "killed"):
        final = _weights(tmp_path / run, config)
        for name, value in best["weights"].items():
            torch.testing.assert_close(final[name], value, rtol=1e-6, atol=1e-7, msg=f"{run}: {name}")


def test_patience_without_an_early_stop_still_ends_on_the_best_weights(tmp_path):
    config = tiny(length=8, hidden_size=8, batch_size=8, steps=130, eval_every=5, lr=3e-2, patience=2)
    seen = []
    result = train(config, tmp_path, progress=False,
                   on_eval=lambda step, m, model: seen.append((m["mse"], step, copy_weights(model))))
    assert result.status == "done" and result.step == 130
    mse, step, weights = min(seen, key=lambda s: s[0])
    assert step < 130  # the last evaluation is not the best: the run must go back to it
    final = _weights(tmp_path, config)
    for name, value in weights.items():
        torch.testing.assert_close(final[name], value, msg=name)
    task, model = build(config)
    model.load_state_dict(weights)
    assert result.test["mse"] == pytest.approx(task.evaluate(model, "test", config.seed)["mse"], rel=1e-6)


def copy_weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_flipped_checkpoint_bytes_are_refused(tmp_path):
    config = tiny(steps=10)
    train(config, tmp_path, progress=False)
    path = tmp_path / "checkpoint.safetensors"
    good = path.read_bytes()
    start = 8 + int.from_bytes(good[:8], "little")  # the tensor data follow the 8-byte length and the header
    positions = [start + k * (len(good) - start - 1) // 12 for k in range(13)]  # across the tensor data
    positions += [10, start // 3, start // 2, start - 20]  # and inside the header and metadata
    _, model = build(config)
    for position in positions:
        bad = bytearray(good)
        bad[position] ^= 0x10
        path.write_bytes(bytes(bad))
        with pytest.raises(checkpoint.CheckpointError, match=f"checkpoint {path} is corrupted|unreadable|not a gatedrnn"):
            checkpoint.load_model(tmp_path, model)
        optimizer = torch.optim.Adam(model.parameters())
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.load_training_state(tmp_path, model, optimizer, None)
    bad = bytearray(good)
    bad[positions[5]] ^= 0x10
    path.write_bytes(bytes(bad))
    with pytest.raises(checkpoint.CheckpointError, match=r"is corrupted \(tensor '.*' does not match its checksum\)"):
        checkpoint.load_model(tmp_path, model)


def test_a_checkpoint_without_checksums_still_loads(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    config = tiny(steps=10)
    train(config, tmp_path, progress=False)
    path = tmp_path / "checkpoint.safetensors"
    with safe_open(path, framework="pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k not in ("checksums", "manifest")}
    tensors = load_file(path)
    metadata["format"] = "gatedrnn-checkpoint-1"  # as written before checksums existed
    save_file(tensors, path, metadata=metadata)
    _, model = build(config)
    assert checkpoint.load_model(tmp_path, model)["step"] == 10
    for name, value in model.state_dict().items():
        assert torch.equal(value, tensors[f"model.{name}"]), name


def test_training_into_a_locked_folder_is_refused(tmp_path):
    from gatedrnn import lock

    with lock.held(tmp_path):
        assert str(os.getpid()) in (tmp_path / "run.lock").read_text()
        with pytest.raises(lock.RunFolderBusy, match=f"in use by another gatedrnn run \\(PID {os.getpid()} on"):
            train(tiny(steps=10), tmp_path, progress=False)
    assert not (tmp_path / "run.lock").exists() and not (tmp_path / "checkpoint.safetensors").exists()
    assert train(tiny(steps=10), tmp_path, progress=False).step == 10


def test_training_flushes_subnormals_and_restores_the_mode_after(tmp_path, monkeypatch):
    """A run flushes subnormal floats (a vanishing gradient is many times slower through them);
    after it, the process computes with subnormals again."""
    import gatedrnn.train as engine

    def survives():
        return (torch.tensor([1e-39]) * 0.5).item() != 0.0

    seen = []
    real = engine._batch_loss
    monkeypatch.setattr(engine, "_batch_loss", lambda *a: (seen.append(survives()), real(*a))[1])
    torch.set_flush_denormal(False)
    train(tiny(steps=2, eval_every=2), tmp_path / "run", progress=False)
    assert seen == [False, False]
    assert survives()
