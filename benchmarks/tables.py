"""The docs' tables of measured numbers, made from ``benchmarks/results/*.json``.

    python -m benchmarks.tables            # writes every table into its page
    python -m benchmarks.tables --check    # names each page and table that differs; exit 1 if any

A table sits in its page between ``<!-- table: NAME -->`` and ``<!-- /table -->``. What lies
between is this module's: the Markdown table, then a line naming the commands and the machine
that produced its numbers, read from the JSON's "command" and "machine". ``TABLES`` lists the
tables of each page; each is one function of the results. Numbers become text in the functions
under "Numbers" and nowhere else.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DASH = "–"


# Numbers --------------------------------------------------------------------------------------


def fixed(x: float, digits: int) -> str:
    """``x`` with ``digits`` decimals and thousands separated: fixed(1296.4, 1) == "1,296.4"."""
    return f"{x:,.{digits}f}"


def ratio(x: float) -> str:
    return fixed(x, 2)


def count(n: int) -> str:
    return f"{n:,}"


def percent(x: float, digits: int = 1) -> str:
    """A fraction as a percentage: percent(0.9916) == "99.2%"."""
    return f"{100 * x:.{digits}f}%"


def points(x: float, digits: int = 1) -> str:
    """A fraction in percent without the sign, for a column of percentages: points(0.773) == "77.3"."""
    return fixed(100 * x, digits)


def plain(x: float) -> str:
    """A setting as it would be typed: plain(0.003) == "0.003", plain(600.0) == "600"."""
    return f"{x:g}"


def sci(x: float) -> str:
    """Two significant digits in scientific notation: sci(0.000542) == "5.4e-04"."""
    return f"{x:.1e}"


def minutes(seconds: float) -> str:
    return fixed(seconds / 60, 1)


def span(values: Iterable[float], form: Callable[[float], str]) -> str:
    """The range of ``values`` as ``form`` writes them, "lo–hi"; one value where both read the same."""
    values = list(values)
    lo, hi = form(min(values)), form(max(values))
    return lo if lo == hi else f"{lo}{DASH}{hi}"


def best(values: Sequence[float], form: Callable[[float], str], lowest: bool = True) -> list[str]:
    """``values`` written by ``form``, the best of them (the lowest, or the highest) in bold."""
    top = min(values) if lowest else max(values)
    return [f"**{form(v)}**" if v == top and len(values) > 1 else form(v) for v in values]


def shape(*sizes: int) -> str:
    return ", ".join(str(size) for size in sizes)


def threads(n) -> str:
    """threads(1) == "1 thread", threads([1, 2]) == "1 or 2 threads"; text is quoted as it is."""
    if isinstance(n, list):
        return " or ".join(str(k) for k in n) + " threads" if len(n) > 1 else threads(n[0])
    if isinstance(n, int):
        return f"{n} thread" + ("" if n == 1 else "s")
    return f"threads: {n}"


def machine(described: dict) -> str:
    cpu, cores, torch = described["cpu"], described["cores"], described["torch"]
    return f"{cpu}, {cores} cores, {threads(described['threads'])}, torch {torch}"


# Results --------------------------------------------------------------------------------------


class ResultsError(Exception):
    """A results file is missing or not what the tables read."""


@cache
def load(name: str) -> dict:
    """``benchmarks/results/NAME``: its "command" (a list of lines), "machine" and "rows" (ddp.py
    calls them "results")."""
    path = RESULTS / name
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ResultsError(f"{shown}: expected a JSON results file, got {error}") from None
    if not isinstance(data, dict) or not {"command", "machine"} <= data.keys():
        got = f"the keys {sorted(data)}" if isinstance(data, dict) else f"a {type(data).__name__}"
        raise ResultsError(f"{shown}: expected an object with \"command\" and \"machine\", got {got}")
    if not isinstance(data["command"], list) or not all(isinstance(line, str) for line in data["command"]):
        got = repr(data["command"])
        raise ResultsError(f"{shown}: expected \"command\" to be a list of command lines, got {got}")
    found = data.get("rows", data.get("results"))
    if not isinstance(found, list):
        raise ResultsError(f"{shown}: expected a list of rows under \"rows\", got {type(found).__name__}")
    return {**data, "rows": found}


def rows(name: str) -> list[dict]:
    return load(name)["rows"]


def machines(used: Iterable[dict]) -> str:
    """The machines of rows that carry their own, each CPU once: "CPU, 2 cores, 1 or 2 threads, torch V"."""
    grouped: dict[tuple, set] = {}
    for row in used:
        m = row["machine"]
        grouped.setdefault((m["cpu"], m["cores"], m["torch"]), set()).add(m["threads"])
    return "; ".join(machine({"cpu": cpu, "cores": cores, "threads": sorted(counts), "torch": torch})
                     for (cpu, cores, torch), counts in grouped.items())  # fmt: skip


def source(name: str, used: Iterable[dict] = ()) -> tuple[str, str]:
    """A results file's commands (and the file, where they do not name it) and its machine; a
    file whose rows carry their own machines gives those of the rows ``used``."""
    data, file = load(name), f"benchmarks/results/{name}"
    commands = ", ".join(f"`{line}`" for line in data["command"])
    if not any(file in line for line in data["command"]):
        commands += f" (`{file}`)"
    if isinstance(data["machine"], dict):
        return commands, machine(data["machine"])
    return commands, machines(used)


def footnote(sources: Sequence[tuple[str, str]]) -> str:
    """"Measured by COMMANDS on MACHINE; COMMANDS on MACHINE.", the files of one machine together."""
    on: dict[str, list[str]] = {}
    for commands, described in sources:
        on.setdefault(described, []).append(commands)
    return "Measured by " + "; ".join(f"{', '.join(c)} on {m}" for m, c in on.items()) + "."


def table(header: Sequence[str], body: Iterable[Sequence[str]], *sources: str | tuple[str, list]) -> str:
    """A Markdown table, then the footnote of its sources: file names, or (file name, rows used)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    named = [source(*s) if isinstance(s, tuple) else source(s) for s in sources]
    return "\n".join(lines) + "\n\n" + footnote(named)


def ordered(items: Iterable, key: Callable) -> list:
    """The distinct keys of ``items`` in order of first appearance."""
    return list(dict.fromkeys(key(item) for item in items))


def sizes(row: dict) -> tuple[int, int, int, int]:
    return row["B"], row["T"], row["I"], row["H"]


CELLS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU", "convlstm": "ConvLSTM", "convgru": "ConvGRU"}
MODES = ("inference", "training")


# Backends and speed (docs/speed.md) -----------------------------------------------------------


