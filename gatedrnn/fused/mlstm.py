"""The mLSTM's recurrent form as a native loop (``csrc/mlstm.cpp``) with a hand-written
backward, as torch.library custom ops with fake implementations (torch.compile traces through
them) and a Python stand-in where the native loops cannot be built: what generation runs, one
token at a time, and what ``form="recurrent"`` trains with.

Beck et al., "xLSTM: Extended Long Short-Term Memory", NeurIPS 2024, section 2.3 (eqs. 19-27);
the specification is :func:`gatedrnn.cells.mlstm.mlstm_step`.

The forward keeps nothing for the backward but its inputs: the backward recomputes ``C`` (a
``d x d`` matrix per head and step) segment by segment from checkpoints, ``O(sqrt(T) d^2)``
memory per head instead of ``T d^2``. Gradients of the trace, and double backward, go through
the step's loop rebuilt from the saved inputs and differentiated by autograd (as where the native
loops are absent): :func:`applies` sends a trace wanted with gradients to that loop directly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gatedrnn.cells.mlstm import empty_state, mlstm_step
from gatedrnn.fused._native import kernels
from gatedrnn.fused._ops import differentiable_grads, forbid_double_backward, zeros_if_none

__all__ = ["applies", "mlstm_recurrent", "mlstm_recurrent_backward", "native_available", "recurrent"]

DTYPES = (torch.float32, torch.float64)  # what the native loop serves


def _loop(device):
    """``mlstm_recurrent`` of the native loops where they are built (and hold it), else
    :func:`python_recurrent`."""
    return getattr(kernels(device), "mlstm_recurrent", python_recurrent)


def native_available() -> bool:
    """Whether the native loop of ``csrc/mlstm.cpp`` is built and in use."""
    return hasattr(kernels(torch.device("cpu")), "mlstm_recurrent")


def python_recurrent(q, k, v, i_raw, log_f, C0, n0, m0, eps, trace):
    """The native loop's stand-in, same arguments and results (see :func:`mlstm_recurrent`):
    :func:`~gatedrnn.cells.mlstm.mlstm_step` once per step."""
    state, outputs, acts = (C0, n0, m0), [], []
    for t in range(q.shape[2]):
        # log f is taken: the "exp" forget gate reads it as it is
        h, state, values = mlstm_step(q[:, :, t], k[:, :, t], v[:, :, t], i_raw[:, :, t], log_f[:, :, t], state,
                                      "exp", eps)  # fmt: skip
        outputs.append(h)
        if trace:
            acts.append(torch.stack(values))  # (5, B, K)
    h_tilde = torch.stack(outputs, dim=2)  # (B, K, T, dv)
    return h_tilde, *state, torch.stack(acts, dim=-1) if trace else q.new_empty(0)


@torch.library.custom_op("gatedrnn::mlstm_recurrent", mutates_args=())
def mlstm_recurrent(
    q: Tensor, k: Tensor, v: Tensor, i_raw: Tensor, log_f: Tensor, C0: Tensor, n0: Tensor, m0: Tensor, eps: float,
    trace: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    r"""The mLSTM's recurrent form over ``T`` steps, every head at once; differentiable (a
    hand-written backward; the trace's gradients and double backward by recompute).

    Args:
        q (Tensor): ``(B, K, T, dk)`` queries and keys of ``K`` heads.
        k (Tensor): as ``q``.
        v (Tensor): ``(B, K, T, dv)`` values.
        i_raw (Tensor): ``(B, K, T)`` the input gate's pre-activations.
        log_f (Tensor): ``(B, K, T)`` :math:`\log f_t` (``logsigmoid(f~)`` or ``f~``, taken by
            the caller).
        C0 (Tensor): ``(B, K, dk, dv)``, ``n0`` ``(B, K, dk)``, ``m0`` ``(B, K)``: the state
            before the first step (``m0 = -inf``: empty). All tensors of one dtype, float32 or
            float64.
        eps (float): added to the denominator of :math:`\tilde h_t`.
        trace (bool): also return the activations.

    Returns:
        ``(h_tilde (B, K, T, dv), C, n, m, acts)``: the final state shaped as the initial one;
        ``acts`` ``(5, B, K, T)``: :math:`i'_t, f'_t`, the denominator
        :math:`\max(|n_t^\top q_t|, e^{-m_t})`, :math:`m_t` and :math:`\|C_t\|_F` (as
        :func:`~gatedrnn.cells.mlstm.mlstm_step`'s activations), or an empty tensor without
        ``trace``.
    """
    return tuple(_loop(q.device)(q, k, v, i_raw, log_f, C0, n0, m0, eps, trace))


@mlstm_recurrent.register_fake
def _(q, k, v, i_raw, log_f, C0, n0, m0, eps, trace):
    B, K, T, _ = q.shape
    acts = q.new_empty(5, B, K, T) if trace else q.new_empty(0)
    return q.new_empty(B, K, T, v.shape[-1]), C0.new_empty(C0.shape), n0.new_empty(n0.shape), \
        m0.new_empty(m0.shape), acts  # fmt: skip


@torch.library.custom_op("gatedrnn::mlstm_recurrent_backward", mutates_args=())
def mlstm_recurrent_backward(
    d_h: Tensor, d_C: Tensor, d_n: Tensor, d_m: Tensor, q: Tensor, k: Tensor, v: Tensor, i_raw: Tensor,
    log_f: Tensor, C0: Tensor, n0: Tensor, m0: Tensor, eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """``(d_q, d_k, d_v, d_i_raw, d_log_f, d_C0, d_n0, d_m0)`` from the gradients of ``h~`` and of
    the final ``C, n, m`` (without trace), given :func:`mlstm_recurrent`'s inputs; see
    ``csrc/mlstm.cpp``."""
    return tuple(kernels(q.device).mlstm_recurrent_backward(d_h, d_C, d_n, d_m, q, k, v, i_raw, log_f, C0, n0, m0,
                                                            eps))  # fmt: skip


@mlstm_recurrent_backward.register_fake
def _(d_h, d_C, d_n, d_m, q, k, v, i_raw, log_f, C0, n0, m0, eps):
    return tuple(x.new_empty(x.shape) for x in (q, k, v, i_raw, log_f, C0, n0, m0))


def _setup_context(ctx, inputs, output):
    *tensors, eps, _ = inputs
    ctx.save_for_backward(*tensors)
    ctx.eps = eps
    ctx.set_materialize_grads(False)  # the unused outputs' gradients stay None


def _backward(ctx, d_h, d_C, d_n, d_m, d_acts):
    saved = ctx.saved_tensors
    native = hasattr(kernels(saved[0].device), "mlstm_recurrent_backward")
    if d_acts is not None or torch.is_grad_enabled() or not native:
        return _grads_by_recompute(saved, ctx.eps, d_h, d_C, d_n, d_m, d_acts)
    v, C0, n0, m0 = saved[2], *saved[5:]
    grads = mlstm_recurrent_backward(zeros_if_none(d_h, v), zeros_if_none(d_C, C0), zeros_if_none(d_n, n0),
                                     zeros_if_none(d_m, m0), *saved, ctx.eps)  # fmt: skip
    return (*grads, None, None)


def _grads_by_recompute(saved, eps, d_h, d_C, d_n, d_m, d_acts):
    """The op's gradients as differentiable tensors (double backward, a trace's gradients, no
    native loop): :func:`python_recurrent` rebuilt from the saved inputs, differentiated with
    ``create_graph``."""
    with torch.enable_grad():
        results = python_recurrent(*saved, eps, d_acts is not None)
        pairs = [(r, g) for r, g in zip(results, (d_h, d_C, d_n, d_m, d_acts)) if g is not None]
        return (*differentiable_grads(pairs, list(saved)), None, None)


mlstm_recurrent.register_autograd(_backward, setup_context=_setup_context)
forbid_double_backward(mlstm_recurrent_backward)


def _needs_grad(tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def applies(*tensors, trace: bool = False) -> bool:
    """Whether the native op serves these tensors: on the CPU, all float32 or all float64, no
    ``torch.jit`` trace running (a traced graph keeps the step's operations) and, where a
    gradient is wanted, the native backward built and no ``trace`` asked for (its gradients go
    through the step's loop anyway)."""
    first = tensors[0]
    if first.device.type != "cpu" or first.dtype not in DTYPES or torch.jit.is_tracing():
        return False
    if any(t.dtype != first.dtype for t in tensors):
        return False
    return not _needs_grad(tensors) or (not trace and native_available())


def _plain_eager(*tensors) -> bool:
    """Whether these are plain tensors in eager mode: no torch.compile, no dispatch mode (fake
    tensors, ``make_fx``), no tensor subclass, which see only the op."""
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
        return False
    return all(type(t) is Tensor for t in tensors)


def recurrent(q, k, v, i_raw, log_f, state, eps, want_trace):
    """:func:`mlstm_recurrent` in :func:`~gatedrnn.xlstm.mlstm_forms.recurrent_form`'s terms:
    ``(h~ (B, K, T, dv), (C, n, m), activations or None)``, the activations a dict of
    ``input, forget, normalizer, stabilizer, memory``, each ``(B, K, T)``. ``state`` None: the
    empty state."""
    if state is None:
        state = empty_state(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1], q)
    args = (q, k, v, i_raw, log_f, *state, float(eps), bool(want_trace))
    if not _needs_grad(args[:8]) and _plain_eager(*args[:8]):
        # straight to the loop: the custom op's dispatch cost ~95 us a call, ten times the step itself
        # ((B, heads, d) = (1, 4, 64), 2 threads, a loaded machine); the op stays for torch.compile
        h_tilde, C, n, m, acts = _loop(q.device)(*args)
    else:
        h_tilde, C, n, m, acts = mlstm_recurrent(*args)
    trace = None
    if want_trace:
        trace = dict(zip(("input", "forget", "normalizer", "stabilizer", "memory"), acts.unbind(0)))
    return h_tilde, (C, n, m), trace
