"""Stopping ``gatedrnn train`` with SIGTERM (a scheduler, ``docker stop``, a spot-instance
reclaim) or SIGINT (Ctrl-C): the step under way finishes and is saved, the run lock is
released, one line names the step and the command that resumes, the exit code is 128 + the
signal's number, and the resumed run ends bit for bit where an uninterrupted one ends. A second
signal stops at once. Under torchrun a signal to the launcher or to one rank stops every rank
after the same step."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from gatedrnn import checkpoint
from gatedrnn.cli import main
from gatedrnn.train import Stopped, TrainConfig, build, load_config, train

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # seconds: a run that never stops fails its test instead of stalling the suite
STEPS = 1500
ARGS = ["--task", "adding", "--cell", "gru", "--length", "6", "--hidden-size", "8", "--batch-size", "8",
        "--eval-every", "50", "--lr", "1e-2", "--seed", "1", "--threads", "1", "--no-report"]  # fmt: skip

# `python -m gatedrnn` whose evaluation of step 100 writes OUT/evaluating and then takes a minute.
SLOW_EVALUATION = textwrap.dedent("""\
    import runpy, sys, time
    from pathlib import Path
    from gatedrnn import train

    real, out = train.evaluate, Path(sys.argv[sys.argv.index("--out") + 1])

    def slow(task, model, split, seed, device="cpu"):
        if split == "valid" and (out / "checkpoint.safetensors").exists():
            (out / "evaluating").touch()
            time.sleep(60)
        return real(task, model, split, seed, device)

    train.evaluate = slow
    runpy.run_module("gatedrnn", run_name="__main__", alter_sys=True)
""")


def _env() -> dict:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def start(*command) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *map(str, command)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(), cwd=ROOT)  # fmt: skip


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before {path.name} appeared: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {path.name} in {TIMEOUT} s")
        time.sleep(0.02)


def finish(process: subprocess.Popen) -> tuple[str, str]:
    try:
        return process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()


def weights(run: Path) -> dict:
    _, model = build(load_config(run), run)
    checkpoint.load_model(run, model)
    return model.state_dict()


def assert_same_run(ours: Path, reference: Path) -> None:
    """Bit for bit: the weights, every logged loss and metric, the test result."""
    mine, theirs = weights(ours), weights(reference)
    assert mine.keys() == theirs.keys()
    for name, value in theirs.items():
        assert torch.equal(mine[name], value), name

    def logged(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert logged(ours) == logged(reference)  # no step lost or logged twice, every value equal
    result = [json.loads((run / "result.json").read_text()) for run in (ours, reference)]
    assert result[0]["test"] == result[1]["test"] and result[0]["step"] == result[1]["step"]


def assert_stopped_cleanly(run: Path, step: int) -> None:
    assert checkpoint.saved_step(run) == step
    assert not (run / "run.lock").exists()  # released
    assert not (run / "result.json").exists()  # the test evaluation waits for the resume
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The run never stopped."""
    run = tmp_path_factory.mktemp("straight") / "run"
    assert main(["train", *ARGS, "--steps", str(STEPS), "--out", str(run)]) == 0
    return run


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_saves_the_step_under_way_and_the_resumed_run_equals_an_uninterrupted_one(
        signum, straight, tmp_path, capsys):  # fmt: skip
    run = tmp_path / "run"
    process = start("-m", "gatedrnn", "train", *ARGS, "--steps", STEPS, "--out", run)
    wait_for(run / "checkpoint.safetensors", process)  # the evaluation of step 50
    process.send_signal(signum)
    _, err = finish(process)
    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    said = re.fullmatch(rf"gatedrnn train: {signum.name}: stopped after step (\d+) of {STEPS} and saved it in "
                        rf"{re.escape(str(run / 'checkpoint.safetensors'))}; resume with: "
                        rf"gatedrnn train --out {re.escape(str(run))} --resume\n", err)  # fmt: skip
    assert said, err
    step = int(said[1])
    assert 50 <= step < STEPS
    assert_stopped_cleanly(run, step)

    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert capsys.readouterr().out.startswith(f"resuming {run} from step {step} of {STEPS}\n")
    assert_same_run(run, straight)


