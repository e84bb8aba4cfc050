"""The mLSTM's chunkwise form, its per-chunk parts as native code (``csrc/mlstm_chunk.cpp``) with
hand-written backwards: what each chunk writes into the memory (:func:`chunk_writing`) and the
inside of each chunk through the read-out (:func:`inside_chunks`), one chunk at a time, so that
each chunk's ``L x L`` matrices stay in the cache through all of its products and element-wise
passes.

The specification is the batched Python of :func:`gatedrnn.xlstm.mlstm_forms.chunkwise_form` (its
``_IntraChunk`` product, the starting state's read and ``_read``), which runs wherever
:func:`applies` says no. Its speed against the official package: ``benchmarks/xlstm_speed.py``
(``benchmarks/results/xlstm_speed.json``, the table on the docs' xLSTM page).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from gatedrnn.fused._native import kernels

__all__ = ["applies", "chunk_writing", "inside_chunks", "native_available"]

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
    def forward(ctx, q, k, v, a, neg_M, w0, C0, n0, floor, eps):
        h, qn = kernels(q.device).mlstm_chunk_forward(q, k, v, a, neg_M, w0, C0, n0, floor, eps)
        ctx.save_for_backward(h, qn, q, k, v, a, neg_M, w0, C0, n0, floor)
        ctx.eps = eps
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, d_h):
        saved = ctx.saved_tensors
        return (*kernels(d_h.device).mlstm_chunk_backward(d_h, *saved, ctx.eps), None)


def inside_chunks(q, k, v, a, neg_M, w0, C0, n0, floor, eps):
    r"""The mLSTM's read-out :math:`\tilde h_t` inside every chunk, from the chunk's own steps and
    its starting state, differentiable (a hand-written backward; no double backward):

    .. math::

        S = (q k^\top) \odot \exp(a_j + (-M)_t)\ (j \le t), \quad
        C^\top q = S v + w_0 \odot (q C_0), \quad
        n^\top q = S \mathbf{1} + w_0 \odot (q n_0), \quad
        \tilde h = \frac{C^\top q}{\max(|n^\top q|, \text{floor}) + \epsilon}

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
        floor (Tensor): ``(N, L)`` the denominator's lower bound, :math:`e^{-m_t}`.
        eps (float): added to the denominator.

    Returns:
        ``h~ (N, L, dv)`` in ``q``'s dtype.
    """
    return _InsideChunks.apply(q, k, v, a, neg_M, w0, C0, n0, floor, float(eps))


class _ChunkWriting(torch.autograd.Function):
    @staticmethod
    def forward(ctx, k, v, w):
        ctx.save_for_backward(k, v, w)
        return tuple(kernels(k.device).mlstm_chunk_write_forward(k, v, w))

    @staticmethod
    @once_differentiable
    def backward(ctx, d_C, d_n):
        k, v, w = ctx.saved_tensors
        d_C = k.new_zeros(k.shape[0], k.shape[2], v.shape[2]) if d_C is None else d_C
        d_n = k.new_zeros(k.shape[0], k.shape[2]) if d_n is None else d_n
        return tuple(kernels(k.device).mlstm_chunk_write_backward(d_C, d_n, k, v, w))


def chunk_writing(k, v, w):
    r"""What each chunk writes into the memory by its end, differentiable (a hand-written
    backward; no double backward): :math:`(w \odot k)^\top v` and :math:`(w \odot k)^\top \mathbf{1}`.

    Args:
        k (Tensor): ``(N, L, dk)`` the chunks' keys.
        v (Tensor): ``(N, L, dv)`` values.
        w (Tensor): ``(N, L)`` each step's weight (the caller's scale).

    Returns:
        ``(written_C (N, dk, dv), written_n (N, dk))``.
    """
    return _ChunkWriting.apply(k, v, w)
