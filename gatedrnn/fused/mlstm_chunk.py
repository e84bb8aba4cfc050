"""The inside of the mLSTM's chunkwise form as native code (``csrc/mlstm_chunk.cpp``) with a
hand-written backward: one chunk at a time, so that each chunk's ``L x L`` matrices stay in the
cache through all of its products and element-wise passes.

The specification is the batched Python of :func:`gatedrnn.xlstm.mlstm.chunkwise_form` (its
``_IntraChunk`` product plus the starting state's read), which runs wherever :func:`applies` says
no. Measured on 2 threads of an AMD EPYC (``benchmarks/xlstm_speed.py``, training at
``(B, heads, d, T) = (4, 4, 64, 1024)``): see ``benchmarks/results/xlstm_speed.json``.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from gatedrnn.fused._native import kernels

__all__ = ["applies", "inside_chunks", "native_available"]

DTYPES = (torch.float32, torch.float64)


def native_available() -> bool:
    """Whether ``csrc/mlstm_chunk.cpp`` is built and in use."""
    return hasattr(kernels(torch.device("cpu")), "mlstm_chunk_forward")


def applies(q: torch.Tensor) -> bool:
    """Whether the native chunk kernels serve a chunkwise form on ``q``: plain CPU tensors of
    float32 or float64 in eager mode (torch.compile, ``torch.jit`` tracing, dispatch modes and
    tensor subclasses see the batched Python, whose operations they can trace), the kernels
    built."""
    if q.device.type != "cpu" or q.dtype not in DTYPES or type(q) is not torch.Tensor:
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch._C._len_torch_dispatch_stack():
        return False
    return native_available()


class _InsideChunks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, a, neg_M, w0, C0, n0):
        ctx.save_for_backward(q, k, v, a, neg_M, w0, C0, n0)
        return tuple(kernels(q.device).mlstm_chunk_forward(q, k, v, a, neg_M, w0, C0, n0))

    @staticmethod
    @once_differentiable
    def backward(ctx, d_numerator, d_qn):
        saved = ctx.saved_tensors
        d_numerator = torch.zeros_like(saved[2]) if d_numerator is None else d_numerator
        d_qn = torch.zeros_like(saved[5]) if d_qn is None else d_qn
        return tuple(kernels(saved[0].device).mlstm_chunk_backward(d_numerator, d_qn, *saved))


def inside_chunks(q, k, v, a, neg_M, w0, C0, n0):
    r"""``C_t^T q_t`` and ``n_t^T q_t`` inside every chunk, differentiable (a hand-written
    backward; no double backward):

    .. math::

        S = (q k^\top) \odot \exp(a_j + (-M)_t)\ (j \le t), \quad
        \text{numerator} = S v + w_0 \odot (q C_0), \quad
        qn = S \mathbf{1} + w_0 \odot (q n_0)

    Args:
        q (Tensor): ``(N, L, dk)`` the chunks' queries (``N`` chunks of ``L`` steps).
        k (Tensor): as ``q``, the keys (scaled or not: the kernel multiplies as given).
        v (Tensor): ``(N, L, dv)`` values.
        a (Tensor): ``(N, L)`` float64, the columns' log weights (``-inf``: writes nothing).
        neg_M (Tensor): ``(N, L)`` float64, the rows' negated stabilizers, with
            ``a_j + neg_M_t <= 0`` for ``j <= t``.
        w0 (Tensor): ``(N, L)`` the starting state's weight at each row.
        C0 (Tensor): ``(N, dk, dv)`` and ``n0`` ``(N, dk)``: each chunk's starting state.
        n0 (Tensor): see ``C0``.

    Returns:
        ``(numerator (N, L, dv), qn (N, L))``, in ``q``'s dtype.
    """
    return _InsideChunks.apply(q, k, v, a, neg_M, w0, C0, n0)
