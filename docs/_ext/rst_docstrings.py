"""A Griffe extension for the API reference: gatedrnn's docstrings mix Google sections ("Args:")
with a few reStructuredText forms that Markdown does not know. Before the docstrings are
parsed, each is rewritten:

- ``.. math::`` blocks become ``$$ ... $$`` (pymdownx.arithmatex), ``:math:`x``` becomes ``\\(x\\)``;
- ``:class:`x```, ``:func:``, ``:meth:``, ``:mod:``, ``:attr:``, ``:exc:``, ``:data:`` become
  links (autorefs) to the object, resolved from the docstring's own scope as Sphinx would;
  a ``gatedrnn`` name that resolves to nothing is a warning (so ``mkdocs build --strict``
  fails); names outside gatedrnn (torch's) stay code;
- simple tables (``=====  =====`` borders) become Markdown tables;
- a paragraph ending in ``::`` introduces a literal block: it ends in ``:`` and the indented
  block becomes a fenced block (Python where it parses as Python, text otherwise).

The source stays as ``help()`` shows it; only the site reads the rewritten text.
"""

from __future__ import annotations

import re
import textwrap

import griffe

logger = griffe.get_logger("griffe.rst_docstrings") if hasattr(griffe, "get_logger") else griffe.logger

ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|exc|data|obj):`(~?)([^`<]+?)(?:\s*<([^`>]+)>)?`")
MATH_ROLE = re.compile(r":math:`([^`]+)`")
BORDER = re.compile(r"^ *=+( +=+)+ *$")
# what Markdown must leave alone on a line: code spans, inline math, autorefs
VERBATIM = re.compile(r"(`+).+?\1|\\\(.*?\\\)|<autoref .*?</autoref>|^ *>>>.*$|^ *(```|\$\$).*?^ *\2",
                      re.DOTALL | re.MULTILINE)
LONE_STAR = re.compile(r"(?<=[^\s*\\])\*(?=[^\s*])")  # ``L*D``: a product, not emphasis


def _lookup(collection, path: str):
    try:
        return collection[path]
    except Exception:  # noqa: BLE001 (KeyError, alias resolution errors: not found either way)
        return None


def resolve(obj, name: str):
    """The canonical path of ``name`` as written in ``obj``'s docstring, or None."""
    collection = obj.modules_collection
    name = name.strip().rstrip("()")
    candidates = [name]
    scope = obj
    while scope is not None:  # relative to the object, its class, its module, its package...
        candidates.append(f"{scope.path}.{name}")
        scope = scope.parent
    module = obj if obj.is_module else obj.module
    if "." not in name:  # a method or attribute named alone in a module's docstring: its class's
        candidates += [f"{cls.path}.{name}" for cls in module.classes.values() if name in cls.members]
    for path in candidates:
        found = _lookup(collection, path)
        if found is not None:
            try:
                return found.canonical_path
            except Exception:  # noqa: BLE001 (an alias whose target is outside the package)
                return None
    return None


def _role(obj, match: re.Match) -> str:
    kind, tilde, text, target = match.groups()
    target = (target or text).strip()
    title = text.strip() if match.group(4) else target
    if tilde:
        title = target.rsplit(".", 1)[-1]
    path = resolve(obj, target)
    if path is None and target.startswith("gatedrnn"):
        logger.warning(f"{obj.path}: cannot resolve :{kind}:`{target}` in its docstring")
    identifier = path or target
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


def _table(lines: list[str]) -> list[str]:
    """A reST simple table (its lines, borders included) as a Markdown table."""
    border = lines[0]
    spans = [m.span() for m in re.finditer(r"=+", border)]
    starts = [s for s, _ in spans] + [10**6]
    borders = [i for i, line in enumerate(lines) if BORDER.match(line)]
    rows: list[list[str]] = []
    header_end = borders[1] if len(borders) > 2 else None
    header: list[str] | None = None
    for i, line in enumerate(lines):
        if i in borders:
            if i == header_end and rows:
                header, rows = rows[0], []
            continue
        cells = [line[starts[k] : starts[k + 1]].strip() for k in range(len(spans))]
        if rows and not cells[0]:  # a continuation line: its text joins the row above
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    if header is None:
        header, rows = [""] * len(spans), rows
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(cell(c) for c in header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return out


def _is_python(code: str) -> bool:
    try:
        compile(code, "<docstring>", "exec")
    except SyntaxError:
        return False
    return True


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _blocks(lines: list[str]) -> list[str]:
    """Math blocks, literal blocks and tables, line by line."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        base = _indent(line)
        if stripped == ".. math::" or (stripped.endswith("::") and not stripped.startswith("..")):
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            k = j
            while k < len(lines) and (not lines[k].strip() or _indent(lines[k]) > base):
                k += 1
            while k > j and not lines[k - 1].strip():
                k -= 1
            if j < len(lines) and _indent(lines[j]) > base:
                body = textwrap.dedent("\n".join(lines[j:k])).splitlines()
                pad = " " * base
                if stripped == ".. math::":
                    out += ["", pad + "$$", *(pad + b for b in body), pad + "$$", ""]
                else:
                    text = line.rstrip()[:-2].rstrip()
                    if text:
                        out.append(text + ":" if not text.endswith(":") else text)
                    language = "python" if _is_python("\n".join(body)) else "text"
                    out += ["", pad + "```" + language, *(pad + b for b in body), pad + "```", ""]
                i = k
                continue
        if BORDER.match(line):
            j = i + 1
            seen = 1
            while j < len(lines) and lines[j].strip():
                if BORDER.match(lines[j]):
                    seen += 1
                j += 1
                if seen == 3 or (seen == 2 and (j >= len(lines) or not lines[j].strip())):
                    break
            table = lines[i:j]
            pad = " " * base
            out += ["", *(pad + row for row in _table([t[base:] for t in table])), ""]
            i = j
            continue
        out.append(line)
        i += 1
    return out


def _escape_stars(text: str) -> str:
    """``*`` between two characters (``L*D``, ``G*H``) escaped, outside code, math and fences."""
    parts, last = [], 0
    for m in VERBATIM.finditer(text):
        parts += [LONE_STAR.sub(r"\\*", text[last : m.start()]), m.group(0)]
        last = m.end()
    return "".join(parts) + LONE_STAR.sub(r"\\*", text[last:])


def convert(obj, text: str) -> str:
    """The docstring ``text`` of ``obj`` in Markdown."""
    text = "\n".join(_blocks(text.splitlines()))
    text = MATH_ROLE.sub(lambda m: f"\\({m.group(1)}\\)", text)
    text = ROLE.sub(lambda m: _role(obj, m), text)
    return _escape_stars(text)


class RstDocstrings(griffe.Extension):
    """Rewrites every docstring of the loaded package (see the module docstring)."""

    def on_package(self, *, pkg, **kwargs) -> None:
        seen: set[int] = set()

        def visit(obj) -> None:
            if id(obj) in seen or obj.is_alias:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = convert(obj, obj.docstring.value)
            for member in obj.members.values():
                visit(member)

        visit(pkg)
