"""gatedrnn predict: a forecaster's forecast equals the task's own forecast from the same rows
(normalization and de-normalization from the run, not the data), dated by the CSV's time axis;
a classifier's labels equal the model on the task's own inputs; a text score equals the
cross-entropy computed in one pass; bad input is a one-line error, exit code 2."""

import csv
import io
import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

import gatedrnn
from gatedrnn.cli import main

TINY = ["--hidden-size", "6", "--steps", "4", "--eval-every", "2", "--batch-size", "8", "--no-report"]


@pytest.fixture
def no_sarima(monkeypatch):
    """Leaves out the SARIMA baseline (seconds of fitting) where a test is not about baselines."""
    from gatedrnn.tasks.timeseries import TimeSeries

    monkeypatch.setattr(TimeSeries, "_sarima", lambda self, origins: None)


def monthly_csv(path, rows=60, start_year=2000):
    """A monthly CSV: a date column, the target 'sales' (positive, seasonal, trending), a
    feature 'price' and a column 'note' the model does not read."""
    noise = random.Random(0)
    lines = ["month,sales,price,note"]
    for i in range(rows):
        year, month = start_year + i // 12, i % 12 + 1
        sales = 100 + 2 * i + 15 * math.sin(2 * math.pi * i / 12) + noise.gauss(0, 3)
        lines.append(f"{year}-{month:02d},{sales:.3f},{5 + (i % 7) * 0.3:.2f},n{i}")
    path.write_text("\n".join(lines) + "\n")
    return path


def train_forecaster(tmp_path, *extra):
    data = monthly_csv(tmp_path / "sales.csv")
    run = tmp_path / "forecaster"
    assert main(["train", "--task", "timeseries", "--data", str(data), "--target", "sales", "--features", "price",
                 "--window", "6", "--horizon", "3", "--test-size", "12", "--season", "12", "--cell", "gru", *extra,
                 *TINY, "--out", str(run)]) == 0  # fmt: skip
    return data, run


