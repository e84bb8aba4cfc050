"""A trained :class:`~gatedrnn.models.SequenceModel` written as an ONNX file or a
``torch.export`` program whose batch size and sequence length are dynamic: what
``gatedrnn export`` runs.

Both go through ``torch.export`` (the ONNX file through ``torch.onnx.export(..., dynamo=True)``),
where the layers run their reference step inside torch's ``scan`` (:mod:`gatedrnn.exportable`),
so every cell and variant exports for any ``T``. With ``stateful`` the exported function is
:meth:`SequenceModel.stream`'s: ``(x, h0[, c0]) -> (out, h_n[, c_n])``, for data that arrives a
chunk at a time.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import torch
from torch import nn

from gatedrnn.checkpoint import atomic_write
from gatedrnn.models import SequenceModel

EXAMPLE_SIZE = (2, 8)  # (B, T) traced; torch.export would fix a size of 0 or 1 as a constant


def missing_packages(names) -> list[str]:
    """The ones of ``names`` (importable module names) that are not installed.

    Args:
        names (list[str]): module names, e.g. ``["onnx", "onnxscript"]``.
    """
    return [name for name in names if importlib.util.find_spec(name) is None]


class Stateful(nn.Module):
    """A model's :meth:`~SequenceModel.stream` with the state flattened into tensors:
    ``forward(x, h0[, c0]) -> (out, h_n[, c_n])``, each state ``(L·D, B, H)``.

    Args:
        model (SequenceModel): the model whose ``stream`` is exported.
    """

    def __init__(self, model: SequenceModel):
        super().__init__()
        self.model = model

    def forward(self, x, h0, c0=None):
        out, final = self.model.stream(x, h0 if c0 is None else (h0, c0))
        return (out, *final) if isinstance(final, tuple) else (out, final)


def state_sizes(model: SequenceModel) -> list[tuple[int, int]]:
    """``(L·D, size)`` of each state tensor: h (its projected size), and c for an LSTM.

    Args:
        model (SequenceModel): the model.
    """
    rnn = model.rnn
    LD = rnn.num_layers * rnn.num_directions
    if getattr(rnn, "mode", None) == "LSTM":
        return [(LD, rnn.proj_size or rnn.hidden_size), (LD, rnn.hidden_size)]
    return [(LD, rnn.hidden_size)]


def example_inputs(model: SequenceModel, B: int, T: int, stateful: bool, generator=None) -> tuple:
    """Inputs of batch ``B`` and length ``T``: tokens (B, T) or features (B, T, I), then, when
    ``stateful``, the states (random, so that a check sees them used).

    Args:
        model (SequenceModel): the model the inputs are for.
        B (int): the batch size.
        T (int): the sequence length.
        stateful (bool): add the initial states.
        generator (torch.Generator, optional): the random generator. Default: ``None``.
    """
    device = next(model.parameters()).device
    if model.embed is not None:
        x = torch.randint(0, model.embed.num_embeddings, (B, T), generator=generator).to(device)
    else:
        x = torch.randn(B, T, model.rnn.input_size, generator=generator).to(device)
    if not stateful:
        return (x,)
    return (x, *(torch.randn(LD, B, size, generator=generator).to(device) for LD, size in state_sizes(model)))


def prepare(model, stateful: bool = False) -> tuple[nn.Module, tuple]:
    """The module to export (the model, or its :class:`Stateful` form) and example inputs.

    Args:
        model (SequenceModel): a trained run's model; another kind is a ``TypeError``.
        stateful (bool): export :meth:`SequenceModel.stream`, states in and out.
            Default: ``False``.

    Examples:
        >>> import torch
        >>> from gatedrnn import export
        >>> from gatedrnn.models import SequenceModel
        >>> module, example = export.prepare(SequenceModel("gru", 2, 8, 1), stateful=True)
        >>> export.describe(example)
        'input (B, T, 2) float32, h0 (1, B, 8) float32'
        >>> export.names(example)
        (['input', 'h0'], ['output', 'h_n'])
    """
    if not isinstance(model, SequenceModel):
        raise TypeError(f"gatedrnn export takes the sequence models of the adding, copy, text, music, timeseries "
                        f"and classify tasks; this run's model is a {type(model).__name__}")  # fmt: skip
    module = Stateful(model) if stateful else model
    return module.eval(), example_inputs(model, *EXAMPLE_SIZE, stateful)


def names(example: tuple) -> tuple[list[str], list[str]]:
    """The ONNX input and output names: input[, h0, c0] and output[, h_n, c_n].

    Args:
        example (tuple): the example inputs (:func:`example_inputs`).
    """
    states = ["h", "c"][: len(example) - 1]
    return ["input"] + [f"{s}0" for s in states], ["output"] + [f"{s}_n" for s in states]


def dynamic_shapes(example: tuple) -> tuple:
    """Batch and time dynamic in the input, batch in each state.

    Args:
        example (tuple): the example inputs.
    """
    batch, time = torch.export.Dim("batch", min=1), torch.export.Dim("time", min=1)
    return ({0: batch, 1: time},) + tuple({1: batch} for _ in example[1:])


def describe(example: tuple) -> str:
    """The inputs' shapes with the dynamic sizes named, e.g. ``input (B, T, 2) float32``.

    Args:
        example (tuple): the example inputs.
    """
    shown = []
    for name, t in zip(names(example)[0], example):
        dims = ("B", "T", *t.shape[2:]) if name == "input" else (t.shape[0], "B", t.shape[2])
        shown.append(f"{name} ({', '.join(map(str, dims))}) {str(t.dtype).removeprefix('torch.')}")
    return ", ".join(shown)


def save_onnx(module: nn.Module, example: tuple, path) -> None:
    """Writes ``module`` as one ONNX file (dynamo exporter, dynamic batch and time), atomically.

    Args:
        module (torch.nn.Module): what :func:`prepare` returned.
        example (tuple): its example inputs.
        path (str or Path): the ``.onnx`` file.
    """
    inputs, outputs = names(example)
    program = torch.onnx.export(module, example, dynamic_shapes=dynamic_shapes(example), dynamo=True,
                                input_names=inputs, output_names=outputs, verbose=False)  # fmt: skip
    atomic_write(path, lambda tmp: program.save(tmp, external_data=False))


def save_program(module: nn.Module, example: tuple, path) -> None:
    """Writes ``torch.export.export(module)`` (dynamic batch and time) as a .pt2 file, atomically.

    Args:
        module (torch.nn.Module): what :func:`prepare` returned.
        example (tuple): its example inputs.
        path (str or Path): the ``.pt2`` file.
    """
    program = torch.export.export(module, example, dynamic_shapes=dynamic_shapes(example))
    buffer = io.BytesIO()  # torch.export.save names a file .pt2 or warns: the temporary file is not
    torch.export.save(program, buffer)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def run_file(path, fmt: str, example: tuple):
    """The outputs of an exported file on ``example``, as tensors; None for ONNX without onnxruntime.

    Args:
        path (str or Path): the exported file.
        fmt (str): ``"onnx"`` or ``"exported-program"`` (a ``.pt2``).
        example (tuple): the inputs.
    """
    if fmt == "onnx":
        if missing_packages(["onnxruntime"]):
            return None
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {i.name: t.cpu().numpy() for i, t in zip(session.get_inputs(), example)}
        return [torch.from_numpy(a) for a in session.run(None, feeds)]
    outputs = torch.export.load(io.BytesIO(Path(path).read_bytes())).module()(*example)
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


def check(module: nn.Module, path, fmt: str, B: int, T: int, stateful: bool) -> float | None:
    """The max abs difference between the exported file and PyTorch at batch ``B``, length ``T``
    (None where the file cannot be run here).

    Args:
        module (torch.nn.Module): the exported module (the model or its :class:`Stateful`).
        path (str or Path): the exported file.
        fmt (str): ``"onnx"`` or ``"exported-program"``.
        B (int): the batch size to check at.
        T (int): the sequence length to check at (another than the traced one).
        stateful (bool): whether the module takes states.
    """
    model = module.model if isinstance(module, Stateful) else module
    example = example_inputs(model, B, T, stateful, torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = run_file(path, fmt, example)
        if got is None:
            return None
        want = module(*example)
    want = list(want) if isinstance(want, (tuple, list)) else [want]
    return max(float((g - w.cpu()).abs().max()) for g, w in zip(got, want))
