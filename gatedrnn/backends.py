"""Which implementation runs a layer.

- ``"reference"``: the readable loop of :mod:`gatedrnn.reference`, differentiated by autograd.
- ``"fused"``: :mod:`gatedrnn.fused`, native time loops with a hand-written backward.
- ``"auto"`` (default): the fastest one that supports the configuration. That is torch's own
  kernel (oneDNN's LSTM primitive, the one torch.nn.LSTM calls) for a float32 LSTM on the CPU
  without projection, trace or lengths, outside torch.compile; on other devices, torch's kernel
  (cuDNN) whenever no trace or lengths are asked for; the fused backend everywhere else.
"""

from __future__ import annotations

import functools

import torch
from torch import _VF

from gatedrnn import fused, reference

BACKENDS = ("auto", "reference", "fused")

_TORCH_KERNELS = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}


def select_backend(layer, x, lengths, want_trace):
    """A function ``run(layer, x, states, lengths, want_trace)`` for this call."""
    name = layer.backend if layer.backend != "auto" else auto_backend(layer, x, lengths, want_trace)
    if name == "torch":
        return run_torch
    run_direction = fused.run_direction if name == "fused" else reference.run_direction
    return functools.partial(_run_layers, run_direction)


def auto_backend(layer, x, lengths, want_trace) -> str:
    plain = not want_trace and lengths is None and not torch.compiler.is_compiling()
    if plain and x.device.type != "cpu":
        return "torch"
    if plain and layer.mode == "LSTM" and not layer.proj_size and x.dtype == torch.float32:
        return "torch"
    return "fused"


def _run_layers(run_direction, layer, x, states, lengths, want_trace):
    return layer.run_layers(run_direction, x, states, lengths, want_trace)


def run_torch(layer, x, states, lengths, want_trace):
    """torch's own kernel on the layer's weights: same results as torch.nn, no trace."""
    hx = states if layer.mode == "LSTM" else states[0]
    result = _TORCH_KERNELS[layer.mode](
        x, hx, layer._flat_weights, layer.bias, layer.num_layers, layer.dropout, layer.training,
        layer.bidirectional, False,
    )  # fmt: skip
    return result[0], tuple(result[1:]), None
