"""The gate explorer: a text with each character coloured by one unit's gate or state, and the
units ranked by how closely they follow simple features of the text.

Karpathy, Johnson & Fei-Fei (2015), "Visualizing and understanding recurrent networks", found
LSTM cells that count the position in a line or switch on inside quotes. The explorer looks for
such units the simplest way: the Pearson correlation, over the text, between a unit's cell
state (the LSTM's ``c``; ``h`` for the other cells) after reading character t and a feature of
the text at t,

.. math::

    r_{kj} = \\frac{\\sum_t (x_{tj} - \\bar x_j)(\\phi_{kt} - \\bar\\phi_k)}
                  {\\sqrt{\\sum_t (x_{tj} - \\bar x_j)^2} \\sqrt{\\sum_t (\\phi_{kt} - \\bar\\phi_k)^2}},

and a unit's score is its largest :math:`|r_{kj}|` over the features k. The page is one
self-contained HTML file (inline CSS, script and data): no server, no network.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from gatedrnn.checkpoint import atomic_write
from gatedrnn.diagnostics.gates import gate_trace

FILENAME = "explorer.html"  # its name in a report folder
LENGTH = 1000  # characters a default text holds
UNITS = 32  # units the page holds: the best-ranked ones
QUOTES = '"'
OPENING, CLOSING = "([{", ")]}"

# How each traced quantity is named on the page; a gate lies in [0, 1], the rest is coloured
# on a scale symmetric about 0.
LABELS = {"input": "input gate i", "forget": "forget gate f", "output": "output gate o",
          "reset": "reset gate r", "update": "update gate z", "candidate": "candidate",
          "cell": "cell state c", "hidden": "hidden state h"}  # fmt: skip
GATES = ("input", "forget", "output", "reset", "update")


def position_in_line(text: str) -> list[float]:
    """The column of each character, counted from 0 after each line break (the text read as
    starting a line)."""
    values, column = [], 0
    for char in text:
        values.append(float(column))
        column = 0 if char == "\n" else column + 1
    return values


def inside_quotes(text: str) -> list[float]:
    """1 from an opening double quote up to the character before its closing one: the
    quotes read so far, including this character, are odd in number."""
    values, inside = [], False
    for char in text:
        inside ^= char in QUOTES
        values.append(float(inside))
    return values


def after_newline(text: str) -> list[float]:
    """1 where the character read is a line break: the state from which the next line starts."""
    return [float(char == "\n") for char in text]


def position_in_word(text: str) -> list[float]:
    """How many letters or digits of the current word have been read (0 off a word)."""
    values, run = [], 0
    for char in text:
        run = run + 1 if char.isalnum() else 0
        values.append(float(run))
    return values


def bracket_depth(text: str) -> list[float]:
    """How many ( [ { are open after this character (a closing one never makes it negative)."""
    values, depth = [], 0
    for char in text:
        depth = depth + 1 if char in OPENING else max(0, depth - 1) if char in CLOSING else depth
        values.append(float(depth))
    return values


FEATURES = {"position in line": position_in_line, "inside quotes": inside_quotes,
            "after a newline": after_newline, "position in word": position_in_word,
            "inside brackets": bracket_depth}  # fmt: skip


def correlations(values: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Pearson's r of each feature with each unit: ``values`` (T, H), ``features`` (F, T) →
    (F, H). A unit or a feature constant over the text correlates with nothing: 0."""
    x = values.double() - values.double().mean(0)  # (T, H)
    phi = features.double() - features.double().mean(1, keepdim=True)  # (F, T)
    norm = phi.norm(dim=1)[:, None] * x.norm(dim=0)[None, :]  # (F, H)
    r = (phi @ x) / norm.clamp_min(1e-300)  # (F, H)
    return r.masked_fill(norm < 1e-12, 0.0)


@dataclass
class Rank:
    """One row of the ranking: a unit, the feature it follows best and Pearson's r with it."""

    unit: int
    feature: str
    r: float
    rs: dict  # r with each feature

    @property
    def score(self) -> float:
        return abs(self.r)


def ranking(values: torch.Tensor, text: str) -> list[Rank]:
    """The units of ``values`` (T, H), one value per character of ``text``, by falling
    score: the largest |r| with a feature of the text (ties: the lower unit first)."""
    names = list(FEATURES)
    features = torch.tensor([FEATURES[name](text) for name in names])  # (F, T)
    r = correlations(values, features)  # (F, H)
    best = r.abs().argmax(0)  # (H,): the feature each unit follows best
    rows = [Rank(j, names[int(best[j])], float(r[best[j], j]), {n: float(r[k, j]) for k, n in enumerate(names)})
            for j in range(values.shape[1])]  # fmt: skip
    return sorted(rows, key=lambda row: (-row.score, row.unit))


def encode(text: str, index: dict, source: str = "the text") -> list[int]:
    """The ids of a text's characters in a character vocabulary (``index``: character → id);
    ``ValueError`` naming the first character not in it, and where it is."""
    if not text:
        raise ValueError(f"{source} is empty: give at least one character")
    for position, char in enumerate(text):
        if char not in index:
            line = text.count("\n", 0, position) + 1
            column = position - (text.rfind("\n", 0, position) + 1) + 1
            raise ValueError(f"{source}: {char!r} at character {position + 1} (line {line}, column {column}) is "
                             f"not among the {len(index)} characters of the run's vocabulary")  # fmt: skip
    return [index[char] for char in text]


def trace_text(model, index: dict, text: str, layer: int = 0, source: str = "the text") -> dict:
    """Every gate and state of one layer of ``model`` (a SequenceModel of characters) after
    each character of ``text``: ``{name: (T, H)}``, the forward direction. The model reads the
    text as following a line break (when it knows one), as ``gatedrnn predict`` scores a file."""
    ids = encode(text, index, source)
    start = [index["\n"]] if "\n" in index else []
    layers = getattr(model.rnn, "num_layers", 1)
    if not 0 <= layer < layers:
        raise ValueError(f"--layer must be between 0 and {layers - 1} (the model has {layers}), got {layer}")
    directions = 2 if getattr(model.rnn, "bidirectional", False) else 1
    trace = gate_trace(model, torch.tensor([start + ids]))  # each (L*D, 1, T, H)
    return {name: value[layer * directions, 0, len(start) :].float() for name, value in trace.items()}


def state_name(trace: dict) -> str:
    """The quantity the units are ranked by: the LSTM's cell state, else the hidden state."""
    return "cell" if "cell" in trace else "hidden"


def sample(text: str, length: int = LENGTH) -> str:
    """Up to ``length`` characters of ``text`` from its first line start (after its first line
    break; from its start where it holds none), so that columns are counted right."""
    start = text.find("\n") + 1
    return text[start : start + length] if text[start : start + length] else text[:length]


def page(text: str, trace: dict, units: int = UNITS, title: str = "gate explorer") -> str:
    """The explorer as one HTML page: ``text`` coloured by ``trace`` (``{name: (T, H)}``), its
    ``units`` best-ranked units offered."""
    state = state_name(trace)
    ranks = ranking(trace[state], text)[:units]
    shown = [row.unit for row in ranks]
    constant = [name for name, feature in FEATURES.items() if len(set(feature(text))) < 2]
    quantities = []
    for name, values in trace.items():
        values = values[:, shown]  # (T, N)
        # each unit's colour scale: a gate's [0, 1], else symmetric about 0 out to the unit's largest |value|
        high = [1.0] * len(shown) if name in GATES else values.abs().amax(0).clamp_min(1e-6).tolist()  # (N,)
        low = [0.0 if name in GATES else -h for h in high]
        quantities.append({"name": name, "label": LABELS.get(name, name), "low": low, "high": high,
                           "values": [[round(v, 3) for v in column] for column in values.T.tolist()]})  # fmt: skip
    data = {"characters": list(text), "units": shown, "state": state, "quantities": quantities,
            "features": list(FEATURES),
            "ranking": [{"unit": row.unit, "feature": row.feature, "r": round(row.r, 4),
                         "rs": {k: round(v, 4) for k, v in row.rs.items()}} for row in ranks]}  # fmt: skip
    fields = {
        "title": html.escape(title),
        "state": html.escape(LABELS.get(state, state)),
        "absent": (f"<p class='note'>Constant in this text, so no unit can follow it: "
                   f"{html.escape(', '.join(constant))}.</p>" if constant else ""),  # fmt: skip
        # "<" only occurs inside JSON strings, where \u003c reads the same: no "</script>" ends the data
        "data": json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c"),
    }
    return re.sub(r"\{\{(\w+)\}\}", lambda match: fields[match.group(1)], TEMPLATE)


def write_explorer(path, model, index: dict, text: str, units: int = UNITS, layer: int = 0,
                   title: str = "gate explorer", source: str = "the text") -> Path:  # fmt: skip
    """Writes the explorer of ``model`` on ``text`` to ``path`` (atomically); returns the path.
    ``index``: the run's vocabulary, character → id; ``source`` names the text in errors."""
    trace = trace_text(model, index, text, layer, source)
    content = page(text, trace, units, title)
    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_text(content, encoding="utf-8"))
    return path


def draw(runs, path: Path, text: str) -> bool:
    """The report's figure (``Task.figures``): the explorer of the first run on ``text``."""
    run = runs[0]
    if not text:
        return False
    write_explorer(path, run.model, run.task.vocab.index, text, title=f"gate explorer: {run.label}")
    return True


def caption(runs) -> str:
    return (f"The gate explorer of {runs[0].label}{' (the first run)' if len(runs) > 1 else ''}, on the start "
            "of the test split: pick a unit and a quantity to colour each character by its value after reading "
            "it (red high, blue low). The table ranks the units by how closely their state follows a simple "
            "feature of the text (|r|, the absolute correlation over the text), as Karpathy et al. (2015) found "
            "cells that count along a line or switch on inside quotes; click a row to see that unit. "
            "Open it in its own page to see it whole.")  # fmt: skip


TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{{title}}</title>
<style>
body{font-family:sans-serif;margin:1.5em;color:#222}
#text{font-family:monospace;font-size:14px;white-space:pre-wrap;line-height:1.6;border:1px solid #ddd;padding:8px;
max-height:24em;overflow:auto}
#text span{padding:1px 0}
.controls{margin:0.8em 0}.controls label{margin-right:1.5em}
#legend{display:inline-block;width:160px;height:12px;vertical-align:middle;
background:linear-gradient(to right,rgb(33,102,172),rgb(247,247,247),rgb(178,24,43))}
#readout{color:#555;margin:0.4em 0;min-height:1.2em;font-family:monospace}
table{border-collapse:collapse;margin-top:0.8em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
tbody tr{cursor:pointer}tbody tr:hover{background:#eef}tr.picked{background:#ffd}
.note{color:#555}
</style></head>
<body><h1>{{title}}</h1>
<div class="controls">
<label>unit <select id="unit"></select></label>
<label>quantity <select id="quantity"></select></label>
<span id="low"></span> <span id="legend"></span> <span id="high"></span>
</div>
<div id="readout">point at a character to read its value</div>
<div id="text"></div>
<h2>Units that follow a feature of the text</h2>
<p class="note">Each unit's {{state}} after each character, correlated with each feature over the text
(Pearson's r); the units ranked by their largest |r|. Features: the column in the line, inside double quotes,
a line break just read, the letters read of the current word, how many brackets are open.</p>{{absent}}
<table id="ranking"><thead></thead><tbody></tbody></table>
<script type="application/json" id="data">{{data}}</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const unitSelect = document.getElementById("unit"), quantitySelect = document.getElementById("quantity");
const box = document.getElementById("text"), readout = document.getElementById("readout");
const LOW = [33, 102, 172], MID = [247, 247, 247], HIGH = [178, 24, 43];

function colour(v, low, high) {
  const p = Math.min(1, Math.max(0, (v - low) / (high - low)));
  const [a, b, s] = p < 0.5 ? [LOW, MID, 2 * p] : [MID, HIGH, 2 * p - 1];
  return "rgb(" + a.map((x, k) => Math.round(x + (b[k] - x) * s)).join(",") + ")";
}
function shown(ch) { return ch === "\\n" ? "\\u21b5\\n" : ch === "\\t" ? "\\u21e5\\t" : ch; }

const spans = D.characters.map((ch, t) => {
  const span = document.createElement("span");
  span.textContent = shown(ch);
  span.dataset.t = t;
  box.appendChild(span);
  return span;
});
D.units.forEach((unit, k) => unitSelect.add(new Option("unit " + unit + " (" + D.ranking[k].feature + ", |r| = " +
  Math.abs(D.ranking[k].r).toFixed(2) + ")", k)));
D.quantities.forEach((q, k) => quantitySelect.add(new Option(q.label, k)));
quantitySelect.value = D.quantities.findIndex(q => q.name === D.state);

function paint() {
  const q = D.quantities[quantitySelect.value], k = unitSelect.value, values = q.values[k];
  spans.forEach((span, t) => { span.style.backgroundColor = colour(values[t], q.low[k], q.high[k]); });
  document.getElementById("low").textContent = q.low[k].toFixed(2);
  document.getElementById("high").textContent = q.high[k].toFixed(2);
  document.querySelectorAll("#ranking tbody tr").forEach((row, k) => {
    row.classList.toggle("picked", String(k) === unitSelect.value);
  });
}
box.addEventListener("mouseover", event => {
  const t = event.target.dataset.t;
  if (t === undefined) return;
  const q = D.quantities[quantitySelect.value];
  readout.textContent = "character " + (Number(t) + 1) + " " + JSON.stringify(D.characters[t]) + ": " + q.label +
    " of unit " + D.units[unitSelect.value] + " = " + q.values[unitSelect.value][t].toFixed(3);
});

const head = document.querySelector("#ranking thead"), body = document.querySelector("#ranking tbody");
head.innerHTML = "<tr><th>rank</th><th>unit</th><th>follows best</th><th>|r|</th>" +
  D.features.map(f => "<th>r: " + f + "</th>").join("") + "</tr>";
D.ranking.forEach((row, k) => {
  const tr = body.insertRow();
  [k + 1, row.unit, row.feature, Math.abs(row.r).toFixed(3)].concat(D.features.map(f => row.rs[f].toFixed(3)))
    .forEach(value => { tr.insertCell().textContent = value; });
  tr.dataset.unit = row.unit;
  tr.addEventListener("click", () => { unitSelect.value = k; paint(); });
});
unitSelect.addEventListener("change", paint);
quantitySelect.addEventListener("change", paint);
paint();
</script></body></html>
"""
