r"""The mLSTM's forms over a sequence: three ways that compute the same thing (and the
recurrent step as one ``scan`` node for ``torch.export``), which
:func:`gatedrnn.xlstm.mlstm.mlstm_sequence` chooses between.

Beck et al., "xLSTM: Extended Long Short-Term Memory", NeurIPS 2024, section 2.3 and
appendix A.3 (the parallel form). The step, the specification, is
:func:`gatedrnn.cells.mlstm.mlstm_step`. Per head, with :math:`a_t = \log f_t` and
:math:`F_{t,j} = \sum_{s=j+1}^{t} a_s` (the log decay from step ``j`` to step ``t``):

.. math::

    C_t = e^{F_{t,0} + m_0 - m_t} C_0 + \sum_{j \le t} e^{F_{t,j} + \tilde i_j - m_t}\,
          \frac{k_j}{\sqrt d} v_j^\top, \qquad
    m_t = \max\big(F_{t,0} + m_0,\ \max_{j \le t} (F_{t,j} + \tilde i_j)\big)

(and :math:`n_t` likewise with :math:`k_j` for :math:`k_j v_j^\top`), which the forms evaluate as

- ``"recurrent"``: :func:`~gatedrnn.cells.mlstm.mlstm_step` once per step, a Python loop over
  ``T`` (the readable one; generation; the only form that computes a trace).
- ``"parallel"``: all ``T x T`` weights :math:`D_{t,j} = e^{F_{t,j} + \tilde i_j - m_t}` at once,
  attention-like, :math:`\tilde h = ((Q K^\top / \sqrt d) \odot D)\, V / \text{denominator}`;
  :math:`m_t` is the row's maximum (and the initial state's column). Quadratic in ``T``.
- ``"chunkwise"``: the sequence cut into chunks of ``chunk_size`` steps; inside each chunk the
  parallel form, between chunks the recurrence on the chunk-boundary states
  (:math:`C` at each chunk's start: one batched GEMM for what every chunk writes, then, for up
  to ``AT_ONCE_MAX_CHUNKS`` chunks, all chunks' starting states at once, a stabilized
  ``(N + 1) x (N + 1)`` lower-triangular matrix of chunk-to-chunk weights times the chunks'
  writing, for ``N = T / chunk_size`` chunks; for more chunks, where that product, quadratic in
  ``N``, would cost more, one multiply-add per chunk in a loop). Linear in ``T``: time and
  memory ``O(T (L + d) d)`` for chunks of ``L`` steps.
- ``"auto"``: ``"recurrent"`` for ``T = 1`` (and whenever a trace is asked for),
  ``"parallel"`` for ``T <= chunk_size``, ``"chunkwise"`` above.

:math:`m_t` is the recurrent form's stabilizer in every form (the row maximum is the unrolled
recurrence), so the three agree to rounding, ``eps`` included. The parallel form sums
:math:`F_{t,j}` within its own window (a cumulative sum down a masked ``T x T`` matrix), never
as the difference of two long prefix sums. The chunkwise form takes, inside a chunk, the
difference of the chunk's prefix sums (its weights are ``exp(a_j - M_t)`` with vectors ``a`` and
``M``, no ``L x L`` pass for the stabilizer): exact to rounding for moderate gates; a forget
pre-activation near ``-1e4`` inside a chunk would cost float32 all precision in the weights after
it, so the chunkwise form computes these vectors in float64 and sums ``a_j - M_t`` in float64
(native) or in two parts (:class:`_IntraChunk`): float32 inputs keep float32 accuracy at
``±1e4`` (the official package's parallel and chunkwise forms take differences of prefix sums
over the whole sequence in the input's dtype). Every ``exp`` has an argument ``<= 0`` in every form, so
``±1e4`` pre-activations give finite values.

Gradients: the recurrent form on the CPU (float32, float64) runs the native loop of
``fused/csrc/mlstm.cpp`` with its hand-written backward (:mod:`gatedrnn.fused.mlstm`: it keeps
the memory every ``sqrt(T)`` steps and recomputes the rest); under ``torch.export`` every form
is the recurrent step in one ``scan`` node (:func:`scanned_form`). Elsewhere torch's autograd
through the forms' operations, except inside the chunkwise form's chunks: on the CPU in
float32 and float64, native code (:mod:`gatedrnn.fused.mlstm_chunk`) takes one chunk at a time
through what it writes, its ``L x L`` weights, their products with ``q, k, v``, its starting
state's read and the read-out, with a hand-written backward that recomputes the weights;
elsewhere (and under torch.compile) the batched intra-chunk product (:class:`_IntraChunk`),
whose backward is written out too (it saves the ``L x L`` products and weights and needs half
the passes over them that autograd would make). Both are once differentiable: no double backward through the chunkwise form. The
chunkwise form's memory is linear in ``T``.

"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from gatedrnn import exportable
from gatedrnn.cells.mlstm import empty_state, mlstm_step, safe_stabilizer
from gatedrnn.fused import mlstm as fused_mlstm
from gatedrnn.fused import mlstm_chunk as fused_chunk

FORMS = ("auto", "recurrent", "parallel", "chunkwise")
STEP_TRACE_NAMES = ("input", "forget", "normalizer", "stabilizer", "memory")  # mlstm_step's activations


def choose_form(form: str, T: int, chunk_size: int, want_trace: bool = False) -> str:
    """The form ``"auto"`` stands for: recurrent for one step or a trace, parallel up to
    ``chunk_size`` steps (one chunk: the chunkwise form would be the parallel form plus
    overhead), chunkwise above."""
    if form != "auto":
        return form
    if want_trace or T == 1:
        return "recurrent"
    return "parallel" if T <= chunk_size else "chunkwise"


def segment_sums(log_f: torch.Tensor) -> torch.Tensor:
    """``F[t, j] = sum_{s=j+1}^{t} log_f[s]`` for ``j <= t`` and ``-inf`` above the diagonal:
    ``(..., L)`` -> ``(..., L, L)``, each sum taken within its window (no prefix-sum difference)."""
    L = log_f.shape[-1]
    ones = torch.ones(L, L, dtype=torch.bool, device=log_f.device)
    below = torch.tril(ones, diagonal=-1)  # [s, j]: s > j
    terms = log_f[..., :, None].expand(*log_f.shape, L).masked_fill(~below, 0.0)  # [s, j] = log_f[s] for s > j
    sums = terms.cumsum(dim=-2)  # [t, j] = sum_{j < s <= t} log_f[s]
    return sums.masked_fill(~torch.tril(ones), float("-inf"))  # (..., L, L), causal


def _floor(m, dtype):
    """The read-out's lower bound ``e^{-m}`` (the unstabilized 1), in ``dtype``."""
    return torch.exp(-safe_stabilizer(m)).to(dtype)


