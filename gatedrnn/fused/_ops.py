"""What the three fused cells share around their custom ops: float32 compute for half
types (with the products in bfloat16 where the CPU has native bfloat16 GEMMs), and the
differentiable backward that double backward needs."""

from __future__ import annotations

import contextlib
import functools
import threading

import torch

LOW_PRECISION = (torch.float16, torch.bfloat16)

_forced = threading.local()  # bf16_products(True) around a backward whose forward ran in bfloat16


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX) and torch sends a
    bfloat16 ``torch.mm`` to oneDNN. oneDNN's own check alone is not enough: it also says yes on
    AVX-512 without BF16, where oneDNN emulates bfloat16 (no faster than float32). Asked once a
    process."""
    try:
        instructions = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return bool(instructions and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN, or without these checks
        return False


def bf16_wanted(*args) -> bool:
    """Whether a call with these arguments takes its products in bfloat16 (``csrc/lowp.h``): a
    CPU call on a CPU with native bfloat16 GEMMs, and one of the floating-point tensors is
    bfloat16, or CPU autocast runs in bfloat16, or :func:`bf16_products` says so. float16 and
    float32 calls without autocast, and every call on a CPU without bfloat16, are unchanged."""
    if not native_bf16():  # cached: a machine without bfloat16 pays one call here
        return False
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors or tensors[0].device.type != "cpu":
        return False
    if getattr(_forced, "on", False) or any(t.dtype == torch.bfloat16 for t in tensors):
        return True
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


@contextlib.contextmanager
def bf16_products(on: bool):
    """The calls inside take their products in bfloat16 when ``on`` (and the CPU has it): for a
    backward whose forward did (``ctx.bf16``), whose own arguments may all be float32 (a
    float32 layer's GRU under autocast: its output, hence ``d_out``, is float32)."""
    saved = getattr(_forced, "on", False)
    _forced.on = on or saved
    try:
        yield
    finally:
        _forced.on = saved


def compute_dtype(*tensors) -> torch.dtype:
    """The dtype the native loops compute in: float32 when any tensor is float16 or
    bfloat16 (the loops serve float32 and float64), else the tensors' own."""
    dtypes = [t.dtype for t in tensors if t is not None]
    return torch.float32 if any(d in LOW_PRECISION for d in dtypes) else dtypes[0]


def call_kernel(fn, dtype: torch.dtype, *args):
    """``fn(*args)`` with every floating-point tensor argument in ``dtype`` and autocast off
    (the loops call ATen GEMMs, which autocast would otherwise cast back down). A float32 call
    that :func:`bf16_wanted` has its products in bfloat16: the native module's switch is on for
    this call on this thread only, and off again after it, also when it raises."""
    bf16 = dtype == torch.float32 and bf16_wanted(*args)  # before the casts: a bfloat16 argument decides
    args = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dtype != dtype else a
            for a in args]  # fmt: skip
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    switch = _switch(device) if bf16 else contextlib.nullcontext()
    with switch:
        if torch.is_autocast_enabled(device.type):
            with torch.autocast(device.type, enabled=False):
                return list(fn(*args))
        return list(fn(*args))


@contextlib.contextmanager
def _native_switch(module):
    saved = module.bf16_products()
    module.set_bf16_products(True)
    try:
        yield
    finally:
        module.set_bf16_products(saved)


def _switch(device):
    """The native module's bfloat16 switch as a context (a no-op where the loops are Python's)."""
    from gatedrnn.fused._native import kernels

    module = kernels(device)
    return _native_switch(module) if hasattr(module, "set_bf16_products") else contextlib.nullcontext()


def forbid_double_backward(op) -> None:
    """Gives a backward op an autograd formula that says it has none. The forward ops'
    formulas never differentiate through it: under ``create_graph`` they take
    :func:`grads_by_recompute` instead, so reaching this is a defect."""

    def backward(ctx, *grads):
        raise RuntimeError(f"{op._name} has no derivative; double backward goes through grads_by_recompute")

    op.register_autograd(backward, setup_context=lambda ctx, inputs, output: None)


