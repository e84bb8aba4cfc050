"""Nothing is written through a symbolic link in a run folder: a link planted where gatedrnn
writes a file (run.lock, metrics.jsonl, result.json, config.json, the checkpoint,
tensorboard/, the report's files) is refused in one line naming it, and not one byte of the
file it points to (outside the folder) changes. An --out that is itself a link is resolved
once and said."""

import importlib.util
import json
import os
import shutil

import pytest

from gatedrnn.cli import main

TINY = ["--task", "adding", "--length", "6", "--hidden-size", "4", "--steps", "4", "--eval-every", "2",
        "--batch-size", "4", "--no-report"]  # fmt: skip
VICTIM = b"the victim's own bytes, which no gatedrnn command may change\n"


@pytest.fixture
def victim(tmp_path):
    """A file outside every run folder, and a function saying it is unchanged."""
    path = tmp_path / "outside" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(VICTIM)
    return path


def _refused(capsys, argv, link) -> str:
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"{link} is a symbolic link; gatedrnn writes no file through a link" in err, err
    assert os.path.islink(link)  # left as it was
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    return run


@pytest.mark.parametrize("name,dangling", [("run.lock", False), ("run.lock", True), ("metrics.jsonl", False),
                                          ("metrics.jsonl", True), ("config.json", False), ("model.json", False),
                                          ("result.json", True)])  # fmt: skip
def test_a_new_run_writes_through_no_link(name, dangling, victim, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    target = victim.parent / "nothing-here.txt" if dangling else victim  # a link to no file must not make one
    (run / name).symlink_to(target)
    _refused(capsys, ["train", *TINY, "--out", str(run)], run / name)
    assert victim.read_bytes() == VICTIM and sorted(p.name for p in victim.parent.iterdir()) == ["victim.txt"]


@pytest.mark.parametrize("name", ["run.lock", "metrics.jsonl", "config.json", "checkpoint.safetensors"])
def test_a_resumed_run_writes_through_no_link(name, trained, victim, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    victim.write_bytes((run / name).read_bytes() if (run / name).exists() else VICTIM)  # the link reads the same
    expected = victim.read_bytes()
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(victim)
    _refused(capsys, ["train", "--out", str(run), "--resume", "--steps", "6"], run / name)
    assert victim.read_bytes() == expected


def test_the_report_writes_through_no_link(trained, victim, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    for name in ("report.html", "learning_curves.png"):
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(victim)
        _refused(capsys, ["report", str(run)], run / name)
        assert victim.read_bytes() == VICTIM
        (run / name).unlink()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_events_go_through_no_link(victim, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "tensorboard").symlink_to(victim.parent, target_is_directory=True)
    _refused(capsys, ["train", *TINY, "--tensorboard", "--out", str(run)], run / "tensorboard")
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim.txt"] and victim.read_bytes() == VICTIM


def test_an_out_that_is_a_link_is_resolved_once_and_said(tmp_path, capsys):
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real, target_is_directory=True)
    capsys.readouterr()
    assert main(["train", *TINY, "--out", str(link)]) == 0
    assert f"--out {link} is a symbolic link: the run is written in {real}" in capsys.readouterr().out
    assert (real / "checkpoint.safetensors").is_file() and link.is_symlink()
    assert json.loads((real / "result.json").read_text())["step"] == 4