def test_a_second_signal_stops_at_once_keeping_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    process = start("-c", SLOW_EVALUATION, "train", *ARGS, "--steps", STEPS, "--out", run)
    wait_for(run / "evaluating", process)  # step 100's evaluation, which takes a minute
    process.send_signal(signal.SIGTERM)  # noted: the step would finish, then be saved
    time.sleep(0.5)
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = finish(process)
    assert time.monotonic() - sent < 10  # not the minute the evaluation takes
    assert process.returncode == 143, err
    assert err == (f"gatedrnn train: a second SIGTERM stopped the run at once; the checkpoint of step 50 is kept; "
                   f"resume with: gatedrnn train --out {run} --resume\n")  # fmt: skip
    assert_stopped_cleanly(run, 50)


def test_train_restores_the_handlers_it_found_and_raises_stopped(tmp_path):
    """From Python: ``train`` raises Stopped (a KeyboardInterrupt) with the step it saved."""
    config = TrainConfig(task="adding", cell="gru", length=6, hidden_size=8, batch_size=8, steps=40, eval_every=10,
                         seed=1, threads=1)  # fmt: skip
    mine = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

        def signalled(step, metrics, model):
            if step == 20:
                os.kill(os.getpid(), signal.SIGTERM)  # while step 20 is under way: it finishes

        with pytest.raises(Stopped) as stopped:
            train(config, tmp_path / "run", progress=False, on_eval=signalled)
        assert isinstance(stopped.value, KeyboardInterrupt)
        assert (stopped.value.saved, stopped.value.step, stopped.value.exit_code) == (True, 20, 143)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
        assert_stopped_cleanly(tmp_path / "run", 20)
        assert train(config, tmp_path / "run", resume=True, progress=False).step == 40
        train(config, tmp_path / "straight", progress=False)
        for name, value in weights(tmp_path / "straight").items():
            assert torch.equal(weights(tmp_path / "run")[name], value), name
    finally:
        signal.signal(signal.SIGTERM, mine)


def test_resume_says_where_it_goes_on_and_a_finished_run_is_left_as_it_is(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *ARGS, "--steps", "100", "--out", str(run)]) == 0
    config, result = ((run / name).read_bytes() for name in ("config.json", "result.json"))
    capsys.readouterr()
    for steps, said in ([["--steps", "30"], f"{run} already has 100 steps, more than --steps 30: nothing to do"],
                        [[], f"{run} already has its 100 steps: nothing to do"]):  # fmt: skip
        assert main(["train", "--out", str(run), "--resume", *steps]) == 0
        out = capsys.readouterr().out
        assert out.startswith(said) and out.count("\n") == 1, out
        assert (run / "config.json").read_bytes() == config and (run / "result.json").read_bytes() == result
    assert main(["train", "--out", str(run), "--resume", "--steps", "120"]) == 0
    assert capsys.readouterr().out.startswith(f"resuming {run} from step 100 of 120\n")
    assert json.loads((run / "config.json").read_text())["steps"] == 120


def test_a_stopped_run_is_not_cut_back(tmp_path, capsys):
    run = tmp_path / "run"
    config = TrainConfig(task="adding", cell="gru", length=6, hidden_size=8, batch_size=8, steps=100, eval_every=50,
                         seed=1, threads=1)  # fmt: skip
    assert train(config, run, progress=False, stop_at=60).status == "killed"  # its checkpoint: step 50
    before = (run / "config.json").read_bytes()
    assert main(["train", "--out", str(run), "--resume", "--steps", "30"]) == 2
    err = capsys.readouterr().err
    assert err == (f"gatedrnn train: error: {run} already has 50 steps, more than --steps 30: a run is extended, "
                   "never cut back; give --steps 50 or more\n")  # fmt: skip
    assert (run / "config.json").read_bytes() == before


