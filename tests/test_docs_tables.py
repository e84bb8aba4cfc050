"""The docs' tables of measured numbers are what ``benchmarks/tables.py`` makes from
``benchmarks/results/*.json``, and every results file says which command and machine made it."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import results_io, tables  # noqa: E402

RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
MACHINE = {"cpu", "cores", "threads", "torch"}


@pytest.fixture
def fresh_results():
    """Each test reads the results files anew (``tables.load`` keeps what it read)."""
    load = tables.load
    load.cache_clear()
    yield
    load.cache_clear()


def test_every_page_holds_the_tables_its_json_makes(fresh_results):
    assert tables.check() == [], "run `python -m benchmarks.tables` and commit the pages"


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_every_results_file_names_its_command_and_machine(path):
    data = json.loads(path.read_text())
    assert isinstance(data, dict), f"{path.name}: a list of rows without \"command\" and \"machine\""
    assert data["command"] and all(isinstance(line, str) and line.split()[0] in ("python", "gatedrnn")
                                   for line in data["command"]), data["command"]  # fmt: skip
    if isinstance(data["machine"], dict):
        machines = [data["machine"]]
    else:  # tasks.json: two sessions' runs, each row with its own
        machines = [row["machine"] for row in data["rows"]]
    for machine in machines:
        assert MACHINE <= machine.keys(), (path.name, machine)
        assert all(machine[key] not in ("", None) for key in MACHINE), (path.name, machine)


def test_every_results_file_feeds_a_table(monkeypatch, fresh_results):
    read = []
    original = tables.load

    def spy(name):
        read.append(name)
        return original(name)

    monkeypatch.setattr(tables, "load", spy)
    for page in tables.TABLES.values():
        for make in page.values():
            make()
    assert set(read) == {path.name for path in RESULTS}


def copy_pages(to: Path) -> None:
    for page in tables.TABLES:
        (to / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / page, to / page)


def test_check_names_an_edited_table_and_write_restores_it(tmp_path, monkeypatch, fresh_results):
    copy_pages(tmp_path)
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    page = tmp_path / "docs" / "conv.md"
    text = page.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| ConvLSTM |"))
    page.write_text(text.replace(row, row.replace("0.", "9.", 1)))

    assert tables.check() == ["docs/conv.md: table conv-speed differs from what its JSON makes"]
    assert tables.main(["--check"]) == 1
    written, problems = tables.write()
    assert written == ["docs/conv.md: wrote table conv-speed"]
    assert problems == [] and tables.check() == []
    assert page.read_text() == text


def test_check_names_a_missing_region(tmp_path, monkeypatch, fresh_results):
    copy_pages(tmp_path)
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    page = tmp_path / "docs" / "distributed.md"
    page.write_text(page.read_text().replace("<!-- table: ddp -->", "<!-- table: dd -->"))
    assert sorted(tables.check()) == [
        "docs/distributed.md: table dd: not a table benchmarks/tables.py makes",
        "docs/distributed.md: table ddp: no <!-- table: ddp --> ... <!-- /table --> region",
    ]


def test_a_changed_number_in_a_json_changes_its_table(tmp_path, monkeypatch, fresh_results):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    data = json.loads((results / "ddp.json").read_text())
    data["results"][0]["steps_per_second"]["2x1"] *= 2  # ddp.py keeps its rows under "results"
    (results / "ddp.json").write_text(json.dumps(data))
    monkeypatch.setattr(tables, "RESULTS", results)
    assert tables.check() == ["docs/distributed.md: table ddp differs from what its JSON makes"]


def test_a_broken_results_file_is_a_one_line_error(tmp_path, monkeypatch, capsys, fresh_results):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    (results / "conv_speed.json").write_text(json.dumps([{"layer": "ConvLSTM"}]))
    monkeypatch.setattr(tables, "RESULTS", results)
    assert tables.main(["--check"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "conv_speed.json" in error and "\"command\" and \"machine\"" in error


def test_each_table_ends_with_the_command_and_machine_of_its_json(fresh_results):
    data = json.loads((ROOT / "benchmarks" / "results" / "conv_speed.json").read_text())
    last = tables.conv_speed().splitlines()[-1]
    assert last.startswith("Measured by ") and f"`{data['command'][0]}`" in last
    assert data["machine"]["cpu"] in last and f"torch {data['machine']['torch']}" in last
    assert f"{data['machine']['cores']} cores" in last


def test_the_music_table_holds_each_variants_mean_over_seeds(fresh_results):
    rows = json.loads((ROOT / "benchmarks" / "results" / "music_gru.json").read_text())["rows"]
    lines = [line.split(" | ") for line in tables.music_gru().splitlines() if line.startswith("| `")]
    assert len(lines) == len({(r["preset"], r["variant"]) for r in rows})
    for preset, variant, seeds, valid, test in lines:
        mine = [r for r in rows if (f"| `{r['preset']}`", f"`{r['variant']}`") == (preset, variant)]
        assert seeds == ", ".join(str(r["seed"]) for r in mine)
        assert float(valid) == pytest.approx(sum(r["valid"] for r in mine) / len(mine), abs=5e-4)
        assert float(test.rstrip(" |")) == pytest.approx(statistics.fmean(r["test"] for r in mine), abs=5e-4)


def test_the_random_shapes_headline_recounts_the_autotuners_looks(fresh_results):
    """README's random-shapes table: per seed, the fused-loop wins a later look overturned
    (first look: fused loop; last: torch's kernel), and of those the ones where the sweep read
    the fused loop over 1.05x torch's kernel, recounted from each row's looks."""
    lines = [line.strip("|").split("|") for line in tables.random_shapes_headline().splitlines()[2:]
             if line.startswith("| ")]  # fmt: skip
    assert lines
    for cells in lines:
        seed, *_, overturned, slower = (cell.strip() for cell in cells)
        rows = json.loads((ROOT / "benchmarks" / "results" / f"random_shapes_seed{seed}.json").read_text())["rows"]
        turned = [r for r in rows if r.get("autotune") and r["autotune"][0]["winner"] == "fused"
                  and r["autotune"][-1]["winner"] == "torch"]  # fmt: skip
        if not any(r.get("autotune") for r in rows):
            assert overturned == slower == tables.DASH
            continue
        assert int(overturned) == len(turned)
        assert int(slower) == sum(r["fused"] > 1.05 * r["torch"] for r in turned)


def test_the_babi_count_recounts_the_table(fresh_results):
    """The sentence under the bAbI table counts what its rows show."""
    beaten = tied = total = 0
    for line in tables.babi().splitlines()[2:]:
        if not line.startswith("| "):
            break
        _, rnn, lstm, gru, weston, keras, *_ = [cell.strip() for cell in line.strip("|").split("|")]
        total += 1
        best = max(float(lstm), float(gru))
        beaten += best > float(keras)
        tied += best == float(keras)
    sentence = tables.babi_summary()
    assert f"Keras' example on {beaten} of the {total} tasks" in sentence
    assert ("ties it on" in sentence) == (tied > 0)


def test_numbers_are_written_one_way():
    assert tables.fixed(1296.449, 1) == "1,296.4"
    assert tables.ratio(0.2898) == "0.29" and tables.ratio(1.005) in ("1.00", "1.01")
    assert tables.count(26000) == "26,000"
    assert tables.percent(0.99159) == "99.2%" and tables.percent(0.2209, 0) == "22%"
    assert tables.points(0.773) == "77.3"
    assert tables.sci(0.0005425) == "5.4e-04" and tables.sci(0.0) == "0.0e+00"
    assert tables.plain(0.003) == "0.003" and tables.plain(600.0) == "600"
    assert tables.minutes(193.47) == "3.2"
    assert tables.span([193.47, 222.08, 194.39], tables.minutes) == "3.2–3.7"
    assert tables.span([900.05, 900.37], tables.minutes) == "15.0"
    assert tables.threads(1) == "1 thread" and tables.threads([1, 2]) == "1 or 2 threads"
    assert tables.threads("unknown") == "threads: unknown"
    assert tables.best([8.88, 8.42, 8.77], lambda x: tables.fixed(x, 2)) == ["8.88", "**8.42**", "8.77"]
    assert tables.best([0.9, 0.95], tables.percent, lowest=False) == ["90.0%", "**95.0%**"]
    assert tables.shape(64, 100, 256, 256) == "64, 100, 256, 256"


def test_a_benchmark_writes_its_command_and_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/speed.py", "--shapes", "0", "--json", "out dir/speed.json"])
    path = tmp_path / "speed.json"
    results_io.write_json(str(path), {"meta": {"threads": 2}, "rows": [{"cell": "RNN"}]})
    data = json.loads(path.read_text())
    assert data["command"] == ["python benchmarks/speed.py --shapes 0 --json 'out dir/speed.json'"]
    assert MACHINE <= data["machine"].keys() and data["rows"] == [{"cell": "RNN"}]
    results_io.write_json(str(path), [{"cell": "GRU"}])  # a list of rows is wrapped
    assert json.loads(path.read_text())["rows"] == [{"cell": "GRU"}]


def test_tasks_py_appends_a_row_with_its_machine(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the scripts import results_io as a sibling
    spec = importlib.util.spec_from_file_location("benchmark_tasks", ROOT / "benchmarks" / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "tasks.json"
    module.append_row(path, {"preset": "airline", "cell": "gru"})
    module.append_row(path, {"preset": "airline", "cell": "lstm"})
    data = json.loads(path.read_text())
    assert [row["cell"] for row in data["rows"]] == ["gru", "lstm"]
    assert data["command"][0].startswith("python ") and MACHINE <= data["machine"].keys()
    assert all(MACHINE <= row["machine"].keys() for row in data["rows"])
