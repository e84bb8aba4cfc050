"""Training under torchrun (gatedrnn/distributed.py), on localhost with gloo: 2 processes equal
one process on the same global batch; a rank that raises ends the job with its error; a
killed 2-process run resumed on two "nodes" (a c10d rendezvous on 127.0.0.1) equals an
uninterrupted one; where the ranks' shards hold different numbers of loss terms their losses
are weighted so that DDP's average is still the whole batch's gradient; what cannot work
under torchrun is a one-line error."""

import importlib.util
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gatedrnn import checkpoint, distributed
from gatedrnn.cli import main
from gatedrnn.train import TrainConfig, build, load_config

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # seconds: a job that hangs fails its test instead of stalling the suite
TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def _env(**extra) -> dict:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def torchrun(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *map(str, args)], capture_output=True,
                          text=True, timeout=TIMEOUT, env=_env(**env), cwd=ROOT)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "text.txt"
    rng = random.Random(0)
    path.write_text("".join(rng.choice("abcdefgh \n") for _ in range(4000)))  # ~50 batches an epoch: none starts one
    return path


def train_args(corpus, out, *more):
    """A stateful text task (the state each rank carries is gathered into the checkpoint)."""
    return ["train", "--task", "text", "--data", corpus, "--cell", "lstm", "--hidden-size", 16, "--bptt", 8,
            "--batch-size", 8, "--steps", 20, "--eval-every", 10, "--lr", 1e-2, "--seed", 3, "--no-report",
            "--out", out, *more]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus):
    """The same run in one process and, under torchrun, in two; (folder, the job)."""
    root = tmp_path_factory.mktemp("ddp")
    board = ["--tensorboard"] if TENSORBOARD else []
    assert main([str(a) for a in train_args(corpus, root / "one")]) == 0
    job = torchrun("--standalone", "--nproc_per_node", 2, "-m", "gatedrnn", *train_args(corpus, root / "two", *board))
    assert job.returncode == 0, job.stdout + job.stderr
    return root, job


@pytest.fixture(scope="module")
def killed(tmp_path_factory, corpus):
    """A 2-process run whose rank 1 raises in step 14, after the checkpoint of step 10."""
    out = tmp_path_factory.mktemp("killed") / "run"
    started = time.monotonic()
    job = torchrun("--standalone", "--nproc_per_node", 2, ROOT / "tests" / "ddp_failing_rank.py",
                   *train_args(corpus, out), FAIL_RANK="1", FAIL_AFTER="13")  # fmt: skip
    return out, job, time.monotonic() - started


def rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(run):
    _, model = build(load_config(run), run)
    checkpoint.load_model(run, model)
    return model.state_dict()


def assert_same_run(ours, reference, rel):
    a, b = rows(ours), rows(reference)
    assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
    for x, y in zip(a, b):
        for key in ("loss", "grad_norm", "lr", "bpc"):
            if key in y:
                assert x[key] == pytest.approx(y[key], rel=rel), (x["step"], x["split"], key)
    ours_weights = weights(ours)
    for name, value in weights(reference).items():
        torch.testing.assert_close(ours_weights[name], value, rtol=rel, atol=rel, msg=name)
    test = [json.loads((run / "result.json").read_text())["test"]["loss"] for run in (ours, reference)]
    assert test[0] == pytest.approx(test[1], rel=rel)


