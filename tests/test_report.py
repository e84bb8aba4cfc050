"""The report fits its task: token labels on a text run's gate heatmap, titles and captions that
name the task, axes that suit the metric, a confusion matrix for classifiers; and it is
written without rebuilding data or computing on subnormal floats."""

import json
import re

import pytest
import torch

from gatedrnn.cli import main
from gatedrnn.diagnostics import report
from gatedrnn.diagnostics.report import RunView, gate_heatmaps, learning_curves

TEXT = "to be, or not to be: that is the question.\nwhether 'tis nobler in the mind to suffer\n" * 12


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    data, run = folder / "hamlet.txt", folder / "run"
    data.write_text(TEXT)
    assert main(["train", "--task", "text", "--data", str(data), "--cell", "lstm", "--hidden-size", "8", "--bptt",
                 "24", "--batch-size", "4", "--steps", "10", "--eval-every", "10", "--threads", "1",
                 "--out", str(run)]) == 0  # fmt: skip
    return data, run


def _figures(monkeypatch):
    """The figures the report draws, kept instead of saved."""
    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.append(fig))
    return figures


def test_a_text_runs_gate_heatmap_is_labelled_with_its_characters(text_run, monkeypatch):
    from gatedrnn.train import build, load_config

    data, run = text_run
    task, model = build(load_config(run), run)
    view = RunView("lstm", "lstm", task, model, [], data=str(data))
    figures = _figures(monkeypatch)
    assert gate_heatmaps([view], run / "gates.png")
    ax = figures[0].axes[0]
    inputs, _ = task.diagnostic_batch(0, 1)
    shown = {" ": "␣", "\n": "↵"}
    expected = [shown.get(c, c) for c in task.vocab.decode(inputs[0].tolist())]
    assert [label.get_text() for label in ax.get_xticklabels()] == expected and len(expected) == 24
    assert ax.get_title() == "lstm: forget gate over one test sequence (text, hamlet.txt)"  # no marked inputs
    assert ax.get_xlabel() == "time step t, labelled with the input token read at t"


def test_a_text_report_names_its_task_and_no_length_or_marked_inputs(text_run):
    _, run = text_run
    page = (run / "report.html").read_text()  # written by train at the end of the run
    assert "<h1>gatedrnn report: text, hamlet.txt</h1>" in page
    assert "T = " not in page and "marked inputs" not in page
    assert "The text task has a loss at every step" in page and "the token read at each step" in page


def test_the_adding_tasks_heatmap_keeps_its_marked_inputs(tmp_path, monkeypatch):
    from gatedrnn.train import TrainConfig, build

    task, model = build(TrainConfig(task="adding", cell="gru", length=12, hidden_size=4))
    view = RunView("gru", "gru", task, model, [])
    figures = _figures(monkeypatch)
    assert gate_heatmaps([view], tmp_path / "gates.png")
    ax = figures[0].axes[0]
    assert ax.get_title() == "gru: update gate over one test sequence (adding, T = 12); dotted red: marked inputs"
    assert ax.get_xticklabels() == [] or all(not t.get_text() or t.get_text().lstrip("−-").isdigit()
                                             for t in ax.get_xticklabels())  # fmt: skip
    assert "marked inputs (dotted red)" in report._gates_caption([view])


