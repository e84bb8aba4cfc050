"""A report that teaches: it opens with the task's introduction, every caption states what its
figure shows in these runs with numbers recomputed here from the same runs, overlapping lines
stay visible, progress lines name the cell and the first ETA is not thrown off by a slow first
step, and every built-in task introduces itself naming its metric."""

import copy
import gzip
import html
import io
import json
import math
import re
import time

import numpy as np
import pytest
import torch

from gatedrnn import checkpoint
from gatedrnn.cli import main
from gatedrnn.diagnostics import report
from gatedrnn.diagnostics.gates import ewma_time_constants, gate_trace
from gatedrnn.diagnostics.gradflow import hidden_gradient_norms
from gatedrnn.diagnostics.report import RunView
from gatedrnn.runs import build, load_config, read_log

CELLS = ("rnn", "lstm", "gru")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The folder of a tiny demo: RNN, LSTM and GRU on the adding problem at T = 8."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--length", "8", "--steps", "30", "--hidden-size", "8", "--out", str(out), "--quiet"]) == 0
    return out


def _runs(out):
    """{cell: (task, model at initialization, trained model)} of the demo's runs, rebuilt from their folders."""
    runs = {}
    for cell in CELLS:
        config = load_config(out / cell)
        task, initial = build(config)
        trained = copy.deepcopy(initial)
        checkpoint.load_model(out / cell, trained)
        runs[cell] = task, initial, trained
    return runs


def _captions(page: str) -> dict:
    """{figure file: its caption, unescaped}."""
    pairs = re.findall(r'<img src="([^"]+)"[^>]*><figcaption>(.*?)</figcaption>', page)
    return {name: html.unescape(text) for name, text in pairs}


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return float(match.group(1))


# -- the introduction ------------------------------------------------------------------------


def test_the_demo_report_opens_with_the_tasks_introduction(demo):
    from gatedrnn.tasks.adding import Adding

    lines = Adding(length=8).introduction()
    page = (demo / "report.html").read_text()
    body = page[page.index("<body>") :]
    opening = ('<body><h1>gatedrnn demo: adding, T = 8</h1><section class="introduction"><h2>The task</h2>' +
               "".join(f"<p>{html.escape(line)}</p>" for line in lines) + "</section>")  # fmt: skip
    assert body.startswith(opening), body[:600]
    text = " ".join(lines)
    assert "MSE 0.167 = Var(U + U')" in text and "test MSE < 0.01" in text and "T = 8" in text
    assert page.count(html.escape(lines[0])) == 1


def test_the_report_of_a_trained_run_opens_with_it_once(demo, tmp_path):
    """``gatedrnn report`` (and the report ``train`` writes) pass the introduction as their intro: shown once, on top."""
    from gatedrnn.cli.report import report_runs

    lines = build(load_config(demo / "gru"))[0].introduction()
    page = report_runs([demo / "gru"], tmp_path).read_text()
    body = page[page.index("<body>") :]
    assert body.startswith('<body><h1>gatedrnn report: adding, T = 8</h1><section class="introduction">')
    assert all(page.count(html.escape(line)) == 1 for line in lines)


# -- captions: numbers recomputed from the same runs -----------------------------------------


def test_learning_curves_caption_states_each_final_metric_the_baseline_and_when_solved(demo):
    caption = _captions((demo / "report.html").read_text())["learning_curves.png"]
    for cell in CELLS:
        rows = [r for r in read_log(demo / cell / "metrics.jsonl") if r["split"] == "valid"]
        solved_at = json.loads((demo / cell / "result.json").read_text())["solved_at"]
        final = rows[-1]["mse"]
        solved = f"solved at step {solved_at}" if solved_at else "not solved"
        assert (f"{cell.upper()} ended at validation mse {final:.4g} (step {rows[-1]['step']}), against the "
                f"baseline {1 / 6:.4g} ({100 * final / (1 / 6):.2g}% of it); {solved}.") in caption, caption  # fmt: skip


