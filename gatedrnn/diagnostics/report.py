"""The HTML report: learning curves, gradient flow across time, gate heatmaps and GRU time
constants for one or several runs side by side, as PNG figures beside a ``report.html``.

A report teaches: it opens with the task's own introduction (:meth:`Task.introduction`: what is
predicted, what the baseline means, what "solved" means), and each figure's caption says what
to look for and what the figure shows in these runs, with the values it draws. A value is
measured once per run (:meth:`RunView.measured`) and read by both the figure and its caption,
so the two can never disagree."""

from __future__ import annotations

import contextlib
import html
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gatedrnn.checkpoint import atomic_write
from gatedrnn.diagnostics.gates import ewma_time_constants, gate_trace
from gatedrnn.diagnostics.gradflow import hidden_gradient_norms
from gatedrnn.threads import torch_threads

COLORS = {"rnn": "#d62728", "lstm": "#1f77b4", "gru": "#2ca02c"}
FLOOR = 1e-30  # where the gradient-flow figure draws a norm that underflowed float32 (0 on a log axis is nowhere)
LINE_STYLES = (  # (dashes, marker, width) of the 1st, 2nd, ... run: widths fall so the thinner line lies on top
    ("-", "o", 3.0),
    ("--", "s", 2.2),
    (":", "^", 1.6),
    ("-.", "D", 1.2),
    ((0, (1, 1)), "v", 0.9),
    ((0, (5, 1, 1, 1)), "x", 0.7),
)