def read_csv(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.mark.parametrize("transform", [[], ["--log", "--difference"]], ids=["plain", "log-difference"])
def test_forecast_is_the_tasks_own_forecast_without_the_training_data(tmp_path, capsys, transform, no_sarima):
    from gatedrnn.train import build, load_config

    data, run = train_forecaster(tmp_path, *transform)
    task, _ = build(load_config(run), run)
    trained = gatedrnn.load(run)
    expected = task.forecasts(trained.model, "test")  # (n, 3): from each test origin, in sales units
    rows = data.read_text().splitlines()
    months = [r.split(",")[0] for r in rows[1:]]
    data.unlink()  # predict needs only the run folder and the new file
    for i in (0, 5):
        origin = int(task.origins["test"][i])
        given = tmp_path / f"first{origin}.csv"
        given.write_text("\n".join(rows[: origin + 1]) + "\n")  # header and the rows before the origin
        out = tmp_path / f"forecast{origin}.csv"
        assert main(["predict", str(run), "--input", str(given), "--out", str(out)]) == 0
        written = read_csv(out)
        assert [r["step"] for r in written] == ["1", "2", "3"]
        assert [r["month"] for r in written] == months[origin : origin + 3]  # dated by the monthly axis
        torch.testing.assert_close(torch.tensor([float(r["sales"]) for r in written], dtype=torch.float64),
                                   expected[i], rtol=1e-5, atol=1e-4)  # fmt: skip
    printed = capsys.readouterr().out
    assert f"sales forecast 3 steps past {months[origin - 1]}" in printed and f"wrote {out}" in printed
    as_json = tmp_path / "forecast.json"
    assert main(["predict", str(run), "--input", str(given), "--out", str(as_json)]) == 0
    value = json.loads(as_json.read_text())
    assert value["target"] == "sales" and value["horizon"] == 3 and value["after"] == months[origin - 1]
    assert [r["sales"] for r in value["rows"]] == pytest.approx([float(r["sales"]) for r in written])


def test_python_level_predict_matches_the_command(tmp_path, no_sarima):
    data, run = train_forecaster(tmp_path)
    prediction = gatedrnn.predict(gatedrnn.load(run), data)
    out = tmp_path / "out.csv"
    assert main(["predict", str(run), "--input", str(data), "--out", str(out)]) == 0
    assert [float(r["sales"]) for r in read_csv(out)] == pytest.approx([r["sales"] for r in prediction.rows])
    assert prediction.rows[0]["month"] == "2005-01"  # the month after the file's last, 2004-12


def test_a_run_without_saved_normalization(tmp_path, capsys, no_sarima, monkeypatch):
    from test_manifest import as_an_earlier_version

    data, run = train_forecaster(tmp_path)
    before = gatedrnn.predict(run, data).rows
    as_an_earlier_version(run)  # no manifest, and
    (run / "normalization.json").unlink()  # as runs trained before it was saved
    monkeypatch.setenv("GATEDRNN_DATA", str(tmp_path))  # where the run may point for its data
    out = tmp_path / "f.csv"
    assert main(["predict", str(run), "--input", str(data), "--out", str(out)]) == 0
    assert "has no normalization.json (trained before it was saved)" in capsys.readouterr().out
    assert [float(r["sales"]) for r in read_csv(out)] == pytest.approx([r["sales"] for r in before])
    moved = tmp_path / "moved.csv"
    data.rename(moved)
    assert main(["predict", str(run), "--input", str(moved), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no normalization.json" in err and "is not there to refit them" in err and "Traceback" not in err


def test_edited_saved_statistics_are_refused_unless_trusted(tmp_path, capsys, no_sarima):
    from gatedrnn.manifest import ManifestError

    data, run = train_forecaster(tmp_path)
    before = gatedrnn.predict(run, data).rows
    path = run / "normalization.json"
    stats = json.loads(path.read_text())
    path.write_text(json.dumps({**stats, "mean": [m + 10 for m in stats["mean"]]}))
    with pytest.raises(ManifestError, match=f"{path} is not the file the run's checkpoint was written with"):
        gatedrnn.predict(run, data)
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(data), "--out", str(tmp_path / "f.csv")]) == 2
    assert f"{path} is not the file the run's checkpoint was written with" in capsys.readouterr().err
    edited = gatedrnn.predict(run, data, trust_edited=True).rows  # on purpose: used as it is
    assert [r["sales"] for r in edited] != pytest.approx([r["sales"] for r in before])


def sequences_csv(path, rows=80, with_labels=True, header=True):
    """Rows of 16 values (a 4 x 4 image); the label says whether the first half outweighs the second."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(rows, 16, generator=g) * 255
    y = (x[:, :8].sum(1) > x[:, 8:].sum(1)).long()
    lines = [",".join([f"v{i}" for i in range(16)] + (["class"] if with_labels else []))] if header else []
    for values, label in zip(x.tolist(), y.tolist()):
        lines.append(",".join(f"{v:.1f}" for v in values) + (f",{label}" if with_labels else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("options", [["--mode", "row"], ["--mode", "pixel", "--permute"]], ids=["rows", "permuted"])
def test_classifier_labels_are_the_models_on_the_tasks_inputs(tmp_path, capsys, options):
    from gatedrnn.tasks.classify import SPLIT_SEED
    from gatedrnn.train import build, load_config

    data = sequences_csv(tmp_path / "train.csv")
    run = tmp_path / "classifier"
    assert main(["train", "--task", "classify", "--data", str(data), "--label", "class", "--cell", "lstm", *options,
                 *TINY, "--out", str(run)]) == 0  # fmt: skip
    task, _ = build(load_config(run), run)
    model = gatedrnn.load(run).model
    with torch.no_grad():
        probabilities = torch.softmax(model(task.x), -1)  # (N, 2), the task's order
    order = torch.randperm(len(task.x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    expected = torch.empty(len(task.x), dtype=torch.long)
    expected[order] = probabilities.argmax(-1)  # back to the file's row order
    out = tmp_path / "labels.csv"
    assert main(["predict", str(run), "--input", str(data), "--out", str(out)]) == 0
    written = read_csv(out)
    assert [int(r["predicted"]) for r in written] == expected.tolist()
    assert [int(r["line"]) for r in written] == list(range(2, 82))
    accuracy = (expected[order] == task.y).float().mean().item()
    assert f"accuracy {accuracy:.4f} against its label column" in capsys.readouterr().out
    unlabelled = sequences_csv(tmp_path / "new.csv", with_labels=False, header=False)
    assert main(["predict", str(run), "--input", str(unlabelled), "--out", str(tmp_path / "new.json")]) == 0
    value = json.loads((tmp_path / "new.json").read_text())
    assert [r["predicted"] for r in value["rows"]] == expected.tolist() and "accuracy" not in value
    assert value["rows"][0]["line"] == 1 and "label" not in value["rows"][0]


def test_text_score_is_the_one_pass_cross_entropy(tmp_path, monkeypatch, capsys):
    import sys

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 20)
    run = tmp_path / "text"
    assert main(["train", "--task", "text", "--data", str(corpus), "--cell", "lstm", "--bptt", "16", *TINY,
                 "--out", str(run)]) == 0  # fmt: skip
    scored = tmp_path / "new.txt"
    scored.write_text("a lazy fox.\nthe dog jumps\nover")
    monkeypatch.setattr(sys.modules["gatedrnn.tasks.text"], "CHUNK", 5)  # several chunks, the state carried across them
    out = tmp_path / "score.csv"
    assert main(["predict", str(run), "--input", str(scored), "--out", str(out), "--per-line"]) == 0
    trained = gatedrnn.load(run)
    ids = trained.vocab.encode(list("\n" + scored.read_text()), "test")  # read as following a line break
    with torch.no_grad():
        nll = F.cross_entropy(trained.model(ids[None, :-1])[0], ids[1:], reduction="none").double()  # one pass
    rows = read_csv(out)
    assert [r["line"] for r in rows] == ["1", "2", "3", "all"]
    assert [int(r["tokens"]) for r in rows] == [12, 14, 4, 30]
    lines = [nll[:12], nll[12:26], nll[26:]]
    for row, values in zip(rows, lines + [nll]):
        assert float(row["loss"]) == pytest.approx(values.mean().item(), rel=1e-5)
        assert float(row["bpc"]) == pytest.approx(values.mean().item() / math.log(2), rel=1e-5)
    assert f"30 char tokens scored, {nll.mean().item():.4f} nats per token" in capsys.readouterr().out
    assert main(["predict", str(run), "--input", str(scored), "--out", str(tmp_path / "total.json")]) == 0
    value = json.loads((tmp_path / "total.json").read_text())
    assert value["rows"] == [] and value["tokens"] == 30 and value["loss"] == pytest.approx(nll.mean().item(), rel=1e-5)


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, no_sarima):
    data, forecaster = train_forecaster(tmp_path)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abc abd abe\n" * 30)
    text = tmp_path / "text"
    adding = tmp_path / "adding"
    for run, args in ((text, ["--task", "text", "--data", str(corpus)]), (adding, ["--task", "adding", "--length", "5"])):
        assert main(["train", *args, *TINY, "--out", str(run)]) == 0
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("month,revenue\n2000-01,3\n2000-02,4\n")
    short = tmp_path / "short.csv"
    short.write_text("\n".join(data.read_text().splitlines()[:5]) + "\n")  # 4 rows, the window is 6
    letters = tmp_path / "letters.txt"
    letters.write_text("\u00e9\u00e8")  # none of the model's characters: an unknown one is left out, not refused
    out = str(tmp_path / "out.csv")
    cases = [
        ([str(forecaster), "--input", str(tmp_path / "none.csv"), "--out", out], "none.csv: no such file"),
        ([str(forecaster), "--input", str(wrong), "--out", out], "no column 'sales'; the columns are month, revenue"),
        ([str(forecaster), "--input", str(short), "--out", out], "4 rows; the model reads the last 6 values"),
        ([str(forecaster), "--input", str(data), "--out", str(tmp_path / "out.txt")], "name a .csv or .json file"),
        ([str(text), "--input", str(letters), "--out", out],
         "holds 0 char tokens (2 not in the vocabulary left out), too few to score"),
        ([str(adding), "--input", str(data), "--out", out], "holds a run of the adding task; predict works on"),
        ([str(tmp_path / "nowhere"), "--input", str(data), "--out", out], "holds no run"),
    ]
    for args, message in cases:
        assert main(["predict", *args]) == 2, message
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.csv").exists()  # nothing written on an error


def capture_figures(monkeypatch):
    """{file name: the figure's first axes} of every report figure saved from now on."""
    import gatedrnn.diagnostics.report as report

    figures, real_save = {}, report._save

    def keep(fig, path):
        figures[path.name] = fig.axes[0]
        real_save(fig, path)

    monkeypatch.setattr(report, "_save", keep)
    return figures


def test_baselines_in_result_evaluate_and_the_report(tmp_path, capsys, monkeypatch):
    from gatedrnn.tasks.timeseries import error_metrics

    pytest.importorskip("statsmodels")
    monkeypatch.setenv("GATEDRNN_DATA", str(tmp_path))  # the data directory: evaluate and report read the data
    data, run = train_forecaster(tmp_path)
    printed = capsys.readouterr().out
    result = json.loads((run / "result.json").read_text())
    baselines = result["baselines"]
    series = torch.tensor([float(r["sales"]) for r in read_csv(data)], dtype=torch.float64)
    origins = torch.arange(48, 60 - 3 + 1)  # the test origins: 12 rows held out, horizon 3
    actual = series[origins[:, None] + torch.arange(3)]
    persistence = series[origins - 1][:, None].expand_as(actual)
    seasonal = series[origins[:, None] + torch.arange(3) - 12]
    assert baselines["persistence"] == pytest.approx(error_metrics(persistence, actual))
    assert baselines["seasonal naive"] == pytest.approx(error_metrics(seasonal, actual))
    assert set(baselines["SARIMA"]) == {"rmse", "mae", "mape"}
    assert (f"baselines on the same test rows, rmse: persistence {baselines['persistence']['rmse']:.4f}, "
            f"seasonal naive {baselines['seasonal naive']['rmse']:.4f}, SARIMA {baselines['SARIMA']['rmse']:.4f}"
            in printed)  # fmt: skip
    assert main(["evaluate", str(run), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["rmse"] == pytest.approx(result["test"]["rmse"])
    assert evaluated["baselines"].keys() == baselines.keys()
    for name, values in baselines.items():
        assert evaluated["baselines"][name] == pytest.approx(values, abs=1e-9), name
    figures = capture_figures(monkeypatch)
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert 'src="forecast.png"' in html and (run / "forecast.png").stat().st_size > 0
    named = [line.get_label() for ax in figures["forecast.png"].figure.axes for line in ax.get_lines()]
    for name in ("persistence", "seasonal naive", "SARIMA", "gru (forecaster)"):
        assert sum(label.startswith(name + " (RMSE ") for label in named) == 2, (name, named)  # both horizons
    legend = [t.get_text() for t in figures["learning_curves.png"].figure.axes[1].get_legend().get_texts()]
    assert any(t.startswith("persistence") for t in legend) and any(t.startswith("seasonal naive") for t in legend)


def test_date_column_is_the_axis_and_other_columns_are_named_ignored(tmp_path, capsys, monkeypatch, no_sarima):
    from gatedrnn.diagnostics.forecast import forecast_against_actual
    from gatedrnn.diagnostics.report import RunView
    from gatedrnn.train import build, load_config

    data, run = train_forecaster(tmp_path)
    printed = capsys.readouterr().out
    assert f"{data}: reading 'sales', 'price'; column 'month' (2000-01 to 2004-12) is the time axis" in printed
    assert f"{data}: ignored (neither --target, --features nor a time axis): 'note'" in printed
    figures = capture_figures(monkeypatch)
    task, _ = build(load_config(run), run)
    forecast_against_actual([RunView("gru", "gru", task, gatedrnn.load(run).model, [])], tmp_path / "forecast.png")
    ax = figures["forecast.png"]
    assert ax.get_xlabel() == "month"
    lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
    assert lines["actual"].get_xdata()[0].strftime("%Y-%m") == "2004-01"  # the first test row, as a date


def test_a_column_that_is_not_a_time_axis_is_named_ignored(tmp_path, capsys, no_sarima):
    data = tmp_path / "s.csv"
    data.write_text("when,y\n" + "".join(f"{'2001-03' if i % 2 else '2001-01'},{i % 5}\n" for i in range(40)))
    assert main(["train", "--task", "timeseries", "--data", str(data), "--target", "y", "--window", "4",
                 *TINY, "--out", str(tmp_path / "run")]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "no column of increasing dates or numbers: the time axis is the row number" in printed
    assert "ignored (neither --target, --features nor a time axis): 'when'" in printed


@pytest.mark.parametrize("edit,message", [
    (lambda stats: stats.update(mean="x"), "normalization.json: 'mean' must hold a number per column"),
    (lambda stats: stats.update(std=[1.0]), "normalization.json: 'std' must hold a number per column (2)"),
    (lambda stats: stats.update(columns=[]), "normalization.json: 'columns' must be a list of column names"),
    (lambda stats: stats.clear(), "normalization.json: 'columns' must be a list"),
])  # fmt: skip
def test_saved_statistics_of_the_wrong_shape_are_a_one_line_error(edit, message, tmp_path, capsys, no_sarima):
    data, run = train_forecaster(tmp_path)
    path = run / "normalization.json"
    stats = json.loads(path.read_text())
    edit(stats)
    path.write_text(json.dumps(stats))
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(data), "--out", str(tmp_path / "f.csv"), "--trust-edited"]) == 2
    err = capsys.readouterr().err.split("\n", 1)[-1]  # after the note that the file was edited
    assert message in err and str(run) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("vocab,message", [
    ({"level": "char", "tokens": []}, "'tokens' must be a non-empty list of strings"),
    ({"level": "char", "tokens": ["a", "a"]}, "'tokens' holds a token twice"),
    ({"level": "bytes", "tokens": ["a"]}, "'level' must be 'char' or 'word'"),
    ([], "'level' must be 'char' or 'word'"),
])  # fmt: skip
def test_a_vocabulary_that_is_not_one_is_a_one_line_error(vocab, message, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcab\n" * 20)
    run = tmp_path / "text"
    assert main(["train", "--task", "text", "--data", str(corpus), "--cell", "gru", "--bptt", "8", *TINY,
                 "--out", str(run)]) == 0  # fmt: skip
    (run / "vocab.json").write_text(json.dumps(vocab))
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(corpus), "--out", str(tmp_path / "s.csv"), "--trust-edited"]) == 2
    err = capsys.readouterr().err
    assert "vocab.json: not a gatedrnn vocabulary" in err and message in err and "Traceback" not in err