def test_evaluate_names_a_length_only_for_the_synthetic_tasks(text_run, tmp_path, capsys, monkeypatch):
    data, run = text_run
    monkeypatch.setenv("GATEDRNN_DATA", str(data.parent))  # the data directory: evaluate reads the data
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lstm on text at step 10: test loss") and "T=" not in out, out
    adding = tmp_path / "adding"
    assert main(["train", "--task", "adding", "--length", "5", "--hidden-size", "4", "--steps", "2", "--eval-every",
                 "2", "--out", str(adding), "--no-report"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", str(adding)]) == 0
    assert capsys.readouterr().out.startswith("lstm on adding (T=5) at step 2: test mse")


def test_learning_curves_use_a_log_axis_only_across_decades(monkeypatch, tmp_path):
    from gatedrnn.tasks import base

    class Task(base.Task):
        name, metric, lower_is_better, baseline = "text", "loss", True, None

    figures = _figures(monkeypatch)
    short = [{"step": s, "split": "train", "loss": 2.7 - s / 100} for s in (10, 20, 30)]
    short.append({"step": 30, "split": "valid", "loss": 2.5})
    long = [{"step": s, "split": "train", "loss": 10.0 / s**2} for s in (1, 10, 20)]
    long.append({"step": 20, "split": "valid", "loss": 0.02})
    long.insert(0, {"step": 1, "split": "valid", "loss": 3.0})
    learning_curves([RunView("a", "lstm", Task(), None, short, data="x/hamlet.txt")], tmp_path / "a.png")
    learning_curves([RunView("b", "lstm", Task(), None, long)], tmp_path / "b.png")
    (train_a, valid_a), (train_b, valid_b) = (fig.axes for fig in figures)
    assert (train_a.get_yscale(), valid_a.get_yscale()) == ("linear", "linear")  # 2.4 to 2.7
    assert (train_b.get_yscale(), valid_b.get_yscale()) == ("log", "log")  # 10 to 0.025
    assert figures[0]._suptitle.get_text() == "Learning curves: text, hamlet.txt"


def test_a_report_reads_each_runs_data_once_and_draws_its_sample_once(text_run, tmp_path, monkeypatch):
    from gatedrnn.cli.report import report_runs
    from gatedrnn.tasks.text import Text

    data, run = text_run
    monkeypatch.setenv("GATEDRNN_DATA", str(data.parent))  # the data directory: the report reads the data
    built, drawn = [], []
    real_init, real_batch = Text.__init__, Text.diagnostic_batch
    monkeypatch.setattr(Text, "__init__", lambda self, *a, **k: (built.append(1), real_init(self, *a, **k))[1])
    monkeypatch.setattr(Text, "diagnostic_batch", lambda self, *a: (drawn.append(1), real_batch(self, *a))[1])
    report_runs([run], tmp_path / "out")
    assert (len(built), len(drawn)) == (1, 1)  # before: the data read twice, the test sample drawn 5 times
    assert (tmp_path / "out" / "gates.png").stat().st_size > 0


def test_figures_compute_on_one_thread_and_the_threads_come_back(tmp_path, monkeypatch):
    from gatedrnn.train import TrainConfig, build

    seen = []
    monkeypatch.setattr(report, "FIGURES", [("x.png", lambda runs, path: seen.append(torch.get_num_threads()) or False,
                                             "")])  # fmt: skip
    before = torch.get_num_threads()
    task, model = build(TrainConfig(task="adding", length=4, hidden_size=2))
    report.write_report(tmp_path, [RunView("lstm", "lstm", task, model, [])], "t")
    assert seen == [1] and torch.get_num_threads() == before


def test_gradient_flow_skips_subnormals_but_keeps_every_drawn_value(monkeypatch):
    """A contracting RNN whose gradient underflows over 60 steps: with subnormals flushed, every
    value the figure draws (above 1e-30) is the one computed with them, and the flag is off after."""
    import contextlib

    from gatedrnn.diagnostics import gradflow
    from gatedrnn.models import SequenceModel

    torch.manual_seed(0)
    model = SequenceModel("rnn", 2, 16, 1, 1, readout="last", backend="reference")
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(0.1)  # contracting: the gradient shrinks ~10x a step
    inputs, targets = torch.randn(8, 60, 2), torch.randn(8, 1)
    loss = torch.nn.functional.mse_loss
    flushed = gradflow.hidden_gradient_norms(model, inputs, targets, loss)
    assert (torch.tensor([1e-20]) * torch.tensor([1e-20])).item() > 0  # subnormals are back
    monkeypatch.setattr(gradflow, "flush_denormals", contextlib.nullcontext)
    plain = gradflow.hidden_gradient_norms(model, inputs, targets, loss)
    drawn = plain > 1e-30
    assert 5 < int(drawn.sum()) < 60  # some steps drawn, the earliest underflowed
    torch.testing.assert_close(flushed[drawn], plain[drawn], rtol=1e-6, atol=0)
    assert (flushed[~drawn] < 1e-30).all()


def test_a_classifier_report_has_a_confusion_matrix_named_by_its_classes(tmp_path, monkeypatch):
    from gatedrnn.diagnostics.confusion import confusion, confusion_matrices
    from gatedrnn.train import build, load_config

    data, run = tmp_path / "fruit.csv", tmp_path / "run"
    names = ["apple", "banana", "cherry"]
    data.write_text("a,b,fruit\n" + "".join(f"{i % 3},{(i * 5) % 7},{names[i % 3]}\n" for i in range(60)))
    assert main(["train", "--task", "classify", "--data", str(data), "--mode", "pixel", "--cell", "gru",
                 "--hidden-size", "6", "--steps", "10", "--eval-every", "10", "--out", str(run)]) == 0  # fmt: skip
    assert "confusion.png" in (run / "report.html").read_text()
    task, model = build(load_config(run), run)
    from gatedrnn import checkpoint

    checkpoint.load_model(run, model)
    counts = confusion(task, model)
    inputs, targets = task.split("test", 0)
    with torch.no_grad():
        predicted = model.eval()(inputs).argmax(-1)
    for i in range(3):
        for j in range(3):
            assert counts[i, j] == int(((targets == i) & (predicted == j)).sum())
    accuracy = json.loads((run / "result.json").read_text())["test"]["accuracy"]
    assert float(counts.diagonal().sum() / counts.sum()) == pytest.approx(accuracy)
    figures = _figures(monkeypatch)
    assert confusion_matrices([RunView("gru", "gru", task, model, [], data=str(data))], tmp_path / "c.png")
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names == [t.get_text() for t in ax.get_yticklabels()]
    assert re.fullmatch(r"gru: test accuracy \d\.\d{3}", ax.get_title())
