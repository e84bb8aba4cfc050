"""What the three fused cells share around their custom ops."""

from __future__ import annotations

import torch


def forbid_double_backward(op) -> None:
    """Gives the backward op an autograd formula that says, clearly, that it has none."""

    def backward(ctx, *grads):
        raise RuntimeError(
            f"{op._name} has no derivative: double backward through backend='fused' is not "
            "supported; build the layer with backend='reference' for higher-order gradients"
        )

    op.register_autograd(backward, setup_context=lambda ctx, inputs, output: None)


def zeros_if_none(grad, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


def valid_steps(lengths, T: int, device) -> torch.Tensor:
    """(T, B, 1) booleans: step t of sequence b is valid when t < lengths[b]."""
    return (torch.arange(T, device=device)[:, None] < lengths.to(device)[None, :])[..., None]