def _read(numerator, qn, m, eps):
    """``h~ = C^T q / (max(|n^T q|, e^{-m}) + eps)`` (eq. 21) from ``C^T q`` (..., dv), ``n^T q``
    (...) and the stabilizer ``m`` (...)."""
    denominator = torch.maximum(qn.abs(), _floor(m, qn.dtype))
    return numerator * (1.0 / (denominator + eps))[..., None]  # one reciprocal per row, a multiply per entry


class _IntraChunk(torch.autograd.Function):
    """Inside each chunk: ``S = (q k^T) * exp(a_j + neg_M_t)`` (causal), returns ``S v`` and
    ``S 1`` (the row sums, for ``n^T q``), with a hand-written backward that saves ``S`` and the
    weights ``D`` and takes ``d log D = dS * S``: half the passes over the ``L x L`` matrices
    that autograd would make. Tested against autograd of the same operations (float64
    ``gradcheck``).

    Inputs: ``q, k`` (..., L, dk), ``v`` (..., L, dv), ``a`` (..., L) (the columns' log
    weights, ``-inf`` allowed), ``neg_M`` (..., L) (the rows' negated stabilizers, finite), so
    that ``a_j + neg_M_t <= 0`` on and below the diagonal. ``a`` and ``neg_M`` may come in a
    wider dtype than ``q`` (float64 for float32): each is then split into its nearest value in
    ``q``'s dtype and the rest, and ``a_j + neg_M_t`` summed as ``(hi + hi) + (lo + lo)``. The
    ``hi`` sum is exact where it matters (where ``a_j`` is close to ``M_t``), so a forget gate
    of ``exp(-1e4)`` inside the chunk, which makes ``a`` and ``M`` large, costs no precision.
    """

    @staticmethod
    def forward(ctx, q, k, v, a, neg_M):
        L = q.shape[-2]
        causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
        a_hi, neg_M_hi = a.to(q.dtype), neg_M.to(q.dtype)
        D = torch.add(a_hi[..., None, :], neg_M_hi[..., :, None])  # (..., L, L): a_j - M_t
        if a.dtype != q.dtype:  # the rest, from the wider dtype (-inf - -inf: none, M is finite)
            a_lo = torch.where(torch.isinf(a), 0.0, a - a_hi.to(a.dtype)).to(q.dtype)
            neg_M_lo = (neg_M - neg_M_hi.to(neg_M.dtype)).to(q.dtype)
            D.add_(torch.add(a_lo[..., None, :], neg_M_lo[..., :, None]))
        D = D.masked_fill_(~causal, float("-inf")).exp_().view(-1, L, L)  # the causal weights, at most 1
        q3, k3, v3 = (x.reshape(-1, L, x.shape[-1]) for x in (q, k, v))  # (N, L, .): bmm reads transposes
        S = torch.bmm(q3, k3.transpose(1, 2)).mul_(D)  # (N, L, L)
        ctx.save_for_backward(q3, k3, v3, S, D)
        ctx.wide, ctx.shape = a.dtype, q.shape[:-2]
        return torch.bmm(S, v3).view(*ctx.shape, L, v.shape[-1]), S.sum(dim=-1).view(*ctx.shape, L)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_qn):
        q, k, v, S, D = ctx.saved_tensors  # (N, L, .), (N, L, L)
        L, shape, wide = S.shape[-1], ctx.shape, ctx.wide
        d_out = d_out.reshape(-1, L, v.shape[-1])
        d_S = torch.baddbmm(d_qn.reshape(-1, L, 1).expand(-1, L, L), d_out, v.transpose(1, 2))  # (N, L, L)
        d_v = torch.bmm(S.transpose(1, 2), d_out)
        d_log_D = d_S * S  # through exp: S = (q k^T) * exp(log D)
        d_a, d_neg_M = d_log_D.sum(dim=-2).view(*shape, L), d_log_D.sum(dim=-1).view(*shape, L)
        d_P = d_S.mul_(D)  # (N, L, L): the gradient of q k^T
        d_q, d_k = torch.bmm(d_P, k), torch.bmm(d_P.transpose(1, 2), q)
        d_q, d_k, d_v = (x.view(*shape, L, -1) for x in (d_q, d_k, d_v))
        return d_q, d_k, d_v, d_a.to(wide), d_neg_M.to(wide)