def test_two_processes_equal_one_on_the_same_global_batch(runs):
    root, job = runs
    assert_same_run(root / "two", root / "one", rel=1e-5)
    assert job.stdout.count("lstm on text: step 20, test") == 1  # rank 0 alone prints
    assert not (root / "two" / "run.lock").exists()
    if TENSORBOARD:  # rank 0 alone writes events
        assert len(list((root / "two" / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_a_rank_that_raises_ends_the_job_with_its_error(killed):
    out, job, seconds = killed
    assert job.returncode != 0 and seconds < TIMEOUT
    summary = job.stderr[job.stderr.index("Root Cause") :]  # torchrun's summary names the rank that failed first
    assert "rank      : 1" in summary and "RuntimeError: rank 1 fails on purpose after 13 steps" in summary
    assert checkpoint.saved_step(out) == 10 and not (out / "result.json").exists()


def test_a_killed_run_resumed_on_two_nodes_equals_an_uninterrupted_one(runs, killed, corpus, tmp_path):
    root, _ = runs
    run = tmp_path / "resumed"
    shutil.copytree(killed[0], run)
    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "resume",
                               "-m", "gatedrnn", "train", "--out", str(run), "--resume", "--no-report",
                               "--data", str(corpus)],  # data outside the data directory: read when given
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=ROOT)
             for _ in range(2)]  # fmt: skip
    try:
        outputs = [node.communicate(timeout=TIMEOUT)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(outputs)
    assert_same_run(run, root / "two", rel=1e-6)


def _shard_gradients(rank, port, data):
    """One rank of two: the DDP gradient of its shard's weighted loss against the whole batch's."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))  # as torchrun sets them  # fmt: skip
    config = TrainConfig(task="music", data=str(data), cell="gru", hidden_size=8, batch_size=8, seed=rank)
    with distributed.session(config, timeout_minutes=1.0) as world:
        task, model = build(config)  # rank 1's weights differ: DDP starts it from rank 0's
        compute = world.wrap(model, lambda m, x, y: task.loss(task.forward(m, x), y))
        inputs, targets = task.train_batch(0, 8, seed=0)
        x, y = world.shard(inputs), world.shard(targets)
        loss, batch_loss = world.mean_loss(compute(x, y), task.loss_weight(y))
        loss.backward()
        full = task.loss(task.forward(model, inputs), targets)
        expected = torch.autograd.grad(full, list(model.parameters()))
        torch.testing.assert_close(batch_loss, full.detach())
        for (name, p), g in zip(model.named_parameters(), expected):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6, msg=name)


def test_shards_with_unequal_loss_terms_are_weighted_to_the_whole_batch_gradient(tmp_path):
    import numpy as np
    from test_music import write_mat

    rng = np.random.default_rng(0)
    rolls = [(rng.random((n, 88)) < 0.1).astype(np.uint8) for n in (40, 35, 30, 38, 6, 5, 9, 4)]
    data = write_mat(tmp_path / "m.mat", traindata=rolls, validdata=rolls[:2], testdata=rolls[:2])
    task, model = build(TrainConfig(task="music", data=str(data), cell="gru", hidden_size=8, batch_size=8))
    inputs, targets = task.train_batch(0, 8, seed=0)
    halves = [(tuple(v[i : i + 4] for v in inputs), tuple(v[i : i + 4] for v in targets)) for i in (0, 4)]
    plain = sum(task.loss(task.forward(model, x), y) for x, y in halves) / 2
    full = task.loss(task.forward(model, inputs), targets)
    assert abs(plain - full) > 1e-3  # the halves' frames differ: a plain average of their means is wrong
    context = torch.multiprocessing.start_processes(_shard_gradients, args=(free_port(), data), nprocs=2,
                                                    join=False, start_method="spawn")  # fmt: skip
    deadline = time.monotonic() + TIMEOUT
    while not context.join(timeout=1):  # raises with the rank's traceback where one failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two processes hung")


@pytest.mark.parametrize("args,message", [
    (["--batch-size", "15"], "--batch-size 15 is the global batch and must divide among the 2 processes"),
    (["--device", "cuda:0"], "--device cuda:0 names one GPU, but 2 processes train; give --device cuda"),
    (["--dist-timeout", "0"], "--dist-timeout must be a positive number of minutes, got 0"),
])  # fmt: skip
def test_what_cannot_work_under_torchrun_is_a_one_line_error(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets them: checked before any process group opens
    monkeypatch.setenv("RANK", "0")
    run = tmp_path / "run"
    assert main(["train", "--task", "adding", "--length", "8", "--steps", "2", "--out", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not run.exists()
