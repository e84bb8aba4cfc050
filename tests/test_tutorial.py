"""The tutorial: docs/tutorial/lecture.ipynb runs from top to bottom and shows what the lecture
claims, and docs/tutorial/index.md holds the same code in the same order with the figures the
notebook writes.

The notebook is executed once per session with nbclient (kernel python3), its figures going to a
temporary folder (``GATEDRNN_TUTORIAL_FIGURES``); the checks read its printed measurements. It
takes about half a minute on two busy cores; it is skipped where the data sets are absent.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from gatedrnn.tasks.presets import DATA_ENV, data_dir

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial"
NOTEBOOK, PAGE = TUTORIAL / "lecture.ipynb", TUTORIAL / "index.md"
SAVED = re.compile(r'FIGURES / "([\w.-]+\.png)"')  # a figure a code cell writes
SHOWN = re.compile(r"!\[[^\]]+\]\(figures/([\w.-]+\.png)\)")  # a figure the page embeds
BLOCK = re.compile(r"^(?:<!-- skip: (?P<reason>[^>]+) -->\n)?```python\n(?P<code>.*?)\n```$", re.M | re.S)
BABI = "babi-en10k/qa1_single-supporting-fact"
NEEDS = ["tinyshakespeare.txt", "music/JSB_Chorales.mat", "mnist_5k.csv.gz", f"{BABI}_train.txt",
         f"{BABI}_test.txt"]  # step 5's data sets, in data_dir()
PNG = b"\x89PNG\r\n\x1a\n"
BUDGET_S = 240  # the notebook takes ~30 s on 2 busy cores; eight times that means something grew


def code_cells() -> list[str]:
    nbformat = pytest.importorskip("nbformat")
    return [cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == "code"]


def page_blocks() -> list[re.Match]:
    return list(BLOCK.finditer(PAGE.read_text(encoding="utf-8")))


# -- the two forms agree (no kernel) -----------------------------------------------------------


def test_page_holds_the_notebook_code_in_order():
    blocks = [m["code"] for m in page_blocks()]
    fences = PAGE.read_text(encoding="utf-8").count("```python")
    assert len(blocks) == fences, "a ```python block of index.md is unclosed, or its skip comment malformed"
    assert blocks == code_cells(), "index.md's code blocks must be lecture.ipynb's code cells, in order"


def test_page_shows_each_figure_the_notebook_writes_right_after_its_code():
    page = PAGE.read_text(encoding="utf-8")
    written = [name for code in code_cells() for name in SAVED.findall(code)]
    assert len(written) >= 9 and len(set(written)) == len(written)
    assert SHOWN.findall(page) == written
    for block in page_blocks():  # each figure right below the block that draws it
        for name in SAVED.findall(block["code"]):
            assert re.match(rf"\s*!\[[^\]]+\]\(figures/{re.escape(name)}\)", page[block.end() :]), name
    for name in written:  # the committed figures, as the notebook wrote them
        path = TUTORIAL / "figures" / name
        assert path.is_file(), f"{path} is missing: run docs/tutorial/lecture.ipynb from docs/tutorial"
        assert path.read_bytes()[:8] == PNG, f"{path} is not a PNG"


def test_page_skips_exactly_the_blocks_that_read_the_data_sets():
    skipped = [m for m in page_blocks() if m["reason"]]
    assert 0 < len(skipped) <= 4, "keep the page's skipped blocks few"
    for block in page_blocks():
        reads_data = "DATA /" in block["code"]
        assert bool(block["reason"]) == reads_data, block["code"][:200]


def test_notebook_is_kept_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "clear the notebook's outputs first"


# -- the notebook runs, and shows the lecture's claims ---------------------------------------------


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """(each code cell's stdout, the folder of its figures, seconds it took)."""
    data = data_dir()
    missing = [name for name in NEEDS if not (data / name).exists()]
    if missing:
        pytest.skip(f"the tutorial reads {', '.join(missing)} in {data}, absent here "
                    f"(set {DATA_ENV} to the folder of the data sets)")  # fmt: skip
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    folder = tmp_path_factory.mktemp("tutorial")
    figures = folder / "figures"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GATEDRNN_TUTORIAL_FIGURES", str(figures))  # the kernel inherits the environment
        patch.setenv("TMPDIR", str(folder))  # its training runs go to tempfile.mkdtemp(): here
        started = time.perf_counter()
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(folder)}}).execute()  # fmt: skip
        seconds = time.perf_counter() - started
    print(f"\ndocs/tutorial/lecture.ipynb ran in {seconds:.1f} s")
    cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    stdout = ["".join(out.text for out in cell.outputs if out.get("name") == "stdout") for cell in cells]
    return stdout, figures, seconds


