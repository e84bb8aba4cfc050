"""The HTML report: learning curves, gradient flow across time, gate heatmaps and GRU time
constants for one or several runs side by side, as PNG figures beside a ``report.html``."""

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

    def sample(self, size: int = 64):
        """Up to ``size`` test examples (``Task.diagnostic_batch``), drawn once for all the figures."""
        if self._batch is None:
            self._batch = (self.task.diagnostic_batch(self.seed, 64),)
        batch = self._batch[0]
        return None if batch is None else (batch[0][:size], batch[1][:size])


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


def learning_curves(runs, path: Path) -> None:
    """Training loss (every 10 steps) and the validation metric (every evaluation), side by side."""
    plt = _plt()
    task = runs[0].task
    fig, (train_ax, ax) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        color = COLORS.get(run.cell.replace("conv", ""))
        train = [r for r in run.history if r.get("split") == "train"]
        train_ax.plot([r["step"] for r in train], [r["loss"] for r in train], label=run.label, color=color)
        rows = [r for r in run.history if r.get("split") == "valid"]
        ax.plot([r["step"] for r in rows], [r[task.metric] for r in rows], label=run.label, color=color, marker="o",
                markersize=3)  # fmt: skip
    named = task.baseline_results("valid", fitted=False) if hasattr(task, "baseline_results") else {}  # e.g. persistence
    for (name, values), style in zip(named.items(), ("--", ":", "-.")):
        ax.axhline(values[task.metric], color="gray", linestyle=style, label=f"{name} {values[task.metric]:.3f}")
    if task.baseline is not None and not named:
        ax.axhline(task.baseline, color="gray", linestyle="--", label=f"baseline {task.baseline:.3f}")
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
    for ax, (title, attr) in zip(axes, panels):
        for run in runs:
            model = getattr(run, attr)
            if model is None or not hasattr(model.rnn, "step") or model.rnn.num_layers != 1 or model.rnn.bidirectional:
                continue
            sample = run.sample(batch)
            if sample is None:
                continue
            inputs, targets = sample
            norms = hidden_gradient_norms(model, inputs, targets, run.task.loss)
            distance = torch.arange(len(norms) - 1, -1, -1)
            ax.plot(distance.numpy(), norms.clamp_min(1e-30).numpy(), label=run.label, color=COLORS.get(run.cell))
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
    gated = [r for r in runs if r.cell in ("lstm", "gru") and r.sample(1) is not None]
    if not gated:
        return False
    T = max(r.sample(1)[0].shape[1] for r in gated)
    tokens = any(r.task.token_labels(r.sample(1)[0][0]) for r in gated)
    width = min(24.0, max(11.0, 0.13 * T)) if tokens else 11.0  # room for a character per step
    fig, axes = plt.subplots(len(gated), 1, figsize=(width, 2.8 * len(gated) + (0.4 if tokens else 0)),
                             squeeze=False, layout="constrained")  # fmt: skip
    for ax, run in zip(axes[:, 0], gated):
        inputs, _ = run.sample(1)
        with reference_loop(run.model):
            trace = gate_trace(run.model, inputs)
        name = "forget" if run.cell == "lstm" else "update"
        values = trace[name][0, 0]  # (T, H): first layer, the one sequence
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
    for run in grus:
        inputs, _ = run.sample(64)
        with reference_loop(run.model):
            tau = ewma_time_constants(gate_trace(run.model, inputs).update[0])
        bins = torch.logspace(0, max(1.0, float(tau.max().log10()) + 0.1), 40)
        ax.hist(tau.numpy(), bins=bins.numpy(), alpha=0.6, label=f"{run.label} (median τ = {tau.median():.1f})")
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


def _gradient_flow_caption(runs) -> str:
    text = ("The norm of the gradient of the loss with respect to the hidden state h_t, against how many steps t "
            "lies before the loss. A vanilla RNN's gradient decays exponentially with distance (a straight falling "
            "line on this log scale) until it underflows float32 (drawn at 1e-30): it cannot learn what happened "
            "long ago. The gates of the LSTM and GRU keep it from vanishing.")  # fmt: skip
    if runs[0].task.readout == "all":
        text += (f" The {runs[0].task.name} task has a loss at every step, so each h_t also receives the gradient of "
                 "its own step's loss; the distance is counted from the last step.")  # fmt: skip
    return text


def _gates_caption(runs) -> str:
    text = ("Gate activations over one test sequence, one row per unit. Where the gate is near 1 the state is kept "
            "(LSTM: forget gate scales c; GRU: update gate keeps h).")  # fmt: skip
    shown = [(r.task, r.sample(1)[0][0]) for r in runs if r.sample(1) is not None]  # (task, one sequence)
    if any(task.marked_positions(x) for task, x in shown):
        text += " Look at what happens at the marked inputs (dotted red)."
    if any(task.token_labels(x) for task, x in shown):
        text += " The time axis shows the token read at each step (␣ a space, ↵ a new line)."
    return text


FIGURES = [  # (file, draw(runs, path) -> bool, caption: a string or a function of the runs)
    ("learning_curves.png", learning_curves, "Left: the training loss, logged every 10 steps. Right: the validation "
     "metric at each evaluation; the grey lines are what trivial predictors score, named in the legend."),
    ("gradient_flow.png", gradient_flow, _gradient_flow_caption),
    ("gates.png", gate_heatmaps, _gates_caption),
    ("time_constants.png", time_constants, "Each GRU unit at each step is an exponentially weighted moving "
     "average with rate 1 − z: τ = 1/(1 − z) is how many steps it remembers. Time constants near the sequence "
     "length are what long-range memory looks like."),
]  # fmt: skip


def write_report(out_dir, runs: list[RunView], title: str, intro: str = "") -> Path:
    """Writes the figures and ``report.html`` into ``out_dir``; returns the HTML's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for filename, draw, caption in FIGURES + runs[0].task.figures():
        # The figures compute on small tensors (one sequence, 64 examples), where every extra thread
        # only adds waiting, and on a busy machine a lot of it: the demo's gradient flow took 10-23 s
        # on 2 threads of a shared 2-core machine, 0.45 s on 1 (measured).
        with torch_threads(1):
            drawn = draw(runs, out_dir / filename)
        if drawn is False:
            continue
        caption = caption(runs) if callable(caption) else caption
        sections.append(
            f'<figure><img src="{filename}" alt="{html.escape(filename)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
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
figure{{margin:2em 0}}img{{max-width:100%}}figcaption{{color:#555;max-width:800px}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>{table}{''.join(sections)}</body></html>
"""
    path = out_dir / "report.html"
    atomic_write(path, lambda tmp: Path(tmp).write_text(page))
    return path