def speed(name: str = "speed.json") -> str:
    header = ["cell", "B, T, I, H", "mode", "torch.nn ms", "fused ms", "ratio", "auto ratio", "trace ratio",
              "torch GFLOPS", "fused GFLOPS", "ceiling GFLOPS", "target", "needs GFLOPS",
              "verdict"]  # fmt: skip
    body = []
    for r in rows(name):
        times = [fixed(r["torch_ms"], 2), fixed(r["fused_ms"], 2)]
        ratios = [ratio(r[f"{way}_ratio"]) for way in ("fused", "auto", "trace")]
        gflops = [fixed(r[f"{side}_gflops"], 0) for side in ("torch", "fused", "ceiling")]
        verdict = [fixed(r["target"], 1), fixed(r["needs_gflops"], 0), r["verdict"]]
        body.append([r["cell"], shape(*sizes(r)), r["mode"], *times, *ratios, *gflops, *verdict])
    return table(header, body, name)


def speed_epyc() -> str:
    """The speed table again on the AMD EPYC machine (the one above came from an Intel Xeon)."""
    return speed("speed_epyc.json")


def speed_epyc_misses() -> str:
    """Each row of speed_epyc.json that misses its target, with what explains it: the share of
    our step that its products would take at the machine's GEMM ceiling (fused GFLOPS over the
    ceiling; the rest is the gate math, the passes over memory and products below the ceiling),
    and the share the target leaves them (needs over the ceiling: over 100%, no float32
    implementation of these FLOPs reaches the target on this machine)."""
    header = ["cell", "B, T, I, H", "mode", "fused / torch.nn", "target", "products at the ceiling / our step",
              "products at the ceiling / the target's step", "torch.nn: products at the ceiling / its step"]  # fmt: skip
    body = []
    for r in rows("speed_epyc.json"):
        if r["verdict"].startswith("missed"):
            shares = [percent(r[f"{side}_gflops"] / r["ceiling_gflops"], 0) for side in ("fused", "needs", "torch")]
            body.append([r["cell"], shape(*sizes(r)), r["mode"], ratio(r["fused_ratio"]), fixed(r["target"], 1),
                         *shares])  # fmt: skip
    return table(header, body, "speed_epyc.json")


def by_mode(found: list[dict], key: str, modes: Sequence[str] = MODES) -> str:
    """"a / b": the ``key`` ratio of each mode, in the order of ``modes``."""
    return " / ".join(ratio(next(r[key] for r in found if r["mode"] == mode)) for mode in modes)


def per_shape(found: list[dict], cell_text: Callable[[list[dict]], str]) -> list[list[str]]:
    """One line per shape, one column per cell: ``cell_text`` of that cell's rows at that shape."""
    cells = ordered(found, lambda r: r["cell"])
    lines = []
    for at in ordered(found, sizes):
        mine = [r for r in found if sizes(r) == at]
        lines.append([shape(*at), *(cell_text([r for r in mine if r["cell"] == c]) for c in cells)])
    return lines


def speed_1thread() -> str:
    found = rows("speed_1thread.json")
    body = per_shape(found, lambda at: by_mode(at, "fused_ratio"))
    for line, at in zip(body, ordered(found, sizes)):
        line.append(span((r["ceiling_gflops"] for r in found if sizes(r) == at), lambda g: fixed(g, 0)))
    cells = [f"{c}: inference / training" for c in ordered(found, lambda r: r["cell"])]
    return table(["fused ÷ torch.nn at B, T, I, H", *cells, "ceiling GFLOPS"], body, "speed_1thread.json")


def input_projection() -> str:
    found = rows("input_projection.json")
    modes = ("inference", "traced inference", "training")
    body = per_shape(found, lambda at: f"{by_mode(at, 'ratio', modes)} ({at[0]['rule']})")
    cells = [f"{c}: inference / traced / training (rule)" for c in ordered(found, lambda r: r["cell"])]
    return table(["in loop ÷ before at B, T, I, H", *cells], body, "input_projection.json")


def packed_gemm() -> str:
    found = rows("packed_gemm.json")
    body = per_shape(found, lambda at: by_mode(at, "ratio"))
    cells = [f"{c}: inference / training" for c in ordered(found, lambda r: r["cell"])]
    return table(["packed ÷ plain at B, T, I, H", *cells], body, "packed_gemm.json")


def packed_gemm_epyc() -> str:
    """benchmarks/packed_gemm.py on the AMD EPYC: MKL's packed weights and our panels."""
    found = rows("packed_gemm_epyc.json")
    body = per_shape(found, lambda at: f"{by_mode(at, 'ratio')}; {by_mode(at, 'panels_vs_packed')}")
    cells = [f"{c}: packed ÷ plain; panels ÷ packed (inference / training)" for c in ordered(found, lambda r: r["cell"])]
    return table(["at B, T, I, H", *cells], body, "packed_gemm_epyc.json")


def compile_speed() -> str:
    header = ["model", "B, T, I, H", "compiled ÷ eager, inference", "compiled ÷ eager, training"]
    body = [[r["model"], shape(*r["shape"]), ratio(r["inference"]), ratio(r["training"])]
            for r in rows("compile_speed.json")]  # fmt: skip
    return table(header, body, "compile_speed.json")


# Variants (docs/variants.md) ------------------------------------------------------------------


def variant_speed() -> str:
    found = rows("variant_speed.json")
    shapes = ordered(found, sizes)
    body = []
    for variant in ordered(found, lambda r: r["variant"]):
        at = {sizes(r): r for r in found if r["variant"] == variant}
        body.append([variant, *(f"{ratio(at[s]['inference_ratio'])} / {ratio(at[s]['training_ratio'])}"
                                for s in shapes)])  # fmt: skip
    header = ["variant", *(f"({shape(*s)}) inference / training" for s in shapes)]
    return table(header, body, "variant_speed.json")


def by_variant(found: list[dict]) -> dict[str, list[dict]]:
    """Each variant's rows in seed order, the variants in the order of the last seed's rows."""
    last = max(r["seed"] for r in found)
    names = ordered((r for r in found if r["seed"] == last), lambda r: r["variant"])
    return {v: sorted((r for r in found if r["variant"] == v), key=lambda r: r["seed"]) for v in names}


def variants_adding() -> str:
    found = rows("variants.json")
    seeds = " / ".join(str(s) for s in sorted({r["seed"] for r in found}))
    body = []
    for variant, runs in by_variant(found).items():
        mse = " / ".join(fixed(r["test"]["mse"], 4) for r in runs)
        solved = f"{sum(r['solved'] for r in runs)} of {len(runs)}"
        solved_at = ", ".join(count(r["solved_at"]) if r["solved_at"] else "-" for r in runs)
        body.append([variant, mse, solved, solved_at, " / ".join(fixed(r["seconds"], 0) for r in runs)])
    header = ["variant", f"test MSE, seeds {seeds}", "solved (test MSE < 0.01)", "validation solved at step",
              f"time, seeds {seeds} (s)"]  # fmt: skip
    return table(header, body, "variants.json")