def recurrent_form(q, k, v, i_raw, log_f, state, eps, want_trace):
    """:func:`mlstm_step` over ``T``: ``(h~ (B, K, T, dv), state, activations or None)``.

    On the CPU in float32 or float64 (:func:`gatedrnn.fused.mlstm.applies`), the native loop of
    ``fused/csrc/mlstm.cpp`` runs the same steps, trace included, with a hand-written backward
    (a trace wanted with gradients: the loop below). Measured on one thread of a loaded 2-core
    machine (orientation only): a generation step, ``mlstm_sequence`` at ``T = 1``, (B, heads, d)
    = (1, 4, 64), 31-73 us against 262-398 us for the loop below; forward and backward at
    (B, heads, T, d) = (4, 4, 64, 32), 2.7 ms against 58 ms. Everywhere else, the loop below,
    differentiated by autograd.
    """
    if fused_mlstm.applies(q, k, v, i_raw, log_f, *(state or ()), trace=want_trace):
        return fused_mlstm.recurrent(q, k, v, i_raw, log_f, state, eps, want_trace)
    if state is None:
        state = empty_state(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1], q)
    outputs, acts = [], []
    for t in range(q.shape[2]):
        # log f was taken (and masked past each sequence's end) by the caller: "exp" takes it as is
        h, state, values = mlstm_step(q[:, :, t], k[:, :, t], v[:, :, t], i_raw[:, :, t], log_f[:, :, t], state,
                                      "exp", eps)  # fmt: skip
        outputs.append(h)
        if want_trace:
            acts.append(values)
    h_tilde = torch.stack(outputs, dim=2)  # (B, K, T, dv)
    trace = {name: torch.stack(vals, dim=2) for name, vals in zip(STEP_TRACE_NAMES, zip(*acts))} if want_trace else None
    return h_tilde, state, trace