def test_an_out_that_is_a_dangling_symlink_says_so(tmp_path, capsys):
    link = tmp_path / "run"
    link.symlink_to(tmp_path / "gone")
    for extra in ([], ["--resume"]):
        assert main(["train", *ARGS, "--steps", "10", "--out", str(link), *extra]) == 2
        err = capsys.readouterr().err
        assert err == (f"gatedrnn train: error: --out {link} is a symbolic link to {tmp_path / 'gone'}, which does "
                       "not exist; create that folder, or choose another --out\n")  # fmt: skip
    assert link.is_symlink() and not (tmp_path / "gone").exists()


# Under torchrun: 2 processes, gloo on the CPU.

DDP = ["--task", "adding", "--cell", "gru", "--length", "6", "--hidden-size", "8", "--batch-size", "8",
       "--eval-every", "25", "--lr", "1e-2", "--seed", "1", "--threads", "1", "--no-report"]  # fmt: skip
DDP_STEPS = 200


def torchrun(*args) -> subprocess.Popen:
    return start("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 2, "-m", "gatedrnn", *args)


def _ranks(launcher: int) -> dict:
    """The launcher's worker processes by rank (read from /proc)."""
    ranks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        rank = [e[5:].decode() for e in environ if e.startswith(b"RANK=")]
        if parent == launcher and rank:
            ranks[int(rank[0])] = int(stat.parent.name)
    return ranks


def assert_one_line_from_rank_0(err: str, run: Path) -> int:
    """The step rank 0's one line says it saved (the other rank says nothing)."""
    lines = [line for line in err.splitlines() if line.startswith("gatedrnn train:")]
    assert len(lines) == 1, err
    said = re.fullmatch(rf"gatedrnn train: SIGTERM: stopped after step (\d+) of {DDP_STEPS} and saved it in .*; "
                        rf"resume with: torchrun --nproc_per_node 2 -m gatedrnn train --out {re.escape(str(run))} "
                        "--resume", lines[0])  # fmt: skip
    assert said, lines[0]
    assert "lost the other processes" not in err  # no rank stopped at another step than the others
    return int(said[1])


def test_under_torchrun_a_signal_to_the_launcher_stops_every_rank_and_the_run_resumes_to_the_same_end(tmp_path):
    straight, run = tmp_path / "straight", tmp_path / "run"
    reference = torchrun("train", *DDP, "--steps", DDP_STEPS, "--out", straight)
    job = torchrun("train", *DDP, "--steps", DDP_STEPS, "--out", run)
    wait_for(run / "checkpoint.safetensors", job)
    job.send_signal(signal.SIGTERM)  # torchrun passes it on to each rank
    _, err = finish(job)
    assert job.returncode != 0
    step = assert_one_line_from_rank_0(err, run)
    assert_stopped_cleanly(run, step)
    resumed = torchrun("train", "--out", run, "--resume")
    out, err = finish(resumed)
    assert resumed.returncode == 0, err
    assert f"resuming {run} from step {step} of {DDP_STEPS}" in out
    _, err = finish(reference)
    assert reference.returncode == 0, err
    assert_same_run(run, straight)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks in /proc (Linux)")
def test_under_torchrun_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    run = tmp_path / "run"
    job = torchrun("train", *DDP, "--steps", DDP_STEPS, "--out", run)
    wait_for(run / "checkpoint.safetensors", job)
    os.kill(_ranks(job.pid)[1], signal.SIGTERM)
    _, err = finish(job)
    assert job.returncode != 0 and "exitcode  : 143" in err, err  # torchrun's summary: the rank's exit code
    assert_stopped_cleanly(run, assert_one_line_from_rank_0(err, run))
