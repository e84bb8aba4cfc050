"""The documentation site: ``mkdocs build --strict`` succeeds, the API reference holds every
public name with its parameters, every page of the nav exists, every public docstring
documents every argument, and the docstrings' examples run."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from dataclasses import is_dataclass
from pathlib import Path

import pytest

import gatedrnn

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = DOCS / "api"
BLOCK = re.compile(r"^::: (\S+)\n((?:[ \t]+.*\n|\n(?=[ \t]))*)", re.MULTILINE)
# Each page of the API reference and the modules whose docstrings' examples it shows.
EXAMPLE_MODULES = [
    "gatedrnn.layers", "gatedrnn.cells.lstm", "gatedrnn.cells.gru", "gatedrnn.cells.rnn",
    "gatedrnn.cells.mgu", "gatedrnn.cells.conv", "gatedrnn.conv", "gatedrnn.minimal", "gatedrnn.trace",
    "gatedrnn._checks", "gatedrnn.init", "gatedrnn.config", "gatedrnn.models", "gatedrnn.tasks",
    "gatedrnn.tasks.base", "gatedrnn.tasks.prediction", "gatedrnn.tasks.adding", "gatedrnn.export",
    "gatedrnn.runs", "gatedrnn.autotune", "gatedrnn.cells.slstm", "gatedrnn.cells.mlstm", "gatedrnn.xlstm.slstm",
    "gatedrnn.xlstm.mlstm", "gatedrnn.xlstm.mlstm_forms", "gatedrnn.xlstm.blocks", "gatedrnn.xlstm.branches", "gatedrnn.convert.xlstm", "gatedrnn.convert.keras",
    "gatedrnn.convert.keras_export", "gatedrnn.convert.keras_modules",
    "gatedrnn.convert.flax", "gatedrnn.convert.flax_export", "gatedrnn.convert.haste",
]  # fmt: skip
SLOW_EXAMPLE_MODULES = ["gatedrnn.trained"]  # load and predict train a tiny run through the command first


def needs_mkdocs():
    missing = [name for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
               if importlib.util.find_spec(name) is None]  # fmt: skip
    if missing:
        pytest.skip(f"the documentation tools are not installed ({', '.join(missing)}): "
                    "pip install -e '.[docs]'")  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site as ``mkdocs build --strict`` writes it, in a temporary folder."""
    needs_mkdocs()
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
               "-d", str(out)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return out


def nav_pages() -> list[str]:
    """Every Markdown file the nav of mkdocs.yml names."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") : text.index("\nplugins:")]
    return re.findall(r"([\w/.-]+\.md)\s*$", nav, flags=re.MULTILINE)


def api_blocks() -> list[tuple[str, str, object]]:
    """``(page, identifier, members)`` of every ``::: identifier`` block of the API pages:
    ``members`` is the list the block's options give, ``False``, or None (all public)."""
    blocks = []
    for page in sorted(API.glob("*.md")):
        for identifier, options in BLOCK.findall(page.read_text()):
            found = re.search(r"members:\s*(\[.*?\]|false)", options)
            members = None if not found else (False if found.group(1) == "false" else
                                              re.findall(r"[\w]+", found.group(1)))  # fmt: skip
            blocks.append((page.name, identifier, members))
    return blocks


def resolve(identifier: str):
    """The Python object of a dotted path (a module, or an attribute of one)."""
    parts = identifier.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(identifier)


