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
    x, y, classes = load_csv(path, "label")
    assert x.shape == (20, 3) and y.tolist() == [i % 2 for i in range(20)] and classes is None
    (tmp_path / "bad.csv").write_text("1,2,3\n4,x,6\n")
    with pytest.raises(DataError, match="bad.csv, line 2: column 2 holds .x., not a number"):
        load_csv(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="no column 'kind'"):
        load_csv(path, "kind")
    with pytest.raises(DataError, match="not a square image; use --mode pixel"):
        Classify(str(path), mode="row", label="label")


def _named_csv(path, header=True, rows=40, names=("setosa", "versicolor")):
    """Two features and a named class a row; the class is which feature is larger."""
    lines = ["width,height,species"] if header else []
    for i in range(rows):
        a, b = (i * 7) % 10, (i * 3) % 10
        lines.append(f"{a},{b},{names[0] if a > b else names[1]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_string_labels_become_ids_in_sorted_order(tmp_path):
    for header in (True, False):
        path = _named_csv(tmp_path / f"named{header}.csv", header, names=("virginica", "setosa"))
        x, y, classes = load_csv(path)
        assert classes == ["setosa", "virginica"] and x.shape == (40, 2)  # every row an example: no header lost
        assert y.tolist() == [int(a > b) for a, b in x.tolist()]  # virginica (a > b) is id 1
    task = Classify(str(tmp_path / "namedTrue.csv"), mode="pixel")
    assert task.classes == ["setosa", "virginica"] and task.output_size == 2
    assert task.model_spec()["classes"] == ["setosa", "virginica"]
    assert Classify("digits").model_spec()["classes"] is None  # numbered classes: no names


def test_a_runs_classes_map_the_labels_and_unknown_names_are_refused(tmp_path):
    path = _named_csv(tmp_path / "named.csv")
    _, y, classes = load_csv(path, classes=["versicolor", "setosa", "virginica"])  # a trained run's order
    assert classes == ["versicolor", "setosa", "virginica"]
    _, y_sorted, _ = load_csv(path)
    assert torch.equal(y, 1 - y_sorted)  # setosa: 1 here, 0 in sorted order
    with pytest.raises(DataError, match=r"named.csv, line 2: the label \(column 'species'\) is 'versicolor', not one "
                                        r"of the run's 2 classes \(setosa, virginica\)"):  # fmt: skip
        load_csv(path, classes=["setosa", "virginica"])


@pytest.mark.parametrize("rows,message", [
    (["1,2,cat"] * 11 + ["3,4,1"], r"line 1: the label \(column 3\) is 'cat', but line 12's is the class number '1'; "
                                   r"use class names or numbers throughout"),
    (["1,2,cat"] * 11 + ["3,4,"], r"line 12: the label \(column 3\) is empty"),
    (["1,x,cat"] + ["1,2,cat"] * 11, r"line 1: column 2 holds 'x', not a number"),  # a typo, not a header
    (["a,b,kind", "1,2,cat"] + ["1,y,cat"] * 11, r"line 3: column 'b' holds 'y', not a number"),
    (["a,b,kind", "1,2"] + ["1,2,cat"] * 11, r"line 2: 2 columns, the header has 3"),
])  # fmt: skip
def test_csv_mistakes_name_the_file_line_and_column(rows, message, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=f"bad.csv, {message}"):
        load_csv(path)


def test_named_labels_end_to_end_through_train_evaluate_report_and_load(tmp_path, capsys, monkeypatch):
    import json

    import gatedrnn
    from gatedrnn.cli import main

    data, run = _named_csv(tmp_path / "iris.csv", rows=60), tmp_path / "run"
    monkeypatch.setenv("GATEDRNN_DATA", str(tmp_path))  # the data directory: evaluate reads the data
    assert main(["train", "--task", "classify", "--data", str(data), "--mode", "pixel", "--cell", "gru",
                 "--hidden-size", "8", "--steps", "20", "--eval-every", "10", "--out", str(run)]) == 0  # fmt: skip
    spec = json.loads((run / "model.json").read_text())
    assert spec["classes"] == ["setosa", "versicolor"] and spec["output_size"] == 2
    tested = json.loads((run / "result.json").read_text())["test"]["accuracy"]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(tested)
    loaded = gatedrnn.load(run)
    assert loaded.classes == ["setosa", "versicolor"] and loaded.model.head.out_features == 2
    # predict names the classes as the data does and scores them against a named label column
    labelled = gatedrnn.predict(run, data)
    assert {row["predicted"] for row in labelled.rows} <= {"setosa", "versicolor"}
    right = sum(row["predicted"] == row["label"] for row in labelled.rows) / len(labelled.rows)
    assert labelled.summary["accuracy"] == pytest.approx(right)
    # evaluate maps the names with the run's saved order, not one rebuilt from the data: swapping the
    # two names there turns every right answer wrong
    (run / "model.json").write_text(json.dumps({**spec, "classes": ["versicolor", "setosa"]}))
    assert main(["evaluate", str(run), "--json", "--trust-edited"]) == 0  # an edit on purpose
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(1 - tested)
