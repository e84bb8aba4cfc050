"""The gate explorer: the features of a text and the units' ranking recomputed by hand, the
trace it colours with checked against the cell's equations, a self-contained page, the
command's errors, and the page in headless Chromium (a unit picked, the colours change)."""

import json
import math
import re
import shutil
import statistics

import pytest
import torch
from test_report_browser import chromium, console_errors

import gatedrnn
from gatedrnn.cli import main
from gatedrnn.diagnostics import explore
from gatedrnn.diagnostics.gates import gate_trace
from gatedrnn.models import SequenceModel

PLAY = ('HAMLET: "To be, or not to be" (that is [the] question).\nOPHELIA: Good my lord,\n'
        "How does your honour for this many a day? </script>\n") * 12  # fmt: skip
TEXT = 'OPHELIA: "Good (my [lord])"\nHAMLET: To be.\n</script><b>\n'


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explore")
    data, run = folder / "play.txt", folder / "run"
    data.write_text(PLAY)
    assert main(["train", "--task", "text", "--data", str(data), "--cell", "lstm", "--hidden-size", "8", "--bptt",
                 "16", "--batch-size", "4", "--steps", "4", "--threads", "1", "--no-report",
                 "--out", str(run)]) == 0  # fmt: skip
    return data, run


def page_data(path) -> dict:
    """The data a page carries, as its script reads it."""
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', path.read_text(), re.S)
    return json.loads(found.group(1))


# -- features and ranking ------------------------------------------------------------------


