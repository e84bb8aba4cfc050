"""The classify task: images as sequences, permutation, CSV loading, a short run."""

import gzip

import pytest
import torch

from gatedrnn.tasks.classify import Classify, load_csv
from gatedrnn.tasks.data import DataError
from gatedrnn.train import TrainConfig, train


def test_digits_row_by_row_and_pixel_by_pixel():
    rows = Classify("digits", mode="row")
    pixels = Classify("digits", mode="pixel")
    assert rows.x.shape == (1797, 8, 8) and pixels.x.shape == (1797, 64, 1)
    torch.testing.assert_close(rows.x.reshape(1797, 64), pixels.x.reshape(1797, 64))
    assert sum(len(i) for i in rows.index.values()) == 1797
    permuted = Classify("digits", mode="pixel", permute=True)
    assert not torch.equal(permuted.x, pixels.x)
    torch.testing.assert_close(permuted.x.sort(1).values, pixels.x.sort(1).values)  # same pixels, other order
    assert torch.equal(permuted.y, pixels.y)


def test_mnist_subset_loads(shared_data):
    task = Classify(str(shared_data("mnist_5k.csv.gz")), mode="row")
    assert task.x.shape == (5000, 28, 28) and task.output_size == 10 and 0 <= task.x.min() and task.x.max() <= 1


def test_short_run_beats_the_majority_class():
    config = TrainConfig(task="classify", data="digits", cell="gru", hidden_size=32, steps=150, lr=1e-2,
                         eval_every=50)  # fmt: skip
    result = train(config, __import__("tempfile").mkdtemp(), progress=False)
    assert result.test["accuracy"] > 0.8 > Classify("digits").baseline


def test_csv_with_header_and_named_label(tmp_path):
    path = tmp_path / "seq.csv.gz"
    lines = ["a,b,c,label"] + [f"{i},{i + 1},{i + 2},{i % 2}" for i in range(20)]
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    x, y = load_csv(path, "label")
    assert x.shape == (20, 3) and y.tolist() == [i % 2 for i in range(20)]
    (tmp_path / "bad.csv").write_text("1,2,3\n4,x,6\n")
    with pytest.raises(DataError, match="bad.csv, line 2: column 2 holds .x., not a number"):
        load_csv(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="no column 'kind'"):
        load_csv(path, "kind")
    with pytest.raises(DataError, match="not a square image; use --mode pixel"):
        Classify(str(path), mode="row", label="label")
