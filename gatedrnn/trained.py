"""``gatedrnn.load(RUN)``: a trained run's model, ready to use, in one call.

The model is rebuilt from the run's ``config.json`` and ``model.json`` (the task's sizes,
saved when the run was trained) and its checkpoint, without reading the training data; the
checkpoint must belong to that run (task and cell) and pass its checksums.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
import torch


@dataclass
class TrainedRun:
    """What :func:`load` returns: ``model`` (in eval mode), its ``config`` (a
    :class:`gatedrnn.train.TrainConfig`), ``task`` (its name), ``result`` (``result.json``: test
    metrics, status; None for a run still training), for text runs ``vocab`` (to encode
    and decode tokens), ``run_dir``, the folder it was loaded from, and, for a classifier trained
    on named labels, ``classes`` (the name of each output, in id order)."""

    model: torch.nn.Module
    config: object
    task: str
    result: dict | None = None
    vocab: object = None
    run_dir: Path | None = None
    classes: list | None = None


def load(run_dir) -> TrainedRun:
    """The trained model of the run in ``run_dir`` (a folder ``gatedrnn train`` wrote)::

        run = gatedrnn.load("runs/adding-lstm")
        prediction = run.model(torch.rand(1, 100, 2))  # the task's inputs: (B, T, 2) for adding
        run.result["test"], run.config.cell
    """
    from gatedrnn import checkpoint
    from gatedrnn.tasks import TASKS
    from gatedrnn.tasks.text import Vocabulary
    from gatedrnn.train import MODEL, build, identity, load_config

    run_dir = Path(run_dir)
    config = load_config(run_dir)
    spec_path = run_dir / MODEL
    if spec_path.exists():  # the sizes the model was built with: no data to read
        cls = TASKS[config.task]
        sized = cls.__new__(cls)  # the task's class holding only its sizes, not its data
        sized.__dict__.update(json.loads(spec_path.read_text()))
        model = sized.make_model(config).to(config.device)
    else:  # a run trained before model.json existed: the task is rebuilt from its data
        sized, model = build(config, run_dir)
    checkpoint.load_model(run_dir, model, expect=identity(config, data=False))
    result_path = run_dir / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    vocab_path = run_dir / "vocab.json"
    vocab = Vocabulary.from_json(json.loads(vocab_path.read_text())) if vocab_path.exists() else None
    return TrainedRun(model.eval(), config, config.task, result, vocab, run_dir, getattr(sized, "classes", None))
