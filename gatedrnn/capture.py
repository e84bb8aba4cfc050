"""What a tracer capturing a model meets, on the ground floor: every layer and cell asks
:func:`exporting` (the argument checks and the backend choice do), and every one of them is a
:class:`RefusesScript`. The capture machinery itself (the reference loop as one ``scan`` node)
lives in :mod:`gatedrnn.exportable`, above the cells."""

from __future__ import annotations

import torch


def exporting() -> bool:
    """Whether ``torch.export`` (or ONNX's dynamo exporter, built on it) is capturing the call."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # absent from older torch: never exporting
    return bool(is_exporting is not None and is_exporting())


class RefusesScript:
    """What every gatedrnn layer and cell is, beside its torch.nn base: ``torch.jit.script``
    calls ``__prepare_scriptable__`` first, and meets an error that says what to use instead."""

    def __prepare_scriptable__(self):
        raise RuntimeError(
            f"torch.jit.script cannot compile gatedrnn's {type(self).__name__}: TorchScript (deprecated in "
            "torch 2.x) takes neither its Python time loop and variants nor its argument checks. Capture the "
            "model with torch.export.export(model, (x,)) instead (every cell and variant, any T and B; "
            "torch.onnx.export(model, (x,), dynamo=True) for ONNX), or torch.jit.trace(model, (x,)) for a "
            "plain cell"
        )
