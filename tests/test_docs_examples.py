"""Every code block of README.md and docs/ runs: each ```python block (a page's blocks in order,
in one namespace, as a reader would paste them) and each ```bash block (in a shell, the
`gatedrnn` command on its PATH), in a fresh folder. A block that needs a data set or minutes
says so on the line before its fence, ``<!-- skip: the reason -->``; the list of those is kept
short and printed. Fences without a language are output shown to the reader, not run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"^<!--\s*skip:\s*(.+?)\s*-->\s*$")
RUN = ("python", "bash")


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    skip: str | None  # the reason given in a skip comment


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with the skip comment before each, if any."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise AssertionError(f"{page}:{i + 1}: a code fence that is never closed")
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.match(before.strip())
        found.append(Block(page, i + 1, opening.group(1), "\n".join(lines[i + 1 : end]) + "\n",
                           skip.group(1) if skip else None))  # fmt: skip
        i = end + 1
    return found


def test_the_block_reader_reads_fences_and_skips(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```python\nx = 1\n```\n\n<!-- skip: needs data -->\n```bash\ngatedrnn x\n```\n```\nout\n```\n")
    found = blocks(page)
    assert [(b.language, b.code, b.skip, b.line) for b in found] == [
        ("python", "x = 1\n", None, 3), ("bash", "gatedrnn x\n", "needs data", 8), ("", "out\n", None, 11)]


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.language in RUN for b in blocks(p))], ids=_name)
def test_every_code_block_of_a_page_runs(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # what a block writes (runs/...) lands here
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "GATEDRNN_DATA": os.environ.get("GATEDRNN_DATA", str(ROOT.parent / "shared" / "data"))}  # fmt: skip
    namespace: dict = {"__name__": "__docs__"}
    skipped = []
    for block in blocks(page):
        where = f"{_name(page)}:{block.line}"
        if block.language not in RUN:
            continue
        if block.skip:
            skipped.append(f"{where} ({block.skip})")
            continue
        if block.language == "python":
            try:
                exec(compile(block.code, where, "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"the python block at {where} failed: {type(error).__name__}: {error}") from error
        else:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=600)  # fmt: skip
            assert done.returncode == 0, f"the bash block at {where} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    if skipped:
        with capsys.disabled():
            print(f"\n  skipped in {_name(page)}: " + "; ".join(skipped))


def test_readme_is_a_front_page_whose_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue  # the web: not checked here
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.exists(), f"README links to {link}, which does not exist"
        if anchor:  # a heading of that page, as mkdocs and GitHub make anchors of them
            headings = re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, f"README links to {link}: no such heading in {path}"
