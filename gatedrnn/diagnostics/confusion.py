"""The classify task's report figure: the confusion matrix of each run on the test split,
its axes named with the run's classes (the names of a CSV labelled by name, else 0, 1, 2, ...)."""

from __future__ import annotations

from pathlib import Path

import torch


@torch.no_grad()
def confusion(task, model, split: str = "test", seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """Counts (K, K): row = true class, column = predicted class, over a split."""
    inputs, targets = task.split(split, seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    predicted = torch.cat([task.forward(model, inputs[i : i + batch_size].to(device)).argmax(-1).cpu()
                           for i in range(0, len(inputs), batch_size)])  # fmt: skip
    model.train(was_training)
    K = task.output_size
    return torch.bincount(targets * K + predicted, minlength=K * K).view(K, K)


def confusion_matrices(runs, path: Path) -> bool:
    from gatedrnn.diagnostics.report import _plt, _save

    plt = _plt()
    task = runs[0].task
    K = task.output_size
    names = task.classes or [str(k) for k in range(K)]
    side = min(9.0, max(3.5, 0.35 * K + 2))
    fig, axes = plt.subplots(1, len(runs), figsize=(side * len(runs) + 1, side), squeeze=False, layout="constrained")
    for ax, run in zip(axes[0], runs):
        counts = confusion(run.task, run.model, "test", run.seed).double()
        share = counts / counts.sum(1, keepdim=True).clamp_min(1)  # each true class's row sums to 1
        image = ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
        if K <= 12:
            for i in range(K):
                for j in range(K):
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
        if K <= 40:
            ax.set_xticks(range(K), names, rotation=90 if max(map(len, names)) > 3 else 0, parse_math=False)
            ax.set_yticks(range(K), names, parse_math=False)
        accuracy = float(counts.diagonal().sum() / counts.sum())
        ax.set_title(f"{run.label}: test accuracy {accuracy:.3f}")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    fig.colorbar(image, ax=axes[0, -1], fraction=0.046, label="share of the true class")
    fig.suptitle(f"Confusion on the test split: {task.describe(runs[0].data)}")
    _save(fig, path)
    return True


FIGURES = [
    ("confusion.png", confusion_matrices, "Test examples by true class (rows) and predicted class (columns), "
     "coloured by the share of the true class and labelled with counts: the diagonal holds the right answers, "
     "a bright cell off it two classes the model confuses."),
]  # fmt: skip