def variants_copy_jsb() -> str:
    copy, jsb = by_variant(rows("variants_copy.json")), by_variant(rows("variants_jsb.json"))

    def median(runs: list[dict], metric: str) -> float:
        return statistics.median(r["test"][metric] for r in runs)

    losses = best([median(copy[v], "loss") for v in copy], lambda x: fixed(x, 3))
    nlls = best([median(jsb[v], "nll") for v in copy], lambda x: fixed(x, 3))
    body = [[v, f"{loss}, {percent(median(copy[v], 'accuracy'), 0)}", nll]
            for v, loss, nll in zip(copy, losses, nlls)]  # fmt: skip
    header = ["variant", "copy: median test CE, recall, seeds 0–2", "JSB: median test NLL, seeds 0–2"]
    return table(header, body, "variants_copy.json", "variants_jsb.json")


# ConvLSTM and ConvGRU (docs/conv.md), several processes (docs/distributed.md) ------------------


def conv_speed() -> str:
    found = rows("conv_speed.json")
    settings = ordered(found, lambda r: (r["C"], r["size"], r["kernel"]))
    body = []
    for layer in ordered(found, lambda r: r["layer"]):
        mine = [r for r in found if r["layer"] == layer]
        body.append([layer, *(by_mode([r for r in mine if (r["C"], r["size"], r["kernel"]) == s], "ratio")
                              for s in settings)])  # fmt: skip
    header = ["layer", *(f"{c} ch, {n}×{n}, {k}×{k}: inference / training" for c, n, k in settings)]
    return table(header, body, "conv_speed.json")


def ddp() -> str:
    body = []
    for r in rows("ddp.json"):
        rate = r["steps_per_second"]
        gain = ratio(rate["2x1"] / rate["1x2"]) + "×"
        body.append([r["run"], *(fixed(rate[k], 1) for k in ("1x1", "1x2", "2x1")), gain])
    header = ["run (steps per second)", "1 process × 1 thread", "1 process × 2 threads",
              "2 processes × 1 thread", "2 processes ÷ 1 process × 2 threads"]  # fmt: skip
    return table(header, body, "ddp.json")


# Export (docs/export.md) ----------------------------------------------------------------------

EXPORTERS = {"onnx_dynamo": "onnxruntime (dynamo)", "exported_program": "exported program",
             "onnx_legacy": "onnxruntime (legacy)", "float32_vs_float64": "float32 vs float64"}  # fmt: skip


def export_parity() -> str:
    body = []
    for r in rows("export_parity.json"):
        dynamo, program, legacy, rounding = (sci(r[k]) for k in EXPORTERS)
        body.append([r["configuration"], dynamo, program, r["legacy"], legacy, rounding])
    names = list(EXPORTERS.values())
    return table(["configuration", *names[:2], "legacy exporter", *names[2:]], body, "export_parity.json")


def export_parity_layer_norm() -> str:
    found = next(r for r in rows("export_parity.json") if r["configuration"] == "LSTM layer_norm")
    body = [[shape(size["B"], size["T"]), *(sci(size[k]) for k in EXPORTERS)] for size in found["per_size"]]
    return table(["LSTM layer_norm at B, T", *EXPORTERS.values()], body, "export_parity.json")


# Long memory (docs/results/long-memory.md) ----------------------------------------------------


def seeds_of(runs: list[dict]) -> str:
    return ", ".join(str(r.get("seed", 0)) for r in runs)


def by_cell(found: list[dict]) -> list[list[dict]]:
    """The rows of each cell, cells in order of first appearance."""
    return [[r for r in found if r["cell"] == cell] for cell in ordered(found, lambda r: r["cell"])]


def adding_600() -> str:
    body = []
    for runs in by_cell(rows("long_memory_600.json")):
        config = runs[0]["config"]
        bar = sci(config["extra"]["solved_mse"])
        solved = f"{sum(r['solved'] for r in runs)} of {len(runs)} (MSE < {bar})"
        body.append([CELLS[runs[0]["cell"]], plain(config["chrono"]), seeds_of(runs),
                     ", ".join(sci(r["test"]["mse"]) for r in runs), solved,
                     ", ".join(count(r["steps"]) for r in runs),
                     span((r["seconds"] for r in runs), minutes)])  # fmt: skip
    header = ["cell", "chrono up to", "seeds", "test MSE", "solved", "steps", "wall time (min)"]
    return table(header, body, "long_memory_600.json")


COPY = ("long_memory_copy100.json", "long_memory_copy100_lstm.json", "long_memory_copy1000_rnn.json",
        "long_memory_copy1000_lstm.json", "long_memory_copy1000_gru.json")  # fmt: skip


def setting(config: dict) -> str:
    """What a long-memory run changed: "hidden 128, lr 0.003, chrono 1000, layer norm, curriculum ..."."""
    words = [f"hidden {config['hidden_size']}", f"lr {plain(config['lr'])}",
             f"chrono {plain(config['chrono'])}"]  # fmt: skip
    words += ["layer norm"] if config["layer_norm"] else []
    words += [f"curriculum {config['extra']['curriculum']}"] if "curriculum" in config["extra"] else []
    return ", ".join(words)


def copy() -> str:
    body = []
    for runs in (runs for name in COPY for runs in by_cell(rows(name))):
        config = runs[0]["config"]
        wall_time = f"{span((r['seconds'] for r in runs), minutes)} ({threads(config['threads'])})"
        body.append([count(runs[0]["T"]), CELLS[runs[0]["cell"]], setting(config), seeds_of(runs),
                     ", ".join(fixed(r["test"]["loss"], 5) for r in runs),
                     ", ".join(percent(r["test"]["accuracy"]) for r in runs),
                     ", ".join(ordered(runs, lambda r: r["status"])),
                     ", ".join(count(r["steps"]) for r in runs), wall_time])  # fmt: skip
    header = ["T", "cell", "setting", "seeds", "test cross-entropy", "test recall", "ended", "steps",
              "wall time (min)"]  # fmt: skip
    return table(header, body, *COPY)


PLAIN = ("long_memory.json", "long_memory_copy.json", "long_memory_adding400.json")


def metric(test: dict) -> str:
    if "mse" in test:
        return f"MSE {fixed(test['mse'], 4)}"
    return f"CE {fixed(test['loss'], 4)}, recall {percent(test['accuracy'])}"