def parallel_form(q, k, v, i_raw, log_f, state, eps):
    """All steps at once (quadratic in ``T``): ``(h~ (B, K, T, dv), (C, n, m))``."""
    dk = q.shape[-1]
    k = k / math.sqrt(dk)  # the key scaled by 1/sqrt(d)
    log_D = segment_sums(log_f) + i_raw[..., None, :]  # (B, K, T, T): F[t, j] + i~_j
    m = log_D.amax(dim=-1)  # (B, K, T): the row-wise maximum
    if state is not None:
        C0, n0, m0 = state
        log_w0 = log_f.cumsum(dim=-1) + m0[..., None]  # (B, K, T): F[t, 0] + m_0, the initial state's weight
        m = torch.maximum(m, log_w0)
    m_safe = safe_stabilizer(m)
    D = torch.exp(log_D - m_safe[..., None])  # (B, K, T, T), at most 1
    S = (q @ k.transpose(-1, -2)) * D  # (B, K, T, T): (q_t . k_j / sqrt(d)) D[t, j]
    numerator, qn = S @ v, S.sum(dim=-1)  # (B, K, T, dv): C_t^T q_t, (B, K, T): n_t^T q_t
    last = D[:, :, -1, :, None] * k  # (B, K, T, dk): the last row's weights on the keys
    C, n = last.transpose(-1, -2) @ v, last.sum(dim=-2)  # (B, K, dk, dv), (B, K, dk): the final state
    if state is not None:
        w0 = torch.exp(log_w0 - m_safe)  # (B, K, T)
        numerator = numerator + w0[..., None] * (q @ C0)  # (B, K, T, dv)
        qn = qn + w0 * (q @ n0[..., None]).squeeze(-1)
        C, n = C + w0[:, :, -1, None, None] * C0, n + w0[:, :, -1, None] * n0
    return _read(numerator, qn, m, eps), (C, n, m[:, :, -1])


# Up to this many chunks the chunkwise form takes the chunks' starting states all at once, above
# it in a loop over the chunks: the at-once product grows as N^2 (measured on 2 CPU threads,
# (B, heads, d) = (4, 4, 64): at once 7-10 % faster for N = 16..48, slower from N = 64)
AT_ONCE_MAX_CHUNKS = 48


