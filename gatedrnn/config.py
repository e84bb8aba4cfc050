"""The settings of a training run: :class:`TrainConfig`, saved as a run's ``config.json``."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

from gatedrnn.tasks import DEFAULT, task_class

REGULARIZERS = ("recurrent_dropout", "weight_dropout", "zoneout")  # TrainConfig fields passed to the layer
PRECISIONS = ("float32", "bfloat16")  # TrainConfig.precision: the dtype the model's products run in
KINDS = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}  # a field's type, by name
WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
         dict: "a table of the task's options"}  # fmt: skip


def checked(value, kind: type, key: str):
    """``value`` as ``kind`` (an integer counts as a number, a boolean as neither), or a
    ``ValueError`` naming ``key``: ``hidden_size must be an integer, got '16'``.

    Args:
        value: a value read from a file.
        kind (type): ``int``, ``float``, ``str``, ``bool``, ``list`` or ``dict``.
        key (str): its name in the file.
    """
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ValueError(f"{key} must be {WORDS[kind]}, got {value!r}")
    return value


@dataclass
class TrainConfig:
    """Everything a training run is, as saved in its ``config.json``: the task and its
    options (``extra``), the cell and its variants, the optimization and the schedule.

    ``gatedrnn train``'s options fill it (``--hidden-size 128`` is ``hidden_size=128``);
    :meth:`validate` checks it, with errors that name the option.

    Args:
        task (str): a built-in task's name (``"adding"``, ``"copy"``, ``"text"``,
            ``"timeseries"``, ``"classify"``, ``"music"``, ``"qa"``, ``"video"``) or the
            import path of a task of your own, ``MODULE:CLASS``. Default: ``"adding"``.
        cell (str): the recurrent cell: ``"rnn"``, ``"lstm"``, ``"gru"``, ``"mgu"``,
            ``"mingru"``, ``"minlstm"`` (the video task also ``"convlstm"``, ``"convgru"``).
            Default: ``"lstm"``.
        length (int): the sequence length ``T`` of the synthetic tasks. Default: ``100``.
        data (str): the data file or folder of a task that reads one. Default: ``""``.
        hidden_size (int): hidden units per layer. Default: ``64``.
        layers (int): stacked layers. Default: ``1``.
        embedding_size (int): the token embedding size; ``0`` takes the task's. Default: ``0``.
        dropout (float): dropout on embeddings, outputs and between layers. Default: ``0.0``.
        tie_weights (bool): token tasks: the readout reuses the embedding matrix.
            Default: ``False``.
        adaptive_softmax (list[int]): language models: the cutoffs of an adaptive softmax;
            empty for a full softmax. Default: ``[]``.
        backend (str): the layers' ``backend``, ``"auto"``, ``"fused"``, ``"reference"`` or
            ``"scan"`` (MinGRU, MinLSTM). Default: ``"auto"``.
        forget_bias (float): LSTM: added to the forget-gate bias at initialization
            (Jozefowicz et al. 2015). Default: ``1.0``.
        chrono (float): LSTM, GRU: chrono initialization (:func:`gatedrnn.init.chrono_`) up
            to this many steps; ``0`` is off. Default: ``0.0``.
        peephole (bool): LSTM: peepholes. Default: ``False``.
        coupled (bool): LSTM: coupled input and forget gates (CIFG). Default: ``False``.
        layer_norm (bool): LSTM, GRU: layer normalization. Default: ``False``.
        reset_after (bool): GRU: ``False`` is Cho et al.'s candidate. Default: ``True``.
        recurrent_dropout (float): variational dropout on ``h_{t-1}`` in the recurrent
            product, in ``[0, 1)``. Default: ``0.0``.
        weight_dropout (float): DropConnect on ``W_hh``, in ``[0, 1)``. Default: ``0.0``.
        zoneout (float): zoneout probability, in ``[0, 1)``. Default: ``0.0``.
        optimizer (str): ``"adam"`` or ``"adamw"``. Default: ``"adam"``.
        lr (float): the learning rate. Default: ``1e-3``.
        weight_decay (float): the optimizer's weight decay. Default: ``0.0``.
        schedule (str): ``"constant"`` or ``"cosine"`` (down to ``lr * min_lr_ratio`` at the
            last step). Default: ``"constant"``.
        warmup (int): steps of linear warm-up. Default: ``0``.
        min_lr_ratio (float): the cosine schedule's final learning rate over ``lr``.
            Default: ``0.1``.
        batch_size (int): sequences per training step. Default: ``64``.
        steps (int): training steps. Default: ``2000``.
        clip (float): the largest gradient norm; ``0`` turns clipping off. Default: ``1.0``.
        eval_every (int): steps between evaluations (and checkpoints). Default: ``100``.
        patience (int): evaluations without improvement before stopping, the run ending on
            its best weights; ``0``: never. Default: ``0``.
        stop_when_solved (bool): stop once the task counts as solved. Default: ``False``.
        max_minutes (float): the run's wall-clock budget; ``0``: none. Default: ``0.0``.
        seed (int): the seed of the weights and of every batch. Default: ``0``.
        device (str): the torch device. Default: ``"cpu"``.
        threads (int): ``torch.set_num_threads`` during the run; ``0``: torch's choice.
            Default: ``0``.
        precision (str): ``"float32"``, or ``"bfloat16"``: mixed precision, the model's
            forward under ``torch.autocast(device, torch.bfloat16)`` in training, evaluation
            and prediction (:meth:`mixed_precision`), its outputs, the loss and the metrics
            in float32; weights, gradients, optimizer state and checkpoints stay float32.
            Default: ``"float32"``.
        extra (dict): the task's own options (:attr:`gatedrnn.tasks.base.Task.options`), by
            name. Default: ``{}``.

    Examples:
        >>> from gatedrnn.config import TrainConfig
        >>> config = TrainConfig(task="copy", cell="gru", length=50, steps=200)
        >>> config.validate()
        >>> TrainConfig.from_dict({"task": "adding", "cells": "gru"})
        Traceback (most recent call last):
        ...
        ValueError: unknown config keys ['cells']
    """

    task: str = DEFAULT  # a built-in task's name, or MODULE:CLASS (gatedrnn.tasks.task_class)
    cell: str = "lstm"
    length: int = 100  # sequence length T of the synthetic tasks
    data: str = ""  # a data file or folder, for the tasks that read one
    hidden_size: int = 64
    layers: int = 1
    embedding_size: int = 0  # token embedding size; 0: the task's default
    dropout: float = 0.0  # on embeddings, outputs and between layers
    tie_weights: bool = False  # token tasks: the readout reuses the embedding matrix
    adaptive_softmax: list = field(default_factory=list)  # language models: cutoffs of an adaptive softmax
    backend: str = "auto"
    forget_bias: float = 1.0  # LSTM only: Jozefowicz et al. 2015
    chrono: float = 0.0  # LSTM, GRU: chrono initialization up to this many steps (Tallec & Ollivier 2018); 0: off
    peephole: bool = False  # LSTM only: Gers & Schmidhuber 2000's peepholes
    coupled: bool = False  # LSTM only: input gate = 1 - forget gate (CIFG, Greff et al. 2017)
    layer_norm: bool = False  # LSTM and GRU: layer normalization as haste's LayerNormLSTM/GRU (Ba et al. 2016)
    reset_after: bool = True  # GRU only: False is Cho et al. 2014's candidate (reset before the product)
    recurrent_dropout: float = 0.0  # variational dropout on h_{t-1} in the recurrent product (Gal & Ghahramani)
    weight_dropout: float = 0.0  # DropConnect on W_hh, once per forward (Merity et al. 2017)
    zoneout: float = 0.0  # each unit keeps its previous state with this probability (Krueger et al. 2017)
    optimizer: str = "adam"  # or "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"  # or "cosine" (to lr * min_lr_ratio at the last step)
    warmup: int = 0  # steps of linear warm-up
    min_lr_ratio: float = 0.1
    batch_size: int = 64
    steps: int = 2000
    clip: float = 1.0  # max gradient norm; 0 turns clipping off
    eval_every: int = 100
    patience: int = 0  # evaluations without improvement before stopping (0: never); ends on the best weights
    stop_when_solved: bool = False
    max_minutes: float = 0.0  # wall-clock budget of the run; 0: none
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # torch.set_num_threads during the run; 0: torch's own choice
    precision: str = "float32"  # or "bfloat16": the forward under autocast, weights and optimizer float32
    extra: dict = field(default_factory=dict)  # task-specific options

    def cell_options(self) -> dict:
        """The variant keywords of the recurrent layer (none for the plain cell), e.g.
        ``{"peephole": True, "zoneout": 0.1}``."""
        options = {"peephole": True} if self.peephole else {}
        options |= {"coupled": True} if self.coupled else {}
        options |= {"layer_norm": True} if self.layer_norm else {}
        options |= {name: getattr(self, name) for name in REGULARIZERS if getattr(self, name)}
        return options | ({} if self.reset_after else {"reset_after": False})

    def validate(self, task: bool = True) -> None:
        """Checks every value, and the cell against the task's cells.

        Args:
            task (bool): also look the task up, which imports a task of your own, and check
                the cell is one of its cells; ``False`` for a run folder's config, whose task
                is imported only when the user names it (``gatedrnn.runs.task_class``).
                Default: ``True``.

        Raises:
            ValueError: one line naming the option (``--hidden-size must be a positive
                integer, got 0``).
        """
        cells = task_class(self.task).cells if task else None  # an unknown task: a ValueError naming the built-in ones
        for name in REGULARIZERS:
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
            if getattr(self, name) and self.cell.startswith("conv"):
                raise ValueError(f"--{name.replace('_', '-')} is for the rnn, lstm and gru cells, got --cell {self.cell}")
        if self.chrono and self.cell not in ("lstm", "gru"):
            raise ValueError(f"--chrono initializes the gates of the LSTM and the GRU, got --cell {self.cell} "
                             "(--chrono 0 turns it off, as a preset that sets it needs for other cells)")
        if self.chrono and self.chrono < 2:
            raise ValueError(f"--chrono must be at least 2 (the longest time constant, in steps), got {self.chrono}")
        if self.layer_norm and self.cell not in ("lstm", "gru"):
            raise ValueError(f"--layer-norm is a variant of the LSTM and the GRU, got --cell {self.cell} "
                             "(--no-layer-norm turns it off, as a preset that sets it needs for other cells)")
        for flag in ("peephole", "coupled"):
            if getattr(self, flag) and self.cell != "lstm":
                raise ValueError(f"--{flag} is a variant of the LSTM, got --cell {self.cell}")
        if not self.reset_after and self.cell != "gru":
            raise ValueError(f"--no-reset-after is a variant of the GRU, got --cell {self.cell}")
        if cells is not None and self.cell not in cells:
            raise ValueError(f"--cell for the {self.task} task must be one of {', '.join(cells)}, got {self.cell!r}")
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"--optimizer must be adam or adamw, got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"--schedule must be constant or cosine, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be {' or '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("length", "hidden_size", "layers", "batch_size", "steps", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("lr",):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        cutoffs = self.adaptive_softmax
        if not isinstance(cutoffs, (list, tuple)) or not all(isinstance(c, int) and c > 0 for c in cutoffs) \
                or list(cutoffs) != sorted(set(cutoffs)):  # fmt: skip
            raise ValueError(f"--adaptive-softmax must be increasing positive integers, got {cutoffs!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        for name in ("clip", "weight_decay", "warmup", "patience", "embedding_size", "max_minutes", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")

    def autocast_device(self) -> str | None:
        """The device type the model's forward autocasts on (``"cpu"``, ``"cuda"``), or None
        for ``precision="float32"``. Called as a run starts, so that a device that cannot
        compute in bfloat16 stops it with one line before any data is read.

        Raises:
            ValueError: ``precision`` is ``"bfloat16"`` and torch cannot autocast to bfloat16
                on ``device`` (a GPU without bfloat16, a device torch has no autocast for).
        """
        if self.precision == "float32":
            return None
        import torch

        kind = torch.device(self.device).type
        if not torch.amp.is_autocast_available(kind):
            raise ValueError(f"--precision bfloat16: torch cannot autocast on --device {self.device}; "
                             "train in --precision float32 there")  # fmt: skip
        if kind == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            raise ValueError(f"--precision bfloat16: the GPU of --device {self.device} "
                             f"({torch.cuda.get_device_name(torch.device(self.device))}) has no bfloat16; "
                             "train in --precision float32 there")  # fmt: skip
        return kind

    @contextlib.contextmanager
    def mixed_precision(self, model):
        """A block in which ``model`` computes in the run's ``precision``: for a training
        step's forward and loss, an evaluation, a prediction. Nothing changes for float32.
        For bfloat16 the block runs under ``torch.autocast(device, torch.bfloat16)`` (the
        products in bfloat16, weights cast once per block), and every bfloat16 tensor the
        model returns (outputs, a carried state) comes back as float32, so that the task's
        loss and metrics, sums over many terms, are not rounded to bfloat16's 8 bits.

        Args:
            model (torch.nn.Module): the model whose outputs are returned in float32 (a
                hook on it, removed when the block ends).

        Examples:
            >>> import torch
            >>> from gatedrnn.config import TrainConfig
            >>> from gatedrnn.models import SequenceModel
            >>> model = SequenceModel("gru", 2, 8, 1)
            >>> with TrainConfig(precision="bfloat16").mixed_precision(model):
            ...     inner = torch.is_autocast_enabled("cpu")
            ...     output = model(torch.rand(3, 20, 2))
            >>> inner, output.dtype, model.head.weight.dtype
            (True, torch.float32, torch.float32)
        """
        kind = self.autocast_device()
        if kind is None:
            yield
            return
        import torch

        handle = model.register_forward_hook(_returned_in_float32)
        try:
            with torch.autocast(kind, dtype=torch.bfloat16):
                yield
        finally:
            handle.remove()

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """The config of a dict such as a run's ``config.json``.

        Args:
            values (dict): field name to value; missing fields take their defaults.

        Raises:
            ValueError: for keys that are no field, naming them, and for a value that is not
                of its field's type, naming the field (``hidden_size must be an integer,
                got '16'``).
        """
        if not isinstance(values, dict):
            raise ValueError(f"expected an object of settings, got {type(values).__name__}")
        kinds = {f.name: KINDS[f.type] for f in dataclasses.fields(cls)}
        unknown = set(values) - set(kinds)
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        return cls(**{key: checked(value, kinds[key], key) for key, value in values.items()})


def _returned_in_float32(module, args, output):
    """A forward hook: ``output`` with each bfloat16 tensor in it (in tuples, lists, dicts) as float32."""
    import torch

    def up(value):
        if isinstance(value, torch.Tensor):
            return value.float() if value.dtype == torch.bfloat16 else value
        if isinstance(value, (tuple, list)):
            return type(value)(up(v) for v in value)
        if isinstance(value, dict):
            return {key: up(v) for key, v in value.items()}
        return value

    return up(output)