def plain_init() -> str:
    body = []
    for r in (r for name in PLAIN for r in rows(name)):
        solved = "yes" if r["solved"] else "no" + (" (time cap)" if r["status"] == "timeout" else "")
        solved_at = count(r["solved_at"]) if r["solved"] else "-"
        body.append([r["task"], count(r["T"]), CELLS[r["cell"]], metric(r["test"]), fixed(r["baseline"], 4),
                     solved, solved_at, fixed(r["seconds"], 0)])  # fmt: skip
    header = ["task", "T", "cell", "test metric", "baseline", "solved", "steps to solve", "time (s)"]
    return table(header, body, *PLAIN)


# Applications (docs/results/applications.md): rows of tasks.json ------------------------------


def latest(preset: str, cells: Sequence[str] = ()) -> list[dict]:
    """The last run of each cell (of ``cells``, in that order, if given) of a preset in tasks.json:
    a rerun replaces a run."""
    last = {row["cell"]: row for row in rows("tasks.json") if row["preset"] == preset}
    return [last[cell] for cell in cells] if cells else list(last.values())


def wall(runs: list[dict]) -> str:
    """The runs' wall times in seconds and the threads they ran on: "41–73 s (1 thread)"."""
    on = threads(sorted({r["machine"]["threads"] for r in runs}))
    return f"{span((r['wall_s'] for r in runs), lambda s: fixed(s, 0))} s ({on})"


def steps(run: dict) -> str:
    return count(run["step"]) + (" (time cap)" if run["status"] == "time-limit" else "")


def shakespeare_quick() -> str:
    runs = latest("shakespeare-quick")
    valid = best([r["valid"]["loss"] for r in runs], lambda x: fixed(x, 3))
    test = best([r["test"]["loss"] for r in runs], lambda x: fixed(x, 3))
    body = [[CELLS[r["cell"]], v, t, wall([r]), f"`{r['command']}`"] for r, v, t in zip(runs, valid, test)]
    header = ["cell", "validation loss (nats/char)", "test loss", "wall time", "command"]
    return table(header, body, ("tasks.json", runs))


def shakespeare() -> str:
    runs = latest("shakespeare", ("rnn", "lstm", "gru"))
    losses = best([r["test"]["loss"] for r in runs], lambda x: fixed(x, 3))
    body = [[CELLS[r["cell"]], loss, fixed(r["test"]["bpc"], 2), steps(r),
             f"{minutes(r['wall_s'])} min ({threads(r['machine']['threads'])})"]
            for r, loss in zip(runs, losses)]  # fmt: skip
    header = ["cell", "validation loss (nats/char)", "bits/char", "steps", "wall time"]
    return table(header, body, ("tasks.json", runs))


def ptb() -> str:
    runs = latest("ptb-small") + latest("ptb-small-tied")
    perplexities = best([r["test"]["perplexity"] for r in runs], lambda x: fixed(x, 2))
    body = [[f"`{r['preset']}`", CELLS[r["cell"]], count(r["step"]), p, f"{minutes(r['wall_s'])} min"]
            for r, p in zip(runs, perplexities)]  # fmt: skip
    return table(["preset", "cell", "steps", "test perplexity", "wall time"], body, ("tasks.json", runs))


MUSIC = {"jsb": "JSB Chorales", "nottingham": "Nottingham", "piano-midi": "Piano-midi",
         "musedata": "MuseData"}  # fmt: skip


def music() -> str:
    body, used = [], []
    for preset, title in MUSIC.items():
        runs = latest(preset, ("rnn", "lstm", "gru"))
        body.append([title, *best([r["test"]["nll"] for r in runs], lambda x: fixed(x, 2)), wall(runs)])
        used += runs
    return table(["set", "RNN", "LSTM", "GRU", "wall time per run"], body, ("tasks.json", used))


def music_gru() -> str:
    found = rows("music_gru.json")
    body = []
    for preset, variant in ordered(found, lambda r: (r["preset"], r["variant"])):
        runs = [r for r in found if (r["preset"], r["variant"]) == (preset, variant)]
        valid, test = (fixed(statistics.mean(r[split] for r in runs), 3) for split in ("valid", "test"))
        body.append([f"`{preset}`", f"`{variant}`", seeds_of(runs), valid, test])
    header = ["preset", "variant", "seeds", "validation NLL (mean)", "test NLL (mean)"]
    return table(header, body, "music_gru.json")


def music_gru_nottingham() -> str:
    found = rows("music_gru_nottingham.json")
    valid = best([r["valid"] for r in found], lambda x: fixed(x, 3))
    test = best([r["test"] for r in found], lambda x: fixed(x, 3))
    body = [[f"`{r['variant']}`", str(r["seed"]), count(r["steps"]), v, t]
            for r, v, t in zip(found, valid, test)]  # fmt: skip
    header = ["variant", "seed", "steps", "validation NLL", "test NLL"]
    return table(header, body, "music_gru_nottingham.json")


BABI_TASK = re.compile(r"qa(\d+)_([\w-]+)_train\.txt")
# the published accuracies as benchmarks/tasks.py writes them into each babi-1k row's "anchor"
BABI_ANCHOR = re.compile(r"Weston LSTM ([\d.]+)% / Keras babi_rnn ([\d.]+)%")
BABI_RUNS = [(protocol, cell) for protocol in ("babi-1k", "babi-10k") for cell in ("rnn", "lstm", "gru")]


def babi_tasks() -> dict[int, dict]:
    """Per bAbI task: its name, the last run of each (protocol, cell) and the published accuracies
    its 1k rows quote."""
    tasks: dict[int, dict] = {}
    for r in rows("tasks.json"):
        if r["preset"].startswith("babi-"):
            number, name = BABI_TASK.search(r["command"]).groups()
            task = tasks.setdefault(int(number), {"name": name.replace("-", " ")})
            task[r["preset"].split()[0], r["cell"]] = r
            if anchor := BABI_ANCHOR.search(r["anchor"]):
                task["weston"], task["keras"] = anchor.groups()
    return dict(sorted(tasks.items()))


def babi() -> str:
    body, used = [], []
    for number, task in babi_tasks().items():
        cells = [points(task[k]["test"]["accuracy"]) if k in task else DASH for k in BABI_RUNS]
        anchors = [task.get("weston", DASH), task.get("keras", DASH)]
        body.append([f"{number} {task['name']}", *cells[:3], *anchors, *cells[3:]])
        used += [task[k] for k in BABI_RUNS if k in task]
    header = ["task", "RNN", "LSTM", "GRU", "Weston LSTM", "Keras babi_rnn", "RNN 10k", "LSTM 10k", "GRU 10k"]
    return table(header, body, ("tasks.json", used))


