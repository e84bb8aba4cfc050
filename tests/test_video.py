"""The video task: the moving-digits generator (deterministic, test digits kept out of
training), patches, the metrics against hand computations, the encoder-forecaster for every
cell, the command end to end on a small synthetic digit file, and clear data errors."""

import gzip

import numpy as np
import pytest
import torch

from gatedrnn.cli import main
from gatedrnn.tasks.data import DataError
from gatedrnn.tasks.moving_digits import DIGIT, from_patches, load_digits, moving_digits, split_indices, to_patches
from gatedrnn.tasks.video import Video, frame_metrics, ssim


def _digit_file(path, per_class=10, seed=0):
    """An MNIST-format CSV: per class, ``per_class`` images of a random blob, sorted by label."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in range(10):
        for _ in range(per_class):
            image = np.zeros((DIGIT, DIGIT))
            y, x = rng.integers(4, 18, size=2)
            image[y : y + 8, x : x + 6] = rng.integers(100, 256)
            rows.append(",".join(str(int(v)) for v in image.flatten()) + f",{label}")
    with gzip.open(path, "wt") as f:
        f.write("\n".join(rows) + "\n")
    return path


@pytest.fixture
def digit_file(tmp_path):
    return _digit_file(tmp_path / "digits.csv.gz")


def test_generator_is_deterministic_and_keeps_digits_whole(digit_file):
    digits, labels = load_digits(digit_file)
    a = moving_digits(digits, 4, 12, 40, 1, torch.Generator().manual_seed(5))
    b = moving_digits(digits, 4, 12, 40, 1, torch.Generator().manual_seed(5))
    c = moving_digits(digits, 4, 12, 40, 1, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 12, 40, 40) and a.min() >= 0 and a.max() <= 1
    mass = a.sum((2, 3))  # one digit, never clipped by the frame's edge: the same mass every frame
    torch.testing.assert_close(mass, mass[:, :1].expand_as(mass))
    # it moves: the image changes from frame to frame
    assert all((a[:, t + 1] - a[:, t]).abs().sum() > 0 for t in range(11))


def test_splits_are_disjoint_and_hold_every_class(digit_file):
    _, labels = load_digits(digit_file)
    parts = {name: set(split_indices(labels, name).tolist()) for name in ("train", "valid", "test")}
    assert not parts["train"] & parts["test"] and not parts["train"] & parts["valid"] and not parts["valid"] & parts["test"]
    assert sorted(parts["train"] | parts["valid"] | parts["test"]) == list(range(100))
    for name, rows in parts.items():
        assert set(labels[sorted(rows)].tolist()) == set(range(10)), name
    assert len(parts["train"]) == 80 and len(parts["test"]) == 10


def test_test_sequences_use_test_digits_only(digit_file):
    task = Video(str(digit_file), frames_in=2, frames_out=2, frame_size=28, digits=1, patch=4, valid_size=3,
                 test_size=5)  # fmt: skip
    inputs, targets = task.split("test", 0)
    frames = task.frames(torch.cat([inputs, targets], 1))  # (N, T, 28, 28): a 28x28 canvas cannot move the digit
    test_digits = task.digits["test"]
    for sequence in frames:
        assert any(torch.equal(sequence[0], d) for d in test_digits)
        assert not any(torch.equal(sequence[0], d) for d in task.digits["train"])


def test_patches_round_trip_and_layout():
    frames = torch.rand(2, 3, 8, 8)
    maps = to_patches(frames, 4)
    assert maps.shape == (2, 3, 16, 2, 2)
    assert torch.equal(from_patches(maps, 4), frames)
    # channel k of map pixel (i, j) is frame pixel (4i + k // 4, 4j + k % 4)
    assert maps[1, 2, 6, 1, 0] == frames[1, 2, 4 + 1, 0 + 2]


def test_metrics_against_hand_computation():
    torch.manual_seed(0)
    a, b = torch.rand(3, 2, 16, 16), torch.rand(3, 2, 16, 16)
    m = frame_metrics(a, b)
    torch.testing.assert_close(m["mse"], ((a - b) ** 2).sum((2, 3)).mean(0))
    p = a.clamp(1e-7, 1 - 1e-7)
    torch.testing.assert_close(m["bce"], -(b * p.log() + (1 - b) * (1 - p).log()).sum((2, 3)).mean(0))
    torch.testing.assert_close(ssim(a[0], a[0]), torch.ones(2))
    assert (ssim(a[0], b[0]) < 0.5).all()
    # SSIM of a constant shift: luminance term only, (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    x = torch.full((1, 16, 16), 0.5, dtype=torch.float64)
    expected = (2 * 0.5 * 0.6 + 1e-4) / (0.25 + 0.36 + 1e-4)
    torch.testing.assert_close(ssim(x, x + 0.1), torch.tensor([expected], dtype=torch.float64))


def test_baselines_recomputed(digit_file):
    task = Video(str(digit_file), frames_in=3, frames_out=2, frame_size=32, patch=4, valid_size=4, test_size=6)
    inputs, targets = task.split("test", 0)
    truth = task.frames(targets)
    last = task.frames(inputs)[:, -1:]
    copy = task.baselines("test")["copy last frame"]
    torch.testing.assert_close(copy["mse"], ((last - truth) ** 2).sum((2, 3)).mean(0))
    torch.testing.assert_close(torch.tensor(task.baseline), task.baselines("valid")["copy last frame"]["mse"].mean())


@pytest.mark.parametrize("cell", ["convlstm", "convgru", "lstm", "gru"])
def test_forecaster_shapes_and_learning_step(cell, digit_file):
    from gatedrnn.train import TrainConfig

    task = Video(str(digit_file), frames_in=3, frames_out=2, frame_size=32, patch=4, kernel_size=3, valid_size=2,
                 test_size=2)  # fmt: skip
    torch.manual_seed(0)
    model = task.make_model(TrainConfig(task="video", cell=cell, hidden_size=6, layers=2))
    x, y = task.train_batch(0, 3, 0)
    assert x.shape == (3, 3, 16, 8, 8) and y.shape == (3, 2, 16, 8, 8)
    out = model(x)
    assert out.shape == y.shape
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    before = task.loss(out, y).item()
    for _ in range(5):
        loss = task.loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert task.loss(model(x), y).item() < before
    if cell.startswith("conv"):
        _, trace = model(x, return_trace=True)
        gate = "forget" if cell == "convlstm" else "update"
        assert trace[gate].shape == (2, 3, 3, 6, 8, 8)  # (layers, B, T_in, C_h, h, w)


def test_command_trains_reports_and_writes_a_gif(digit_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GATEDRNN_DATA", str(tmp_path))  # the data directory: generate reads the digits
    run = tmp_path / "run"
    args = ["train", "--task", "video", "--cell", "convgru", "--data", str(digit_file), "--hidden-size", "4",
            "--kernel-size", "3", "--frame-size", "48", "--patch", "8", "--frames-in", "3", "--frames-out", "2",
            "--valid-size", "4", "--test-size", "4", "--steps", "4", "--eval-every", "2", "--batch-size", "2",
            "--out", str(run)]  # fmt: skip
    assert main(args) == 0
    for name in ("result.json", "report.html", "frames.png", "horizon.png", "video_gates.png"):
        assert (run / name).exists(), name
    assert main(["generate", str(run), "--seed", "1"]) == 0
    from PIL import Image

    gif = Image.open(run / "clip.gif")
    assert gif.n_frames == 5  # 3 input frames, then 2 predicted beside true
    assert main(["generate", str(run), "--seed", "9"]) == 2
    assert "--seed picks a test sequence" in capsys.readouterr().err


def test_cell_and_task_must_agree(digit_file, capsys):
    assert main(["train", "--task", "video", "--cell", "rnn", "--data", str(digit_file), "--out", "x"]) == 2
    assert "--cell for the video task must be one of" in capsys.readouterr().err
    assert main(["train", "--task", "adding", "--cell", "convlstm", "--out", "x"]) == 2
    assert "--cell for the adding task must be one of rnn, lstm, gru" in capsys.readouterr().err


@pytest.mark.parametrize("content,match", [
    ("1,2,3\n", "row 1: expected 784 pixels and a label, got 3 fields"),
    (",".join(["0"] * 784) + ",3\n" + ",".join(["0"] * 783) + ",300,3\n", "row 2, column 784: pixel 300"),
    (",".join(["0"] * 784) + ",3\n" + ",".join(["x"] * 784) + ",3\n", "row 2: a value is not a number"),
    (",".join(["0"] * 784) + ",1.5\n", "row 1: label 1.5 is not a digit"),
])  # fmt: skip
def test_bad_digit_files_name_file_and_row(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=match) as error:
        load_digits(path)
    assert str(path) in str(error.value)
    with pytest.raises(DataError, match="no such file"):
        load_digits(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="is a folder"):
        load_digits(tmp_path)


def test_gif_refuses_changed_digits(digit_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GATEDRNN_DATA", str(tmp_path))  # the data directory: generate reads the digits
    run = tmp_path / "run"
    args = ["train", "--task", "video", "--cell", "convlstm", "--data", str(digit_file), "--hidden-size", "2",
            "--kernel-size", "1", "--frame-size", "32", "--patch", "8", "--frames-in", "2", "--frames-out", "1",
            "--valid-size", "2", "--test-size", "2", "--steps", "2", "--eval-every", "2", "--batch-size", "2",
            "--no-report", "--out", str(run)]  # fmt: skip
    assert main(args) == 0
    _digit_file(digit_file, seed=1)  # other digits under the same name
    assert main(["generate", str(run)]) == 2
    assert "has changed since the run was trained" in capsys.readouterr().err


def _tiny_run(digit_file, run):
    args = ["train", "--task", "video", "--cell", "convlstm", "--data", str(digit_file), "--hidden-size", "2",
            "--kernel-size", "1", "--frame-size", "32", "--patch", "8", "--frames-in", "3", "--frames-out", "2",
            "--valid-size", "2", "--test-size", "2", "--steps", "2", "--eval-every", "2", "--batch-size", "2",
            "--no-report", "--out", str(run)]  # fmt: skip
    assert main(args) == 0
    return run


def test_predict_gives_the_frames_after_a_clip_without_the_data(digit_file, tmp_path, capsys):
    import gatedrnn
    from PIL import Image

    run = _tiny_run(digit_file, tmp_path / "run")
    digit_file.unlink()  # predict reads what the run saved, not its training data
    clip = np.random.default_rng(0).integers(0, 256, size=(5, 32, 32)).astype(np.uint8)  # 0-255: read as /255
    np.save(tmp_path / "clip.npy", clip)
    prediction = gatedrnn.predict(run, tmp_path / "clip.npy")
    # the model applied by hand to the clip's last 3 frames, in [0, 1], through its patches
    model = gatedrnn.load(run).model
    seen = torch.from_numpy(clip[-3:].astype(np.float32) / 255)[None]  # (1, 3, 32, 32)
    with torch.no_grad():
        expected = from_patches(torch.sigmoid(model(to_patches(seen, 8))), 8)[0]  # (2, 32, 32)
    torch.testing.assert_close(prediction.frames, expected)
    assert [row["frame"] for row in prediction.rows] == [6, 7]
    assert prediction.rows[0]["mean"] == pytest.approx(float(expected[0].mean()))
    for name, frames in (("next.gif", 5), ("next.npy", None), ("next.csv", None)):
        assert main(["predict", str(run), "--input", str(tmp_path / "clip.npy"), "--out", str(tmp_path / name)]) == 0
        if name.endswith(".gif"):
            assert Image.open(tmp_path / name).n_frames == frames  # the 3 frames read, then the 2 predicted
        if name.endswith(".npy"):
            np.testing.assert_allclose(np.load(tmp_path / name), expected.numpy(), rtol=0, atol=1e-6)
    assert (tmp_path / "next.csv").read_text().splitlines()[0] == "frame,mean,max"
    # a .gif clip reads the same as its frames
    Image.fromarray(clip[0]).save(tmp_path / "clip.gif", save_all=True,
                                  append_images=[Image.fromarray(f) for f in clip[1:]])  # fmt: skip
    from_gif = gatedrnn.predict(run, tmp_path / "clip.gif").frames
    torch.testing.assert_close(from_gif, expected)


@pytest.mark.parametrize("make,message", [
    (lambda p: np.save(p.with_suffix(".npy"), np.zeros((2, 32, 32))), "2 frames; the model reads the last 3"),
    (lambda p: np.save(p.with_suffix(".npy"), np.zeros((4, 16, 16))), "the model reads frames of 32 x 32 pixels"),
    (lambda p: np.save(p.with_suffix(".npy"), np.full((4, 32, 32), np.nan)), "must hold finite numbers"),
    (lambda p: p.with_suffix(".npy").write_bytes(b"not numpy"), "cannot be read as a npy clip"),
    (lambda p: p.with_suffix(".txt").write_text("1,2"), "a clip is a .npy array (T, S, S) or a .gif"),
])  # fmt: skip
def test_a_bad_clip_is_a_one_line_error_naming_the_file(make, message, digit_file, tmp_path, capsys):
    run = _tiny_run(digit_file, tmp_path / "run")
    make(tmp_path / "clip")
    clip = next(tmp_path.glob("clip.*"))
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(clip), "--out", str(tmp_path / "out.gif")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(clip) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.gif").exists()