def measured(stdout: list[str], pattern: str) -> list:
    """What the notebook printed in the place of ``pattern``'s groups, in every cell."""
    found = re.findall(pattern, "".join(stdout))
    assert found, f"the notebook printed no line matching {pattern!r}:\n{stdout}"
    return found


def test_notebook_runs_in_time(executed):
    _, _, seconds = executed
    assert seconds < BUDGET_S


def test_notebook_writes_every_figure_the_page_shows(executed):
    from PIL import Image

    _, figures, _ = executed
    shown = SHOWN.findall(PAGE.read_text(encoding="utf-8"))
    assert sorted(p.name for p in figures.iterdir()) == sorted(shown)
    for name in shown:
        path = figures / name
        assert path.is_file(), f"the notebook did not write {name}"
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 200, (name, image.size)
            darkest, brightest = image.convert("L").getextrema()
            assert brightest - darkest > 100, f"{name} is blank"


def test_the_rnn_layer_is_its_equation(executed):
    (difference,) = measured(executed[0], r"max \|h by hand - layer output\| = (\S+)")
    assert float(difference) < 1e-5


def test_gated_cells_learn_the_adding_problem_and_the_rnn_does_not(executed):
    pattern = r"(\w+): test MSE (\S+) after \d+ steps, solved at step (\w+)"
    rows = {cell: (float(mse), solved) for cell, mse, solved in measured(executed[0], pattern)}
    assert set(rows) == {"rnn", "lstm", "gru"}
    assert rows["rnn"][1] == "None" and rows["rnn"][0] > 0.1  # the baseline is 1/6
    for cell in ("lstm", "gru"):
        assert rows[cell][1] != "None" and rows[cell][0] < 0.02, (cell, rows[cell])


def test_the_rnn_gradient_vanishes_and_the_trained_gates_keep_it(executed):
    pattern = r"(\w+) (at initialization|after training): ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ = (\S+)"
    ratio = {(cell, when): float(value) for cell, when, value in measured(executed[0], pattern)}
    assert len(ratio) == 6
    assert ratio["rnn", "at initialization"] < 1e-5 and ratio["rnn", "after training"] < 1e-5
    for cell in ("lstm", "gru"):
        assert ratio[cell, "after training"] > 1e-2, cell
        assert ratio[cell, "after training"] > 1e3 * ratio["rnn", "after training"], cell
        assert ratio[cell, "after training"] > 10 * ratio[cell, "at initialization"], cell


def test_the_lstm_cell_state_is_a_conveyor_belt(executed):
    stdout = executed[0]
    (difference,) = measured(stdout, r"max \|c_t - \(f_t c_\(t-1\) \+ i_t g_t\)\| = (\S+)")
    assert float(difference) < 1e-5
    ((moved, value),) = measured(stdout, r"the prediction moves by (\S+) for a first marked value of (\S+)")
    assert abs(float(moved) - float(value)) < 0.15  # carried from the first half of the sequence to its end


def test_the_gru_is_a_moving_average_at_the_rate_one_minus_z(executed):
    stdout = executed[0]
    (blend,) = measured(stdout, r"max \|h_t - \(1 - z_t\) n_t - z_t h_\(t-1\)\| = (\S+)")
    (ewma,) = measured(stdout, r"max \|h_t - EWMA of n at rate 1 - z\| = (\S+)")
    assert float(blend) < 1e-5 and float(ewma) < 1e-5


def test_the_character_model_writes_after_its_prompt(executed):
    (sample,) = [out for out in executed[0] if out.startswith("ROMEO:\n")]
    assert len(sample) > 200 and sample.count("\n") >= 3  # 240 characters sampled: lines of a play
    assert all(c.isprintable() or c == "\n" for c in sample)
