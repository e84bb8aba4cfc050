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
    same batches as an uninterrupted one without carrying any data state.

    Args:
        seed (int): the run's seed.
        step (int): the training step.
        stream (int): a further index, for a task that draws several independent things per
            step. Default: ``0``.

    Examples:
        >>> from gatedrnn.tasks.base import batch_generator
        >>> import torch
        >>> a = torch.rand(3, generator=batch_generator(seed=0, step=7))
        >>> torch.equal(a, torch.rand(3, generator=batch_generator(seed=0, step=7)))
        True
    """
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 97 + stream) % (2**63))


def to_device(value, device):
    """A tensor, or a tuple of them, moved to ``device``."""
    if isinstance(value, tuple):
        return tuple(to_device(v, device) for v in value)
    return value.to(device)


def _count(value) -> bool:
    """Whether ``value`` is a positive integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


SPEC = {  # model.json's common fields: what each must be, as a test and in words
    "input_size": (_count, "a positive integer"),
    "output_size": (_count, "a positive integer"),
    "vocab_size": (lambda v: v is None or _count(v), "a positive integer or null"),
    "readout": (lambda v: v in ("all", "last"), "'all' or 'last'"),
}


def _spec_value(key: str, value):
    """``value`` of model.json's field ``key`` where it is what the field must be (a size the
    task's own ``restore`` checks passes as it is), else a ValueError naming the field."""
    test, words = SPEC.get(key, (lambda v: True, ""))
    if not test(value):
        raise ValueError(f"model.json: {key!r} must be {words}, got {value!r}")
    return value


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

    A subclass defines ``train_batch``, ``split``, ``loss`` and ``metrics`` and sets its
    sizes; everything else has a default. Its ``__init__`` takes what :meth:`from_config`
    gives it (by default ``config.data`` and the task's options).

    Attributes:
        name (str): the task's name in listings and titles.
        about (str): one line for listings.
        options (dict): the task's own settings, ``{name: (type, default, help)}``.
        cells (tuple[str, ...]): the ``--cell`` values its model takes.
        input_size (int): features per step of the model's input (or tokens, with ``vocab_size``).
        output_size (int): outputs per readout.
        readout (str): ``"last"`` (one output per sequence) or ``"all"`` (one per step).
        metric (str): the number reported and compared, a key of :meth:`metrics`.
        lower_is_better (bool): the direction of ``metric``.
        baseline (float or None): what a trivial predictor scores on ``metric``.
        vocab_size (int or None): token inputs go through an embedding of this many rows.
        stateful (bool): batches continue each other (truncated backpropagation through time).
        saves (tuple[str, ...]): the files :meth:`artifacts` writes beside the checkpoint.
        notes (tuple[str, ...]): lines telling how the data was read, printed at the start.

    Examples:
        The smallest task: is the number of ones in a sequence of bits odd? Saved in a
        module ``my_tasks.py``, it trains with ``gatedrnn train --task my_tasks:Parity``.

        >>> import torch, torch.nn.functional as F
        >>> from gatedrnn.config import TrainConfig
        >>> from gatedrnn.tasks.base import Task, batch_generator
        >>> class Parity(Task):
        ...     name, input_size, output_size, readout = "parity", 1, 2, "last"
        ...     metric, lower_is_better, baseline = "accuracy", False, 0.5
        ...     def __init__(self, length):
        ...         self.length = length
        ...     @classmethod
        ...     def from_config(cls, config):
        ...         return cls(config.length)
        ...     def batch(self, n, generator):
        ...         bits = torch.randint(0, 2, (n, self.length, 1), generator=generator).float()
        ...         return bits, bits.sum((1, 2)).long() % 2
        ...     def train_batch(self, step, batch_size, seed):
        ...         return self.batch(batch_size, batch_generator(seed, step))
        ...     def split(self, name, seed):
        ...         return self.batch(64, torch.Generator().manual_seed({"valid": 1, "test": 2}[name]))
        ...     def loss(self, output, target):
        ...         return F.cross_entropy(output, target)
        ...     def metrics(self, output, target):
        ...         return {"accuracy": (output.argmax(-1) == target).float().mean().item()}
        >>> config = TrainConfig(cell="gru", length=6, hidden_size=8)
        >>> task = Parity.from_config(config)
        >>> model = task.make_model(config)
        >>> inputs, targets = task.train_batch(step=1, batch_size=16, seed=0)
        >>> task.loss(task.forward(model, inputs), targets).shape
        torch.Size([])
        >>> list(task.evaluate(model, "valid", seed=0))
        ['accuracy']
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
        """The task's own options from ``config.extra``, defaults filled in.

        Args:
            config (TrainConfig): the run's config.
        """
        return {name: config.extra.get(name, default) for name, (_, default, _) in cls.options.items()}

    @classmethod
    def from_config(cls, config) -> "Task":
        """The task a config describes; a task that reads a file takes ``config.data`` first.

        Args:
            config (TrainConfig): the run's config; the task's options come from ``extra``.
        """
        return cls(config.data, **cls.option_values(config))

    @classmethod
    def from_run(cls, config, spec: dict | None, saved: dict) -> "Task":
        """The task of a trained run, with its data, reusing what the run saved: ``spec`` is
        its ``model.json`` (None for runs older than that file) and ``saved`` the files named
        in ``saves`` that it holds, ``{name: JSON value}`` (a text run keeps its vocabulary
        whatever the data file holds now).

        Args:
            config (TrainConfig): the run's config.
            spec (dict, optional): the run's ``model.json``, or ``None``.
            saved (dict): the run's saved files by name (``{"vocab.json": ...}``).
        """
        return cls.from_config(config)

    @classmethod
    def restore(cls, config, spec: dict, saved: dict) -> "Task":
        """The task of a trained run without its data: its sizes (``spec``, from
        ``model.json``) and, in a task that overrides this, what it saved (``saved``, every
        file of ``saves``). What :func:`gatedrnn.load` returns beside the model, and what
        :meth:`predict` and :meth:`generate` run on. Raises ``ValueError`` naming the field
        for a file that does not hold what the task wrote.

        Args:
            config (TrainConfig): the run's config.
            spec (dict): the run's ``model.json``: the sizes :meth:`model_spec` wrote.
            saved (dict): the files named in ``saves``, ``{name: JSON value}``.
        """
        task = cls.__new__(cls)
        for key, value in spec.items():
            if key.startswith("_") or callable(getattr(cls, key, None)) or isinstance(getattr(cls, key, None), property):
                raise ValueError(f"model.json: {key!r} is not one of the task's sizes")  # it would replace a method
            setattr(task, key, _spec_value(key, value))
        return task

    # -- trained -----------------------------------------------------------------------------

    def make_model(self, config):
        """The model this task trains, built from the config's sizes and variants (by
        default a :class:`~gatedrnn.models.SequenceModel`).

        Args:
            config (TrainConfig): the run's config: cell, sizes, variants, backend.
        """
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
        """(inputs, targets) for one training step, fixed by (seed, step): draw them from
        :func:`batch_generator` so that a resumed run draws the same batches.

        Args:
            step (int): the training step, from 1.
            batch_size (int): sequences in the batch.
            seed (int): the run's seed.
        """
        raise NotImplementedError

    def split(self, name: str, seed: int):
        """The fixed (inputs, targets) of the ``"valid"`` or ``"test"`` split.

        Args:
            name (str): ``"valid"`` or ``"test"``.
            seed (int): the run's seed (a synthetic task draws its splits from it).
        """
        raise NotImplementedError

    def forward(self, model, inputs):
        """The model's output for a batch of this task's inputs.

        Args:
            model (torch.nn.Module): the model :meth:`make_model` built.
            inputs: a batch of inputs, as :meth:`train_batch` and :meth:`split` give them.
        """
        return model(inputs)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch, a scalar to minimize.

        Args:
            output (Tensor): what :meth:`forward` returned.
            target: the batch's targets.
        """
        raise NotImplementedError

    def stateful_loss(self, model, inputs, targets, state):
        """A stateful task's training loss for one batch, begun from ``state``, and the state
        the batch ends in.

        Args:
            model (torch.nn.Module): the model.
            inputs: the batch's inputs.
            targets: the batch's targets.
            state: the state the previous batch ended in, or ``None``.
        """
        output, state = model(inputs, state, return_state=True)
        return self.loss(output, targets), state

    def starts_sequence(self, step: int) -> bool:
        """Whether a stateful task's batch at ``step`` begins new sequences (the carried
        state is then dropped).

        Args:
            step (int): the training step.
        """
        return True

    def loss_weight(self, target) -> float:
        """How many terms ``loss`` averages over for this batch of targets, up to a constant
        factor: one per sequence here, as every sequence adds the same number of terms. Under
        torchrun the ranks' losses are averaged with these weights (gatedrnn/distributed.py).

        Args:
            target: the batch's targets.
        """
        return len(target[0] if isinstance(target, tuple) else target)

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Every number worth logging for a batch; includes ``self.metric``.

        Args:
            output (Tensor): the model's outputs for the batch.
            target: the batch's targets.
        """
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model, split: str, seed: int, device="cpu", batch_size: int = 500) -> dict:
        """The metrics on a whole split, the model in eval mode.

        Args:
            model (torch.nn.Module): the model.
            split (str): ``"valid"`` or ``"test"``.
            seed (int): the run's seed.
            device (str or torch.device): where the model is. Default: ``"cpu"``.
            batch_size (int): sequences per forward pass. Default: ``500``.
        """
        was_training = model.training
        model.eval()
        inputs, targets = self.split(split, seed)
        outputs = torch.cat([self.forward(model, to_device(inputs[i : i + batch_size], device)).cpu()
                             for i in range(0, len(inputs), batch_size)])  # fmt: skip
        model.train(was_training)
        return self.metrics(outputs, targets)

    def solved(self, metrics: dict[str, float]) -> bool:
        """Whether validation ``metrics`` count as solving the task (``--stop-when-solved``).

        Args:
            metrics (dict[str, float]): what :meth:`evaluate` returned.
        """
        return False

    def baseline_results(self, split: str = "test", fitted: bool = True) -> dict[str, dict[str, float]]:
        """Named simple predictors' metrics on a split, ``{name: {metric: value}}``, kept in
        ``result.json`` and shown by ``evaluate`` and the report (the timeseries task's
        persistence, seasonal naive and SARIMA); ``fitted=False`` leaves out those that fit a
        model of their own. Empty where the task has only ``baseline``.

        Args:
            split (str): ``"valid"`` or ``"test"``. Default: ``"test"``.
            fitted (bool): include the baselines that fit a model. Default: ``True``.
        """
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
        """Whether this task gives ``method`` (``"predict"``, ``"generate"``) a body of its own.

        Args:
            method (str): a method's name.
        """
        return getattr(cls, method) is not getattr(Task, method)

    def predict(self, model, path: Path, device="cpu", per_line: bool = False):
        """The trained ``model``'s prediction for the new file ``path``, as a
        :class:`~gatedrnn.tasks.prediction.Prediction` (``per_line``: a row per line of a
        text file, where the task has lines). Bad input raises
        :class:`~gatedrnn.tasks.data.DataError` with one line naming the file.

        Args:
            model (torch.nn.Module): the trained model, in eval mode.
            path (Path): the new file.
            device (str or torch.device): where the model is. Default: ``"cpu"``.
            per_line (bool): a row per line of a text file. Default: ``False``.
        """
        raise DataError(f"the {self.name} task does not predict from files")

    def generate(self, model, out: Path | None, *, run_dir: Path, prompt: str = "\n", length: int = 500,
                 temperature: float = 1.0, top_k: int = 0, seed: int = 0, stream=None) -> str | None:  # fmt: skip
        """Samples from the trained ``model``: text streamed to ``stream``, or a file written to
        ``out`` (default: a file in ``run_dir``). Returns a line to print, or None. Bad
        options raise ``ValueError`` naming the option.

        Args:
            model (torch.nn.Module): the trained model, in eval mode.
            out (Path, optional): the file to write; ``None``: one in ``run_dir``.
            run_dir (Path): the run folder. Keyword only.
            prompt (str): text to start from (language models). Default: ``"\\n"``.
            length (int): how much to generate (tokens, steps). Default: ``500``.
            temperature (float): the sampling temperature. Default: ``1.0``.
            top_k (int): sample among the ``top_k`` likeliest tokens; ``0``: all.
                Default: ``0``.
            seed (int): the sampling seed. Default: ``0``.
            stream (file, optional): where text goes as it is generated. Default: ``None``.
        """
        raise DataError(f"the {self.name} task does not generate")

    def describe(self, data: str = "") -> str:
        """The task in a few words for titles: "adding, T = 150", "text, tinyshakespeare.txt".

        Args:
            data (str): the run's data path, named by its file name. Default: ``""``.
        """
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
        gradient-flow and gate figures, or None where the task cannot give them.

        Args:
            seed (int): the run's seed.
            size (int): the most examples. Default: ``64``.
        """
        inputs, targets = self.split("test", seed)
        if not (torch.is_tensor(inputs) and torch.is_tensor(targets)):
            return None
        return inputs[:size], targets[:size]

    def marked_positions(self, inputs: torch.Tensor) -> list[int] | None:
        """Time steps of one sequence worth marking in a gate heatmap, if any.

        Args:
            inputs (Tensor): one input sequence.
        """
        return None

    def token_labels(self, inputs: torch.Tensor) -> list[str] | None:
        """The tokens of one input sequence (T,) as text, to label a figure's time axis; None
        where the inputs are not tokens.

        Args:
            inputs (Tensor): one sequence of token ids, ``(T,)``.
        """
        return None
