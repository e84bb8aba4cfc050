"""Argument checks shared by cells and layers: each error names the argument, what was
expected and what came.

Each error is of the type gatedrnn documents and of the type torch.nn raises for the same
mistake, so code written to catch torch.nn's errors catches gatedrnn's:

============================  ========================  ===================================
error                         gatedrnn documents        torch.nn raises
============================  ========================  ===================================
wrong shape                   ``ValueError``            ``RuntimeError`` (``ValueError`` for
                                                        the number of dimensions)
wrong dtype                   ``TypeError``             ``ValueError`` (a layer's input),
                                                        ``RuntimeError`` (states, cells)
wrong device                  ``ValueError``            ``RuntimeError``
``dropout`` not a number      ``TypeError``             ``ValueError``
============================  ========================  ===================================
"""

from __future__ import annotations

import numbers

import torch
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from gatedrnn.capture import exporting


class ShapeError(ValueError, RuntimeError):
    """A tensor argument of the wrong shape: a ``ValueError``, and a ``RuntimeError`` as
    torch.nn raises.

    Examples:
        >>> import torch, gatedrnn
        >>> try:
        ...     gatedrnn.GRU(4, 8)(torch.randn(5, 2, 3))
        ... except gatedrnn.ShapeError as error:
        ...     print(error)
        input must have 4 features (input_size) in its last dimension, got 3 (shape (5, 2, 3))
    """


class DTypeError(TypeError, ValueError, RuntimeError):
    """A tensor argument of the wrong dtype (an integer input, float64 states for float32
    parameters): a ``TypeError``, and the ``ValueError`` or ``RuntimeError`` torch.nn raises."""


class DeviceError(ValueError, RuntimeError):
    """A tensor argument on another device than the parameters: a ``ValueError``, and the
    ``RuntimeError`` torch.nn raises."""


class ArgumentTypeError(TypeError, ValueError):
    """A constructor argument of the wrong type where torch.nn raises ``ValueError`` (a
    ``dropout`` that is not a number): a ``TypeError`` and a ``ValueError``."""


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def boolean(name: str, value) -> bool:
    """A flag: only ``True`` or ``False``, as torch.nn demands (``bool('False')`` is True)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a float in [0, 1], got {type(value).__name__} {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a float in [0, 1], got {value}")
    return float(value)


def float_tensor(name: str, value, like: torch.Tensor) -> torch.Tensor:
    """A floating-point tensor with the dtype and device of ``like`` (a parameter)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.device != like.device:
        raise DeviceError(
            f"{name} is on device {value.device}, but the parameters are on {like.device}; "
            f"move {name}.to({str(like.device)!r}) or the module .to({str(value.device)!r})"
        )
    if not value.is_floating_point():
        raise DTypeError(
            f"{name} must be a floating-point tensor, got dtype {value.dtype}; "
            f"convert it with {name}.to({like.dtype})"
        )
    if value.dtype != like.dtype:
        raise DTypeError(
            f"{name} has dtype {value.dtype} but the parameters are {like.dtype}; "
            f"convert {name}.to({like.dtype}) or the module .to({value.dtype})"
        )
    return value


def matches(value, like: torch.Tensor, shape: tuple[int, ...]) -> bool:
    """Whether ``value`` passes :func:`float_tensor` against ``like`` (a floating-point
    parameter) and has exactly ``shape``: a quick test for a call's states, whose failure the
    full checks then explain."""
    return (
        isinstance(value, torch.Tensor) and value.dtype == like.dtype and value.shape == shape
        and ((value.is_cpu and like.is_cpu) or value.device == like.device)
    )  # fmt: skip


