"""What every task provides to the trainer: batches, a model head, a loss, and metrics."""

from __future__ import annotations

import torch


def batch_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A generator for one training batch, fixed by (seed, step): a resumed run draws the
    same batches as an uninterrupted one without carrying any data state."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 97 + stream) % (2**63))


def to_device(value, device):
    """A tensor, or a tuple of them, moved to ``device``."""
    if isinstance(value, tuple):
        return tuple(to_device(v, device) for v in value)
    return value.to(device)


class Task:
    """The interface the trainer uses; each task module has one subclass.

    ``input_size``/``output_size`` shape the model; ``readout`` is ``"last"`` (one output per
    sequence) or ``"all"`` (one per step); ``metric`` names the number reported, with
    ``lower_is_better``; ``baseline`` is what a trivial predictor scores. ``options`` lists the
    task's own settings, ``{name: (type, default, help)}``, kept in ``TrainConfig.extra`` and
    offered as ``--name`` by ``gatedrnn train``. A ``stateful`` task's batches continue each
    other (truncated backpropagation through time): the trainer carries the final state from
    one batch into the next, and drops it where ``starts_sequence(step)``.
    """

    options: dict = {}
    stateful: bool = False
    curriculum = None  # a synthetic task's Curriculum (tasks/curriculum.py): training lengths that grow
    cells: tuple = ("rnn", "lstm", "gru", "mgu", "mingru", "minlstm")  # the --cell values the task's model takes

    @classmethod
    def option_values(cls, config) -> dict:
        """The task's own options from ``config.extra``, defaults filled in."""
        return {name: config.extra.get(name, default) for name, (_, default, _) in cls.options.items()}

    @classmethod
    def from_config(cls, config) -> "Task":
        """The task a config describes; a task that reads a file takes ``config.data`` first."""
        return cls(config.data, **cls.option_values(config))

    @classmethod
    def from_run(cls, config, run_dir) -> "Task":
        """The task of a trained run, reusing what ``artifacts`` saved in ``run_dir``."""
        return cls.from_config(config)

    def make_model(self, config):
        from gatedrnn.models import SequenceModel

        input_size = (config.embedding_size or self.input_size) if self.vocab_size else self.input_size
        return SequenceModel(
            config.cell, input_size, config.hidden_size, self.output_size, config.layers,
            vocab_size=self.vocab_size, readout=self.readout, backend=config.backend,
            forget_bias=config.forget_bias, dropout=config.dropout, tie_weights=config.tie_weights,
            adaptive_softmax=tuple(config.adaptive_softmax), cell_options=config.cell_options(),
        )  # fmt: skip

    @property
    def train_length(self) -> int:
        """The length of the next training batch: the curriculum's stage, else the task's length."""
        return self.curriculum.length if self.curriculum is not None else self.length

    def forward(self, model, inputs):
        """The model's output for a batch of this task's inputs."""
        return model(inputs)

    def stateful_loss(self, model, inputs, targets, state):
        """A stateful task's training loss for one batch, begun from ``state``, and the state
        the batch ends in."""
        output, state = model(inputs, state, return_state=True)
        return self.loss(output, targets), state

    def diagnostic_batch(self, seed: int, size: int = 64):
        """(inputs, targets) of up to ``size`` test examples as plain tensors for the report's
        gradient-flow and gate figures, or None where the task cannot give them."""
        inputs, targets = self.split("test", seed)
        if not (torch.is_tensor(inputs) and torch.is_tensor(targets)):
            return None
        return inputs[:size], targets[:size]

    def starts_sequence(self, step: int) -> bool:
        return True

    def figures(self) -> list:
        """The task's own report figures, ``[(filename, draw(runs, path) -> bool, caption)]``,
        after the ones every task gets."""
        return []

    def model_spec(self) -> dict:
        """What ``make_model`` reads of the task (its sizes), saved as the run's ``model.json``
        so that :func:`gatedrnn.load` rebuilds the model without reading the data."""
        return {"input_size": self.input_size, "output_size": self.output_size, "vocab_size": self.vocab_size,
                "readout": self.readout}  # fmt: skip

    def artifacts(self) -> dict:
        """Files (name: JSON-able value) the run keeps beside its checkpoint, e.g. a vocabulary."""
        return {}

    def baseline_results(self, split: str = "test", fitted: bool = True) -> dict[str, dict[str, float]]:
        """Named simple predictors' metrics on a split, ``{name: {metric: value}}``, kept in
        ``result.json`` and shown by ``evaluate`` and the report (the timeseries task's
        persistence, seasonal naive and SARIMA); ``fitted=False`` leaves out those that fit a
        model of their own. Empty where the task has only ``baseline``."""
        return {}

    @torch.no_grad()
    def evaluate(self, model, split: str, seed: int, device="cpu", batch_size: int = 500) -> dict:
        """The metrics on a whole split, the model in eval mode."""
        was_training = model.training
        model.eval()
        inputs, targets = self.split(split, seed)
        outputs = torch.cat([self.forward(model, to_device(inputs[i : i + batch_size], device)).cpu()
                             for i in range(0, len(inputs), batch_size)])  # fmt: skip
        model.train(was_training)
        return self.metrics(outputs, targets)

    name: str
    input_size: int
    output_size: int
    readout: str = "all"
    metric: str = "loss"
    lower_is_better: bool = True
    baseline: float | None = None
    notes: tuple = ()  # lines telling the user how the data was read, printed when training starts
    vocab_size: int | None = None  # integer inputs go through an embedding when set

    def train_batch(self, step: int, batch_size: int, seed: int):
        """(inputs, targets) for one training step."""
        raise NotImplementedError

    def split(self, name: str, seed: int):
        """The fixed (inputs, targets) of the ``"valid"`` or ``"test"`` split."""
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss_weight(self, target) -> float:
        """How many terms ``loss`` averages over for this batch of targets, up to a constant
        factor: one per sequence here, as every sequence adds the same number of terms. Under
        torchrun the ranks' losses are averaged with these weights (gatedrnn/distributed.py)."""
        return len(target[0] if isinstance(target, tuple) else target)

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Every number worth logging for a batch; includes ``self.metric``."""
        raise NotImplementedError

    def solved(self, metrics: dict[str, float]) -> bool:
        return False

    def marked_positions(self, inputs: torch.Tensor) -> list[int] | None:
        """Time steps of one sequence worth marking in a gate heatmap, if any."""
        return None

    def token_labels(self, inputs: torch.Tensor) -> list[str] | None:
        """The tokens of one input sequence (T,) as text, to label a figure's time axis; None
        where the inputs are not tokens."""
        return None
