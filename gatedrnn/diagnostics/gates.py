"""Gate activations of a trained model, and the GRU's update gate read as the rate of an
exponentially weighted moving average."""

from __future__ import annotations

import torch


@torch.no_grad()
def gate_trace(model, inputs: torch.Tensor):
    """The :class:`gatedrnn.Trace` of ``model`` (a SequenceModel) on ``inputs`` (B, T, ...):
    each tensor (num_layers * num_directions, B, T, H)."""
    was_training = model.training
    model.eval()
    _, trace = model(inputs, return_trace=True)
    model.train(was_training)
    return trace


def ewma_time_constants(update: torch.Tensor) -> torch.Tensor:
    """τ = 1 / (1 − z) for update-gate values z, flattened.

    With torch's convention ``h_t = (1 − z_t) n_t + z_t h_{t−1}``, a unit holding z steady
    is an exponentially weighted moving average with rate α = 1 − z: after τ = 1/α steps a
    past input's weight has fallen to about 1/e. z → 1 means a long memory; z → 0, none.
    """
    z = update.flatten().double().clamp(max=1 - 1e-7)
    return 1.0 / (1.0 - z)