def listed(numbers: list[int]) -> str:
    """listed([2, 13, 14]) == "2, 13 and 14"."""
    return ", ".join(str(n) for n in numbers[:-1]) + (" and " if len(numbers) > 1 else "") + str(numbers[-1])


def babi_summary() -> str:
    """One sentence: on how many tasks of the 1k protocol the better gated cell beats each anchor,
    both read at the table's precision."""
    tasks = {n: t for n, t in babi_tasks().items() if "weston" in t}
    ours = {n: max(float(points(t["babi-1k", c]["test"]["accuracy"])) for c in ("lstm", "gru"))
            for n, t in tasks.items()}  # fmt: skip

    def outcome(anchor: str) -> str:
        tied = [n for n in tasks if ours[n] == float(tasks[n][anchor])]
        behind = [n for n in tasks if ours[n] < float(tasks[n][anchor])]
        beaten = len(tasks) - len(tied) - len(behind)
        notes = [f"ties it on {listed(tied)}"] if tied else []
        notes += [f"behind on {listed(behind)}"] if behind else []
        return f"on {beaten} of the {len(tasks)} tasks" + (f" ({'; '.join(notes)})" if notes else "")

    return (f"On the 1k protocol the better gated cell beats Weston et al.'s LSTM {outcome('weston')} and "
            f"Keras' example {outcome('keras')}.")  # fmt: skip


def forecasting() -> str:
    body, used = [], []
    for preset in ("airline", "sunspots"):
        runs = latest(preset, ("rnn", "lstm", "gru"))
        body.append([preset, *best([r["test"]["rmse"] for r in runs], lambda x: fixed(x, 1))])
        used += runs
    return table(["series", "RNN", "LSTM", "GRU"], body, ("tasks.json", used))


CLASSIFICATION = {"digits": ("digits, rows", "8 × 8"), "digits-pixel": ("digits, pixels", "64 × 1"),
                  "digits-permuted": ("digits, pixels permuted", "64 × 1"),
                  "mnist-rows": ("MNIST 5k, rows", "28 × 28"),
                  "mnist-rows-permuted": ("MNIST 5k, permuted, 28 pixels a step", "28 × 28"),
                  "mnist-pixel": ("MNIST 5k, pixels", "784 × 1"),
                  "mnist-pixel-permuted": ("MNIST 5k, pixels permuted", "784 × 1")}  # fmt: skip


def classification() -> str:
    body, used = [], []
    for preset, (reading, steps_inputs) in CLASSIFICATION.items():
        runs = latest(preset, ("rnn", "lstm", "gru"))
        accuracies = best([r["test"]["accuracy"] for r in runs], percent, lowest=False)
        body.append([reading, steps_inputs, *accuracies, f"`{preset}`"])
        used += runs
    header = ["data, reading", "steps × inputs", "RNN", "LSTM", "GRU", "preset"]
    return table(header, body, ("tasks.json", used))


VIDEO_CELLS = {"convlstm": "ConvLSTM", "convgru": "ConvGRU", "lstm": "FC-LSTM"}


def video() -> str:
    runs = latest("video-quick") + latest("video")
    mse = best([r["test"]["mse"] for r in runs], lambda x: fixed(x, 1))
    ssim = best([r["test"]["ssim"] for r in runs], lambda x: fixed(x, 2), lowest=False)
    body = [[f"`{r['preset']}`, {VIDEO_CELLS[r['cell']]}", m, fixed(r["test"]["bce"], 0), s, steps(r),
             f"{minutes(r['wall_s'])} min", f"`{r['command']}`"]
            for r, m, s in zip(runs, mse, ssim)]  # fmt: skip
    header = ["preset, cell", "test MSE / frame", "BCE / frame", "SSIM", "steps", "wall time", "command"]
    return table(header, body, ("tasks.json", runs))


# The README's headline -------------------------------------------------------------------------

# Published anchors beside ours (typed from the papers, not measured here): Bai et al. 2018 Table 1
# (adding at T = 600: MSE; copy at T = 1000: cross-entropy), and nanoGPT's CPU quick start on tiny
# Shakespeare (validation loss, measured by an earlier session on this machine's kind: README history).
PUBLISHED = {"adding": "LSTM 0.164 (failed), GRU 5.3e-05", "copy": "LSTM 0.0204, GRU 0.0197, RNN 0.0202 (all at the "
             "baseline)", "shakespeare": "nanoGPT on a CPU: 1.886 in 66 s"}  # fmt: skip


def headline() -> str:
    """Three rows: the two long-memory tasks where published recurrent models fail, and text."""
    adding = {cell: [r for r in rows("long_memory_600.json") if r["cell"] == cell] for cell in ("rnn", "lstm", "gru")}
    copies = {cell: rows(f"long_memory_copy1000_{cell}.json") for cell in ("rnn", "lstm", "gru")}
    text = latest("shakespeare-quick", ("rnn", "lstm", "gru"))

    def seeds(runs, key, form):
        return ", ".join(form(r["test"][key]) for r in runs)

    body = [["adding problem, T = 600: test MSE", PUBLISHED["adding"],
             *(seeds(adding[c], "mse", sci) for c in ("rnn", "lstm", "gru"))],
            ["copy memory, T = 1000: test cross-entropy", PUBLISHED["copy"],
             *(seeds(copies[c], "loss", lambda x: fixed(x, 4)) for c in ("rnn", "lstm", "gru"))],
            ["tiny Shakespeare in about a minute: validation loss (nats/char)", PUBLISHED["shakespeare"],
             *(f"{fixed(r['valid']['loss'], 3)} in {fixed(r['wall_s'], 0)} s" for r in text)]]  # fmt: skip
    used = [*adding.values(), *copies.values()]
    return table(["benchmark", "published", "RNN", "LSTM", "GRU (one value per seed)"], body,
                 "long_memory_600.json", *(f"long_memory_copy1000_{c}.json" for c in ("rnn", "lstm", "gru")),
                 ("tasks.json", text))  # fmt: skip


# Pages ----------------------------------------------------------------------------------------