def test_an_accuracy_caption_says_how_far_above_each_baseline(tmp_path):
    from gatedrnn.tasks import base

    class Task(base.Task):  # scored by accuracy, with two named trivial predictors
        name, metric, lower_is_better, baseline = "classify", "accuracy", False, 0.1

        def baseline_results(self, split="test", fitted=True):
            return {"majority": {"accuracy": 0.25}, "uniform": {"accuracy": 0.1}}

    history = [{"step": 10, "split": "valid", "accuracy": 0.5}, {"step": 20, "split": "valid", "accuracy": 0.625}]
    caption = report._learning_curves_caption([RunView("GRU", "gru", Task(), None, history)])
    assert "GRU ended at validation accuracy 0.625 (step 20), against majority 0.25 and uniform 0.1 (+0.375 on the " \
           "best)." in caption  # no 'solved': the task has no such bar


def _decades(norms):
    drawn = norms.clamp_min(1e-30).double()
    return float(drawn[-1].log10() - drawn[0].log10())


def test_gradient_flow_caption_states_the_decay_recomputed_with_hidden_gradient_norms(demo):
    caption = _captions((demo / "report.html").read_text())["gradient_flow.png"]
    for cell, (task, initial, trained) in _runs(demo).items():
        inputs, targets = task.diagnostic_batch(0, 64)
        for model, when in ((initial, "at initialization"), (trained, "after training")):
            change = _decades(hidden_gradient_norms(model, inputs, targets, task.loss))
            pattern = rf"{cell.upper()}:.*?(?:≥ )?([\d.]+) orders of magnitude (down|up) {when}"
            match = re.search(pattern, caption)
            assert match, (pattern, caption)
            assert float(match.group(1)) == pytest.approx(abs(change), abs=0.051), (cell, when)
            if abs(change) > 0.05:
                assert match.group(2) == ("down" if change > 0 else "up")
    assert "over its 8 steps" in caption


def test_gates_caption_states_the_mean_gate_and_its_value_at_the_marked_inputs(demo):
    caption = _captions((demo / "report.html").read_text())["gates.png"]
    for cell, (task, _, trained) in _runs(demo).items():
        if cell == "rnn":
            assert "RNN:" not in caption
            continue
        inputs = task.diagnostic_batch(0, 64)[0][:1]
        name = "forget" if cell == "lstm" else "update"
        values = gate_trace(trained, inputs)[name][0, 0]  # (T, H)
        sentence = caption[caption.index(f"{cell.upper()}: mean {name} gate") :]
        assert _number(rf"mean {name} gate ([\d.]+)", sentence) == pytest.approx(float(values.mean()), abs=0.006)
        per_step = values.mean(1)
        marked = task.marked_positions(inputs[0])
        assert len(marked) == 2
        for t in marked:
            at = _number(rf"([\d.]+) at the marked input t = {t}\b", sentence)
            assert at == pytest.approx(float(per_step[t]), abs=0.006)
            if t:
                before = _number(rf"t = {t} \(([\d.]+) the step before\)", sentence)
                assert before == pytest.approx(float(per_step[t - 1]), abs=0.006)
        rest = [t for t in range(8) if t not in marked]
        other = _number(r"([\d.]+) at the other steps", sentence)
        assert other == pytest.approx(float(per_step[rest].mean()), abs=0.006)


def test_time_constants_caption_states_the_median_against_the_length(demo):
    caption = _captions((demo / "report.html").read_text())["time_constants.png"]
    task, _, trained = _runs(demo)["gru"]
    tau = ewma_time_constants(gate_trace(trained, task.diagnostic_batch(0, 64)[0]).update[0])
    assert _number(r"GRU: median τ ([\d.]+) steps against T = 8", caption) == pytest.approx(float(tau.median()),
                                                                                           abs=0.051)  # fmt: skip
    share = _number(r"; ([\d.]+)% of unit-steps have τ ≥ T", caption)
    assert share == pytest.approx(100 * float((tau >= 8).double().mean()), abs=0.051)