def line_style(index: int, points: int) -> dict:
    """Matplotlib keywords for the ``index``-th run's line of ``points`` points. Each run has a
    dash pattern, a marker and a width of its own, thinner lines drawn above thicker ones, all a
    little transparent, and markers on every tenth point, shifted per run: two runs on the same
    values (two gradients underflowed to 1e-30, two flat validation curves) both stay visible."""
    dashes, marker, width = LINE_STYLES[index % len(LINE_STYLES)]
    every = max(1, points // 10)
    return {"linestyle": dashes, "marker": marker, "linewidth": width, "markersize": 2.5 + width, "alpha": 0.8,
            "zorder": 2 + index, "markevery": (index % every, every)}  # fmt: skip


@dataclass
class RunView:
    """What the report shows of one run."""

    label: str
    cell: str
    task: object
    model: torch.nn.Module
    history: list
    seed: int = 0
    initial_model: torch.nn.Module | None = None  # the same model at initialization
    summary: dict = field(default_factory=dict)  # the row of the results table
    data: str = ""  # the run's --data, named in titles
    _batch: tuple | None = field(default=None, repr=False)
    _measured: dict = field(default_factory=dict, repr=False)

    def sample(self, size: int = 64):
        """Up to ``size`` test examples (``Task.diagnostic_batch``), drawn once for all the figures."""
        if self._batch is None:
            self._batch = (self.task.diagnostic_batch(self.seed, 64),)
        batch = self._batch[0]
        return None if batch is None else (batch[0][:size], batch[1][:size])

    def measured(self, key, compute):
        """``compute()``, run once per run and ``key``: a figure and its caption read the same values."""
        if key not in self._measured:
            self._measured[key] = compute()
        return self._measured[key]


@contextlib.contextmanager
def reference_loop(model):
    """The model's recurrent layer on its reference loop inside the block. For the one or 64
    sequences a figure traces it is as fast as the native loop, and it spares the report the
    seconds torch spends setting up a custom operator on its first call (2.6 s measured, in a
    report of a text run)."""
    rnn = getattr(model, "rnn", None)
    before = getattr(rnn, "backend", None)
    if before is not None:
        rnn.backend = "reference"
    try:
        yield model
    finally:
        if before is not None:
            rnn.backend = before


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    _plt().close(fig)


def _log_if_decades(ax) -> None:
    """A log axis where the plotted values span more than a decade, a linear one otherwise
    (a short run's loss, between 2.4 and 2.7, reads better on a linear axis)."""
    values = [v for line in ax.get_lines() for v in line.get_ydata() if v > 0]
    if values and max(values) > 10 * min(values):
        ax.set_yscale("log")


# -- what the figures draw, measured once per run -------------------------------------------


def validation_curve(run) -> dict | None:
    """The run's validation metric at each evaluation (``steps``, ``values``), its last value
    (``final``, at ``step``) and the first step whose evaluation counted as solved (``solved_at``:
    None where none did; absent where the task has no notion of solved). None without evaluations."""

    def compute():
        task = run.task
        rows = [r for r in run.history if r.get("split") == "valid" and task.metric in r]
        if not rows:
            return None
        curve = {"steps": [r["step"] for r in rows], "values": [r[task.metric] for r in rows],
                 "step": rows[-1]["step"], "final": rows[-1][task.metric]}  # fmt: skip
        if getattr(task, "defines", lambda _: False)("solved"):
            metrics = [{k: v for k, v in r.items() if k not in ("step", "split", "seconds")} for r in rows]
            curve["solved_at"] = next((r["step"] for r, m in zip(rows, metrics) if task.solved(m)), None)
        return curve

    return run.measured("validation curve", compute)


def reference_lines(runs) -> dict[str, float]:
    """What trivial predictors score on the validation split, ``{name: value}``: the task's named
    baselines (the timeseries task's persistence, seasonal naive), else its one ``baseline``."""

    def compute():
        task = runs[0].task
        named = task.baseline_results("valid", fitted=False) if hasattr(task, "baseline_results") else {}
        if named:
            return {name: values[task.metric] for name, values in named.items()}
        return {"baseline": task.baseline} if task.baseline is not None else {}

    return runs[0].measured("reference lines", compute)


def gradient_norms(run, which: str, batch: int = 64) -> torch.Tensor | None:
    """‖∂L/∂h_t‖ for t = 0 … T − 1 (a (T,) tensor, ``hidden_gradient_norms``) of the run's model
    at initialization (``which="initial_model"``) or after training (``"model"``) on its test
    sample; None where it is not measured (no such model, several layers or directions, no sample)."""

    def compute():
        model = getattr(run, which)
        rnn = getattr(model, "rnn", None)
        if model is None or not hasattr(rnn, "step") or rnn.num_layers != 1 or rnn.bidirectional:
            return None
        sample = run.sample(batch)
        if sample is None:
            return None
        inputs, targets = sample
        return hidden_gradient_norms(model, inputs, targets, run.task.loss)

    return run.measured(("gradient norms", which, batch), compute)


def decades(norms: torch.Tensor) -> tuple[float, bool]:
    """How many orders of magnitude the drawn norm falls from the last step (next to the loss)
    to the first, log10(‖∂L/∂h_{T−1}‖ / ‖∂L/∂h_0‖) with each norm drawn at ``FLOOR`` at least,
    and whether the first step's norm sat on that floor (then the fall is at least this)."""
    drawn = norms.clamp_min(FLOOR).double()
    return float(drawn[-1].log10() - drawn[0].log10()), bool(norms[0] <= FLOOR)


def _gated(runs) -> list:
    return [r for r in runs if r.cell in ("lstm", "gru") and r.sample(1) is not None]


def gate_values(run) -> tuple[str, torch.Tensor]:
    """The gate that keeps the state, ``"forget"`` (LSTM) or ``"update"`` (GRU), and its values
    (T, H) over the run's first test sequence, first layer."""

    def compute():
        inputs, _ = run.sample(1)
        with reference_loop(run.model):
            trace = gate_trace(run.model, inputs)
        name = "forget" if run.cell == "lstm" else "update"
        return name, trace[name][0, 0]  # (T, H): first layer, the one sequence

    return run.measured("gates", compute)


def update_time_constants(run) -> torch.Tensor:
    """τ = 1/(1 − z) of the GRU's update gates at every unit and step of its 64 test sequences."""

    def compute():
        inputs, _ = run.sample(64)
        with reference_loop(run.model):
            return ewma_time_constants(gate_trace(run.model, inputs).update[0])

    return run.measured("time constants", compute)


# -- figures --------------------------------------------------------------------------------


def learning_curves(runs, path: Path) -> None:
    """Training loss (every 10 steps) and the validation metric (every evaluation), side by side."""
    plt = _plt()
    task = runs[0].task
    fig, (train_ax, ax) = plt.subplots(1, 2, figsize=(11, 4))
    for index, run in enumerate(runs):
        color = COLORS.get(run.cell.replace("conv", ""))
        train = [r for r in run.history if r.get("split") == "train"]
        train_ax.plot([r["step"] for r in train], [r["loss"] for r in train], label=run.label, color=color,
                      **line_style(index, len(train)))  # fmt: skip
        curve = validation_curve(run)
        if curve is not None:
            ax.plot(curve["steps"], curve["values"], label=run.label, color=color,
                    **line_style(index, len(curve["steps"])))  # fmt: skip
    lines = reference_lines(runs)
    for (name, value), style in zip(lines.items(), ("--", ":", "-.")):
        ax.axhline(value, color="gray", linestyle=style, label=f"{name} {value:.3f}")
    if task.lower_is_better:  # errors and losses may span decades; accuracies do not
        _log_if_decades(ax)
    _log_if_decades(train_ax)
    for axis, label in ((train_ax, "training loss"), (ax, f"validation {task.metric}")):
        axis.set_xlabel("training step")
        axis.set_ylabel(label)
        axis.legend()
    fig.suptitle(f"Learning curves: {task.describe(runs[0].data)}")
    _save(fig, path)


def gradient_flow(runs, path: Path, batch: int = 64) -> bool:
    """‖∂L/∂h_t‖ against distance from the loss, at initialization and after training."""
    plt = _plt()
    panels = [("at initialization", "initial_model"), ("after training", "model")]
    if all(run.sample(1) is None for run in runs):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    drawn = False
    for ax, (title, which) in zip(axes, panels):
        for index, run in enumerate(runs):
            norms = gradient_norms(run, which, batch)
            if norms is None:
                continue
            distance = torch.arange(len(norms) - 1, -1, -1)
            ax.plot(distance.numpy(), norms.clamp_min(FLOOR).numpy(), label=run.label, color=COLORS.get(run.cell),
                    **line_style(index, len(norms)))  # fmt: skip
            drawn = True
        ax.set_yscale("log")
        ax.set_xlabel("distance from the loss (steps, T − 1 − t)")
        ax.set_title(f"‖∂L/∂h_t‖ {title}")
        if drawn:
            ax.legend()
    axes[0].set_ylabel("mean gradient norm")
    if not drawn:  # no run with a single-layer gatedrnn RNN/LSTM/GRU: no figure
        _plt().close(fig)
        return False
    _save(fig, path)
    return True


def _tick_text(token: str) -> str:
    """A token as a readable tick label: a space, newline or tab as a visible sign."""
    return {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}.get(token, token)


def gate_heatmaps(runs, path: Path) -> bool:
    """The LSTM's forget gate and the GRU's update gate over one test sequence; for token tasks
    (text) the time axis is labelled with the input tokens."""
    plt = _plt()
    gated = _gated(runs)
    if not gated:
        return False
    T = max(r.sample(1)[0].shape[1] for r in gated)
    tokens = any(r.task.token_labels(r.sample(1)[0][0]) for r in gated)
    width = min(24.0, max(11.0, 0.13 * T)) if tokens else 11.0  # room for a character per step
    fig, axes = plt.subplots(len(gated), 1, figsize=(width, 2.8 * len(gated) + (0.4 if tokens else 0)),
                             squeeze=False, layout="constrained")  # fmt: skip
    for ax, run in zip(axes[:, 0], gated):
        inputs, _ = run.sample(1)
        name, values = gate_values(run)
        order = values.mean(0).argsort(descending=True)
        image = ax.imshow(values[:, order].T.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        marked = run.task.marked_positions(inputs[0]) or []
        for t in marked:
            ax.axvline(t, color="red", linewidth=0.8, linestyle=":")
        labels = run.task.token_labels(inputs[0])
        if labels:
            words = any(len(label) > 1 for label in labels)
            ax.set_xticks(range(len(labels)), [_tick_text(label) for label in labels], parse_math=False,
                          fontsize=6 if words or len(labels) > 80 else 7, rotation=90 if words else 0)  # fmt: skip
            ax.tick_params(axis="x", length=0, pad=2)
        ax.set_ylabel("unit (sorted)")
        ax.set_title(f"{run.label}: {name} gate over one test sequence ({run.task.describe(run.data)})" +
                     ("; dotted red: marked inputs" if marked else ""))  # fmt: skip
        fig.colorbar(image, ax=ax, fraction=0.02)
    axes[-1, 0].set_xlabel("time step t, labelled with the input token read at t" if tokens else "time step t")
    _save(fig, path)
    return True


def time_constants(runs, path: Path) -> bool:
    """Histogram of τ = 1/(1 − z) of the GRU's update gates over a test batch."""
    plt = _plt()
    grus = [r for r in runs if r.cell == "gru" and r.sample(1) is not None]
    if not grus:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for index, run in enumerate(grus):
        tau = update_time_constants(run)
        bins = torch.logspace(0, max(1.0, float(tau.max().log10()) + 0.1), 40).numpy()
        dashes, _, width = LINE_STYLES[index % len(LINE_STYLES)]
        color = f"C{index}"
        ax.hist(tau.numpy(), bins=bins, alpha=0.3, color=color, zorder=2 + index)
        ax.hist(tau.numpy(), bins=bins, histtype="step", color=color, linestyle=dashes, linewidth=0.5 + width / 2,
                zorder=2 + index, label=f"{run.label} (median τ = {tau.median():.1f})")  # fmt: skip
    T = getattr(grus[0].task, "length", None)
    if T:
        ax.axvline(T, color="gray", linestyle="--", label=f"sequence length T = {T}")
    ax.set_xscale("log")
    ax.set_xlabel("τ = 1 / (1 − z), steps (h_t = (1 − z) n_t + z h_{t−1})")
    ax.set_ylabel("unit-steps")
    ax.set_title("GRU update gates as moving-average time constants")
    ax.legend()
    _save(fig, path)
    return True


# -- captions: what to look for, and what these runs show -----------------------------------


def _learning_curves_caption(runs) -> str:
    task = runs[0].task
    text = ("Left: the training loss, logged every 10 steps. Right: the validation metric at each evaluation; the "
            "grey lines are what trivial predictors score, named in the legend. A curve that stays on the grey line "
            "has learned nothing a trivial predictor does not know.")  # fmt: skip
    lines = reference_lines(runs)
    pick = min if task.lower_is_better else max
    told = []
    for run in runs:
        curve = validation_curve(run)
        if curve is None:
            continue
        sentence = f"{run.label} ended at validation {task.metric} {curve['final']:.4g} (step {curve['step']})"
        if lines:  # against the trivial predictors: a fraction of the best error, or points of accuracy above it
            best, final = pick(lines.values()), curve["final"]
            sentence += ", against " + " and ".join(f"{'the baseline' if name == 'baseline' else name} {value:.4g}"
                                                    for name, value in lines.items())  # fmt: skip
            which = "it" if len(lines) == 1 else "the best"
            if task.lower_is_better and best > 0:
                sentence += f" ({100 * final / best:.2g}% of {which})"  # 0.046%, 102%: two figures at any size
            elif not task.lower_is_better:
                sentence += f" ({final - best:+.4g} on {which})"
        if "solved_at" in curve:
            solved = curve["solved_at"]
            sentence += f"; solved at step {solved}" if solved is not None else "; not solved"
        told.append(sentence + ".")
    return " ".join([text, *told])


def _orders(change: tuple[float, bool]) -> str:
    value, floored = change
    return f"{'≥ ' if floored else ''}{abs(value):.1f} orders of magnitude {'down' if value >= 0 else 'up'}"


def _gradient_flow_caption(runs) -> str:
    text = ("The norm of the gradient of the loss with respect to the hidden state h_t, against how many steps t "
            "lies before the loss. A vanilla RNN's gradient decays exponentially with distance (a straight falling "
            "line on this log scale) until it underflows float32 (drawn at 1e-30): it cannot learn what happened "
            "long ago. The gates of the LSTM and GRU keep it from vanishing.")  # fmt: skip
    if runs[0].task.readout == "all":
        text += (f" The {runs[0].task.name} task has a loss at every step, so each h_t also receives the gradient of "
                 "its own step's loss; the distance is counted from the last step.")  # fmt: skip
    told, floored = [], False
    for run in runs:
        measured = [(decades(norms), len(norms), when) for norms, when in
                    ((gradient_norms(run, "initial_model"), "at initialization"),
                     (gradient_norms(run, "model"), "after training")) if norms is not None]  # fmt: skip
        if measured:
            floored |= any(change[1] for change, _, _ in measured)
            told.append(f"{run.label}: {', '.join(f'{_orders(change)} {when}' for change, _, when in measured)} "
                        f"over its {measured[0][1]} steps.")  # fmt: skip
    if told:
        text += " Here, from the last step back to the first: " + " ".join(told)
    if floored:
        text += " (≥: the first step's gradient underflowed, so it fell at least that far.)"
    return text


def _gates_caption(runs) -> str:
    text = ("Gate activations over one test sequence, one row per unit. Where the gate is near 1 the state is kept "
            "(LSTM: forget gate scales c; GRU: update gate keeps h).")  # fmt: skip
    shown = [(r.task, r.sample(1)[0][0]) for r in runs if r.sample(1) is not None]  # (task, one sequence)
    if any(task.marked_positions(x) for task, x in shown):
        text += " Look at what happens at the marked inputs (dotted red)."
    if any(task.token_labels(x) for task, x in shown):
        text += " The time axis shows the token read at each step (␣ a space, ↵ a new line)."
    told = []
    for run in _gated(runs):
        name, values = gate_values(run)
        per_step, per_unit = values.mean(1), values.mean(0)  # (T,) over units, (H,) over steps
        sentence = (f"{run.label}: mean {name} gate {float(values.mean()):.2f} (units from {float(per_unit.min()):.2f} "
                    f"to {float(per_unit.max()):.2f})")  # fmt: skip
        marked = [t for t in run.task.marked_positions(run.sample(1)[0][0]) or [] if 0 <= t < len(per_step)]
        if marked:  # the mean over units at each marked step, beside the step before it and the other steps
            at = [f"{float(per_step[t]):.2f} at the marked input t = {t}" +
                  (f" ({float(per_step[t - 1]):.2f} the step before)" if t else "") for t in marked]  # fmt: skip
            rest = [t for t in range(len(per_step)) if t not in marked]
            if rest:
                at.append(f"{float(per_step[rest].mean()):.2f} at the other steps")
            sentence += "; averaged over units, " + ", ".join(at)
        told.append(sentence + ".")
    return " ".join([text, *told])


def _time_constants_caption(runs) -> str:
    text = ("Each GRU unit at each step is an exponentially weighted moving average with rate 1 − z: τ = 1/(1 − z) "
            "is how many steps it remembers. Time constants near the sequence length are what long-range memory "
            "looks like.")  # fmt: skip
    for run in runs:
        if run.cell != "gru" or run.sample(1) is None:
            continue
        tau = update_time_constants(run)
        sentence = f"{run.label}: median τ {float(tau.median()):.1f} steps"
        T = getattr(run.task, "length", None)
        if T:
            sentence += f" against T = {T}; {float((tau >= T).double().mean()):.1%} of unit-steps have τ ≥ T"
        text += " " + sentence + "."
    return text


FIGURES = [  # (file, draw(runs, path) -> bool, caption: a string or a function of the runs)
    ("learning_curves.png", learning_curves, _learning_curves_caption),
    ("gradient_flow.png", gradient_flow, _gradient_flow_caption),
    ("gates.png", gate_heatmaps, _gates_caption),
    ("time_constants.png", time_constants, _time_constants_caption),
]


def _introduction(task, intro: str) -> str:
    """The task's introduction (its lines as paragraphs), then ``intro`` (what these runs are).
    A caller that passes the introduction itself as ``intro`` gets it once."""
    lines = task.introduction() if hasattr(task, "introduction") else []
    intro = intro.removeprefix(" ".join(lines)).strip()
    section = ""
    if lines:
        section = ('<section class="introduction"><h2>The task</h2>' +
                   "".join(f"<p>{html.escape(line)}</p>" for line in lines) + "</section>")  # fmt: skip
    return section + (f"<p>{html.escape(intro)}</p>" if intro else "")


def write_report(out_dir, runs: list[RunView], title: str, intro: str = "") -> Path:
    """Writes the figures and ``report.html`` into ``out_dir``; returns the HTML's path. The page
    opens with the task's introduction, then ``intro``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for filename, draw, caption in FIGURES + runs[0].task.figures():
        # The figures compute on small tensors (one sequence, 64 examples), where every extra thread
        # only adds waiting, and on a busy machine a lot of it: the demo's gradient flow took 10-23 s
        # on 2 threads of a shared 2-core machine, 0.45 s on 1 (measured).
        with torch_threads(1):
            drawn = draw(runs, out_dir / filename)
            if drawn is not False and callable(caption):
                caption = caption(runs)  # reads the values the figure measured
        if drawn is False:
            continue
        if filename.endswith(".html"):  # a page of its own (the text task's gate explorer): embedded and linked
            shown = (f'<iframe src="{filename}" title="{html.escape(filename)}" style="width:100%;height:720px">'
                     f'</iframe><p><a href="{filename}">open {html.escape(filename)} in its own page</a></p>')
        else:
            shown = f'<img src="{filename}" alt="{html.escape(filename)}">'
        sections.append(f"<figure>{shown}<figcaption>{html.escape(caption)}</figcaption></figure>")
    table = ""
    rows = [r.summary for r in runs if r.summary]
    if rows:
        head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>" for row in rows)
        table = f"<table><tr>{head}</tr>{body}</table>"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
.introduction{{background:#f4f6f8;padding:0.2em 1em;border-left:4px solid #1f77b4;max-width:800px}}
figure{{margin:2em 0}}img{{max-width:100%}}figcaption{{color:#555;max-width:800px}}</style></head>
<body><h1>{html.escape(title)}</h1>{_introduction(runs[0].task, intro)}{table}{''.join(sections)}</body></html>
"""
    path = out_dir / "report.html"
    atomic_write(path, lambda tmp: Path(tmp).write_text(page))
    return path