def differentiable_grads(pairs, wrt) -> list:
    """The gradients of ``pairs`` (``[(output, its gradient), ...]``, the gradients given) with
    respect to each tensor of ``wrt``, with ``create_graph``: themselves differentiable, for
    double backward. None for an entry of ``wrt`` that is None or needs no gradient. Call it
    with grad mode on, the outputs computed from ``wrt``."""
    needed = [k for k, t in enumerate(wrt) if t is not None and t.requires_grad]
    found = torch.autograd.grad([v for v, _ in pairs], [wrt[k] for k in needed], [g for _, g in pairs],
                                create_graph=True, allow_unused=True)  # fmt: skip
    grads = [None] * len(wrt)
    for k, grad in zip(needed, found):
        grads[k] = grad
    return grads


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
        return differentiable_grads(pairs, [x, w_ih, b_ih, *state, w_hh, b_hh, w_hr, *extra])


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


def sequence_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for a product over a whole sequence (the projection's input gradient
    ``d_xw W_ih``): on the native float32 panels (``csrc/panels.h``, ``sequence_mm``) for plain
    eager CPU float32 tensors where the build has them, else torch's own. torch.compile, tracing,
    dispatch modes, torch.func's wrapped tensors and subclasses get torch's ``@``, whose
    operations they can see; the two agree within float32 rounding."""
    plain = all(type(t) is torch.Tensor and t.device.type == "cpu" and t.dtype == torch.float32 for t in (a, b))
    if (not plain or torch.compiler.is_compiling() or torch.jit.is_tracing() or torch._C._len_torch_dispatch_stack()
            or any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in (a, b))):  # fmt: skip
        return a @ b
    from gatedrnn.fused._native import kernels

    module = kernels(a.device)
    if not getattr(module, "panel_gemm_available", lambda: False)():
        return a @ b
    return module.sequence_mm(a, b, None)


def projection_grads(needs: tuple[bool, bool, bool], d_xw, x, w_ih, b_ih):
    """``(d_x, d_w_ih, d_b_ih)`` of ``xw = x W_ih' + b_ih`` from ``d_xw`` (T, B, G), each only where
    ``needs`` says so: what autograd gives ``F.linear``, for an op whose loop projected x itself
    (``project``: its ``xw`` argument holds x). In ``d_xw``'s dtype (float32 for half layers:
    autograd casts each to its input's dtype). With the products in bfloat16 (:func:`bf16_wanted`,
    the forward's choice under :func:`bf16_products`) the two GEMMs take bfloat16 operands, their
    results still in ``d_xw``'s dtype; ``d_b_ih`` is summed in ``d_xw``'s dtype either way."""
    G, I = w_ih.shape
    d = d_xw.reshape(-1, G)  # (T*B, G)
    low = torch.bfloat16 if d.dtype == torch.float32 and bf16_wanted(d, x, w_ih) else d.dtype
    d_low = d.to(low)
    d_x = sequence_product(d_low, w_ih.to(low)).to(d.dtype).reshape(*x.shape[:-1], I) if needs[0] else None
    d_w_ih = (d_low.t() @ x.reshape(-1, I).to(low)).to(d.dtype) if needs[1] else None
    d_b_ih = d.sum(0) if needs[2] and b_ih is not None else None
    return d_x, d_w_ih, d_b_ih


def register_autograd(op, backward, setup_context) -> None:
    """``op.register_autograd(backward, setup_context=setup_context)``, the backward taking its
    products in bfloat16 when the forward did (:func:`bf16_wanted` on the forward's inputs, under
    the forward's autocast): a float32 GRU under bfloat16 autocast returns a float32 output, so
    its backward's own arguments could not say so."""

    def setup(ctx, inputs, output):
        setup_context(ctx, inputs, output)
        ctx.bf16 = bf16_wanted(*inputs)

    def backward_kept(ctx, *grads):
        if not ctx.bf16:
            return backward(ctx, *grads)
        with bf16_products(True):
            return backward(ctx, *grads)

    op.register_autograd(backward_kept, setup_context=setup)