def xlstm_speed() -> str:
    found = rows("xlstm_speed.json")
    body = []
    for r in found:
        ms = r["ms"]
        if r["what"] == "sLSTM cell over time":
            what, at = f"sLSTM cell, given W x ({r['mode']})", shape(r["B"], r["T"], r["H"], r["heads"])
            ours, theirs = ms["fused"], ms.get("official vanilla")
            versus = f"official vanilla {fixed(theirs, 1)} ms: {fixed(theirs / ours, 1)}× ours" if theirs else DASH
            extra = f"reference loop {fixed(ms['reference'], 1)} ms"
        elif r["what"] == "layer vs torch.nn.LSTM":
            what, at = f"sLSTM layer vs torch.nn.LSTM ({r['mode']})", shape(r["B"], r["T"], r["H"], r["heads"])
            ours = ms["gatedrnn.sLSTM"]
            versus = f"torch.nn.LSTM {fixed(ms['torch.nn.LSTM'], 1)} ms: ours {ratio(r['sLSTM / torch.nn.LSTM'])}×"
            extra = DASH
        else:
            what, at = "mLSTM chunkwise (training)", f"{shape(r['B'], r['heads'], r['d'])}, T = {count(r['T'])}"
            ours = ms["chunkwise"]
            official = {n: v for n, v in r.get("over chunkwise", {}).items() if n.startswith("official")}
            fastest = min(official, key=official.get) if official else None  # the ratio of the two in each round
            versus = (f"{fastest} {fixed(ms[fastest], 1)} ms: {fixed(official[fastest], 2)}× ours"
                      if fastest else DASH)  # fmt: skip
            extra = f"{fixed(r['us per step (chunkwise)'], 1)} µs per step" + (
                f"; our parallel form {fixed(ms['parallel'], 1)} ms" if "parallel" in ms else "")
        body.append([what, at, fixed(ours, 1), versus, extra])
    header = ["what", "B, T, H, heads / B, heads, d", "ours ms", "against", "also"]
    return table(header, body, "xlstm_speed.json")


XLSTM_CELL_NAMES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU", "mingru": "MinGRU", "slstm": "sLSTM",
                    "mlstm": "mLSTM", "xlstm": "xLSTM (2 blocks, sLSTM at 1)"}  # fmt: skip


def xlstm_parity() -> str:
    data = load("xlstm_parity.json")
    found, paper = data["rows"], data.get("paper", {}).get("values", {})
    body = []
    for cell in ordered(found, lambda r: r["cell"]):
        mine = [r for r in found if r["cell"] == cell]
        first = mine[0]
        body.append([XLSTM_CELL_NAMES.get(cell, cell), ", ".join(fixed(r["test"]["accuracy"], 3) for r in mine),
                     span((r["test"]["accuracy_train_lengths"] for r in mine), lambda x: fixed(x, 3)),
                     ", ".join(count(r["solved_at"]) if r.get("solved_at") else DASH for r in mine),
                     f"{count(first['params'])} / {count(first['state_size'])}", paper.get(cell, DASH)])  # fmt: skip
    header = ["cell", "accuracy on lengths 40–256 (one per seed)", "on lengths 1–40", "solved at step",
              "parameters / state size", "papers"]  # fmt: skip
    return table(header, body, "xlstm_parity.json")


def xlstm_mqar() -> str:
    found = [r for r in rows("xlstm_mqar.json") if not r.get("no_shift")]
    pairs = sorted({r["kv_pairs"] for r in found})
    body = []
    for cell, hidden, steps in ordered(found, lambda r: (r["cell"], r["hidden_size"], r["settings"]["steps"])):
        mine = [r for r in found if (r["cell"], r["hidden_size"], r["settings"]["steps"]) == (cell, hidden, steps)]
        cells = []
        for n in pairs:
            at = [r for r in mine if r["kv_pairs"] == n]
            cells.append(", ".join(fixed(r["test"]["accuracy"], 3) for r in at) if at else DASH)
        name = XLSTM_CELL_NAMES.get(cell, cell)
        body.append([f"{name}, hidden {hidden}" + (f", {count(steps)} steps" if steps != 1500 else ""),
                     *cells, count(mine[0]["state_size"])])
    header = ["cell", *(f"{n} pairs: query accuracy (one per seed; chance {fixed(1 / n, 3)})" for n in pairs),
              "state size"]  # fmt: skip
    return table(header, body, "xlstm_mqar.json")


def xlstm_shakespeare() -> str:
    found = rows("xlstm_shakespeare.json")

    def best(r: dict) -> str:
        valid = r.get("best_valid")
        return "-" if valid is None else f"{fixed(valid['loss'], 3)} (step {count(valid['step'])})"

    def steps(r: dict) -> str:  # a schedule fitted to the budget: the steps run of those planned
        planned = r.get("planned_steps")
        return count(r["step"]) if planned is None or planned == r["step"] else f"{count(r['step'])} of {count(planned)}"

    body = [[XLSTM_CELL_NAMES.get(r["cell"], r["cell"]) + f", hidden {r['hidden_size']}",
             f"`{r.get('preset', 'shakespeare-quick')}`", count(r["params"]), plain(r["minutes"]), steps(r), best(r),
             fixed(r["test"]["loss"], 3) + f" ({r.get('weights', 'last')})", fixed(r["test"]["bpc"], 3)]
            for r in found]  # fmt: skip
    header = ["model", "preset", "parameters", "budget (minutes)", "steps", "best validation loss (at step)",
              "test loss, nats/char (weights tested)", "test bits/char"]  # fmt: skip
    return table(header, body, "xlstm_shakespeare.json")


def random_shapes() -> str:
    names = sorted(path.name for path in RESULTS.glob("random_shapes_seed*.json"))
    found = [r for name in names for r in rows(name)]
    body = []
    for cell, mode in ordered(found, lambda r: (r["cell"], r["mode"])):
        mine = [r for r in found if (r["cell"], r["mode"]) == (cell, mode)]
        auto, best = [r["auto"] for r in mine], [r["auto / best"] for r in mine]
        twin = [r["twin"] for r in mine if "twin" in r]  # the control (files from before it have none)
        spread = f"{ratio(min(twin))}–{ratio(max(twin))}" if twin else DASH
        body.append([cell, mode, count(len(mine)), ratio(min(auto)), ratio(statistics.median(auto)), ratio(max(auto)),
                     count(sum(a > 1.05 for a in auto)), ratio(statistics.median(best)), ratio(max(best)),
                     spread])  # fmt: skip
    header = ["cell", "mode", "shapes", "auto / torch.nn: min", "median", "max", "shapes over 1.05",
              "auto / best candidate: median", "max", "a second torch.nn layer / the first: min–max"]  # fmt: skip
    return table(header, body, *names)