def lengths(value, T: int, B: int, device: torch.device) -> torch.Tensor | None:
    """``lengths`` of a batched call as int64 on ``device``, or None when every sequence is
    full: a 1-D integer tensor of ``B`` values in ``[1, T]``, on the CPU or ``device``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"lengths must be a 1-D integer tensor, got {type(value).__name__}")
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor, got dtype {value.dtype}")
    if value.dim() != 1 or value.shape[0] != B:
        raise ShapeError(f"lengths must have shape ({B},), one length per sequence, got {tuple(value.shape)}")
    if value.device not in (device, torch.device("cpu")):
        raise DeviceError(f"lengths is on device {value.device}; it must be on the CPU or the input's device {device}")
    if B == 0:
        return None  # no sequence, nothing to mask
    if exporting():  # the values are data: the exported graph masks by whatever comes
        return value.to(device, torch.int64)
    low, high = int(value.min()), int(value.max())
    if low < 1 or high > T:
        raise ValueError(f"lengths must lie in [1, T={T}], got values from {low} to {high}")
    if low == T:
        return None  # every sequence is full: nothing to mask
    return value.to(device, torch.int64).contiguous()


def layer_input(
    input, lengths, like: torch.Tensor, check_input
) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """A layer's ``input`` as its loops run it: ``(x, lengths, unbatched)`` with ``x`` of shape
    ``(T, B, I)`` and at least one step. A ``PackedSequence`` is padded in the packing's batch
    order (by decreasing length, as torch.nn runs it), its data checked against ``like``
    (dtype, device), and its lengths (on the CPU) returned; ``lengths`` given beside it is a
    ``ValueError`` (a packing carries its own). Anything else goes to the layer's
    ``check_input`` (returning ``(x, unbatched)``) and ``lengths`` comes back as given."""
    if isinstance(input, PackedSequence):
        if lengths is not None:
            raise ValueError("lengths must be None when input is a PackedSequence (it carries its own)")
        float_tensor("input", input.data, like)
        x, lengths = pad_packed_sequence(PackedSequence(input.data, input.batch_sizes))
        unbatched = False
    else:
        x, unbatched = check_input(input)
    if x.shape[0] == 0:
        raise ShapeError(f"input must hold at least one time step, got T=0 (shape {tuple(x.shape)})")
    return x, lengths, unbatched


def shape(name: str, value: torch.Tensor, expected: tuple[int, ...], meaning: str) -> None:
    if tuple(value.shape) != tuple(expected):
        raise ShapeError(f"{name} must have shape {tuple(expected)} {meaning}, got {tuple(value.shape)}")


def step_input(value, like: torch.Tensor, input_size: int) -> tuple[torch.Tensor, bool]:
    """A cell's ``input``, checked: returns it as ``(B, I)`` and whether it came unbatched as ``(I,)``."""
    x = float_tensor("input", value, like)
    if x.dim() not in (1, 2):
        raise ShapeError(f"input must be 2-D (B, {input_size}) or 1-D ({input_size},) unbatched, got {x.dim()}-D "
                         f"with shape {tuple(x.shape)}")  # fmt: skip
    _features(x, input_size)
    unbatched = x.dim() == 1
    return (x.unsqueeze(0) if unbatched else x), unbatched


def sequence_input(value, like: torch.Tensor, input_size: int, batch_first: bool) -> tuple[torch.Tensor, bool]:
    """A layer's ``input``, checked: returns it time-major as ``(T, B, I)`` and whether it came
    unbatched as ``(T, I)``."""
    x = float_tensor("input", value, like)
    if x.dim() not in (2, 3):
        layout = "(B, T, I)" if batch_first else "(T, B, I)"
        raise ShapeError(f"input must be 3-D {layout} or 2-D (T, I) unbatched, got {x.dim()}-D "
                         f"with shape {tuple(x.shape)}")  # fmt: skip
    _features(x, input_size)
    if x.dim() == 2:
        return x.unsqueeze(1), True  # (T, 1, I)
    return (x.transpose(0, 1) if batch_first else x), False


def _features(x: torch.Tensor, input_size: int) -> None:
    if x.shape[-1] != input_size:
        raise ShapeError(f"input must have {input_size} features (input_size) in its last dimension, "
                         f"got {x.shape[-1]} (shape {tuple(x.shape)})")  # fmt: skip
