"""The reference loop as one graph node over time: what ``torch.export`` and the ONNX exporter
capture.

A Python loop over ``T`` is unrolled by every tracer, which fixes the sequence length of the
captured graph (and the fused custom ops have no ONNX translation). Here the reference step
(the same function :mod:`gatedrnn.reference` loops over, a variant's included) is the body of
torch's ``scan`` higher-order op, which ``torch.export`` keeps as one node with a symbolic
``T`` and the ONNX exporter translates to an ONNX ``Scan``: the exported graph runs at any
``T`` and ``B``. :func:`gatedrnn.backends.select_backend` routes here while
``torch.compiler.is_exporting()`` (:func:`exporting`); eager code never runs it.

The op is called directly (``scan_op``, the operator behind the prototype
``torch._higher_order_ops.scan``), with every tensor the step reads passed in explicitly:
the ``scan`` wrapper compiles its body with Dynamo on every call, about ten times slower to
export (measured on torch 2.13; README, Export, tracing and streaming). Under
``strict=True`` export Dynamo itself traces the layer, and takes the wrapper (it refuses the
bare op).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils import _pytree as pytree

from gatedrnn.capture import RefusesScript, exporting  # noqa: F401  (re-exported from their old home)
from gatedrnn.reference import STEPS

try:
    from torch._higher_order_ops.scan import scan, scan_op
except ImportError:  # a torch without the scan operator: the layers unroll their loop (with a warning)
    scan = scan_op = None


def run_direction(mode, x, state, weights, lengths, reverse, want_trace, step=None, zoneout=None):
    """Runs one layer in one direction; the contract of :func:`gatedrnn.reference.run_direction`
    (same arguments, same results), as a scan over time. ``weight_ih`` None: ``x`` is the input
    projection already, ``(T, B, G*H)`` (the sLSTM's, computed by its layer)."""
    weight_ih, weight_hh, bias_ih, bias_hh, weight_hr = weights
    step = STEPS[mode] if step is None else step
    T = x.shape[0]
    xw = x if weight_ih is None else F.linear(x, weight_ih, bias_ih)  # (T, B, G*H): one GEMM for all steps
    mask = None if lengths is None else (torch.arange(T, device=x.device)[:, None] < lengths[None, :]).unsqueeze(-1)
    keep = () if zoneout is None else zoneout  # per state: None, a probability, or a (T, B, size) mask
    xs = [xw] + ([mask] if mask is not None else []) + [k for k in keep if torch.is_tensor(k)]  # each (T, B, *)
    if reverse:  # the op scans forward: read the steps from the last, put the outputs back in order
        xs = [a.flip(0) for a in xs]
    fn, args, kwargs = (step.func, step.args, step.keywords) if isinstance(step, functools.partial) else (step, (), {})
    leaves, spec = pytree.tree_flatten((weight_hh, bias_hh, weight_hr, args, kwargs))  # what the step reads
    tensors = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
    n_state, n_xs = len(state), len(xs)

    def body(*flat):  # one step: (*state, *xs[t], *tensors) -> [*new state, *outputs]
        carry, xs_t, given = flat[:n_state], flat[n_state : n_state + n_xs], flat[n_state + n_xs :]
        read = list(leaves)
        for i, t in zip(tensors, given):
            read[i] = t
        w_hh, b_hh, w_hr, a, kw = pytree.tree_unflatten(read, spec)
        new_state, v = fn(*a, xs_t[0], tuple(carry), w_hh, b_hh, w_hr, **kw)
        if keep:  # zoneout: each unit keeps its previous value by its mask (or the probability)
            masks = iter(xs_t[1 + (mask is not None) :])
            ks = [next(masks) if torch.is_tensor(k) else k for k in keep]
            new_state = tuple(new if k is None else torch.lerp(new, old, k) for new, old, k in zip(new_state, carry, ks))
            v = v[: -len(carry)] + tuple(reversed(new_state))  # the trace's c and h: the zoned-out states
        if mask is not None:  # past a sequence's end: keep its state, output zeros
            new_state = tuple(torch.where(xs_t[1], new, old) for new, old in zip(new_state, carry))
            v = tuple(torch.where(xs_t[1], a, 0.0) for a in v)
        values = v if want_trace else v[-1:]  # h is every trace's last
        return [*new_state, *(a.clone() for a in values)]  # an output may alias neither the state nor another

    # each carry its own tensor: the op gives wrong results, silently, for carries that alias one
    # another (an sLSTM block started h, c, n, m from one zeros tensor: its exported outputs were off by 1.5)
    init = [t.clone() if any(t is u for u in state[:i]) else t for i, t in enumerate(state)]
    given = [leaves[i] for i in tensors]
    if torch.onnx.is_in_onnx_export():  # an inference graph: no autograd (and no joint graph to decompose)
        init, xs, given = ([t.detach() for t in ts] for ts in (init, xs, given))
    if torch.compiler.is_dynamo_compiling():  # strict export: Dynamo captures torch's scan wrapper, not the op

        def combine(carry, xs_t):  # the wrapper's form: (state, slices) -> (new state, outputs)
            flat = body(*carry, *xs_t, *given)
            return flat[:n_state], flat[n_state:]

        final, values = scan(combine, init, xs)
        result = [*final, *values]
    else:
        result = scan_op(body, init, xs, tuple(given))
    final, values = tuple(result[:n_state]), [v.flip(0) if reverse else v for v in result[n_state:]]
    return values[-1], final, (tuple(values) if want_trace else None)
