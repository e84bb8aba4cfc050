"""The task protocol: what a task is, and the one class every task subclasses.

A task owns everything about its data; the engine (``gatedrnn/train.py``), ``gatedrnn.load``,
``gatedrnn.predict``, the report and the command call the methods below and never ask which
task they hold. Adding a task is adding one module under ``gatedrnn/tasks/`` (a line in
``BUILT_IN`` of ``tasks/__init__.py`` names it) and its tests; a task of your own works
unchanged from any module, named by import path (``gatedrnn train --task my_tasks:Parity``).

The life of a task, with the video task (``tasks/video.py``: predict the next frames of moving
digits) as the worked example:

1. **Declared.** Class attributes say what the command needs before any data is read:
   ``name = "video"``; ``options``, its own settings with type, default and help
   (``"frames_in": (int, 10, "video: frames the model sees")``), offered as ``--frames-in`` by
   ``gatedrnn train --task video`` and kept in ``TrainConfig.extra``; ``cells``, the
   ``--cell`` values its model takes (``convlstm``, ``convgru``, ``lstm``, ``gru``);
   ``metric = "mse"`` and ``lower_is_better``; ``readout``; ``saves``, the files it keeps
   in a run folder.
2. **Built from a config** (:meth:`Task.from_config`): ``Video.__init__`` reads and checks the
   MNIST CSV (a one-line :class:`~gatedrnn.tasks.data.DataError` naming the file and row for
   anything else), draws the digit splits, and sets ``input_size``, ``output_size`` and
   ``baseline`` (copying the last frame).
3. **Trained.** :meth:`make_model` builds the model it needs (a ConvLSTM ``Forecaster``);
   :meth:`train_batch` gives each step's (inputs, targets), a function of (seed, step) alone
   so that a resumed run draws the same batches; :meth:`loss`; :meth:`split` and
   :meth:`evaluate` give the validation and test metrics (:meth:`metrics`: mse, ssim, loss).
4. **Saved.** :meth:`model_spec` (``model.json``: what :meth:`make_model` reads of the task,
   here patch, frame size, kernel size, frames out) and :meth:`artifacts` (a vocabulary,
   normalization statistics, class names: one JSON file each, named in ``saves``) are written
   beside the checkpoint, so that a trained run is used without its training data.
5. **Restored** (:meth:`restore`): the task as a trained run needs it, from those files alone:
   what ``gatedrnn.load``, ``predict`` and ``generate`` hold.
6. **Used.** :meth:`predict` applies the run to a new file (video: the next frames of a clip
   given as .npy or .gif, written as a GIF or an array); :meth:`generate` samples from it
   (video: a test sequence as an animated GIF; ``generate_needs_data = True`` because it
   reads the test split); :meth:`figures` adds its own report figures (the frame strip,
   error against the horizon, gate maps) after the ones every task gets; :meth:`describe`
   names it in titles.

Everything has a default here but ``train_batch``, ``split``, ``loss`` and ``metrics``; the
smallest task is a dozen lines (``tests/test_task_protocol.py`` trains, evaluates, predicts
and reports one through the command).
"""

from __future__ import annotations

from pathlib import Path

import torch

