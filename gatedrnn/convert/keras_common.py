"""What the two directions of the Keras converter share (:mod:`gatedrnn.convert.keras`, Keras →
gatedrnn, and :mod:`gatedrnn.convert.keras_export`, gatedrnn → Keras): Keras imported on first
use, a variable read or written as a torch tensor, the activations with a torch twin, and the
GRU's gate order."""

from __future__ import annotations

import os

import torch
from torch import nn

# Keras' activations with a torch twin (the name Keras serializes → the module computing it)
ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "selu": nn.SELU,
    "softplus": nn.Softplus, "silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU,
    "softmax": lambda: nn.Softmax(dim=-1), "log_softmax": lambda: nn.LogSoftmax(dim=-1),
}  # fmt: skip
# and back (a torch module's type → the name Keras takes)
ACTIVATION_NAMES = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ELU: "elu", nn.SELU: "selu",
                    nn.Softplus: "softplus", nn.SiLU: "silu", nn.GELU: "gelu", nn.Softmax: "softmax",
                    nn.LogSoftmax: "log_softmax"}  # fmt: skip


def import_keras():
    """Keras, imported on first use (on its torch backend unless one was chosen already)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as error:  # pragma: no cover - the test extra installs it
        raise ImportError("gatedrnn.convert.from_keras/to_keras need Keras 3: pip install keras") from error
    return keras


def tensor_of(variable) -> torch.Tensor:
    """A Keras variable's value as a CPU torch tensor of its dtype (a copy)."""
    value = getattr(variable, "value", None)
    if isinstance(value, torch.Tensor):  # Keras on its torch backend: a parameter
        return value.detach().cpu().clone()
    return torch.as_tensor(import_keras().ops.convert_to_numpy(variable)).clone()


def assign(variable, value: torch.Tensor) -> None:
    """Sets a Keras variable to ``value`` (a torch tensor on any device)."""
    variable.assign(value.detach().cpu().numpy())


def who(layer) -> str:
    """How an error names a Keras layer: its name and type."""
    return f"Keras layer {layer.name!r} ({type(layer).__name__})"


def activation_name(fn) -> str:
    """The name Keras serializes an activation function under."""
    name = import_keras().activations.serialize(fn)
    return name if isinstance(name, str) else repr(name)


def gru_order(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Keras' GRU blocks z, r, h → torch's r, z, n along ``dim`` (the same swap goes back)."""
    z, r, h = w.chunk(3, dim=dim)
    return torch.cat([r, z, h], dim=dim)