def documented_callables() -> dict[str, object]:
    """Every class and function the API pages render, by path: a module's own public
    classes and functions, a class and the methods its block shows."""
    found = {}

    def add_class(path, cls, members):
        found[path] = cls
        names = [n for n, v in vars(cls).items() if not n.startswith("_") and inspect.isfunction(
            getattr(v, "__func__", v)) and v.__doc__] if members is None else (members or [])  # fmt: skip
        for name in names:
            value = inspect.getattr_static(cls, name)
            if callable(getattr(value, "__func__", value)):
                found[f"{path}.{name}"] = getattr(cls, name)

    for _, identifier, members in api_blocks():
        obj = resolve(identifier)
        if inspect.ismodule(obj):
            if members is False:
                continue
            for name, value in vars(obj).items():
                if name.startswith("_") or (members is not None and name not in members):
                    continue
                if (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ == obj.__name__:
                    if inspect.isclass(value):
                        add_class(f"{identifier}.{name}", value, None)
                    else:
                        found[f"{identifier}.{name}"] = value
        elif inspect.isclass(obj):
            add_class(identifier, obj, members)
        else:
            found[identifier] = obj
    return found


def documented_names(obj) -> set[str]:
    """The names a docstring's Args (and Attributes) sections document."""
    import griffe

    doc = inspect.getdoc(obj) or ""
    names = set()
    with_logs = griffe.Docstring(doc, parser="google")
    for section in with_logs.parse(warn_missing_types=False, warn_unknown_params=False):
        if section.kind.value in ("parameters", "other parameters", "attributes"):
            names |= {item.name.lstrip("*") for item in section.value}
    return names


def parameters(obj) -> list[str]:
    """The arguments a caller passes: a class's constructor's, a function's (not self, cls).
    A class whose constructor is not gatedrnn's (an exception's) passes nothing of its own."""
    if inspect.isclass(obj) and not is_dataclass(obj) and not any(
            "__init__" in vars(k) for k in obj.__mro__ if k.__module__.startswith("gatedrnn")):  # fmt: skip
        return []
    signature = inspect.signature(obj)
    return [name for name, p in signature.parameters.items() if name not in ("self", "cls")]


# -- the build ---------------------------------------------------------------------------


def test_every_page_of_the_nav_exists():
    pages = nav_pages()
    assert "index.md" in pages and "api/layers.md" in pages and "changelog.md" in pages
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml's nav names pages that do not exist: {missing}"


def test_the_site_builds_strictly_with_every_page(site):
    for page in nav_pages():
        html = site / ("index.html" if page == "index.md" else page.removesuffix(".md").removesuffix("/index")
                       + "/index.html")  # fmt: skip
        assert html.is_file(), f"{page} was not built ({html})"
    assert (site / "search" / "search_index.json").is_file()


def test_the_api_reference_holds_every_public_name(site):
    html = "".join(p.read_text() for p in (site / "api").rglob("index.html"))
    anchors = set(re.findall(r'id="(gatedrnn[\w.]*)"', html))
    for name in gatedrnn.__all__:
        value = getattr(gatedrnn, name)
        if name == "SAFE_GLOBALS":
            assert "gatedrnn.SAFE_GLOBALS" in anchors
            continue
        path = f"{value.__module__}.{value.__qualname__}"
        assert path in anchors, f"gatedrnn.{name} ({path}) has no entry in the API reference"


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN", "LSTMCell"])
def test_every_constructor_parameter_is_on_its_page(site, name):
    cls = getattr(gatedrnn, name)
    path = f"{cls.__module__}.{cls.__qualname__}"
    page = {"LSTMCell": "cells"}.get(name, "layers")
    html = (site / "api" / page / "index.html").read_text()
    start = html.index(f'id="{path}"')
    end = html.find('class="doc doc-object doc-class"', start + 1)
    section = html[start : end if end > 0 else None]
    for parameter in parameters(cls):
        assert re.search(rf"<td>\s*<code>{parameter}</code>\s*</td>", section), (
            f"{name}'s parameter {parameter} is not in the parameter table of api/{page}/"
        )


def test_the_changelog_page_includes_the_repository_changelog(site):
    assert (DOCS / "changelog.md").read_text().count('--8<-- "CHANGELOG.md"') == 1
    first = next(line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.strip())
    words = re.sub(r"[#*`\[\]]", "", first).split()
    html = (site / "changelog" / "index.html").read_text()
    assert all(word in html for word in words), f"the changelog page lacks CHANGELOG.md's line {first!r}"


def test_math_and_tables_of_the_docstrings_are_markdown(site):
    """The docstrings' reStructuredText (``.. math::``, simple tables, roles) reaches the site
    as math blocks, tables and links, not as raw markup."""
    html = (site / "api" / "cells" / "index.html").read_text()
    section = html[html.index('id="gatedrnn.cells.lstm.LSTMCell"') :]
    assert '<div class="arithmatex">' in section and r"c_t &amp;= f_t \odot c_{t-1}" in section
    assert "<td><code>weight_ih</code></td>" in section.replace("\n", "").replace("  ", "")
    for raw in (".. math::", ":class:", ":math:", "====="):
        assert raw not in html, f"raw reStructuredText {raw!r} in api/cells/"
    assert 'href="../trace-and-errors/#gatedrnn.trace.Trace"' in html  # :class:`~gatedrnn.Trace`, linked


# -- the docstrings ----------------------------------------------------------------------


def test_every_public_docstring_documents_every_argument():
    """The audit: per class and function the API reference renders, the arguments its
    docstring's Args section does not name (a class: its constructor's)."""
    pytest.importorskip("griffe")
    missing = {}
    for path, obj in documented_callables().items():
        try:
            wanted = parameters(obj)
        except (TypeError, ValueError):  # no signature to read
            continue
        absent = [name for name in wanted if name not in documented_names(obj)]
        if absent:
            missing[path] = absent
    assert len(documented_callables()) > 60
    assert not missing, "arguments without a line in their docstring's Args:\n" + "\n".join(
        f"  {path}: {', '.join(names)}" for path, names in sorted(missing.items())
    )


def test_every_public_class_and_function_has_an_example():
    for name in gatedrnn.__all__:
        value = getattr(gatedrnn, name)
        if name == "SAFE_GLOBALS" or (inspect.isclass(value) and issubclass(value, Exception) and value is not
                                      gatedrnn.ShapeError):  # fmt: skip
            continue
        assert ">>> " in (inspect.getdoc(value) or ""), f"gatedrnn.{name}'s docstring has no example"


def run_examples(module_names, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    ran = 0
    for name in module_names:
        module = importlib.import_module(name)
        for test in finder.find(module):
            if test.examples:
                runner.run(test)
                ran += len(test.examples)
    failed, attempted = runner.summarize(verbose=False)
    assert attempted == ran and failed == 0, f"{failed} of {attempted} docstring examples failed (see above)"
    return ran


def test_the_docstring_examples_run(tmp_path, monkeypatch):
    assert run_examples(EXAMPLE_MODULES, tmp_path, monkeypatch) > 100


@pytest.mark.slow
def test_the_examples_of_load_and_predict_run(tmp_path, monkeypatch):
    assert run_examples(SLOW_EXAMPLE_MODULES, tmp_path, monkeypatch) > 10


if __name__ == "__main__":  # the audit as a listing: python tests/test_docs_site.py
    for path, obj in documented_callables().items():
        try:
            absent = [name for name in parameters(obj) if name not in documented_names(obj)]
        except (TypeError, ValueError):
            continue
        print(f"{path}: {', '.join(absent) if absent else 'every argument documented'}")
