"""The video task's figures: true and predicted frames side by side, the error against the
forecast horizon beside the baselines, and the forget / update gate maps over a sequence;
and the animated GIF of ``gatedrnn generate`` on a video run."""

from __future__ import annotations

from pathlib import Path

import torch

from gatedrnn.checkpoint import atomic_write

SHOWN = 3  # test sequences in the strip


def predict(task, model, count: int = SHOWN):
    """(inputs, true, predicted) frames of the first ``count`` test sequences, (N, T, S, S)."""
    inputs, targets = task.split("test", 0)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        predicted = torch.sigmoid(model(inputs[:count]))
    model.train(was_training)
    return task.frames(inputs[:count]), task.frames(targets[:count]), task.frames(predicted)


def frame_strip(runs, path: Path) -> bool:
    from gatedrnn.diagnostics.report import _plt, _save

    plt = _plt()
    shown = [predict(run.task, run.model) for run in runs]  # per run: (inputs, truth, predicted)
    rows = []  # (label, frames (T, S, S))
    for k in range(SHOWN):
        inputs, truth, _ = shown[0]
        rows += [(f"sequence {k + 1}: input", inputs[k]), ("true future", truth[k])]
        rows += [(f"{run.label}: predicted", predicted[k]) for run, (_, _, predicted) in zip(runs, shown)]
    T = max(len(f) for _, f in rows)
    fig, axes = plt.subplots(len(rows), T, figsize=(T * 0.9, len(rows) * 0.95), squeeze=False)
    for (label, frames), ax_row in zip(rows, axes):
        for t, ax in enumerate(ax_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if t < len(frames):
                ax.imshow(frames[t].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
        ax_row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    _save(fig, path)
    return True


def horizon(runs, path: Path) -> bool:
    from gatedrnn.diagnostics.report import COLORS, _plt, _save

    plt = _plt()
    task = runs[0].task
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    curves = {}
    for run in runs:
        inputs, targets = run.task.split("test", 0)
        was_training = run.model.training
        run.model.eval()
        with torch.no_grad():
            output = torch.cat([run.model(inputs[i : i + 64]) for i in range(0, len(inputs), 64)])
        run.model.train(was_training)
        curves[run.label] = (run.task.per_frame(output, targets), COLORS.get(run.cell.replace("conv", "")), "-")
    for (name, values), style in zip(task.baselines("test").items(), ("--", ":", "-.")):
        curves[name] = (values, "gray", style)
    for ax, metric, title in ((axes[0], "mse", "MSE per frame (summed over pixels)"), (axes[1], "ssim", "SSIM")):
        for label, (values, color, style) in curves.items():
            steps = torch.arange(1, len(values[metric]) + 1)
            ax.plot(steps.numpy(), values[metric].numpy(), style, color=color, label=label, marker="o", markersize=3)
        ax.set_xlabel("frames ahead")
        ax.set_title(title)
        ax.legend(fontsize=8)
    _save(fig, path)
    return True


def gate_maps(runs, path: Path) -> bool:
    """The first encoder layer's forget (ConvLSTM) or update (ConvGRU) gate, averaged over
    channels, at each input frame of one test sequence."""
    from gatedrnn.diagnostics.report import _plt, _save

    conv = [r for r in runs if r.cell.startswith("conv")]
    if not conv:
        return False
    plt = _plt()
    T = conv[0].task.frames_in
    fig, axes = plt.subplots(2 * len(conv), T, figsize=(T * 1.0, 2.2 * len(conv)), squeeze=False)
    for k, run in enumerate(conv):
        inputs, _ = run.task.split("test", 0)
        with torch.no_grad():
            _, trace = run.model(inputs[:1], return_trace=True)
        name = "forget" if run.cell == "convlstm" else "update"
        gate = trace[name][0, 0].mean(1)  # (T, h, w): layer 0, sequence 0, mean over channels
        frames = run.task.frames(inputs[:1])[0]
        for t in range(T):
            for row, (image, cmap, scale) in enumerate(((frames[t], "gray", (0, 1)), (gate[t], "viridis", (0, 1)))):
                ax = axes[2 * k + row, t]
                ax.imshow(image.numpy(), cmap=cmap, vmin=scale[0], vmax=scale[1])
                ax.set_xticks([])
                ax.set_yticks([])
        axes[2 * k, 0].set_ylabel("input", rotation=0, ha="right", fontsize=8)
        axes[2 * k + 1, 0].set_ylabel(f"{run.label}\n{name} gate", rotation=0, ha="right", fontsize=8)
    _save(fig, path)
    return True


FIGURES = [
    ("frames.png", frame_strip, "Test sequences never seen in training (their digits too): the input frames, the "
     "true future, and each model's prediction of it."),
    ("horizon.png", horizon, "Error against how far ahead the frame is, on the whole test set, beside two "
     "baselines computed on the same sequences: copying the last input frame, and the mean training frame."),
    ("video_gates.png", gate_maps, "The encoder's first-layer forget gate (ConvLSTM) or update gate (ConvGRU), "
     "averaged over channels, at each input frame (1 keeps the state at that pixel). The gates follow the "
     "digits: where a digit is, the state is rewritten; where the canvas is empty, it is kept."),
]  # fmt: skip


def write_gif(path: Path, inputs: torch.Tensor, truth: torch.Tensor | None, predicted: torch.Tensor,
              ms: int = 250) -> None:  # fmt: skip
    """An animated GIF: the input frames, then the predicted frames beside the true ones
    (left: prediction, right: truth; the prediction alone where ``truth`` is None), frames
    (T, S, S) in [0, 1]."""
    from PIL import Image

    def image(*panels):
        bar = torch.ones(panels[0].shape[0], 2)  # a white bar between two panels
        both = torch.cat([panels[0], bar, panels[1]], dim=1) if len(panels) == 2 else panels[0]
        return Image.fromarray((both.clamp(0, 1) * 255).to(torch.uint8).numpy(), mode="L").resize(
            (both.shape[1] * 3, both.shape[0] * 3), Image.NEAREST)  # fmt: skip

    if truth is None:
        frames = [image(x) for x in inputs] + [image(p) for p in predicted]
    else:
        frames = [image(x, x) for x in inputs] + [image(p, t) for p, t in zip(predicted, truth)]

    def write(tmp):
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0)

    atomic_write(Path(path), write)
