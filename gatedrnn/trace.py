"""The gate trace: every gate activation and state of a recurrent layer, per step."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

# The names a trace holds, per cell, in the order the step functions return them.
TRACE_NAMES = {
    "LSTM": ("input", "forget", "candidate", "output", "cell", "hidden"),
    "GRU": ("reset", "update", "candidate", "hidden"),
    "MGU": ("forget", "candidate", "hidden"),
    "sLSTM": ("input", "forget", "candidate", "output", "cell", "normalizer", "stabilizer", "hidden"),
    "mLSTM": ("input", "forget", "output", "normalizer", "stabilizer", "memory", "hidden"),
    "RNN_TANH": ("hidden",),
    "RNN_RELU": ("hidden",),
}


class Trace(Mapping):
    """Per-step activations of a recurrent layer, one tensor per gate and state.

    Read a tensor as an attribute (``trace.forget``) or by name (``trace["forget"]``).
    From a layer each tensor has shape ``(num_layers * num_directions, T, B, H)``
    (``(num_layers * num_directions, B, T, H)`` with ``batch_first``, and
    ``(num_layers * num_directions, T, H)`` for unbatched input), stacked in the
    order torch stacks ``h_n``. From a cell each tensor is one step: ``(B, H)``.

    The names, by cell: LSTM ``input, forget, candidate, output, cell, hidden``; GRU
    ``reset, update, candidate, hidden``; RNN ``hidden``; MGU ``forget, candidate, hidden``;
    MinGRU ``update, candidate, hidden``; MinLSTM ``forget, input, candidate, hidden``; sLSTM
    ``input, forget, candidate, output, cell, normalizer, stabilizer, hidden`` (the stabilized
    gates i', f', then tanh(z~), sigmoid(o~), and the states c, n, m, h); mLSTM ``input, forget,
    output, normalizer, stabilizer, memory, hidden``, where ``output`` (the output gate) and
    ``hidden`` have ``H`` features and the others one per head (``K``): the stabilized gates,
    the denominator ``max(|n^T q|, exp(-m))``, ``m`` and the memory's Frobenius norm. The
    values are the gates after their activation, zero past a sequence's ``lengths``, and
    differentiable. A trace is read-only.

    Args:
        tensors (dict[str, Tensor]): the tensors by name (layers and cells build it).

    Examples:
        >>> import torch, gatedrnn
        >>> lstm = gatedrnn.LSTM(3, 5, batch_first=True)
        >>> _, _, trace = lstm(torch.randn(2, 7, 3), return_trace=True)
        >>> list(trace)
        ['input', 'forget', 'candidate', 'output', 'cell', 'hidden']
        >>> trace.forget.shape, trace["cell"].shape  # (L*D, B, T, H) batch-first
        (torch.Size([1, 2, 7, 5]), torch.Size([1, 2, 7, 5]))
    """

    def __init__(self, tensors: dict[str, torch.Tensor]):
        object.__setattr__(self, "_tensors", dict(tensors))

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"trace has no {name!r}; it holds {', '.join(self._tensors)}") from None

    def __getattr__(self, name: str) -> torch.Tensor:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._tensors[name]
        except KeyError:
            raise AttributeError(f"trace has no {name!r}; it holds {', '.join(self._tensors)}") from None

    def __setattr__(self, name, value):
        raise AttributeError("a Trace is read-only")

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self._tensors.items())
        return f"Trace({shapes})"