def test_the_features_of_a_text():
    text = 'ab\n"c (d"\n[e]) f'
    assert explore.position_in_line(text) == [0, 1, 2, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5]
    assert explore.inside_quotes(text) == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert explore.after_newline(text) == [0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert explore.position_in_word(text) == [1, 2, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert explore.bracket_depth(text) == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 1, 0, 0, 0]
    assert explore.bracket_depth("a))(") == [0, 0, 0, 1]  # a stray closing bracket never goes below 0


def test_a_unit_that_counts_the_column_ranks_first_with_correlations_recomputed_by_hand():
    text = 'ab "cd" (e)\nfghij "k"\nxyz (a [b])\n' * 3
    T = len(text)
    noise = torch.randn(T, generator=torch.Generator().manual_seed(0))
    column = torch.tensor(explore.position_in_line(text))
    quotes = torch.tensor(explore.inside_quotes(text))
    values = torch.stack([noise, 2 * column + 5, 0.05 * noise - quotes, torch.full((T,), 7.0)], 1)  # (T, 4)
    ranks = explore.ranking(values, text)
    assert [row.unit for row in ranks] == [1, 2, 0, 3]
    assert ranks[0].feature == "position in line" and ranks[0].r == pytest.approx(1.0) and ranks[0].score == ranks[0].r
    assert ranks[1].feature == "inside quotes" and -1 < ranks[1].r < -0.9  # anti-correlated: a negative r
    for row in ranks[:3]:
        for name, feature in explore.FEATURES.items():  # Pearson's r, by the statistics module
            assert row.rs[name] == pytest.approx(statistics.correlation(feature(text), values[:, row.unit].tolist()),
                                                 abs=1e-6)  # fmt: skip
        assert row.score == max(abs(r) for r in row.rs.values())
    assert ranks[3].rs == dict.fromkeys(explore.FEATURES, 0.0) and ranks[3].score == 0  # constant: follows nothing


def test_a_feature_absent_from_the_text_scores_zero_and_is_named_on_the_page():
    text = "no quotes here\nnor brackets\n"
    values = torch.randn(len(text), 3, generator=torch.Generator().manual_seed(1))
    assert all(row.rs["inside quotes"] == row.rs["inside brackets"] == 0.0 for row in explore.ranking(values, text))
    html = explore.page(text, {"hidden": values}, units=2)
    assert "Constant in this text, so no unit can follow it: inside quotes, inside brackets." in html


def test_sample_starts_a_line():
    assert explore.sample("partial line\nwhole line\nnext", 12) == "whole line\nn"
    assert explore.sample("no line break", 5) == "no li"
    assert explore.sample("ends here\n", 5) == "ends "  # nothing after the break: from the start


# -- the trace it colours --------------------------------------------------------------------


def test_the_lstm_trace_follows_the_cell_equations_after_a_line_break():
    torch.manual_seed(0)
    index = {c: i for i, c in enumerate("\nab ")}
    model = SequenceModel("lstm", 6, 5, len(index), vocab_size=len(index))
    trace = explore.trace_text(model, index, "ab ba\nb")
    assert list(trace) == ["input", "forget", "candidate", "output", "cell", "hidden"]
    assert explore.state_name(trace) == "cell"
    i, f, g, o, c, h = trace.values()  # each (T, H)
    c_first = gate_trace(model, torch.tensor([[index["\n"]]])).cell[0, 0]  # (1, H): after the line break read first
    c_prev = torch.cat([c_first, c[:-1]])
    torch.testing.assert_close(c, f * c_prev + i * g)  # c_t = f_t c_{t-1} + i_t g_t
    torch.testing.assert_close(h, o * torch.tanh(c))  # h_t = o_t tanh(c_t)
    ids = torch.tensor([[index[ch] for ch in "\nab ba\nb"]])
    torch.testing.assert_close(h, model.hidden(ids)[0][0, 1:])  # the layer's own outputs, line break dropped


def test_the_gru_trace_and_a_second_layer():
    torch.manual_seed(0)
    index = {c: i for i, c in enumerate("xy")}  # no line break in the vocabulary: read from the first character
    model = SequenceModel("gru", 4, 3, 2, num_layers=2, vocab_size=2)
    trace = explore.trace_text(model, index, "xyyx", layer=1)
    assert list(trace) == ["reset", "update", "candidate", "hidden"] and explore.state_name(trace) == "hidden"
    r, z, n, h = trace.values()
    h_prev = torch.cat([torch.zeros(1, 3), h[:-1]])
    torch.testing.assert_close(h, (1 - z) * n + z * h_prev)  # h_t = (1 - z_t) n_t + z_t h_{t-1}
    torch.testing.assert_close(h, model.hidden(torch.tensor([[0, 1, 1, 0]]))[0][0])  # the top layer's outputs
    with pytest.raises(ValueError, match=r"--layer must be between 0 and 1 \(the model has 2\), got 2"):
        explore.trace_text(model, index, "xy", layer=2)


# -- the page and the command ----------------------------------------------------------------


def test_the_page_holds_the_best_ranked_units_and_their_values(text_run, tmp_path):
    _, run = text_run
    out = tmp_path / "page.html"
    assert main(["explore", str(run), "--text", TEXT, "--units", "3", "--out", str(out)]) == 0
    data = page_data(out)
    assert data["characters"] == list(TEXT) and data["state"] == "cell" and len(data["units"]) == 3
    trained = gatedrnn.load(run)
    trace = explore.trace_text(trained.model, trained.vocab.index, TEXT)
    ranks = explore.ranking(trace["cell"], TEXT)
    assert data["units"] == [row.unit for row in ranks[:3]]
    assert [row["r"] for row in data["ranking"]] == [pytest.approx(row.r, abs=1e-4) for row in ranks[:3]]
    for quantity in data["quantities"]:
        expected = trace[quantity["name"]][:, data["units"]].T  # (N, T)
        torch.testing.assert_close(torch.tensor(quantity["values"]), expected, atol=6e-4, rtol=0)
        if quantity["name"] in explore.GATES:
            assert quantity["low"] == [0.0] * 3 and quantity["high"] == [1.0] * 3
        else:  # symmetric about 0, out to each unit's largest |value|
            assert quantity["high"] == pytest.approx(expected.abs().amax(1).tolist()) and quantity["low"] == [
                -v for v in quantity["high"]]  # fmt: skip
    assert main(["explore", str(run), "--text", TEXT, "--units", "100", "--out", str(out)]) == 0
    assert len(page_data(out)["units"]) == 8  # all the units there are


def test_the_page_is_self_contained(text_run, tmp_path):
    _, run = text_run
    out = tmp_path / "page.html"
    assert main(["explore", str(run), "--text", TEXT, "--out", str(out)]) == 0
    html = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)  # nothing fetched
    assert not re.search(r"\b(src|href)\s*=", html) and "<link" not in html and "url(" not in html
    assert "http://" not in html and "https://" not in html and "@import" not in html
    # the text's own "</script>" cannot close the data: the page's two scripts close, and nothing else
    assert html.count("</script>") == 2 and html.count("<script") == 2
    assert [t for t in tmp_path.iterdir()] == [out]  # written atomically: no temporary file left


def test_the_default_text_is_the_start_of_the_test_split(text_run, tmp_path, monkeypatch):
    data, run = text_run
    monkeypatch.setenv("GATEDRNN_DATA", str(data.parent))  # the data directory: where a run folder may point
    assert main(["explore", str(run)]) == 0
    test = PLAY[int(0.85 * len(PLAY)) : int(0.9 * len(PLAY))]  # the text task's test split of one file
    assert "".join(page_data(run / "explorer.html")["characters"]) == test[test.index("\n") + 1 :]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err.strip()


