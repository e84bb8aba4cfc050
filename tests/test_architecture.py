"""The house: imports point down the floors written in pyproject.toml ([tool.importlinter]),
the package's import graph has no cycle, no module outside gatedrnn/tasks names a task, and
the command answers --help without starting torch."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gatedrnn"


def test_imports_point_down_the_floors():
    # import-linter's own command, on the contract in pyproject.toml; its output names any chain that breaks it
    done = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
                           "--no-cache", "--config", str(ROOT / "pyproject.toml")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)  # fmt: skip
    assert done.returncode == 0 and "1 kept, 0 broken" in done.stdout, done.stdout + done.stderr


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (and modules importing
    themselves): every import circle, Tarjan's algorithm."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_cycle():
    # every import, those inside functions included (a function-level import that reaches up is a circle in
    # disguise); only imports for type checkers are left out
    graph = grimp.build_graph("gatedrnn", exclude_type_checking_imports=True)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert _cycles(edges) == []


def test_every_module_is_on_a_floor():
    # exhaustive = true in the contract: a new top-level module must be given a floor
    text = (ROOT / "pyproject.toml").read_text()
    assert "exhaustive = true" in text
    floors = text[text.index("layers = [") : text.index("]", text.index("layers = ["))]
    rooms = {room.strip().strip('"') for line in floors.splitlines()[1:] for room in line.strip(' ",').split("|")}
    on_disk = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert on_disk == rooms - {""}


def _task_names():
    from gatedrnn.tasks import BUILT_IN

    return set(BUILT_IN)


def test_no_module_outside_tasks_names_a_task():
    # A task's name appears as a string only in gatedrnn/tasks: the engine, load, predict, the
    # report and the command ask the task, not its name
    names = _task_names()
    found = []
    for path in PACKAGE.rglob("*.py"):
        if PACKAGE / "tasks" in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert found == []


def test_each_built_in_task_is_named_as_registered():
    from gatedrnn.tasks import TASKS

    for name, cls in TASKS.items():
        assert cls.name == name
        assert set(cls.saves) <= {"vocab.json", "normalization.json"} and "model.json" not in cls.saves


def test_the_demo_offers_the_cells_its_task_takes():
    from gatedrnn.cli import demo
    from gatedrnn.models import CELLS
    from gatedrnn.tasks import task_class

    assert set(demo.CELLS) == set(task_class("adding").cells) <= set(CELLS)


STARTS = [["--help"], ["--version"], ["presets"]] + [[name, "--help"] for name in
          ("demo", "train", "evaluate", "generate", "predict", "report", "presets", "export",
           "explore", "convert")]  # fmt: skip


def test_the_command_parses_without_torch(capsys):
    # Each line: the time `gatedrnn ...` takes in a fresh interpreter (reported, not asserted), and
    # whether torch was imported by then (asserted: it must not be)
    code = """
import contextlib, io, json, sys, time
started = time.perf_counter()
from gatedrnn.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(json.loads(sys.argv[1]))
    except SystemExit:
        pass
print(json.dumps({"seconds": time.perf_counter() - started, "torch": "torch" in sys.modules}))
"""
    report = []
    for argv in STARTS:
        done = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert not result["torch"], f"gatedrnn {' '.join(argv)} imported torch"
        report.append(f"gatedrnn {' '.join(argv)}: {1000 * result['seconds']:.0f} ms")
    with capsys.disabled():
        print("\n  command start-up (no torch): " + "; ".join(report))


@pytest.mark.parametrize("argv,message", [
    (["train", "--hiden-size", "8", "--out", "x"], "--hiden-size: did you mean --hidden-size?"),
    (["evaluate", "run", "--jsn"], "--jsn: did you mean --json?"),
    (["demo", "--lenght", "3"], "--lenght: did you mean --length?"),
])  # fmt: skip
def test_a_misspelled_option_gets_a_suggestion_from_its_subcommand(argv, message, capsys):
    from gatedrnn.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"gatedrnn {argv[0]}: error:" in err and message in err