def random_shapes_headline() -> str:
    """README's summary of benchmarks/random_shapes.py: per seed, how many rows auto is over
    1.05x torch.nn, its largest ratio, and auto over the faster of its candidates."""
    names = sorted(path.name for path in RESULTS.glob("random_shapes_seed*.json"))
    body = []
    for name in names:
        found = rows(name)
        auto, best = [r["auto"] for r in found], [r["auto / best"] for r in found]
        twin = [r["twin"] for r in found if "twin" in r]
        seed = name.removeprefix("random_shapes_seed").removesuffix(".json")
        over = [r for r in found if r["auto"] > 1.05]
        both = count(sum(r["twin"] > 1.05 for r in over)) if twin else DASH
        looked = [r["autotune"] for r in found if r.get("autotune")]  # what the autotuner timed (newer files)
        overturned = [r for r in found if _overturned(r.get("autotune"))]
        body.append([seed, count(len(found)), count(len(over)), both, ratio(max(auto)), ratio(statistics.median(best)),
                     ratio(max(best)), count(sum(t > 1.05 or t < 1 / 1.05 for t in twin)) if twin else DASH,
                     count(len(overturned)) if looked else DASH,
                     count(sum(r["fused"] > 1.05 * r["torch"] for r in overturned)) if looked else DASH])  # fmt: skip
    header = ["seed", "calls (shape, cell, mode)", "auto over 1.05x torch.nn",
              "of those, a second torch.nn layer over 1.05x the first too", "auto / torch.nn: max",
              "auto / faster candidate: median", "max", "a second torch.nn layer off the first by over 5%",
              "fused-loop wins a later look overturned", "of those, the fused loop over 1.05x torch's kernel"]  # fmt: skip
    return table(header, body, *names)


def _overturned(looks) -> bool:
    """Whether the autotuner's looks at a row's shape class (``autotune.looks()``) chose the fused
    loop at first and torch's kernel in the end."""
    return bool(looks) and looks[0]["winner"] == "fused" and looks[-1]["winner"] == "torch"


def call_overhead() -> str:
    """The Python before the kernel at small shapes (benchmarks/call_overhead.py): per cell, mode
    and shape, the microseconds of a call and auto with and without its remembered plans, over
    torch.nn."""
    found = rows("call_overhead.json")
    body = [[r["cell"], r["mode"], shape(*sizes(r)), fixed(r["us"]["kernel"], 1), fixed(r["us"]["torch.nn"], 1),
             fixed(r["us"]["auto"], 1), ratio(r["unplanned"]), ratio(r["auto"]), r["backend"]] for r in found]
    header = ["cell", "mode", "B, T, I, H", "torch's kernel alone (µs)", "torch.nn (µs)", "auto (µs)",
              "auto without plans / torch.nn", "auto / torch.nn", "auto's backend"]  # fmt: skip
    return table(header, body, "call_overhead.json")


def static_grid() -> str:
    """auto's static rule (benchmarks/static_grid.py): per cell and mode, the grid points
    measured, how many chose each candidate, and fused / torch over them."""
    found = rows("static_grid.json")
    body = []
    for cell, mode in ordered(found, lambda r: (r["cell"], r["mode"])):
        mine = [r for r in found if (r["cell"], r["mode"]) == (cell, mode)]
        fused = sum(r["decision"] == "fused" for r in mine)
        ratios = [r["ratio"] for r in mine]
        body.append([cell, mode, count(len(mine)), count(fused), count(len(mine) - fused), ratio(min(ratios)),
                     ratio(statistics.median(ratios)), ratio(max(ratios))])  # fmt: skip
    header = ["cell", "mode", "grid points", "fused chosen", "torch chosen", "fused / torch: min", "median", "max"]
    return table(header, body, "static_grid.json")


def bf16_speed() -> str:
    """The products in bfloat16 (benchmarks/bf16_speed.py): ratios per cell and shape."""
    found = rows("bf16_speed.json")
    keys = [("bf16_ratio", "our bfloat16 / our float32"), ("autocast_ratio", "ours under autocast / our float32"),
            ("autocast_vs_torch", "ours / torch.nn, both under autocast"),
            ("bf16_vs_f32_products", "bfloat16 layer / its products in float32"),
            ("panels_vs_onednn", "bfloat16 layer, our panels / oneDNN"),
            ("auto_vs_torch", "auto / torch.nn, both under autocast")]  # fmt: skip
    keys = [(k, name) for k, name in keys if all(k in r for r in found)]  # older results lack the last two
    header = ["cell", "B, T, I, H", *(f"{name}: inference / training" for _, name in keys), "bfloat16 products"]
    body = []
    for cell in ordered(found, lambda r: r["cell"]):
        mine = [r for r in found if r["cell"] == cell]
        for at in ordered(mine, sizes):
            here = [r for r in mine if sizes(r) == at]
            body.append([cell, shape(*at), *(by_mode(here, k) for k, _ in keys), count(here[0]["bf16_products"])])
    return table(header, body, "bf16_speed.json")


def speed_headline() -> str:
    """README's summary of speed.py on the AMD EPYC (speed_epyc.json) and of packed_gemm.py's
    panels (packed_gemm_epyc.json): per cell and mode, over the GEMM-bound shapes, the range of
    fused / torch.nn and of auto / torch.nn, the targets met, and the range of panels / MKL packed."""
    found = [r for r in rows("speed_epyc.json") if r["B"] * r["H"] >= 64 * 256]
    panels = [r for r in rows("packed_gemm_epyc.json") if r["B"] * r["H"] >= 64 * 256]

    def span(values):
        return f"{ratio(min(values))}–{ratio(max(values))}"

    body = []
    for cell in ordered(found, lambda r: r["cell"]):
        for mode in MODES:
            mine = [r for r in found if r["cell"] == cell and r["mode"] == mode]
            theirs = [r["panels_vs_packed"] for r in panels if r["cell"] == cell and r["mode"] == mode]
            met = sum(r["verdict"] in ("met", "tie") for r in mine)
            body.append([cell, mode, count(len(mine)), span([r["fused_ratio"] for r in mine]),
                         span([r["auto_ratio"] for r in mine]), f"{met} of {len(mine)} (≤ {mine[0]['target']})",
                         span(theirs) if theirs else "–"])  # fmt: skip
    header = ["cell", "mode", "shapes", "fused / torch.nn", "auto / torch.nn", "target met or tied",
              "panels / MKL packed"]  # fmt: skip
    return table(header, body, "speed_epyc.json", "packed_gemm_epyc.json")