def test_a_figure_and_its_caption_read_one_computation(demo, tmp_path, monkeypatch):
    """The gradient norms are computed once per model (not again for the caption), and the
    caption's numbers are those of the lines the figure draws."""
    figures, calls = {}, []
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.__setitem__(path.name, fig))
    monkeypatch.setattr(report, "hidden_gradient_norms",
                        lambda *args: (calls.append(1), hidden_gradient_norms(*args))[1])  # fmt: skip
    views = [RunView(cell.upper(), cell, task, trained, [], 0, initial) for cell, (task, initial, trained)
             in _runs(demo).items()]  # fmt: skip
    captions = _captions(report.write_report(tmp_path, views, "t").read_text())
    assert len(calls) == 2 * len(views)  # at initialization and after training, each once
    caption = captions["gradient_flow.png"]
    initial_ax, trained_ax = figures["gradient_flow.png"].axes
    for ax, when in ((initial_ax, "at initialization"), (trained_ax, "after training")):
        for line in ax.get_lines():
            y = np.asarray(line.get_ydata(), dtype=np.float64)  # the drawn norms, the earliest step first
            change = math.log10(y[-1]) - math.log10(y[0])
            start = caption.index(f"{line.get_label()}:")
            sentence = caption[start : caption.index(" steps.", start)]
            assert f"{abs(change):.1f} orders of magnitude {'down' if change >= 0 else 'up'} {when}" in sentence
    texts = [t.get_text() for t in figures["time_constants.png"].axes[0].get_legend().get_texts()]
    (legend,) = [text for text in texts if "GRU" in text]
    median = re.search(r"median τ = ([\d.]+)", legend).group(1)
    assert f"GRU: median τ {median} steps" in captions["time_constants.png"]


# -- lines that overlap stay visible ---------------------------------------------------------


def _style(line):
    return line.get_linestyle(), line.get_marker()


def test_overlapping_runs_get_distinct_styles_the_thinner_on_top(tmp_path, monkeypatch):
    """Two runs of the same model draw the same curves: each gets its own dash pattern and marker,
    the thinner line is drawn above the thicker, and both are a little transparent."""
    from gatedrnn.train import TrainConfig

    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.append(fig))
    task, model = build(TrainConfig(task="adding", cell="rnn", length=40, hidden_size=4))
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(0.01)  # contracting: both gradients underflow to the 1e-30 floor
    history = [{"step": s, "split": "train", "loss": 0.2} for s in (10, 20, 30)]
    history += [{"step": s, "split": "valid", "mse": 0.17} for s in (10, 20, 30)]
    runs = [RunView(label, "rnn", task, model, history, 0, model) for label in ("a", "b", "c")]
    report.learning_curves(runs, tmp_path / "l.png")
    assert report.gradient_flow(runs, tmp_path / "g.png")
    axes = [*figures[0].axes, *figures[1].axes]
    assert min(float(line.get_ydata()[0]) for line in figures[1].axes[0].get_lines()) == pytest.approx(1e-30)
    for ax in axes:
        lines = [line for line in ax.get_lines() if line.get_label() in ("a", "b", "c")]
        assert len(lines) == 3
        assert np.allclose(lines[0].get_ydata(), lines[1].get_ydata())  # they overlap
        assert len({_style(line) for line in lines}) == 3, [_style(line) for line in lines]
        widths, orders = [line.get_linewidth() for line in lines], [line.get_zorder() for line in lines]
        assert widths == sorted(widths, reverse=True) and orders == sorted(orders) and len(set(orders)) == 3
        assert all(line.get_alpha() < 1 for line in lines)


# -- progress lines and the ETA --------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_pace_leaves_the_slow_first_step_out_of_the_speed():
    from gatedrnn.progress import WARMUP_STEPS, Pace

    clock = FakeClock()
    pace = Pace(clock)
    clock.now += 60.0  # the first step builds the kernels
    pace.tick()
    while pace.steps < WARMUP_STEPS:
        clock.now += 0.5
        pace.tick()
    assert pace.rate is None  # timed from here
    for _ in range(20):
        clock.now += 0.5
        pace.tick()
    assert pace.rate == pytest.approx(2.0)  # 0.5 s a step; the average from the start would be 24 / 71.5 = 0.34


