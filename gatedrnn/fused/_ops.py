"""What the three fused cells share around their custom ops: float32 compute for half
types, and the differentiable backward that double backward needs."""

from __future__ import annotations

import torch

LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(*tensors) -> torch.dtype:
    """The dtype the native loops compute in: float32 when any tensor is float16 or
    bfloat16 (the loops serve float32 and float64), else the tensors' own."""
    dtypes = [t.dtype for t in tensors if t is not None]
    return torch.float32 if any(d in LOW_PRECISION for d in dtypes) else dtypes[0]


def call_kernel(fn, dtype: torch.dtype, *args):
    """``fn(*args)`` with every floating-point tensor argument in ``dtype`` and autocast off
    (the loops call ATen GEMMs, which autocast would otherwise cast back down)."""
    args = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dtype != dtype else a
            for a in args]  # fmt: skip
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    if torch.is_autocast_enabled(device.type):
        with torch.autocast(device.type, enabled=False):
            return list(fn(*args))
    return list(fn(*args))


def forbid_double_backward(op) -> None:
    """Gives a backward op an autograd formula that says it has none. The forward ops'
    formulas never differentiate through it: under ``create_graph`` they take
    :func:`grads_by_recompute` instead, so reaching this is a defect."""

    def backward(ctx, *grads):
        raise RuntimeError(f"{op._name} has no derivative; double backward goes through grads_by_recompute")

    op.register_autograd(backward, setup_context=lambda ctx, inputs, output: None)


def grads_by_recompute(mode, reverse, inputs, pair_outputs, step=None, zoneout=None, extra=()):
    """First-order gradients that are themselves differentiable, for double backward
    (``create_graph=True``): the step graph is rebuilt with the reference loop from the
    op's saved inputs and differentiated by autograd.

    ``inputs`` is ``(x, w_ih, b_ih, state, w_hh, b_hh, w_hr, lengths)``; ``step`` and
    ``zoneout`` are the reference loop's (a variant's step with its own tensors bound in,
    which ``extra`` lists so that they get gradients too);
    ``pair_outputs(output, final, trace)`` returns ``[(reference_value, grad), ...]`` for the
    op outputs that received a gradient. Returns the gradients of
    ``(x, w_ih, b_ih, *state, w_hh, b_hh, w_hr, *extra)``, None where not needed.
    """
    from gatedrnn import reference

    x, w_ih, b_ih, state, w_hh, b_hh, w_hr, lengths = inputs
    with torch.enable_grad():
        output, final, trace = reference.run_direction(
            mode, x, state, (w_ih, w_hh, b_ih, b_hh, w_hr), lengths, reverse, want_trace=True, step=step,
            zoneout=zoneout,
        )  # fmt: skip
        pairs = [(value, grad) for value, grad in pair_outputs(output, final, trace) if grad is not None]
        wrt = [x, w_ih, b_ih, *state, w_hh, b_hh, w_hr, *extra]
        needed = [k for k, t in enumerate(wrt) if t is not None and t.requires_grad]
        found = torch.autograd.grad(
            [v for v, _ in pairs], [wrt[k] for k in needed], [g for _, g in pairs],
            create_graph=True, allow_unused=True,
        )  # fmt: skip
    grads = [None] * len(wrt)
    for k, grad in zip(needed, found):
        grads[k] = grad
    return grads


def reference_zoneout(*keeps):
    """The ops' zoneout arguments (a (T, B, n) mask, one value in eval, or None per state) as
    :func:`gatedrnn.reference.run_direction` takes them; None when no state is zoned out."""
    if all(k is None for k in keeps):
        return None
    return tuple(k if k is None or k.numel() > 1 else float(k) for k in keeps)


def keep_tensor(k, like):
    """A layer's zoneout of one state (None, a mask, or the eval probability) as the ops take it."""
    return like.new_full((1,), k) if isinstance(k, float) else k


def zeros_if_none(grad, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


def valid_steps(lengths, T: int, device) -> torch.Tensor:
    """(T, B, 1) booleans: step t of sequence b is valid when t < lengths[b]."""
    return (torch.arange(T, device=device)[:, None] < lengths.to(device)[None, :])[..., None]


def projection_grads(needs: tuple[bool, bool, bool], d_xw, x, w_ih, b_ih):
    """``(d_x, d_w_ih, d_b_ih)`` of ``xw = x W_ih' + b_ih`` from ``d_xw`` (T, B, G), each only where
    ``needs`` says so: what autograd gives ``F.linear``, for an op whose loop projected x itself
    (``project``: its ``xw`` argument holds x). In ``d_xw``'s dtype (float32 for half layers:
    autograd casts each to its input's dtype)."""
    G, I = w_ih.shape
    d = d_xw.reshape(-1, G)  # (T*B, G)
    d_x = (d @ w_ih.to(d.dtype)).reshape(*x.shape[:-1], I) if needs[0] else None
    d_w_ih = d.t() @ x.reshape(-1, I).to(d.dtype) if needs[1] else None
    d_b_ih = d.sum(0) if needs[2] and b_ih is not None else None
    return d_x, d_w_ih, d_b_ih