def bf16_headline() -> str:
    """README's summary of benchmarks/bf16_speed.py: per cell, over the GEMM-bound shapes, the
    range of bfloat16 / float32 and of ours / torch.nn under autocast, per mode."""
    found = [r for r in rows("bf16_speed.json") if r["gemm_bound"]]

    def span(mine, key, mode):
        values = [r[key] for r in mine if r["mode"] == mode]
        return f"{ratio(min(values))}–{ratio(max(values))}"

    body = []
    for cell in ordered(found, lambda r: r["cell"]):
        mine = [r for r in found if r["cell"] == cell]
        body.append([cell, count(len(ordered(mine, sizes))),
                     *(span(mine, key, mode) for key in ("bf16_ratio", "autocast_vs_torch") for mode in MODES)])
    header = ["cell", "shapes", "our bfloat16 / our float32: inference", "training",
              "ours / torch.nn, both autocast: inference", "training"]  # fmt: skip
    return table(header, body, "bf16_speed.json")


def bf16_learning() -> str:
    """Mixed bfloat16 against float32 (benchmarks/bf16_learning.py): the test metric over seeds,
    the difference in units of float32's spread over seeds, the wall time."""
    found = rows("bf16_learning.json")
    body = []
    for task, cell in ordered(found, lambda r: (r["task"], r["cell"])):
        mine = {p: [r for r in found if (r["task"], r["cell"], r["precision"]) == (task, cell, p)]
                for p in ("float32", "bfloat16")}  # fmt: skip
        if not all(mine.values()):
            continue
        values = {p: [r["value"] for r in rs] for p, rs in mine.items()}
        mean = {p: statistics.mean(v) for p, v in values.items()}
        spread = {p: statistics.stdev(v) if len(v) > 1 else 0.0 for p, v in values.items()}
        delta = mean["bfloat16"] - mean["float32"]
        in_sd = fixed(delta / spread["float32"], 1) if spread["float32"] > 0 else "-"
        wall = statistics.mean(r["wall_s"] for r in mine["bfloat16"]) / statistics.mean(
            r["wall_s"] for r in mine["float32"])
        body.append([mine["float32"][0]["preset"], CELLS.get(cell, cell), mine["float32"][0]["metric"],
                     f"{fixed(mean['float32'], 4)} ± {fixed(spread['float32'], 4)}",
                     f"{fixed(mean['bfloat16'], 4)} ± {fixed(spread['bfloat16'], 4)}", fixed(delta, 4), in_sd,
                     count(len(values["float32"])), ratio(wall)])  # fmt: skip
    header = ["preset", "cell", "test metric", "float32: mean ± sd", "bfloat16: mean ± sd", "difference",
              "difference / float32 sd", "seeds", "wall time bfloat16 / float32"]  # fmt: skip
    return table(header, body, "bf16_learning.json")


TABLES: dict[str, dict[str, Callable[[], str]]] = {
    "README.md": {"headline": headline, "xlstm-speed": xlstm_speed, "bf16-headline": bf16_headline,
                  "speed-headline": speed_headline,
                  "random-shapes-headline": random_shapes_headline},
    "docs/speed.md": {"speed": speed, "speed-epyc": speed_epyc, "speed-epyc-misses": speed_epyc_misses,
                      "input-projection": input_projection,
                      "packed-gemm": packed_gemm, "packed-gemm-epyc": packed_gemm_epyc, "speed-1thread": speed_1thread, "compile-speed": compile_speed,
                      "random-shapes": random_shapes, "call-overhead": call_overhead,
                      "static-grid": static_grid, "bf16-speed": bf16_speed, "bf16-learning": bf16_learning},
    "docs/variants.md": {"variant-speed": variant_speed, "variants-adding": variants_adding,
                         "variants-copy-jsb": variants_copy_jsb},
    "docs/conv.md": {"conv-speed": conv_speed},
    "docs/xlstm.md": {"xlstm-speed": xlstm_speed, "xlstm-parity": xlstm_parity, "xlstm-mqar": xlstm_mqar,
                      "xlstm-shakespeare": xlstm_shakespeare},
    "docs/distributed.md": {"ddp": ddp},
    "docs/export.md": {"export-parity": export_parity, "export-parity-layer-norm": export_parity_layer_norm},
    "docs/results/long-memory.md": {"adding-600": adding_600, "copy": copy, "plain-init": plain_init},
    "docs/results/applications.md": {"shakespeare-quick": shakespeare_quick, "shakespeare": shakespeare,
                                     "ptb": ptb, "music": music, "music-gru": music_gru,
                                     "music-gru-nottingham": music_gru_nottingham, "babi": babi,
                                     "babi-summary": babi_summary, "forecasting": forecasting,
                                     "classification": classification, "video": video},
}  # fmt: skip
REGION = re.compile(r"(<!-- table: ([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.DOTALL)


def made(page: str) -> tuple[str, list[str], list[str]]:
    """The page's text with each of its tables made afresh from the JSON; the tables whose text
    changed; and the problems: a table with no region in the page, a region no function makes."""
    text = (ROOT / page).read_text(encoding="utf-8")
    tables, changed = TABLES[page], []
    found = [match.group(2) for match in REGION.finditer(text)]
    problems = [f"{page}: table {name}: no <!-- table: {name} --> ... <!-- /table --> region"
                for name in tables if name not in found]  # fmt: skip
    problems += [f"{page}: table {name}: not a table benchmarks/tables.py makes"
                 for name in found if name not in tables]  # fmt: skip

    def fresh(match: re.Match) -> str:
        name = match.group(2)
        if name not in tables:
            return match.group(0)
        try:
            content = tables[name]() + "\n"
        except (KeyError, IndexError, TypeError, ValueError, StopIteration) as error:
            lacking = f"{type(error).__name__}: {error}"
            raise ResultsError(f"{page}: table {name}: its JSON lacks what it reads ({lacking})") from None
        if content != match.group(3):
            changed.append(name)
        return match.group(1) + content + match.group(4)

    return REGION.sub(fresh, text), changed, problems


def check() -> list[str]:
    """One line for each table that differs from what its JSON makes or cannot be placed; none
    when every page holds its tables as the JSON makes them."""
    lines = []
    for page in TABLES:
        _, changed, problems = made(page)
        lines += [f"{page}: table {name} differs from what its JSON makes" for name in changed] + problems
    return lines


def write() -> tuple[list[str], list[str]]:
    """Writes each page whose tables changed; returns what was written and the problems."""
    written, problems = [], []
    for page in TABLES:
        text, changed, trouble = made(page)
        if changed:
            (ROOT / page).write_text(text, encoding="utf-8")
        written += [f"{page}: wrote table {name}" for name in changed]
        problems += trouble
    return written, problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tables", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a page differs from its JSON")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.check:
            differences = check()
            if differences:
                print("\n".join(differences), file=sys.stderr)
                return 1
            print("every table matches its JSON")
            return 0
        written, problems = write()
    except ResultsError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print("\n".join(written) or "every table already matched its JSON")
    if problems:
        print("\n".join(problems), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