def test_the_bars_eta_is_not_thrown_off_by_a_slow_first_step(monkeypatch):
    from gatedrnn import train

    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    out = io.StringIO()
    bar = train.progress_bar(100, 0, "lstm on adding", file=out, disable=False, mininterval=0, dynamic_ncols=False)
    assert "lstm on adding" in str(bar)
    clock.now += 60.0  # a slow first step
    bar.update(1)
    assert "<?" in str(bar)  # no ETA during the warm-up, rather than one of an hour
    for _ in range(9):
        clock.now += 0.5
        bar.update(1)
    assert bar.format_dict["rate"] == pytest.approx(2.0)
    assert "10/100" in str(bar) and "<00:45" in str(bar), str(bar)  # 90 steps at 2 a second; from the start: 09:40
    bar.close()


def test_the_first_evaluation_lines_eta_is_not_thrown_off_by_a_slow_first_step(tmp_path, monkeypatch, capsys):
    from gatedrnn.tasks.adding import Adding
    from gatedrnn.train import TrainConfig, train

    real = Adding.train_batch

    def slow_first(self, step, batch_size, seed):
        if step == 0:
            time.sleep(2.0)  # as the first call of a process, which builds or loads the native kernels
        return real(self, step, batch_size, seed)

    monkeypatch.setattr(Adding, "train_batch", slow_first)
    config = TrainConfig(task="adding", cell="gru", length=6, hidden_size=4, batch_size=4, steps=100, eval_every=20,
                         threads=1)  # fmt: skip
    train(config, tmp_path / "run", progress=True)  # stdout is captured: no terminal, a line per evaluation
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert lines[0].startswith("step 20/100 (gru)  train loss") and all("(gru)" in line for line in lines)
    minutes, seconds = re.search(r"ETA (\d+)m(\d+)s", lines[0]).groups()
    eta = 60 * int(minutes) + int(seconds)
    valid = {r["step"]: r["seconds"] for r in read_log(tmp_path / "run" / "metrics.jsonl") if r["split"] == "valid"}
    left = valid[100] - valid[20]  # what the remaining 80 steps took
    assert eta <= left + 1.0, (lines[0], left)  # an average from the start says 80 x 2 s / 20 = 8 s at least
    assert eta < 6