from gatedrnn.models import SequenceModel
from gatedrnn.tasks.data import DataError


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
    """One sequence task: its data, model, loss, metrics, saved files, predictions and figures.

    The module docstring tells the life of a task. Attributes: ``input_size``/``output_size``
    shape the model; ``readout`` is ``"last"`` (one output per sequence) or ``"all"`` (one per
    step); ``metric`` names the number reported, with ``lower_is_better``; ``baseline`` is what
    a trivial predictor scores. ``options`` lists the task's own settings, ``{name: (type,
    default, help)}``, kept in ``TrainConfig.extra`` and offered as ``--name`` by ``gatedrnn
    train``. A ``stateful`` task's batches continue each other (truncated backpropagation
    through time): the trainer carries the final state from one batch into the next, and drops
    it where ``starts_sequence(step)``. ``saves`` names the files :meth:`artifacts` writes.
    """

    name: str
    about: str = ""  # one line for listings
    options: dict = {}
    cells: tuple = ("rnn", "lstm", "gru", "mgu", "mingru", "minlstm")  # the --cell values the task's model takes
    saves: tuple = ()  # the files artifacts() writes beside the checkpoint
    stateful: bool = False
    curriculum = None  # a synthetic task's Curriculum (tasks/curriculum.py): training lengths that grow
    generate_needs_data: bool = False  # generate() reads the task's data (not only what the run saved)
    prediction_formats: tuple = ("csv", "json")  # the files predict()'s result is written as, by suffix
    input_size: int
    output_size: int
    readout: str = "all"
    metric: str = "loss"
    lower_is_better: bool = True
    baseline: float | None = None
    notes: tuple = ()  # lines telling the user how the data was read, printed when training starts
    vocab_size: int | None = None  # integer inputs go through an embedding when set

    # -- built -------------------------------------------------------------------------------

    @classmethod
    def option_values(cls, config) -> dict:
        """The task's own options from ``config.extra``, defaults filled in."""
        return {name: config.extra.get(name, default) for name, (_, default, _) in cls.options.items()}

    @classmethod
    def from_config(cls, config) -> "Task":
        """The task a config describes; a task that reads a file takes ``config.data`` first."""
        return cls(config.data, **cls.option_values(config))

    @classmethod
    def from_run(cls, config, spec: dict | None, saved: dict) -> "Task":
        """The task of a trained run, with its data, reusing what the run saved: ``spec`` is
        its ``model.json`` (None for runs older than that file) and ``saved`` the files named
        in ``saves`` that it holds, ``{name: JSON value}`` (a text run keeps its vocabulary
        whatever the data file holds now)."""
        return cls.from_config(config)

    @classmethod
    def restore(cls, config, spec: dict, saved: dict) -> "Task":
        """The task of a trained run without its data: its sizes (``spec``, from
        ``model.json``) and, in a task that overrides this, what it saved (``saved``, every
        file of ``saves``). What :func:`gatedrnn.load` returns beside the model, and what
        :meth:`predict` and :meth:`generate` run on. Raises ``ValueError`` naming the field
        for a file that does not hold what the task wrote."""
        task = cls.__new__(cls)
        for key, value in spec.items():
            setattr(task, key, value)
        return task

    # -- trained -----------------------------------------------------------------------------

    def make_model(self, config):
        """The model this task trains, built from the config's sizes and variants."""
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

    def train_batch(self, step: int, batch_size: int, seed: int):
        """(inputs, targets) for one training step, fixed by (seed, step)."""
        raise NotImplementedError

    def split(self, name: str, seed: int):
        """The fixed (inputs, targets) of the ``"valid"`` or ``"test"`` split."""
        raise NotImplementedError

    def forward(self, model, inputs):
        """The model's output for a batch of this task's inputs."""
        return model(inputs)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def stateful_loss(self, model, inputs, targets, state):
        """A stateful task's training loss for one batch, begun from ``state``, and the state
        the batch ends in."""
        output, state = model(inputs, state, return_state=True)
        return self.loss(output, targets), state

    def starts_sequence(self, step: int) -> bool:
        return True

    def loss_weight(self, target) -> float:
        """How many terms ``loss`` averages over for this batch of targets, up to a constant
        factor: one per sequence here, as every sequence adds the same number of terms. Under
        torchrun the ranks' losses are averaged with these weights (gatedrnn/distributed.py)."""
        return len(target[0] if isinstance(target, tuple) else target)

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Every number worth logging for a batch; includes ``self.metric``."""
        raise NotImplementedError

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

    def solved(self, metrics: dict[str, float]) -> bool:
        return False

    def baseline_results(self, split: str = "test", fitted: bool = True) -> dict[str, dict[str, float]]:
        """Named simple predictors' metrics on a split, ``{name: {metric: value}}``, kept in
        ``result.json`` and shown by ``evaluate`` and the report (the timeseries task's
        persistence, seasonal naive and SARIMA); ``fitted=False`` leaves out those that fit a
        model of their own. Empty where the task has only ``baseline``."""
        return {}

    # -- saved -------------------------------------------------------------------------------

    def model_spec(self) -> dict:
        """What ``make_model`` reads of the task (its sizes), saved as the run's ``model.json``
        so that :func:`gatedrnn.load` rebuilds the model without reading the data."""
        return {"input_size": self.input_size, "output_size": self.output_size, "vocab_size": self.vocab_size,
                "readout": self.readout}  # fmt: skip

    def artifacts(self) -> dict:
        """Files (name: JSON-able value) the run keeps beside its checkpoint, e.g. a vocabulary;
        their names are ``saves``."""
        return {}

    # -- used --------------------------------------------------------------------------------

    @classmethod
    def defines(cls, method: str) -> bool:
        """Whether this task gives ``method`` (``"predict"``, ``"generate"``) a body of its own."""
        return getattr(cls, method) is not getattr(Task, method)

    def predict(self, model, path: Path, device="cpu", per_line: bool = False):
        """The trained ``model``'s prediction for the new file ``path``, as a
        :class:`~gatedrnn.tasks.prediction.Prediction` (``per_line``: a row per line of a
        text file, where the task has lines). Bad input raises
        :class:`~gatedrnn.tasks.data.DataError` with one line naming the file."""
        raise DataError(f"the {self.name} task does not predict from files")

    def generate(self, model, out: Path | None, *, run_dir: Path, prompt: str = "\n", length: int = 500,
                 temperature: float = 1.0, top_k: int = 0, seed: int = 0, stream=None) -> str | None:  # fmt: skip
        """Samples from the trained ``model``: text streamed to ``stream``, or a file written to
        ``out`` (default: a file in ``run_dir``). Returns a line to print, or None. Bad
        options raise ``ValueError`` naming the option."""
        raise DataError(f"the {self.name} task does not generate")

    def describe(self, data: str = "") -> str:
        """The task in a few words for titles: "adding, T = 150", "text, tinyshakespeare.txt"."""
        length = getattr(self, "length", None)  # a synthetic task's sequence length
        if length:
            return f"{self.name}, T = {length}"
        return f"{self.name}, {Path(str(data)).name}" if str(data).strip() else self.name

    def introduction(self) -> list[str]:
        """Lines that explain the task to someone meeting it: what is predicted, what the
        baseline means, what counts as solved. Printed by ``gatedrnn demo``, shown atop reports."""
        return []

    def figures(self) -> list:
        """The task's own report figures, ``[(filename, draw(runs, path) -> bool, caption)]``,
        after the ones every task gets."""
        return []

    def diagnostic_batch(self, seed: int, size: int = 64):
        """(inputs, targets) of up to ``size`` test examples as plain tensors for the report's
        gradient-flow and gate figures, or None where the task cannot give them."""
        inputs, targets = self.split("test", seed)
        if not (torch.is_tensor(inputs) and torch.is_tensor(targets)):
            return None
        return inputs[:size], targets[:size]

    def marked_positions(self, inputs: torch.Tensor) -> list[int] | None:
        """Time steps of one sequence worth marking in a gate heatmap, if any."""
        return None

    def token_labels(self, inputs: torch.Tensor) -> list[str] | None:
        """The tokens of one input sequence (T,) as text, to label a figure's time axis; None
        where the inputs are not tokens."""
        return None