def _starts_at_once(g, a_max, written_C, written_n, state):
    """The states at each chunk's start and at the end, all at once: ``(C_start (B, K, N, dk, dv),
    n_start (B, K, N, dk), m_start (B, K, N), (C, n, m))`` from each chunk's log decay ``g``
    (B, K, N), its stabilizer ``a_max`` (B, K, N) (both in the wide dtype), what it writes
    ``written_C`` (B, K, N, dk, dv) and ``written_n`` (B, K, N, dk) in the scale
    ``e^(g + a_max)``, and the initial state.

    Rows ``r = 0..N`` are the states at chunk ``r``'s start (``r = N``: the end); column 0 is the
    initial state, column ``j + 1`` chunk ``j``'s writing, with log weights ``E[r, 0] + m_0`` and
    ``E[r, j] + a_max_j`` (``j < r``), ``E[r, j] = sum_{j <= s < r} g_s`` summed within its window.
    """
    B, K, N, dk, dv = written_C.shape
    dtype = written_C.dtype
    C, n, m = state
    m = m.to(g.dtype)
    E = segment_sums(F.pad(g, (1, 0)))  # (B, K, N + 1, N + 1): [r, j] = sum_{j < s <= r} g_{s-1}
    from_state = E[..., :, :1] + m[..., None, None]  # (B, K, N + 1, 1): the initial state's log weight
    strict = torch.ones(N + 1, N, dtype=torch.bool, device=g.device).tril(diagonal=-1)  # chunk j before r
    from_chunks = (E[..., :, :N] + a_max[..., None, :]).masked_fill(~strict, float("-inf"))  # (B, K, N + 1, N)
    log_W = torch.cat((from_state, from_chunks), dim=-1)  # (B, K, N + 1, N + 1)
    m_all = log_W.amax(dim=-1)  # (B, K, N + 1): the stabilizer at each chunk's start (the recurrence's)
    W = torch.exp(log_W - safe_stabilizer(m_all)[..., None]).to(dtype)  # (B, K, N + 1, N + 1), at most 1
    written_C = written_C.flatten(-2)  # (B, K, N, dk dv)
    C0, n0 = C.flatten(-2)[:, :, None], n[:, :, None]  # (B, K, 1, dk dv), (B, K, 1, dk): the initial state
    W_start, W_end = W[..., :N, :], W[..., N:, :]  # (B, K, N, N + 1), (B, K, 1, N + 1): the rows
    W0, W = W_start[..., :1], W_start[..., 1:]  # the weights of the initial state and of the chunks' writing
    C_start = torch.matmul(W, written_C).addcmul_(W0, C0).unflatten(-1, (dk, dv))  # (B, K, N, dk, dv)
    n_start = torch.matmul(W, written_n).addcmul_(W0, n0)  # (B, K, N, dk)
    W0, W = W_end[..., :1], W_end[..., 1:]
    C = torch.matmul(W, written_C).addcmul_(W0, C0).view(B, K, dk, dv)  # the final state
    n = torch.matmul(W, written_n).addcmul_(W0, n0).view(B, K, dk)
    return C_start, n_start, m_all[..., :N], (C, n, m_all[..., N])


def _starts_in_turn(g, a_max, written_C, written_n, state):
    """:func:`_starts_at_once`'s results by the recurrence, one multiply-add per chunk (for many
    chunks, where the at-once product, quadratic in their number, would cost more)."""
    dtype = written_C.dtype
    C, n, m = state
    m = m.to(g.dtype)
    m_starts, C_starts, n_starts = [], [], []
    for g_c, a_max_c, written_C_c, written_n_c in zip(g.unbind(-1), a_max.unbind(-1), written_C.unbind(2),
                                                       written_n.unbind(2)):  # fmt: skip
        m_starts.append(m)
        C_starts.append(C)
        n_starts.append(n)
        m_next = torch.maximum(g_c + m, g_c + a_max_c)  # the stabilizer at the chunk's end
        m_safe = safe_stabilizer(m_next)
        keep = torch.exp(g_c + m - m_safe)[..., None].to(dtype)  # (B, K, 1): f' across the chunk
        scale = torch.exp(g_c + a_max_c - m_safe)[..., None].to(dtype)
        C = torch.addcmul(keep[..., None] * C, scale[..., None], written_C_c)  # (B, K, dk, dv)
        n = torch.addcmul(keep * n, scale, written_n_c)  # (B, K, dk)
        m = m_next
    m_start = torch.stack(m_starts, dim=2)  # (B, K, N)
    return torch.stack(C_starts, dim=2), torch.stack(n_starts, dim=2), m_start, (C, n, m)


