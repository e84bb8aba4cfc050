"""The gatedrnn command end to end on tiny settings, and its error messages and exit codes."""

import json
import subprocess
import sys

import pytest

from gatedrnn.cli import main

TINY = ["--task", "adding", "--length", "6", "--hidden-size", "8", "--batch-size", "8", "--steps", "20",
        "--eval-every", "10"]  # fmt: skip


def gatedrnn(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "gatedrnn.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_train_evaluate_report_end_to_end(tmp_path):
    run = tmp_path / "run"
    result = gatedrnn("train", *TINY, "--cell", "gru", "--out", run)
    assert result.returncode == 0, result.stderr
    assert "gru on adding: step 20" in result.stdout
    for name in ("config.json", "metrics.jsonl", "checkpoint.safetensors", "report.html", "learning_curves.png"):
        assert (run / name).exists(), name
    evaluated = gatedrnn("evaluate", run, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["step"] == 20 and metrics["mse"] == pytest.approx(
        json.loads((run / "result.json").read_text())["test"]["mse"], rel=1e-6
    )
    other = tmp_path / "lstm"
    assert gatedrnn("train", *TINY, "--cell", "lstm", "--out", other, "--no-report").returncode == 0
    compared = gatedrnn("report", run, other, "--out", tmp_path / "both")
    assert compared.returncode == 0, compared.stderr
    html = (tmp_path / "both" / "report.html").read_text()
    assert "gradient_flow.png" in html and "gates.png" in html


def test_resume_extends_a_run(tmp_path):
    run = tmp_path / "run"
    assert gatedrnn("train", *TINY, "--cell", "rnn", "--out", run, "--no-report").returncode == 0
    resumed = gatedrnn("train", "--out", run, "--resume", "--steps", "30", "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    assert "step 30" in resumed.stdout


def test_demo_writes_its_report(tmp_path):
    result = gatedrnn("demo", "--length", "8", "--steps", "30", "--hidden-size", "8", "--out", tmp_path, "--quiet")
    assert result.returncode == 0, result.stderr
    for cell in ("RNN", "LSTM", "GRU"):
        assert cell in result.stdout
    assert "test MSE" in result.stdout and "steps to solve" in result.stdout
    for name in ("report.html", "learning_curves.png", "gradient_flow.png", "gates.png", "time_constants.png"):
        assert (tmp_path / name).stat().st_size > 0, name


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--task", "chess", "--out", "x"], "invalid choice: 'chess'"),
        (["train", "--cell", "transformer", "--out", "x"], "invalid choice: 'transformer'"),
        (["train", "--hidden-size", "-3", "--out", "x"], "expected a positive integer, got -3"),
        (["train", "--steps", "0", "--out", "x"], "expected a positive integer, got 0"),
        (["train", "--frobnicate", "--out", "x"], "unrecognized arguments: --frobnicate"),
        (["evaluate", "nowhere"], "nowhere holds no run"),
        (["train", "--task", "text", "--curriculum", "100", "--out", "x"],
         "--curriculum is an option of the adding and copy tasks, not of --task text"),
        (["train", "--task", "copy", "--solved-mse", "0.01", "--out", "x"],
         "--solved-mse is an option of the adding task, not of --task copy"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        code = main(args)
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_bad_curriculum_is_a_one_line_error_naming_the_option(tmp_path, capsys):
    code = main(["train", "--task", "copy", "--length", "50", "--curriculum", "20,100", "--steps", "2",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--curriculum lengths must be below --length 50" in err and "Traceback" not in err


def test_a_preset_layer_norm_is_turned_off_for_the_vanilla_rnn(tmp_path, capsys):
    args = ["train", "--preset", "copy-1000", "--cell", "rnn", "--chrono", "0", "--steps", "2", "--eval-every", "2",
            "--no-report"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    assert "--no-layer-norm turns it off" in capsys.readouterr().err
    assert main([*args, "--no-layer-norm", "--out", str(tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["layer_norm"] is False and config["cell"] == "rnn" and config["extra"]["curriculum"] == "100,200,400"


def test_run_folder_of_another_task_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--cell", "gru", "--out", str(run), "--no-report"]) == 0
    capsys.readouterr()
    assert main(["train", "--task", "copy", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "already holds another task's run (task adding" in err and err.count("\n") == 1
    assert main(["train", "--out", str(run), "--resume", "--cell", "lstm"]) == 2
    assert "holds a run with cell='gru'" in capsys.readouterr().err


def test_missing_and_corrupted_checkpoints(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--cell", "gru", "--out", str(run), "--no-report"]) == 0
    path = run / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2
    assert "unreadable" in capsys.readouterr().err
    path.unlink()
    assert main(["evaluate", str(run)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    (run / "config.json").write_text("{not json")
    assert main(["evaluate", str(run)]) == 2
    assert "is not a gatedrnn run config" in capsys.readouterr().err


def test_nan_loss_exits_1_and_says_why(tmp_path, capsys, monkeypatch):
    from gatedrnn.tasks.adding import Adding

    real = Adding.train_batch
    monkeypatch.setattr(Adding, "train_batch",
                        lambda self, step, b, seed: (lambda x, y: (x, y * float("nan") if step >= 12 else y))(
                            *real(self, step, b, seed)))  # fmt: skip
    assert main(["train", *TINY, "--cell", "gru", "--out", str(tmp_path / "r"), "--no-report"]) == 1
    out = capsys.readouterr().out
    assert "loss became nan at step 13" in out and "last good checkpoint (step 10)" in out


def _write_bad_data(tmp_path, kind):
    """A tiny data file with one bad value, and the message naming it."""
    if kind.startswith("timeseries"):
        bad = {"timeseries-nan": "nan", "timeseries-inf": "inf", "timeseries-word": "n/a"}[kind]
        values = [str(float(i % 7)) for i in range(40)]
        values[16] = bad  # line 18: the header is line 1
        path = tmp_path / "s.csv"
        path.write_text("t,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
        return ["--task", "timeseries", "--target", "y", "--window", "4"], path, \
            f"{path}, line 18: column 'y' holds '{bad}', not a " + ("number" if bad == "n/a" else "finite number")  # fmt: skip
    bad = {"classify-nan": ("nan", "0"), "classify-inf": ("inf", "0"), "classify-fraction": ("1", "1.7"),
           "classify-nan-label": ("1", "nan"), "classify-huge-label": ("1", "1e9"),
           "classify-negative-label": ("1", "-1")}[kind]  # fmt: skip
    rows = [f"{i % 3},{i % 5},{i % 2},{i % 4},{i % 2}" for i in range(30)]
    rows[6] = f"1,{bad[0]},2,3,{bad[1]}"  # line 7
    path = tmp_path / "c.csv"
    path.write_text("\n".join(rows) + "\n")
    expected = (f"{path}, line 7: column 2 holds '{bad[0]}', not a finite number" if bad[1] == "0" else
                f"{path}, line 7: the label (column 5) is '{bad[1]}'")  # fmt: skip
    return ["--task", "classify", "--mode", "pixel"], path, expected


@pytest.mark.parametrize("kind", ["timeseries-nan", "timeseries-inf", "timeseries-word", "classify-nan",
                                  "classify-inf", "classify-fraction", "classify-nan-label", "classify-huge-label",
                                  "classify-negative-label"])  # fmt: skip
def test_bad_data_values_name_file_and_line_and_create_no_run(kind, tmp_path, capsys):
    options, path, message = _write_bad_data(tmp_path, kind)
    run = tmp_path / "run"
    assert main(["train", *options, "--data", str(path), "--hidden-size", "4", "--steps", "2", "--out", str(run),
                 "--no-report"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not run.exists()


def test_bad_music_rolls_and_paths_name_the_file(tmp_path, capsys):
    import torch
    from test_music import write_mat

    roll = torch.zeros(4, 88)
    odd = roll.clone()
    odd[2, 5] = 5.0
    nan = roll.clone()
    nan[3, 0] = float("nan")
    cases = [
        (write_mat(tmp_path / "five.mat", traindata=[roll.numpy(), odd.numpy()], validdata=[roll.numpy()],
                   testdata=[roll.numpy()]), "five.mat: traindata[1], row 3, key 6 holds 5.0; a piano roll holds 0 or 1"),
        (write_mat(tmp_path / "nan.mat", traindata=[roll.numpy()], validdata=[roll.numpy()],
                   testdata=[nan.numpy()]), "nan.mat: testdata[0], row 4, key 1 holds nan"),
        (tmp_path / "a_folder", f"{tmp_path / 'a_folder'}: is a folder, expected a .mat file"),
    ]  # fmt: skip
    (tmp_path / "a_folder").mkdir()
    for path, message in cases:
        run = tmp_path / "run"
        assert main(["train", "--task", "music", "--data", str(path), "--steps", "2", "--out", str(run),
                     "--no-report"]) == 2  # fmt: skip
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not run.exists()


@pytest.mark.parametrize("task", ["text", "music", "timeseries", "qa"])
def test_missing_data_says_so(task, tmp_path, capsys):
    run = tmp_path / "run"
    target = ["--target", "y"] if task == "timeseries" else []  # another task's option is refused
    assert main(["train", "--task", task, *target, "--steps", "2", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"the {task} task needs --data" in err and "'.'" not in err and ". " not in err.split("needs")[0], err
    assert not run.exists()


def test_corrupted_checkpoint_bytes_exit_2_and_are_not_resumed_over(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--cell", "gru", "--out", str(run), "--no-report"]) == 0
    path = run / "checkpoint.safetensors"
    data = bytearray(path.read_bytes())
    data[-30] ^= 0x01  # one bit of the last tensor's data
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {path} is corrupted" in err and err.count("\n") == 1, err
    assert main(["train", "--out", str(run), "--resume", "--steps", "30", "--no-report"]) == 2
    assert "is corrupted" in capsys.readouterr().err
    assert path.read_bytes() == bytes(data)  # refused, not overwritten


def test_a_second_run_in_a_busy_folder_is_refused_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    import signal
    import time

    from gatedrnn import checkpoint

    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "gatedrnn.cli", "train", *TINY, "--steps", "1000000",
                              "--out", str(run), "--no-report"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoint.safetensors").exists():
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "the first run wrote no checkpoint in 120 s"
            time.sleep(0.2)
        assert main(["train", "--out", str(run), "--resume", "--steps", "20", "--no-report"]) == 2
        err = capsys.readouterr().err
        assert f"{run} is in use by another gatedrnn run (PID {first.pid} on" in err and err.count("\n") == 1, err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (run / "run.lock").exists()  # left by the killed run: stale
    steps = str(checkpoint.saved_step(run) + 10)  # a run is extended, never cut back
    assert main(["train", "--out", str(run), "--resume", "--steps", steps, "--no-report"]) == 0
    assert not (run / "run.lock").exists()
    rows = [(r["step"], r["split"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    assert len(rows) == len(set(rows))  # no step logged twice


def test_a_folder_with_a_checkpoint_but_no_config_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--cell", "gru", "--out", str(run), "--no-report"]) == 0
    (run / "config.json").unlink()
    before = (run / "checkpoint.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train", *TINY, "--cell", "gru", "--out", str(run), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert f"{run} holds checkpoint.safetensors but no config.json" in err and "another --out" in err, err
    assert err.count("\n") == 1 and (run / "checkpoint.safetensors").read_bytes() == before


def test_out_naming_a_file_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    for extra in ([], ["--resume"]):
        assert main(["train", *TINY, "--out", str(path), "--no-report", *extra]) == 2
        err = capsys.readouterr().err
        assert f"--out {path} is a file, expected a run folder" in err and err.count("\n") == 1, err
    assert path.read_text() == "mine"


def _no_space(kind):
    """The error a full disk raises in the checkpoint write: Python's OSError, or safetensors' own."""
    import errno

    from safetensors import SafetensorError

    if kind == "oserror":
        return OSError(errno.ENOSPC, "No space left on device")
    return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("kind", ["oserror", "safetensors"])
def test_a_full_disk_is_a_one_line_error_and_keeps_the_last_checkpoint(kind, tmp_path, capsys, monkeypatch):
    from gatedrnn import checkpoint

    run = tmp_path / "run"
    real, saves = checkpoint.save_file, []

    def fills_up(tensors, filename, metadata=None):
        saves.append(filename)
        if len(saves) == 2:
            raise _no_space(kind)
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", fills_up)
    assert main(["train", *TINY, "--cell", "gru", "--out", str(run), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"cannot write {run / 'checkpoint.safetensors'}: No space left on device" in err, err
    assert "the checkpoint of step 10 is kept: free some space" in err, err
    assert f"gatedrnn train --out {run} --resume" in err, err
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(checkpoint, "save_file", real)
    assert main(["train", "--out", str(run), "--resume", "--no-report"]) == 0
    assert "step 20" in capsys.readouterr().out


def test_a_run_killed_before_its_first_checkpoint_can_be_resumed_or_restarted(tmp_path, capsys):
    from gatedrnn.train import TrainConfig, load_config, train

    straight = tmp_path / "straight"
    assert main(["train", *TINY, "--cell", "gru", "--out", str(straight), "--no-report"]) == 0
    expected = json.loads((straight / "result.json").read_text())["test"]["mse"]
    for again in (["--resume"], TINY + ["--cell", "gru"]):
        run = tmp_path / f"killed{len(again)}"
        config = TrainConfig(**{**load_config(straight).__dict__})
        assert train(config, run, progress=False, stop_at=5).status == "killed"  # before the first evaluation
        assert (run / "config.json").exists() and not (run / "checkpoint.safetensors").exists()
        capsys.readouterr()
        assert main(["train", "--out", str(run), "--no-report", *again]) == 0, capsys.readouterr().err
        assert json.loads((run / "result.json").read_text())["test"]["mse"] == pytest.approx(expected, rel=1e-6)


def test_a_checkpoint_from_another_task_is_refused(tmp_path, capsys):
    import shutil

    data = tmp_path / "s.csv"
    data.write_text("t,x,y\n" + "".join(f"{i},{i % 3},{(i * 7) % 11}\n" for i in range(60)))
    series, adding = tmp_path / "series", tmp_path / "adding"
    assert main(["train", "--task", "timeseries", "--data", str(data), "--target", "y", "--features", "x",
                 "--window", "4", "--cell", "gru", "--hidden-size", "8", "--steps", "10", "--eval-every", "10",
                 "--out", str(series), "--no-report"]) == 0  # fmt: skip
    assert main(["train", *TINY, "--cell", "gru", "--out", str(adding), "--no-report"]) == 0  # same shapes: I=2, O=1
    shutil.copy(adding / "checkpoint.safetensors", series / "checkpoint.safetensors")
    capsys.readouterr()
    assert main(["evaluate", str(series)]) == 2  # its manifest does not hold this folder's config.json
    assert f"{series / 'config.json'} is not the file the run's checkpoint was written with" in capsys.readouterr().err
    # and where the user trusts the folder's files, the checkpoint's identity still refuses it
    assert main(["evaluate", str(series), "--trust-edited", "--data", str(data)]) == 2
    err = capsys.readouterr().err.split("\n", 1)[-1]  # after the note naming config.json
    assert f"checkpoint {series / 'checkpoint.safetensors'} was trained on task adding with cell gru" in err, err
    assert "timeseries" in err and err.count("\n") == 1
    assert main(["train", "--out", str(series), "--resume", "--steps", "20", "--no-report", "--trust-edited",
                 "--data", str(data)]) == 2  # fmt: skip
    assert "was trained on task adding" in capsys.readouterr().err


def _text_run(tmp_path, text):
    data = tmp_path / "corpus.txt"
    data.write_text(text)
    run = tmp_path / "text"
    assert main(["train", "--task", "text", "--data", str(data), "--cell", "gru", "--hidden-size", "8", "--bptt", "8",
                 "--batch-size", "4", "--steps", "10", "--eval-every", "10", "--out", str(run), "--no-report"]) == 0  # fmt: skip
    return data, run


def test_evaluate_and_resume_refuse_changed_data(tmp_path, capsys, monkeypatch):
    import random

    monkeypatch.setenv("GATEDRNN_DATA", str(tmp_path))  # the data directory: where a run folder may point
    rng = random.Random(0)
    text = "".join(rng.choice("abcdefgh \n") for _ in range(2000))
    data, run = _text_run(tmp_path, text)
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    data.write_text(text[1000:] + text[:1000])  # the same characters, the same vocabulary size, another text
    for command in (["evaluate", str(run)], ["train", "--out", str(run), "--resume", "--steps", "20", "--no-report"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{data} has changed since the run was trained (2000 bytes, sha256 " in err and err.count("\n") == 1, err
    data.write_text(text)  # put back: the run is usable again
    assert main(["evaluate", str(run)]) == 0


def test_text_runs_are_rebuilt_with_their_saved_vocabulary(tmp_path):
    import random

    from gatedrnn.train import build, load_config

    rng = random.Random(1)
    text = "".join(rng.choice("abcdefgh \n") for _ in range(2000))
    data, run = _text_run(tmp_path, text)
    saved = json.loads((run / "vocab.json").read_text())["tokens"]
    data.write_text(text.replace("h", "g"))  # one character fewer: rebuilding would make another vocabulary
    task, model = build(load_config(run), run)
    assert task.vocab.tokens == saved and task.vocab_size == len(saved) == 10
    assert task.vocab.decode(task.ids["train"][:50].tolist()) == text.replace("h", "g")[:50]


def test_python_dash_m_gatedrnn_is_the_command():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "gatedrnn", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--preset" in result.stdout


def test_without_a_terminal_each_evaluation_prints_a_line_and_the_end_says_why(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "log"
    args = [sys.executable, "-m", "gatedrnn", "train", "--task", "adding", "--cell", "gru", "--length", "8",
            "--hidden-size", "4", "--steps", "20", "--eval-every", "10", "--batch-size", "4", "--no-report",
            "--out", str(run)]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True)  # stdout is a pipe: no terminal
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["10/20", "20/20"]
    assert all("valid mse" in line and "sequences/s" in line and "ETA" in line for line in lines)
    assert "ended: all 20 steps done" in result.stdout
    # a learning rate too small to change the validation loss: the second evaluation is no better
    patient = subprocess.run(args[:-1] + [str(tmp_path / "p"), "--patience", "1", "--lr", "1e-30"],
                             capture_output=True, text=True)  # fmt: skip
    assert patient.returncode == 0 and "ended: early stop" in patient.stdout, patient.stdout


def test_demo_never_overwrites_an_earlier_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny = ["demo", "--cells", "rnn", "--length", "4", "--steps", "2", "--hidden-size", "2", "--quiet"]
    assert main(tiny) == 0 and (tmp_path / "runs/demo/report.html").exists()
    first = (tmp_path / "runs/demo/rnn/metrics.jsonl").read_text()
    assert main(tiny) == 0 and (tmp_path / "runs/demo-2/report.html").exists()
    assert "this one goes to runs/demo-2" in capsys.readouterr().out
    assert (tmp_path / "runs/demo/rnn/metrics.jsonl").read_text() == first  # the earlier demo is untouched
    assert main([*tiny, "--out", "runs/demo"]) == 2
    assert "runs/demo holds an earlier run; pass --force" in capsys.readouterr().err
    assert main([*tiny, "--out", "runs/demo", "--force"]) == 0


def test_resume_extends_a_run_in_steps_and_in_time(tmp_path):
    run = tmp_path / "x"
    base = ["train", "--task", "adding", "--cell", "gru", "--length", "6", "--hidden-size", "4", "--batch-size", "4",
            "--eval-every", "5", "--no-report"]  # fmt: skip
    assert main([*base, "--steps", "5", "--max-minutes", "0.0001", "--out", str(run)]) == 0
    assert json.loads((run / "result.json").read_text())["status"] == "time-limit"
    assert main(["train", "--out", str(run), "--resume", "--steps", "10", "--max-minutes", "5"]) == 0
    result = json.loads((run / "result.json").read_text())
    assert (result["step"], result["status"]) == (10, "done")
    config = json.loads((run / "config.json").read_text())
    assert (config["steps"], config["max_minutes"]) == (10, 5.0)


def test_learning_curves_show_the_training_loss_and_no_unknown_length(tmp_path, monkeypatch):
    from gatedrnn.diagnostics import report
    from gatedrnn.diagnostics.report import RunView, learning_curves
    from gatedrnn.tasks import base

    class Task(base.Task):  # a task without a sequence length, scored by accuracy
        name, metric, lower_is_better, baseline = "classify", "accuracy", False, 0.1

    history = [{"step": s, "split": "train", "loss": 1.0 / s} for s in (10, 20, 30)]
    history.append({"step": 30, "split": "valid", "accuracy": 0.5})
    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.append(fig))
    learning_curves([RunView("gru", "gru", Task(), None, history)], tmp_path / "x.png")
    (fig,) = figures
    train_ax, valid_ax = fig.axes
    assert len(train_ax.lines[0].get_xdata()) == 3  # the training loss, even with a single evaluation
    assert valid_ax.get_yscale() == "linear"  # accuracy: a linear axis
    assert fig._suptitle.get_text() == "Learning curves: classify"  # no "T = ?"


def test_evaluation_line_speed_and_eta():
    from gatedrnn.train import TrainConfig, _evaluation_line

    class Task:
        metric = "mse"

    config = TrainConfig(steps=1000, batch_size=16)
    # resumed at step 200 after 100 s; now at step 500, 250 s in: 300 steps in 150 s = 2 steps/s
    line = _evaluation_line(config, Task(), 500, 200, 0.5, {"mse": 0.25}, 250.0, 100.0)
    assert "32.0 sequences/s" in line and "elapsed 4m10s" in line and "ETA 4m10s" in line


def test_a_full_disk_on_a_small_filesystem_is_one_line(tmp_path):
    # a 40 KiB tmpfs in a mount namespace of its own (no privilege needed where user namespaces are
    # allowed): the first checkpoint fits, the second does not
    mount = tmp_path / "small"
    mount.mkdir()
    run = mount / "run"
    script = (f"mount -t tmpfs -o size=40k tmpfs {mount} || exit 99; "
              f"{sys.executable} -m gatedrnn.cli train {' '.join(TINY)} --no-report --out {run}; echo rc=$?; "
              f"ls -a {run}; {sys.executable} -m gatedrnn.cli evaluate {run} --json")  # fmt: skip
    try:
        done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    except FileNotFoundError:
        pytest.skip("no unshare command: cannot mount a small filesystem here (the injected error is tested above)")
    if done.returncode == 99 or "unshare:" in done.stderr:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()[:100]}); the injected error is tested above")
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert "rc=2" in done.stdout and len(errors) == 1, done.stdout + done.stderr
    assert "No space left on device" in errors[0] and f"cannot write {run}/" in errors[0], errors
    assert not [name for name in done.stdout.split() if name.endswith(".tmp")], done.stdout
    if "the checkpoint of step 10 is kept" in errors[0]:  # what this machine's 4 KiB pages give: it loads
        assert json.loads(done.stdout.strip().splitlines()[-1])["step"] == 10, done.stdout


def test_temporaries_a_killed_save_left_are_removed_by_resume_and_the_next_save(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run), "--no-report"]) == 0
    stale = [".checkpoint.safetensors.k3j_a9x2.tmp", ".config.json.0a1b2c3d.tmp", ".model.json.zzzz_999.tmp"]
    kept = [".checkpoint.safetensors.notours.tmp", "notes.tmp", ".result.json.abcdefgh"]  # not our naming
    for name in stale + kept:
        (run / name).write_bytes(b"half a file")
    assert main(["train", "--out", str(run), "--resume", "--steps", "30", "--no-report"]) == 0
    assert sorted(p.name for p in run.iterdir() if p.name in stale + kept) == sorted(kept)
    again = tmp_path / "again"  # a run started over in a folder a killed one left: its first save removes them
    again.mkdir()
    for name in stale + kept:
        (again / name).write_bytes(b"half a file")
    assert main(["train", *TINY, "--out", str(again), "--no-report"]) == 0
    assert sorted(p.name for p in again.iterdir() if p.name in stale + kept) == sorted(kept)
