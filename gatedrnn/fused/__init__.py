"""The fused backend: per cell, a native time loop (the recurrent GEMM and one pointwise pass
per step; the input projections inside it, or as one GEMM for all steps before it: csrc/input.h)
with a hand-written backward through time, registered as torch.library custom ops.

The variants and regularizers the layers express as a reference step function with its own
tensors bound in (``functools.partial(lstm_step, peephole=..., coupled=..., recurrent_mask=...)``)
and as zoneout masks run here too: :func:`op_arguments` reads the step back into the ops'
arguments. A step it does not know runs the reference loop, as does every variant where only
the Python loops exist (no compiler, or a device the native loops do not serve).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from gatedrnn import reference
from gatedrnn.cells import gru_step, lstm_step, rnn_relu_step, rnn_tanh_step
from gatedrnn.cells.layernorm import ln_gru_step, ln_lstm_step
from gatedrnn.cells.mgu import mgu_step
from gatedrnn.fused import gru, lstm, rnn
from gatedrnn.fused._native import kernels, native_available, use_python_loops
from gatedrnn.fused._ops import keep_tensor

RUNS = {"LSTM": lstm.run, "GRU": gru.run, "MGU": functools.partial(gru.run, form=2), "RNN_TANH": rnn.run_tanh,
        "RNN_RELU": rnn.run_relu}  # fmt: skip

PYTHON_LOOPS = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")  # the plain cells loops.py serves

__all__ = ["kernels", "native_available", "op_arguments", "run_direction", "use_python_loops"]


def op_arguments(step) -> dict | None:
    """The fused ops' variant arguments for a reference step function (the plain cells' step,
    or a ``functools.partial`` of one with a variant's choices bound in); None for a step they
    do not implement."""
    func, bound = (step.func, step.keywords) if isinstance(step, functools.partial) else (step, {})
    rmask = {"rmask": bound["recurrent_mask"]} if bound.get("recurrent_mask") is not None else {}
    if func is lstm_step:
        return {"peephole": bound.get("peephole"), "coupled": bound.get("coupled", False)} | rmask
    if func is gru_step:
        return ({} if bound.get("reset_after", True) else {"form": 1}) | rmask
    if func in (mgu_step, rnn_tanh_step, rnn_relu_step):
        return rmask
    if func in (ln_lstm_step, ln_gru_step):
        return {"layer_norm": {k: v for k, v in bound.items() if k != "recurrent_mask"}} | rmask
    return None


def run_direction(mode, x, state, weights, lengths, reverse, want_trace, step=None, zoneout=None):
    """Runs one layer in one direction; same contract as
    :func:`gatedrnn.reference.run_direction`."""
    variant = {} if step is None else op_arguments(step)
    beyond_python_loops = variant or zoneout is not None or mode not in PYTHON_LOOPS
    if variant is None or (beyond_python_loops and not native_available_for(x.device)):
        return reference.run_direction(mode, x, state, weights, lengths, reverse, want_trace, step, zoneout)
    if zoneout is not None:
        variant["keep"] = tuple(keep_tensor(k, x) for k in zoneout)
    weight_ih, weight_hh, bias_ih, bias_hh, weight_hr = weights
    # torch.jit.trace checks its graph by tracing again under no_grad: the graph must not depend on it
    needs_grad = (torch.is_grad_enabled() or torch.jit.is_tracing()) and any(
        t is not None and t.requires_grad for t in (x, *state, *weights, *_tensors_of(variant))
    )
    save = want_trace or needs_grad  # keep the activations only for a backward or a trace
    # the ops take x and project it themselves: the native loop each step's rows where that is
    # faster (csrc/input.h), the Python loops with one F.linear. Decided without asking which
    # kernels run: under torch.compile a first call would otherwise build them inside the trace.
    # A layer norm that keeps its activations wants xw normalized before the loop.
    project = not (save and "layer_norm" in variant)
    xw = x if project else F.linear(x, weight_ih, bias_ih)  # (T, B, G*H): every step's input projection at once
    return RUNS[mode](xw, state, weight_hh, bias_hh, weight_hr, lengths, reverse, save, want_trace, x, weight_ih,
                      bias_ih, **variant, **({"project": True} if project else {}))  # fmt: skip


def _tensors_of(variant: dict):
    """The tensors among a variant's arguments (peepholes, masks, a layer norm's gains), nested
    one level in tuples and dicts."""
    for value in variant.values():
        items = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else (value,)
        yield from (item for item in items if isinstance(item, torch.Tensor))


def native_available_for(device) -> bool:
    return device.type == "cpu" and native_available()
