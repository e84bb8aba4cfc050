"""The music task: .mat loading, the NLL by hand, a short run on JSB Chorales, errors."""

import math

import pytest
import torch

from gatedrnn.tasks.data import DataError
from gatedrnn.tasks.music import KEYS, Music, load_mat, pad


def write_mat(path, **splits):
    from scipy.io import savemat

    cells = {}
    for key, rolls in splits.items():
        cell = __import__("numpy").empty((1, len(rolls)), dtype=object)
        for i, r in enumerate(rolls):
            cell[0, i] = r
        cells[key] = cell
    savemat(path, cells)
    return path


def test_nll_per_step_by_hand(tmp_path):
    roll = torch.zeros(3, KEYS)
    roll[:, 0] = 1
    path = write_mat(tmp_path / "m.mat", traindata=[roll.numpy()], validdata=[roll.numpy()], testdata=[roll.numpy()])
    task = Music(str(path))
    (x, lengths), (y, _) = task.split("test", 0)
    assert x.shape == (1, 2, KEYS) and lengths.tolist() == [2]
    logits = torch.zeros(1, 2, KEYS)  # p = 1/2 for every key: 88 ln 2 per step
    assert task.loss(logits, (y, lengths)).item() == pytest.approx(KEYS * math.log(2))


def test_padding_is_not_counted(tmp_path):
    a, b = torch.ones(5, KEYS), torch.ones(3, KEYS)
    x, y, lengths = pad([a, b])
    assert x.shape == (2, 4, KEYS) and lengths.tolist() == [4, 2] and y[1, 2:].abs().sum() == 0
    task = Music.__new__(Music)
    logits = torch.zeros(2, 4, KEYS)
    logits[1, 2:] = 1e4  # garbage past the end must not count
    assert task.loss(logits, (y, lengths)).item() == pytest.approx(KEYS * math.log(2))


def test_short_run_beats_the_frequency_baseline(shared_data, tmp_path):
    from gatedrnn.train import TrainConfig, train

    config = TrainConfig(task="music", data=str(shared_data("music/JSB_Chorales.mat")), cell="gru", hidden_size=64,
                         batch_size=16, steps=120, lr=1e-2, eval_every=60, extra={"crop": 50})  # fmt: skip
    result = train(config, tmp_path, progress=False)
    baseline = Music(config.data).baseline
    assert result.test["nll"] < baseline - 1, (result.test, baseline)


def test_bad_mat_files(tmp_path):
    path = write_mat(tmp_path / "x.mat", traindata=[torch.zeros(3, KEYS).numpy()])
    with pytest.raises(DataError, match=r"lacks the keys \['validdata', 'testdata'\]"):
        load_mat(path)
    (tmp_path / "y.mat").write_text("not matlab")
    with pytest.raises(DataError, match="y.mat: not a readable .mat file"):
        load_mat(tmp_path / "y.mat")
    path = write_mat(tmp_path / "z.mat", traindata=[torch.zeros(3, 12).numpy()], validdata=[], testdata=[])
    with pytest.raises(DataError, match=r"traindata\[0\] has shape \(3, 12\), expected \(T >= 2, 88\)"):
        load_mat(path)


def test_generate_writes_a_midi_file_of_the_requested_length(shared_data, tmp_path, capsys):
    import mido

    from gatedrnn.cli import main

    run = tmp_path / "run"
    assert main(["train", "--task", "music", "--data", str(shared_data("music/JSB_Chorales.mat")), "--cell", "lstm",
                 "--hidden-size", "16", "--steps", "20", "--batch-size", "4", "--crop", "20", "--out", str(run)]) == 0
    html = (run / "report.html").read_text()  # the figures draw on music runs too
    assert "gradient_flow.png" in html and "gates.png" in html
    assert main(["generate", str(run), "--length", "32", "--seed", "2", "--out", str(tmp_path / "piece.mid")]) == 0
    midi = mido.MidiFile(tmp_path / "piece.mid")
    ticks = sum(m.time for m in midi.tracks[0])
    assert ticks == 32 * 240  # every step accounted for, notes closed at the end
    notes_on = [m for m in midi.tracks[0] if m.type == "note_on"]
    assert notes_on and all(21 <= m.note <= 108 for m in notes_on)
