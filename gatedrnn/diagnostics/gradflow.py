"""Gradient flow across time: ‖∂L/∂h_t‖ against the distance from the loss.

For a vanilla RNN the gradient reaching h_t is a product of T − t Jacobians
``diag(φ′) W_hh``; it shrinks (or grows) exponentially with the distance (Bengio et al. 1994,
Pascanu et al. 2013). The LSTM's cell state carries it through ``f_t`` alone and the GRU's
state through ``z_t``, so with gates near 1 it survives over long distances.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gatedrnn.threads import flush_denormals


def hidden_gradient_norms(model, inputs: torch.Tensor, targets: torch.Tensor, loss_fn) -> torch.Tensor:
    """Mean over the batch of ‖∂L/∂h_t‖ for every step t of the first layer, as a (T,) tensor.

    ``model`` is a :class:`gatedrnn.models.SequenceModel` with one unidirectional layer: its
    steps are unrolled with the reference equations so each h_t is a node of the graph, and
    ∂L/∂h_t is the total derivative, through every later step. Parameters' ``.grad`` are left
    untouched.
    """
    rnn = model.rnn
    if rnn.num_layers != 1 or rnn.bidirectional:
        raise ValueError(
            "gradient flow is measured on single-layer unidirectional models, got "
            f"num_layers={rnn.num_layers}, bidirectional={rnn.bidirectional}"
        )
    weight_ih, weight_hh, bias_ih, bias_hh, weight_hr = rnn.weights(0, 0)
    x = model.features(inputs)  # (B, T, I)
    B, T = x.shape[0], x.shape[1]
    xw = F.linear(x, weight_ih, bias_ih).unbind(1)  # T x (B, G*H)
    h = x.new_zeros(B, rnn.proj_size or rnn.hidden_size)
    state = (h, x.new_zeros(B, rnn.hidden_size)) if rnn.mode == "LSTM" else (h,)
    hs = []
    with torch.enable_grad(), flush_denormals():
        for t in range(T):
            state, _ = rnn.step(0, 0)(xw[t], state, weight_hh, bias_hh, weight_hr)
            hs.append(state[0])
        h_seq = torch.stack(hs, 1)  # (B, T, H)
        output = model.project(h_seq[:, -1] if model.readout == "last" else h_seq)
        loss = loss_fn(output, targets)
        grads = torch.autograd.grad(loss, hs)
    return torch.stack([g.norm(dim=-1).mean() for g in grads]).detach()  # (T,)
