"""TensorBoard events of a run (``gatedrnn train --tensorboard``), written with
``torch.utils.tensorboard`` to ``RUN/tensorboard/``; view them with
``tensorboard --logdir RUN/tensorboard``. ``metrics.jsonl`` stays the record of a run: the
events repeat its numbers for TensorBoard's plots.

Scalars: ``train/loss``, ``train/grad_norm``, ``train/lr`` at every logged training step
(every 10 steps, as ``metrics.jsonl``) and ``valid/NAME`` for every validation metric at each
evaluation. Histograms, at each evaluation: every gate and state of the recurrent layer on
the task's diagnostic batch (up to 64 test sequences, as the report's gate figures),
``gates/NAME/layerK`` (``gates/forget/layer0``: the LSTM's forget-gate values in layer 0). A
task without a diagnostic batch (qa, video) gets the scalars only. A resumed run hides the
events its killed predecessor wrote after the checkpoint (``purge_step``). A ``tensorboard``
that is a symbolic link is refused, never written through."""

from __future__ import annotations

from pathlib import Path

FOLDER = "tensorboard"
INSTALL = "pip install 'gatedrnn[tensorboard]'"


def require() -> None:
    """Raises ModuleNotFoundError, in one line naming the extra, where tensorboard is absent."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (imports the tensorboard package)
    except ImportError:
        raise ModuleNotFoundError(f"--tensorboard needs the tensorboard package: {INSTALL}") from None


class Board:
    """The TensorBoard writer of one run (rank 0's, under torchrun)."""

    def __init__(self, run_dir, task, seed: int, device="cpu", purge_step: int | None = None):
        require()
        from torch.utils.tensorboard import SummaryWriter

        from gatedrnn.checkpoint import refuse_link

        refuse_link(Path(run_dir) / FOLDER)  # its events would land wherever the link points
        self.writer = SummaryWriter(str(Path(run_dir) / FOLDER), purge_step=purge_step)
        self.task, self.device = task, device
        self.sample = task.diagnostic_batch(seed, 64)  # (inputs, targets) or None

    def train(self, row: dict) -> None:
        """A ``metrics.jsonl`` training row: loss, gradient norm and learning rate."""
        for name in ("loss", "grad_norm", "lr"):
            self.writer.add_scalar(f"train/{name}", row[name], row["step"])

    def evaluation(self, step: int, metrics: dict, model) -> None:
        """The validation metrics, and the histograms of the gates on the diagnostic batch."""
        for name, value in metrics.items():
            self.writer.add_scalar(f"valid/{name}", value, step)
        if self.sample is not None:
            from gatedrnn.diagnostics import gate_trace
            from gatedrnn.tasks.base import to_device

            trace = gate_trace(model, to_device(self.sample[0], self.device))  # each (layers, B, T, H)
            for name, values in trace.items():
                for layer, part in enumerate(values):
                    self.writer.add_histogram(f"gates/{name}/layer{layer}", part.float().cpu(), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