def chunkwise_form(q, k, v, i_raw, log_f, state, eps, chunk_size):
    """Chunks of ``chunk_size`` steps, parallel inside, recurrent between (linear in ``T``):
    ``(h~ (B, K, T, dv), (C, n, m))``.

    Inside a chunk, with ``b_t`` the log decay from the chunk's start to step ``t`` (a cumulative
    sum within the chunk) and ``a_j = i~_j - b_j``, step ``j``'s weight at step ``t`` is
    ``exp(b_t + a_j - m_t)``, and ``m_t = b_t + M_t`` with ``M_t = max(m_start, max_{j<=t} a_j)``
    (a cumulative maximum): so the ``L x L`` weights are ``exp(a_j - M_t)``, a broadcast
    difference and one ``exp``, and the stabilizer costs no pass over them.

    Between chunks, with ``g_c`` chunk ``c``'s whole log decay and ``E[r, j] = sum_{j <= s < r} g_s``
    (segment sums over the chunk axis, each within its window), the state at chunk ``r``'s start
    (``r = N``: the end) is the initial state with log weight ``E[r, 0] + m_0`` plus chunk ``j``'s
    writing (``j < r``, in the scale ``e^(g_j + max_l a_l)``) with log weight
    ``E[r, j] + max_l a_l``; ``m`` at chunk ``r``'s start is the row's maximum (the unrolled
    recurrence ``m' = g_c + max(m, max_l a_l)``), and every state comes from one product of the
    row-stabilized weights ``exp(log W - m)`` with the chunks' writing.
    """
    B, K, T, dk = q.shape
    dv = v.shape[-1]
    L = min(chunk_size, T)
    NC = -(-T // L)  # the number of chunks
    pad = NC * L - T
    if pad:  # steps past the end write nothing (i~ = -inf) and keep the state (log f = 0)
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        i_raw = F.pad(i_raw, (0, pad), value=float("-inf"))
        log_f = F.pad(log_f, (0, pad), value=0.0)
    q, k, v = (x.unflatten(2, (NC, L)) for x in (q, k, v))  # (B, K, NC, L, .)
    i_raw, log_f = i_raw.unflatten(2, (NC, L)), log_f.unflatten(2, (NC, L))  # (B, K, NC, L)

    # Within each chunk: the log decays, and what each chunk writes into the memory by its end.
    # The per-step log weights (vectors, cheap) in float64: differences of large ones stay exact
    dtype, wide = q.dtype, torch.promote_types(q.dtype, torch.float64)
    i_raw, log_f = i_raw.to(wide), log_f.to(wide)
    log_sqrt_d = 0.5 * math.log(dk)  # the key's 1/sqrt(d), folded into the weights' exponents
    b = log_f.cumsum(dim=-1)  # (B, K, NC, L): b_t, the log decay from the chunk's start to t
    g = b[..., -1]  # (B, K, NC): across the whole chunk
    a = i_raw - b  # (B, K, NC, L): a_j; step j's weight at step t is exp(b_t + a_j - m_t)
    a_max = a.amax(dim=-1)  # (B, K, NC)
    w = torch.exp(a - safe_stabilizer(a_max)[..., None] - log_sqrt_d).to(dtype)  # (B, K, NC, L)
    native = fused_chunk.applies(q)  # the products of each chunk in native code, one chunk at a time
    if native:
        written_C, written_n = fused_chunk.chunk_writing(k.flatten(0, 2), v.flatten(0, 2), w.flatten(0, 2))
        written_C, written_n = written_C.unflatten(0, (B, K, NC)), written_n.unflatten(0, (B, K, NC))
    else:
        k_w = k * w[..., None]  # (B, K, NC, L, dk)
        written_C = k_w.transpose(-1, -2) @ v  # (B, K, NC, dk, dv): in the scale e^(g + a_max)
        written_n = k_w.sum(dim=-2)  # (B, K, NC, dk)

    # Between chunks: m, C and n at each chunk's start and at the end
    if state is None:
        state = empty_state(B, K, dk, dv, q)
    between = _starts_at_once if NC <= AT_ONCE_MAX_CHUNKS else _starts_in_turn
    C_start, n_start, m_start, (C, n, m) = between(g, a_max, written_C, written_n, state)

    # Inside each chunk: the parallel form plus the chunk's starting state
    M = torch.maximum(a.cummax(dim=-1).values, m_start[..., None])  # (B, K, NC, L): m_t - b_t
    M_safe = safe_stabilizer(M)
    w0 = torch.exp(m_start[..., None] - M_safe).to(dtype)  # (B, K, NC, L): the starting state's weight at t
    if native:  # the same and the read-out, one chunk at a time in native code (csrc/mlstm_chunk.cpp)
        parts = (q, k, v, a - log_sqrt_d, -M_safe, w0, C_start, n_start, _floor(b + M, dtype))
        h_tilde = fused_chunk.inside_chunks(*(x.flatten(0, 2) for x in parts), eps)
        h_tilde = h_tilde.unflatten(0, (B, K, NC))
    else:
        # (q_t . k_j / sqrt(d)) exp(a_j - M_t) for j <= t, times v and summed (the intra-chunk parts of C^T q, n^T q)
        intra, intra_qn = _IntraChunk.apply(q, k, v, a - log_sqrt_d, -M_safe)  # (B, K, NC, L, dv), (B, K, NC, L)
        numerator = torch.baddbmm(intra.flatten(0, 2), (q * w0[..., None]).flatten(0, 2), C_start.flatten(0, 2))
        numerator = numerator.unflatten(0, (B, K, NC))  # (B, K, NC, L, dv): C_t^T q_t
        qn = intra_qn + w0 * (q * n_start[..., None, :]).sum(dim=-1)  # (B, K, NC, L): n_t^T q_t
        h_tilde = _read(numerator, qn, b + M, eps)
    h_tilde = h_tilde.flatten(2, 3)[:, :, :T]  # (B, K, T, dv)
    return h_tilde, (C, n, m.to(dtype))


def scanned_form(q, k, v, i_raw, log_f, state, eps, want_trace):
    """:func:`recurrent_form` as one node of torch's ``scan`` (:mod:`gatedrnn.exportable`): what
    ``torch.export`` captures, so that the exported graph runs at every ``T`` (the other forms'
    choices and chunk counts depend on ``T``, which export would fix). Each step's
    ``q, k, v, i~, log f`` travel as one ``(B, K, 2 dk + dv + 2)`` slice."""
    B, K, _, dk = q.shape
    dv = v.shape[-1]
    if state is None:
        state = empty_state(B, K, dk, dv, q)
    steps = torch.cat([q, k, v, i_raw[..., None].to(q.dtype), log_f[..., None].to(q.dtype)], dim=-1)
    step = functools.partial(_scan_step, dk=dk, dv=dv, eps=eps)
    out, final, acts = exportable.run_direction("mLSTM", steps.permute(2, 0, 1, 3), tuple(state),
                                                (None, None, None, None, None), None, False, want_trace, step=step)  # fmt: skip
    trace = None
    if want_trace:  # each (T, B, K), h~ last
        trace = {name: a.permute(1, 2, 0) for name, a in zip(STEP_TRACE_NAMES, acts[:-1])}
    return out.permute(1, 2, 0, 3), final, trace


def _scan_step(step, state, weight_hh, bias_hh, weight_hr, dk, dv, eps):
    """One :func:`mlstm_step` from a slice of :func:`scanned_form`'s packed steps, in the step
    signature :func:`gatedrnn.exportable.run_direction` calls (no weights: None)."""
    q, k, v, i_raw, log_f = step.split([dk, dk, dv, 1, 1], dim=-1)
    h, new_state, acts = mlstm_step(q, k, v, i_raw[..., 0], log_f[..., 0], tuple(state), "exp", eps)
    return new_state, (*acts, h)
