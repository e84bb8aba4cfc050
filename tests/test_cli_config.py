"""``gatedrnn train --config FILE`` (JSON or TOML, command-line flags win), ``--threads``,
``gatedrnn --version`` and help text free of internal names."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gatedrnn.cli import main

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

TINY = ["--task", "adding", "--length", "6", "--hidden-size", "4", "--batch-size", "4", "--steps", "4",
        "--eval-every", "2", "--no-report"]  # fmt: skip


def _corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("the cat sat on the mat; the dog sat on the log.\n" * 20)
    return path


def test_a_runs_config_json_trains_the_same_run_and_flags_override_it(tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["train", *TINY, "--cell", "gru", "--lr", "0.02", "--out", str(first)]) == 0
    again = tmp_path / "again"
    assert main(["train", "--config", str(first / "config.json"), "--steps", "6", "--out", str(again),
                 "--no-report"]) == 0  # fmt: skip
    before, after = (json.loads((run / "config.json").read_text()) for run in (first, again))
    assert after == {**before, "steps": 6}  # everything from the file but the flag given
    assert json.loads((again / "result.json").read_text())["step"] == 6


def test_a_toml_config_with_task_options_under_extra(tmp_path, capsys):
    data = _corpus(tmp_path)
    path = tmp_path / "text.toml"
    path.write_text(f'task = "text"\ncell = "gru"\ndata = "{data}"\nhidden_size = 4\nbatch_size = 4\nsteps = 2\n'
                    'eval_every = 2\nlr = 1  # an integer is a number\n\n[extra]\nlevel = "char"\nbptt = 8\n')  # fmt: skip
    run = tmp_path / "run"
    assert main(["train", "--config", str(path), "--bptt", "4", "--out", str(run), "--no-report"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["task"], config["cell"], config["data"], config["lr"]) == ("text", "gru", str(data), 1.0)
    assert config["extra"] == {"level": "char", "bptt": 4}  # --bptt wins over the file's 8


@pytest.mark.parametrize("name,text,message", [
    ("a.json", '{"hidden_size": 4, "hiden_size": 8}', "unknown key 'hiden_size'; did you mean 'hidden_size'? the keys are task, "
                                                          "cell,"),
    ("b.toml", 'task = "adding"\nwindow = 4\n', "unknown key 'window'; a task's own options such as window go "
                                                "under extra ([extra] in TOML)"),
    ("c.json", '{"task": "text", "extra": {"bptt": 8, "windw": 3}}', "unknown key 'extra.windw' for the text task; "
                                                                     "its options are level, bptt"),
    ("d.json", '{"lr": "fast"}', "lr must be a number, got 'fast'"),
    ("e.toml", 'steps = 2.5\n', "steps must be an integer, got 2.5"),
    ("f.json", '{"task": "text", "extra": {"bptt": true}}', "extra.bptt must be an integer, got True"),
    ("g.json", '{"lr": 0.1,}', "not valid JSON (Expecting property name enclosed in double quotes: "
                                  "line 1 column 12"),
    ("h.toml", 'lr = \n', "not valid TOML ("),
    ("i.yaml", 'lr: 0.1\n', "expected a .json or .toml file, got '.yaml'"),
    ("j.json", '[1, 2]', "expected a table of options, got list"),
])  # fmt: skip
def test_config_file_mistakes_name_the_key_and_the_file(name, text, message, tmp_path, capsys):
    path = tmp_path / name
    path.write_text(text)
    run = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--config {path}: {message}" in err, err
    assert not run.exists()


def test_a_missing_config_file(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.json"), "--out", str(tmp_path / "run")]) == 2
    assert f"--config {tmp_path / 'nope.json'}: no such file" in capsys.readouterr().err


def test_threads_are_set_for_the_run_recorded_and_restored(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(n))  # records, changes nothing
    before = torch.get_num_threads()
    run = tmp_path / "run"
    assert main(["train", *TINY, "--threads", "1", "--out", str(run)]) == 0
    assert seen == [1, before]  # set for the run, then put back
    assert json.loads((run / "config.json").read_text())["threads"] == 1
    seen.clear()
    assert main(["train", "--out", str(run), "--resume", "--steps", "6", "--threads", "3", "--no-report"]) == 0
    assert seen == [3, before] and json.loads((run / "config.json").read_text())["threads"] == 3
    seen.clear()
    assert main(["train", *TINY, "--out", str(tmp_path / "default")]) == 0
    assert seen == [] and json.loads((tmp_path / "default" / "config.json").read_text())["threads"] == 0


def test_threads_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", *TINY, "--threads", "0", "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2 and "--threads: expected a positive integer, got 0" in capsys.readouterr().err


def test_version_names_the_package_torch_and_python():
    root = Path(__file__).resolve().parents[1]
    version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    for command in (["-m", "gatedrnn", "--version"], ["-m", "gatedrnn.cli", "--version"]):
        result = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"gatedrnn {version} (torch {torch.__version__}, Python 3."), result.stdout


def test_train_help_shows_no_internal_names(capsys):
    # train --help answers without importing a task (so without torch): each task's own options
    # are in train --task NAME --help
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "EXTRA." not in text and "(default )" not in text and "extra." not in text
    assert "--preset NAME" in text and "--config FILE" in text and "--threads N" in text
    assert "gatedrnn train --task NAME --help lists them" in text
    helps = {}
    for task in ("timeseries", "video"):
        with pytest.raises(SystemExit):
            main(["train", "--task", task, "--help"])
        helps[task] = " ".join(capsys.readouterr().out.split())
        assert "EXTRA." not in helps[task] and "(default )" not in helps[task] and "extra." not in helps[task]
    assert "--target TARGET" in helps["timeseries"] and "--window N" in helps["timeseries"]
    assert "timeseries task options:" in helps["timeseries"] and "video task options:" not in helps["timeseries"]
    # an option two tasks share gives each task's meaning in its own help
    assert "held-out rows at the end (0: the last 20%) (default 0)" in helps["timeseries"]
    assert "video: test sequences (default 512)" in helps["video"]