def test_the_demos_progress_lines_name_the_cell_training(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--cells", "rnn", "gru", "--length", "4", "--steps", "20", "--hidden-size", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert "[1/2] training the RNN (20 steps)" in printed and "[2/2] training the GRU (20 steps)" in printed
    steps = [line for line in printed if line.startswith("step ")]
    assert [line.split()[:2] for line in steps] == [["step", "20/20"]] * 2
    assert "(rnn)" in steps[0] and "(gru)" in steps[1]
    assert printed.index("[2/2] training the GRU (20 steps)") > printed.index(steps[0])


# -- every built-in task introduces itself ---------------------------------------------------


def _text(tmp_path):
    from gatedrnn.tasks.text import Text

    path = tmp_path / "hamlet.txt"
    path.write_text("to be, or not to be: that is the question.\n" * 20)
    return Text(str(path), batch_size=4, bptt=8)


def _timeseries(tmp_path):
    from gatedrnn.tasks.timeseries import TimeSeries

    path = tmp_path / "series.csv"
    path.write_text("year,value\n" + "".join(f"{1900 + k},{10 + k % 4 + 0.1 * k}\n" for k in range(60)))
    return TimeSeries(str(path), target="value", window=6, season=4)


def _classify(tmp_path):
    from gatedrnn.tasks.classify import Classify

    path = tmp_path / "shapes.csv"
    path.write_text("".join(f"{k % 3},{k % 5},{k % 7},{k % 2},{k % 3}\n" for k in range(40)))
    return Classify(str(path), mode="pixel")


def _music(tmp_path):
    from scipy.io import savemat

    from gatedrnn.tasks.music import KEYS, Music

    rng = np.random.default_rng(0)
    cells = {}
    for key, count in (("traindata", 3), ("validdata", 2), ("testdata", 2)):
        cell = np.empty((1, count), dtype=object)
        for i in range(count):
            cell[0, i] = (rng.random((12, KEYS)) < 0.1).astype(np.float64)
        cells[key] = cell
    savemat(tmp_path / "rolls.mat", cells)
    return Music(str(tmp_path / "rolls.mat"), crop=10)


def _qa(tmp_path):
    from gatedrnn.tasks.qa import QA

    story = ("1 Mary moved to the bathroom.\n2 John went to the hallway.\n3 Where is Mary? \tbathroom\t1\n"
             "4 Daniel went back to the garden.\n5 Where is Daniel? \tgarden\t4\n")  # fmt: skip
    (tmp_path / "qa1_x_train.txt").write_text(story * 10)
    (tmp_path / "qa1_x_test.txt").write_text(story * 3)
    return QA(str(tmp_path / "qa1_x_train.txt"))


def _video(tmp_path):
    from gatedrnn.tasks.moving_digits import DIGIT
    from gatedrnn.tasks.video import Video

    rows = []
    for label in range(10):
        for k in range(10):
            image = np.zeros((DIGIT, DIGIT), dtype=int)
            image[4 + k : 12 + k, 6 + label : 12 + label] = 200
            rows.append(",".join(map(str, image.flatten())) + f",{label}")
    with gzip.open(tmp_path / "digits.csv.gz", "wt") as f:
        f.write("\n".join(rows) + "\n")
    return Video(str(tmp_path / "digits.csv.gz"), frames_in=2, frames_out=3, frame_size=28, digits=1, patch=4,
                 valid_size=3, test_size=3)  # fmt: skip


def _adding(tmp_path):
    from gatedrnn.tasks.adding import Adding

    return Adding(length=12)


def _copy(tmp_path):
    from gatedrnn.tasks.copy import Copy

    return Copy(length=15)


def _parity(tmp_path):
    from gatedrnn.tasks.parity import Parity

    return Parity(length=40)


def _mqar(tmp_path):
    from gatedrnn.tasks.mqar import MQAR

    return MQAR(length=64, kv_pairs=16)


BUILDERS = {"adding": _adding, "copy": _copy, "text": _text, "timeseries": _timeseries, "classify": _classify,
            "music": _music, "qa": _qa, "video": _video, "parity": _parity, "mqar": _mqar}  # fmt: skip


def test_every_built_in_task_has_a_builder_here():
    from gatedrnn.tasks import BUILT_IN

    assert set(BUILDERS) == set(BUILT_IN)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_built_in_task_introduces_itself_naming_its_metric_and_baseline(name, tmp_path):
    task = BUILDERS[name](tmp_path)
    assert task.name == name
    lines = task.introduction()
    assert lines and all(isinstance(line, str) and line.strip() for line in lines)
    text = " ".join(lines)
    assert task.metric.lower() in text.lower(), (task.metric, text)
    assert "baseline" in text and "solved" in text.lower()
    shown = {f"{task.baseline:{form}}" for form in (".1f", ".2f", ".3f", ".4f", ".4g")}
    assert any(value in text for value in shown), (task.baseline, text)  # its real baseline, not a copied number
    if hasattr(task, "length"):
        assert f"T = {task.length}" in text


def test_introductions_follow_the_tasks_attributes(tmp_path):
    """The numbers in an introduction are the task's own: its length, its baseline's formula, its sizes."""
    from gatedrnn.tasks.copy import Copy

    copy_text = " ".join(Copy(length=40).introduction())
    assert "then 40 blanks" in copy_text and "(60 steps)" in copy_text
    assert f"10 ln 8 / 60 = {10 * math.log(8) / 60:.4f}" in copy_text
    text = _text(tmp_path)
    assert f"among the {text.vocab_size} characters" in " ".join(text.introduction())
    series = _timeseries(tmp_path)
    assert f"The last {series.test_size} rows are the test set" in " ".join(series.introduction())
    video = _video(tmp_path)
    assert "sees 2 frames of 1 digit moving in a 28×28 frame and predicts the next 3" in " ".join(video.introduction())
