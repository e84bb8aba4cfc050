"""The reference time loop: a cell's step function run over the steps of one layer and
direction. Readable and differentiable by autograd; every faster path is tested
against it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gatedrnn.cells import gru_step, lstm_step, rnn_relu_step, rnn_tanh_step
from gatedrnn.cells.mgu import mgu_step

STEPS = {"LSTM": lstm_step, "GRU": gru_step, "RNN_TANH": rnn_tanh_step, "RNN_RELU": rnn_relu_step, "MGU": mgu_step}


def run_direction(mode, x, state, weights, lengths, reverse, want_trace, step=None, zoneout=None):
    """Runs one layer in one direction.

    x: (T, B, I) input; state: the initial ``(h,)`` or ``(h, c)``, each (B, *);
    weights: ``(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)``; lengths: (B,)
    valid steps per sequence, or None when all are; reverse: read from the last step to
    the first; step: the step function (a variant's, its own terms bound in), else the
    plain cell's ``STEPS[mode]``; zoneout: per state, what each unit keeps of its previous
    value, ``s_t = k * s_{t-1} + (1 - k) * s~_t`` (Krueger et al. 2017): a (T, B, size) mask
    in training, the probability itself in eval (the expectation).
    Returns the output (T, B, H_out), the final state, and, when ``want_trace``, the
    step activations stacked over time, each (T, B, *), else None.
    """
    weight_ih, weight_hh, bias_ih, bias_hh, weight_hr = weights
    step = STEPS[mode] if step is None else step
    T = x.shape[0]
    xw = F.linear(x, weight_ih, bias_ih).unbind(0)  # T x (B, G*H): one GEMM for all steps
    if lengths is None:
        masks = [None] * T
    else:
        masks = (torch.arange(T, device=x.device)[:, None] < lengths[None, :]).unsqueeze(-1).unbind(0)  # T x (B, 1)
    values = [None] * T
    for t in range(T - 1, -1, -1) if reverse else range(T):
        new_state, v = step(xw[t], state, weight_hh, bias_hh, weight_hr)
        if zoneout is not None:  # each unit keeps its previous value where its mask says so
            new_state = tuple(new if k is None else torch.lerp(new, old, k[t] if torch.is_tensor(k) else k)
                              for new, old, k in zip(new_state, state, zoneout))  # fmt: skip
            v = v[: -len(state)] + tuple(reversed(new_state))  # the trace's c and h: the zoned-out states
        if masks[t] is not None:  # past a sequence's end: keep its state, output zeros
            new_state = tuple(torch.where(masks[t], new, old) for new, old in zip(new_state, state))
            v = tuple(torch.where(masks[t], a, 0.0) for a in v)
        state, values[t] = new_state, v
    output = torch.stack([v[-1] for v in values])  # (T, B, H_out): h is every trace's last
    trace = tuple(torch.stack(seq) for seq in zip(*values)) if want_trace else None
    return output, state, trace