def test_errors_are_one_line(text_run, tmp_path, capsys):
    data, run = text_run
    characters = len(set(PLAY))
    assert _error(capsys, ["explore", str(run), "--text", "To be\nor ~not"]) == (
        "gatedrnn explore: error: --text: '~' at character 10 (line 2, column 4) is not among the "
        f"{characters} characters of the run's vocabulary")  # fmt: skip
    assert _error(capsys, ["explore", str(run), "--text", ""]).endswith("--text is empty: give at least one character")
    assert _error(capsys, ["explore", str(run), "--text", "a", "--layer", "1"]).endswith(
        "--layer must be between 0 and 0 (the model has 1), got 1")  # fmt: skip
    assert _error(capsys, ["explore", str(tmp_path / "none")]).endswith(f"{tmp_path / 'none'} holds no run (no "
                                                                       "config.json); give the folder a run was "
                                                                       "trained into")  # fmt: skip
    with pytest.raises(SystemExit):  # argparse's own one line
        main(["explore", str(run), "--units", "0"])
    assert "--units: expected a positive integer, got 0" in capsys.readouterr().err
    # a copy of the run whose data is gone: its text must be given
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    config = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "data": str(tmp_path / "gone.txt")}))
    assert main(["explore", str(moved), "--trust-edited"]) == 2  # (a note names the edited config.json first)
    assert capsys.readouterr().err.strip().endswith("give the text to explore with --text")
    assert main(["explore", str(moved), "--text", "To be", "--trust-edited"]) == 0


def test_runs_of_other_tasks_and_word_runs_are_refused(tmp_path, capsys):
    adding = tmp_path / "adding"
    assert main(["train", "--task", "adding", "--length", "5", "--hidden-size", "4", "--steps", "2", "--threads", "1",
                 "--no-report", "--out", str(adding)]) == 0  # fmt: skip
    assert _error(capsys, ["explore", str(adding), "--text", "x"]) == (
        f"gatedrnn explore: error: {adding} holds a run of the adding task; explore colours characters, so it "
        "reads character-level language models (gatedrnn train --task text --level char)")  # fmt: skip
    data, words = tmp_path / "words.txt", tmp_path / "words"
    data.write_text("the cat sat on the mat\n" * 20)
    assert main(["train", "--task", "text", "--level", "word", "--data", str(data), "--hidden-size", "4", "--bptt",
                 "4", "--batch-size", "2", "--steps", "2", "--threads", "1", "--out", str(words)]) == 0  # fmt: skip
    err = _error(capsys, ["explore", str(words), "--text", "the cat"])
    assert f"{words} holds a word-level run; explore colours characters" in err
    assert not (words / "explorer.html").exists()  # nor in its report: the explorer colours characters
    assert "<iframe" not in (words / "report.html").read_text()


# -- in the browser ----------------------------------------------------------------------------

READ_COLOURS = ("return Array.from(document.querySelectorAll('#text span'))"
                ".map(s => getComputedStyle(s).backgroundColor)")
LOW, MID, HIGH = (33, 102, 172), (247, 247, 247), (178, 24, 43)


def colours(values, low, high) -> list[str]:
    """The colour the page gives each value, recomputed as its script does (diverging blue,
    white, red; JavaScript's Math.round is floor(x + 0.5))."""
    out = []
    for v in values:
        p = min(1, max(0, (v - low) / (high - low)))
        a, b, s = (LOW, MID, 2 * p) if p < 0.5 else (MID, HIGH, 2 * p - 1)
        out.append("rgb({}, {}, {})".format(*(math.floor(x + (y - x) * s + 0.5) for x, y in zip(a, b))))
    return out


def test_the_explorer_in_a_browser_colours_the_characters_by_the_unit_picked(text_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, run = text_run
    out = tmp_path / "page.html"
    assert main(["explore", str(run), "--text", TEXT, "--units", "4", "--out", str(out)]) == 0
    data = page_data(out)
    quantities = {q["name"]: q for q in data["quantities"]}

    def expected(name, k):
        q = quantities[name]
        return colours(q["values"][k], q["low"][k], q["high"][k])

    with chromium() as driver:
        driver.get(out.resolve().as_uri())
        assert driver.execute_script("return document.querySelectorAll('#text span').length") == len(TEXT)
        shown = driver.execute_script("return document.getElementById('text').textContent")
        assert shown == TEXT.replace("\n", "↵\n")  # every character, a line break shown as ↵
        first = driver.execute_script(READ_COLOURS)
        assert first == expected("cell", 0)  # the best-ranked unit's cell state to start with
        Select(driver.find_element(By.ID, "unit")).select_by_index(1)
        second = driver.execute_script(READ_COLOURS)
        assert second == expected("cell", 1) and second != first
        rows = driver.find_elements(By.CSS_SELECTOR, "#ranking tbody tr")
        assert [int(row.find_elements(By.TAG_NAME, "td")[1].text) for row in rows] == data["units"]
        rows[2].click()  # a row of the ranking picks its unit
        assert driver.find_element(By.ID, "unit").get_attribute("value") == "2"
        assert "picked" in rows[2].get_attribute("class")
        assert driver.execute_script(READ_COLOURS) == expected("cell", 2)
        Select(driver.find_element(By.ID, "quantity")).select_by_visible_text("forget gate f")
        assert driver.execute_script(READ_COLOURS) == expected("forget", 2)
        assert driver.find_element(By.ID, "high").text == "1.00"
        assert console_errors(driver) == []
