"""``gatedrnn presets`` and where preset data paths start: --data-dir, $GATEDRNN_DATA, or
../shared/data beside the checkout, whatever the current directory."""

import json

import pytest

from conftest import SHARED_DATA
from gatedrnn.cli import main
from gatedrnn.presets import ABOUT, PRESETS, resolve


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    monkeypatch.delenv("GATEDRNN_DATA", raising=False)


def _series(folder, rows=60):
    """A small CSV at the path the airline preset reads, under ``folder``."""
    path = folder / "timeseries" / "airline.csv"
    path.parent.mkdir(parents=True)
    path.write_text("Date,Passengers\n" + "".join(f"{i},{100 + (i * 7) % 13 + i}\n" for i in range(rows)))
    return path


def test_presets_lists_each_preset_on_one_line(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(PRESETS) == len(ABOUT)
    for line, (name, settings) in zip(lines, PRESETS.items()):
        assert line.split()[:2] == [name, settings["task"]] and line.endswith(ABOUT[name]), line


def test_presets_name_shows_its_settings_as_train_options(tmp_path, capsys):
    assert main(["presets", "airline", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    assert ["--data", str(tmp_path / "timeseries" / "airline.csv")] in lines
    assert ["--hidden-size", "16"] in lines and ["--target", "Passengers"] in lines and ["--log"] in lines
    assert "is absent: point --data-dir or $GATEDRNN_DATA" in out  # nothing at tmp_path
    assert "gatedrnn train --preset airline --cell lstm --out runs/airline" in out


def test_an_unknown_preset_is_a_one_line_error_naming_them_all(capsys):
    assert main(["presets", "shakespear"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no preset 'shakespear'; the presets are adding-200, copy-100," in err
    assert all(name in err for name in PRESETS)


def test_preset_data_starts_beside_the_checkout_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve("jsb")["data"] == str(SHARED_DATA / "music" / "JSB_Chorales.mat")
    assert resolve("digits")["data"] == "digits"  # a data set scikit-learn ships, not a file
    assert resolve("adding-200") == PRESETS["adding-200"]  # no data at all
    monkeypatch.setenv("GATEDRNN_DATA", str(tmp_path / "env"))
    assert resolve("jsb")["data"] == str(tmp_path / "env" / "music" / "JSB_Chorales.mat")
    assert resolve("jsb", tmp_path / "flag")["data"] == str(tmp_path / "flag" / "music" / "JSB_Chorales.mat")


def test_train_reads_a_preset_from_gatedrnn_data_and_from_data_dir(tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # nothing of the data under the current directory
    tiny = ["--preset", "airline", "--cell", "gru", "--steps", "2", "--eval-every", "2", "--test-size", "12",
            "--window", "6", "--no-report"]  # fmt: skip
    env_data, flag_data = _series(tmp_path / "env"), _series(tmp_path / "flag", rows=50)
    monkeypatch.setenv("GATEDRNN_DATA", str(tmp_path / "env"))
    assert main(["train", *tiny, "--out", "a"]) == 0, capsys.readouterr().err
    config = json.loads((elsewhere / "a" / "config.json").read_text())
    assert config["data"] == str(env_data) and config["extra"]["window"] == 6 and config["extra"]["log"] is True
    assert main(["train", *tiny, "--data-dir", str(tmp_path / "flag"), "--out", "b"]) == 0  # the flag wins
    assert json.loads((elsewhere / "b" / "config.json").read_text())["data"] == str(flag_data)


def test_a_preset_whose_data_is_absent_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GATEDRNN_DATA", str(tmp_path))
    assert main(["train", "--preset", "jsb", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()
    assert f"preset jsb reads {tmp_path / 'music' / 'JSB_Chorales.mat'}, which does not exist; point --data-dir" in err


def test_data_dir_without_a_preset_is_refused(tmp_path, capsys):
    assert main(["train", "--task", "adding", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "--data-dir locates a preset's data: give --preset NAME" in capsys.readouterr().err


def test_presets_json_is_a_config_file_for_train(tmp_path, capsys):
    assert main(["presets", "copy-100", "--json"]) == 0
    path = tmp_path / "copy.json"
    path.write_text(capsys.readouterr().out)
    assert json.loads(path.read_text()) == PRESETS["copy-100"]
    run = tmp_path / "run"
    assert main(["train", "--config", str(path), "--length", "5", "--hidden-size", "4", "--steps", "2",
                 "--eval-every", "2", "--out", str(run), "--no-report"]) == 0  # fmt: skip
    config = json.loads((run / "config.json").read_text())
    expected = {**PRESETS["copy-100"], "length": 5, "hidden_size": 4, "steps": 2, "eval_every": 2}  # flags win
    assert {k: config[k] for k in expected} == expected


def test_a_listing_piped_into_a_reader_that_stops_ends_quietly():
    import subprocess
    import sys

    listing = subprocess.Popen([sys.executable, "-m", "gatedrnn", "presets"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    listing.stdout.close()  # as `gatedrnn presets | head -0`: gone before the command writes
    err = listing.stderr.read().decode()
    assert listing.wait(timeout=120) == 141 and err == "", err
