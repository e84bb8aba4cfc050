// The mLSTM's recurrent form (xLSTM's matrix memory: Beck et al. 2024, eqs. 19-27) over T
// steps and its hand-written backward: what generation runs, one step (or a few) per call, and
// what form="recurrent" trains with. The specification is gatedrnn/cells/mlstm.py, mlstm_step;
// fused/mlstm.py registers both as custom ops (the trace's gradients go through that step's loop).
//
// Per row (one sequence's head), per step, stabilized exactly as mlstm_step:
//   m_t = max(log f_t + m_{t-1}, i~_t),  i' = exp(i~_t - m_t),  f' = exp(log f_t + m_{t-1} - m_t)
//   C_t = f' C_{t-1} + i' (k_t / sqrt(dk)) v_t^T,  n_t = f' n_{t-1} + i' k_t / sqrt(dk)
//   h~_t = C_t^T q_t / (max(|n_t^T q_t|, exp(-m_t)) + eps)
// with m_t = -inf (nothing written yet) read as 0 inside exp. The rank-1 update of C and the
// product C^T q are one pass over C (each row of C updated, then added into C^T q while in
// registers), vectorised along the value axis.
#include "common.h"

namespace gatedrnn {
namespace {

// One row's T steps. q, k (T, dk), v (T, dv), i_raw, log_f (T) of the row; C (dk, dv), n (dk)
// and m the state, updated in place; h (T, dv); with kTrace, acts holds five (T) rows spaced by
// act_stride: i', f', the denominator without eps, m, ||C_t||_F. num: dv scratch values.
template <typename T, bool kTrace>
void run_row(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ i_raw,
             const T* __restrict__ log_f, T* __restrict__ C, T* __restrict__ n, T& m_io, T* __restrict__ h,
             T* __restrict__ acts, int64_t act_stride, int64_t steps, int64_t dk, int64_t dv, T eps,
             T* __restrict__ num) {
  const T inf = std::numeric_limits<T>::infinity();
  const T sqrt_dk = std::sqrt(T(dk));
  T m_prev = m_io;
  for (int64_t t = 0; t < steps; ++t) {
    const T* __restrict__ q_t = q + t * dk;
    const T* __restrict__ k_t = k + t * dk;
    const T* __restrict__ v_t = v + t * dv;
    const T log_f_m = log_f[t] + m_prev;
    const T m = log_f_m > i_raw[t] ? log_f_m : i_raw[t];  // the stabilizer (i~ from the empty state)
    const T m_safe = m == -inf ? T(0) : m;
    const T i = std::exp(i_raw[t] - m_safe);  // eq. 25 stabilized: at most 1
    const T f = std::exp(log_f_m - m_safe);   // eq. 26 stabilized: at most 1 (0 from the empty state)
    for (int64_t b = 0; b < dv; ++b) num[b] = T(0);
    T squares = 0, qn = 0;
    for (int64_t a = 0; a < dk; ++a) {
      const T k_a = k_t[a] / sqrt_dk;  // eq. 23: the key scaled by 1/sqrt(d)
      const T q_a = q_t[a];
      T* __restrict__ C_a = C + a * dv;
      if constexpr (kTrace) {
#pragma omp simd reduction(+ : squares)
        for (int64_t b = 0; b < dv; ++b) {
          const T c = f * C_a[b] + i * (k_a * v_t[b]);  // eq. 19
          C_a[b] = c;
          num[b] += q_a * c;  // C^T q
          squares += c * c;
        }
      } else {
        for (int64_t b = 0; b < dv; ++b) {
          const T c = f * C_a[b] + i * (k_a * v_t[b]);  // eq. 19
          C_a[b] = c;
          num[b] += q_a * c;  // C^T q
        }
      }
      const T n_a = f * n[a] + i * k_a;  // eq. 20
      n[a] = n_a;
      qn += q_a * n_a;  // n^T q
    }
    const T floor = std::exp(-m_safe);  // e^{-m}, the unstabilized 1
    const T abs_qn = qn < T(0) ? -qn : qn;
    const T denominator = abs_qn > floor ? abs_qn : floor;  // eq. 21
    const T scale = denominator + eps;
    T* __restrict__ h_t = h + t * dv;
    for (int64_t b = 0; b < dv; ++b) h_t[b] = num[b] / scale;  // eq. 21
    if constexpr (kTrace) {
      acts[t] = i;
      acts[act_stride + t] = f;
      acts[2 * act_stride + t] = denominator;
      acts[3 * act_stride + t] = m;
      acts[4 * act_stride + t] = std::sqrt(squares);
    }
    m_prev = m;
  }
  m_io = m_prev;
}

// The step's gates from the stabilizers before and after it: i', f' (and m with -inf read as 0).
template <typename T>
inline void gates(T i_raw, T log_f, T m_prev, T m, T& i, T& f) {
  const T m_safe = m == -std::numeric_limits<T>::infinity() ? T(0) : m;
  i = std::exp(i_raw - m_safe);
  f = std::exp(log_f + m_prev - m_safe);
}

// One row's gradients through its T steps, recomputing what the forward did not keep: a first
// pass stores every n and m (T (dk + 1) values) and C at the start of each segment of S steps;
// then, segment by segment from the last, C at each of the segment's steps is recomputed from
// its start and the steps run backwards. Memory (T / S + S + 1) dk dv per row, S ~ sqrt(T);
// the forward's rank-1 updates are done twice more. (C cannot be run backwards from the final
// one: dividing by f' loses everything once a forget gate is near 0.)
template <typename T>
void backward_row(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                  const T* __restrict__ i_raw, const T* __restrict__ log_f, const T* __restrict__ C0,
                  const T* __restrict__ n0, T m0, const T* __restrict__ d_h, const T* __restrict__ d_C_end,
                  const T* __restrict__ d_n_end, T d_m_end, T* __restrict__ d_q, T* __restrict__ d_k,
                  T* __restrict__ d_v, T* __restrict__ d_i_raw, T* __restrict__ d_log_f, T* __restrict__ d_C0,
                  T* __restrict__ d_n0, T& d_m0, int64_t steps, int64_t dk, int64_t dv, T eps, int64_t S) {
  const T inf = std::numeric_limits<T>::infinity();
  const T sqrt_dk = std::sqrt(T(dk));
  const int64_t DD = dk * dv, segments = (steps + S - 1) / S;
  const auto buffer = [](int64_t size) { return std::vector<T>(static_cast<size_t>(size)); };
  std::vector<T> starts = buffer(segments * DD), seg = buffer((S + 1) * DD), ns = buffer((steps + 1) * dk);
  std::vector<T> ms = buffer(steps + 1), ks = buffer(dk), num = buffer(dv), d_num = buffer(dv), dC = buffer(DD);
  std::vector<T> dn = buffer(dk), dn_tot = buffer(dk);
  // the first pass: n, m at every step, C at each segment's start
  std::copy(C0, C0 + DD, seg.data());
  std::copy(n0, n0 + dk, ns.data());
  ms[0] = m0;
  for (int64_t t = 0; t < steps; ++t) {
    T* __restrict__ C = seg.data();
    if (t % S == 0) std::copy(C, C + DD, starts.data() + (t / S) * DD);
    const T log_f_m = log_f[t] + ms[t];
    const T m = log_f_m > i_raw[t] ? log_f_m : i_raw[t];
    T i, f;
    gates(i_raw[t], log_f[t], ms[t], m, i, f);
    const T* __restrict__ k_t = k + t * dk;
    const T* __restrict__ v_t = v + t * dv;
    for (int64_t a = 0; a < dk; ++a) {
      const T k_a = k_t[a] / sqrt_dk;
      T* __restrict__ C_a = C + a * dv;
      for (int64_t b = 0; b < dv; ++b) C_a[b] = f * C_a[b] + i * (k_a * v_t[b]);
      ns[(t + 1) * dk + a] = f * ns[t * dk + a] + i * k_a;
    }
    ms[t + 1] = m;
  }
  std::copy(d_C_end, d_C_end + DD, dC.data());
  std::copy(d_n_end, d_n_end + dk, dn.data());
  T d_m = d_m_end;  // the gradient of m_t, carried from step t + 1 (or the final state's)
  for (int64_t j = segments - 1; j >= 0; --j) {
    const int64_t t0 = j * S, t1 = std::min(steps, t0 + S);
    std::copy(starts.data() + j * DD, starts.data() + (j + 1) * DD, seg.data());
    for (int64_t t = t0; t < t1; ++t) {  // C after each of the segment's steps
      T i, f;
      gates(i_raw[t], log_f[t], ms[t], ms[t + 1], i, f);
      const T* __restrict__ prev = seg.data() + (t - t0) * DD;
      T* __restrict__ next = seg.data() + (t - t0 + 1) * DD;
      for (int64_t a = 0; a < dk; ++a) {
        const T k_a = k[t * dk + a] / sqrt_dk;
        for (int64_t b = 0; b < dv; ++b) next[a * dv + b] = f * prev[a * dv + b] + i * (k_a * v[t * dv + b]);
      }
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const T* __restrict__ C = seg.data() + (t - t0 + 1) * DD;
      const T* __restrict__ C_prev = seg.data() + (t - t0) * DD;
      const T* __restrict__ n = ns.data() + (t + 1) * dk;
      const T* __restrict__ n_prev = ns.data() + t * dk;
      const T* __restrict__ q_t = q + t * dk;
      const T* __restrict__ v_t = v + t * dv;
      const T m_prev = ms[t], m = ms[t + 1];
      const T m_safe = m == -inf ? T(0) : m;
      T i, f;
      gates(i_raw[t], log_f[t], m_prev, m, i, f);
      for (int64_t a = 0; a < dk; ++a) ks[a] = k[t * dk + a] / sqrt_dk;
      // the read-out h = C^T q / (max(|n^T q|, e^{-m}) + eps), recomputed, and its gradients
      for (int64_t b = 0; b < dv; ++b) num[b] = T(0);
      T qn = 0;
      for (int64_t a = 0; a < dk; ++a) {
        for (int64_t b = 0; b < dv; ++b) num[b] += q_t[a] * C[a * dv + b];
        qn += q_t[a] * n[a];
      }
      const T floor = std::exp(-m_safe), abs_qn = qn < T(0) ? -qn : qn;
      const T s = (abs_qn > floor ? abs_qn : floor) + eps;
      T d_s = 0;
      for (int64_t b = 0; b < dv; ++b) {
        const T g = d_h[t * dv + b];
        d_num[b] = g / s;
        d_s -= g * num[b] / (s * s);
      }
      // max(|qn|, floor) as torch.maximum: the whole gradient to the larger, half each at a tie
      const T w_q = abs_qn > floor ? T(1) : (abs_qn == floor ? T(0.5) : T(0));
      const T d_qn = w_q * d_s * (qn > T(0) ? T(1) : (qn < T(0) ? T(-1) : T(0)));
      // e^{-m} overflows for m below about -88 (float32): its gradient is then 0 * inf in autograd,
      // a NaN; nothing reaches it when the denominator's gradient is zero (or |qn| is the larger)
      const T d_floor = (T(1) - w_q) * d_s;
      T d_m_safe = d_floor == T(0) ? T(0) : -floor * d_floor;
      for (int64_t a = 0; a < dk; ++a) dn_tot[a] = dn[a] + d_qn * q_t[a];
      // through C = f C_prev + i k v^T and C^T q, one row of C at a time
      T d_f = 0, d_i = 0;
      T* __restrict__ dv_t = d_v + t * dv;
      for (int64_t b = 0; b < dv; ++b) dv_t[b] = T(0);
      for (int64_t a = 0; a < dk; ++a) {
        T* __restrict__ dC_a = dC.data() + a * dv;
        const T* __restrict__ C_a = C + a * dv;
        const T* __restrict__ Cp_a = C_prev + a * dv;
        const T q_a = q_t[a], k_a = ks[a];
        T dq_a = 0, df_a = 0, r_a = 0;
        for (int64_t b = 0; b < dv; ++b) {
          const T g = dC_a[b] + q_a * d_num[b];  // the whole gradient of C_t
          dq_a += C_a[b] * d_num[b];
          df_a += g * Cp_a[b];
          r_a += g * v_t[b];
          dv_t[b] += (i * k_a) * g;
          dC_a[b] = f * g;  // to C_{t-1}
        }
        d_q[t * dk + a] = dq_a + d_qn * n[a];
        d_f += df_a + dn_tot[a] * n_prev[a];
        d_i += k_a * (r_a + dn_tot[a]);
        d_k[t * dk + a] = i * (r_a + dn_tot[a]) / sqrt_dk;
        dn[a] = f * dn_tot[a];
      }
      // through i' = exp(i~ - m), f' = exp(log f + m_{t-1} - m) and m = max(log f + m_{t-1}, i~)
      const T g_i = d_i * i, g_f = d_f * f;
      d_m_safe -= g_i + g_f;
      const T d_m_total = d_m + (m == -inf ? T(0) : d_m_safe);
      const T log_f_m = log_f[t] + m_prev;
      const T w = log_f_m > i_raw[t] ? T(1) : (log_f_m == i_raw[t] ? T(0.5) : T(0));
      const T d_log_f_m = g_f + (w == T(0) ? T(0) : w * d_m_total);  // selected, as torch.maximum's
      d_i_raw[t] = g_i + (w == T(1) ? T(0) : (T(1) - w) * d_m_total);
      d_log_f[t] = d_log_f_m;
      d_m = d_log_f_m;  // log f + m_{t-1}: to m_{t-1}
    }
  }
  std::copy(dC.data(), dC.data() + DD, d_C0);
  std::copy(dn.data(), dn.data() + dk, d_n0);
  d_m0 = d_m;
}

}  // namespace

// q, k (B, K, T, dk), v (B, K, T, dv), i_raw, log_f (B, K, T) (log f taken: log sigmoid(f~) or
// f~), the state C0 (B, K, dk, dv), n0 (B, K, dk), m0 (B, K) (m0 = -inf: empty), all of one
// floating dtype. Returns h~ (B, K, T, dv), the final C, n, m and, with trace, acts
// (5, B, K, T): i', f', the denominator max(|n^T q|, e^{-m}) (without eps), m and ||C_t||_F,
// as mlstm_step's activations; an empty tensor without.
std::vector<Tensor> mlstm_recurrent(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                    const Tensor& i_raw_in, const Tensor& log_f_in, const Tensor& C0,
                                    const Tensor& n0, const Tensor& m0, double eps, bool trace) {
  TORCH_CHECK(q_in.dim() == 4 && k_in.sizes() == q_in.sizes() && v_in.dim() == 4 &&
                  v_in.sizes().slice(0, 3) == q_in.sizes().slice(0, 3),
              "mlstm_recurrent: wants q, k (B, K, T, dk) and v (B, K, T, dv)");
  const int64_t B = q_in.size(0), K = q_in.size(1), T = q_in.size(2), dk = q_in.size(3), dv = v_in.size(3);
  TORCH_CHECK(i_raw_in.sizes() == q_in.sizes().slice(0, 3) && log_f_in.sizes() == q_in.sizes().slice(0, 3),
              "mlstm_recurrent: wants i_raw and log_f (B, K, T)");
  TORCH_CHECK(C0.dim() == 4 && C0.size(0) == B && C0.size(1) == K && C0.size(2) == dk && C0.size(3) == dv &&
                  n0.dim() == 3 && n0.size(0) == B && n0.size(1) == K && n0.size(2) == dk && m0.dim() == 2 &&
                  m0.size(0) == B && m0.size(1) == K,
              "mlstm_recurrent: wants the state C0 (B, K, dk, dv), n0 (B, K, dk), m0 (B, K)");
  const auto dtype = q_in.scalar_type();
  for (const Tensor* x : {&k_in, &v_in, &i_raw_in, &log_f_in, &C0, &n0, &m0}) {
    TORCH_CHECK(x->scalar_type() == dtype, "mlstm_recurrent: every tensor must have q's dtype");
  }
  const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const Tensor i_raw = i_raw_in.contiguous(), log_f = log_f_in.contiguous();
  Tensor C = C0.contiguous().clone(), n = n0.contiguous().clone(), m = m0.contiguous().clone();
  Tensor h = at::empty({B, K, T, dv}, q.options());
  Tensor acts = trace ? at::empty({5, B, K, T}, q.options()) : empty0(q);
  const int64_t rows = B * K;
  // a block of rows per thread, each running all its steps; below ~2^15 multiply-adds a block
  // (one generation step at B = 1, heads = 4, d = 64 is 2^14) the calling thread runs them all
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, T * dk * dv));
  AT_DISPATCH_FLOATING_TYPES(dtype, "mlstm_recurrent", [&] {
    using S = scalar_t;
    const S* qp = q.const_data_ptr<S>();
    const S* kp = k.const_data_ptr<S>();
    const S* vp = v.const_data_ptr<S>();
    const S* ip = i_raw.const_data_ptr<S>();
    const S* fp = log_f.const_data_ptr<S>();
    S* Cp = C.data_ptr<S>();
    S* np = n.data_ptr<S>();
    S* mp = m.data_ptr<S>();
    S* hp = h.data_ptr<S>();
    S* ap = trace ? acts.data_ptr<S>() : nullptr;
    const S e = static_cast<S>(eps);
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      std::vector<S> num(size_t(std::max<int64_t>(dv, 1)));
      for (int64_t r = r0; r < r1; ++r) {
        const S* qr = qp + r * T * dk;
        const S* kr = kp + r * T * dk;
        const S* vr = vp + r * T * dv;
        if (trace) {
          run_row<S, true>(qr, kr, vr, ip + r * T, fp + r * T, Cp + r * dk * dv, np + r * dk, mp[r],
                           hp + r * T * dv, ap + r * T, rows * T, T, dk, dv, e, num.data());
        } else {
          run_row<S, false>(qr, kr, vr, ip + r * T, fp + r * T, Cp + r * dk * dv, np + r * dk, mp[r],
                            hp + r * T * dv, nullptr, 0, T, dk, dv, e, num.data());
        }
      }
    });
  });
  return {h, C, n, m, acts};
}

// Gradients of mlstm_recurrent (without trace) from d_h (B, K, T, dv) and those of the final
// C, n, m, given the forward's inputs (nothing else is saved: see backward_row). Returns d_q, d_k,
// d_v, d_i_raw, d_log_f, d_C0, d_n0, d_m0.
std::vector<Tensor> mlstm_recurrent_backward(const Tensor& d_h_in, const Tensor& d_C_in, const Tensor& d_n_in,
                                             const Tensor& d_m_in, const Tensor& q_in, const Tensor& k_in,
                                             const Tensor& v_in, const Tensor& i_raw_in, const Tensor& log_f_in,
                                             const Tensor& C0_in, const Tensor& n0_in, const Tensor& m0_in,
                                             double eps) {
  const int64_t B = q_in.size(0), K = q_in.size(1), T = q_in.size(2), dk = q_in.size(3), dv = v_in.size(3);
  TORCH_CHECK(d_h_in.sizes() == v_in.sizes() && d_C_in.sizes() == C0_in.sizes() && d_n_in.sizes() == n0_in.sizes() &&
                  d_m_in.sizes() == m0_in.sizes(),
              "mlstm_recurrent_backward: the gradients must be shaped as h~ and the state");
  const auto c = [](const Tensor& x) { return x.contiguous(); };
  const Tensor d_h = c(d_h_in), d_C = c(d_C_in), d_n = c(d_n_in), d_m = c(d_m_in), q = c(q_in), k = c(k_in),
               v = c(v_in), i_raw = c(i_raw_in), log_f = c(log_f_in), C0 = c(C0_in), n0 = c(n0_in), m0 = c(m0_in);
  Tensor d_q = at::empty_like(q), d_k = at::empty_like(k), d_v = at::empty_like(v);
  Tensor d_i_raw = at::empty_like(i_raw), d_log_f = at::empty_like(log_f);
  Tensor d_C0 = at::empty_like(C0), d_n0 = at::empty_like(n0), d_m0 = at::empty_like(m0);
  const int64_t rows = B * K;
  const int64_t S = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(std::sqrt(double(T)))));
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 13) / std::max<int64_t>(1, T * dk * dv));
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "mlstm_recurrent_backward", [&] {
    using X = scalar_t;
    const X e = static_cast<X>(eps);
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        backward_row<X>(q.const_data_ptr<X>() + r * T * dk, k.const_data_ptr<X>() + r * T * dk,
                        v.const_data_ptr<X>() + r * T * dv, i_raw.const_data_ptr<X>() + r * T,
                        log_f.const_data_ptr<X>() + r * T, C0.const_data_ptr<X>() + r * dk * dv,
                        n0.const_data_ptr<X>() + r * dk, m0.const_data_ptr<X>()[r], d_h.const_data_ptr<X>() + r * T * dv,
                        d_C.const_data_ptr<X>() + r * dk * dv, d_n.const_data_ptr<X>() + r * dk,
                        d_m.const_data_ptr<X>()[r], d_q.data_ptr<X>() + r * T * dk, d_k.data_ptr<X>() + r * T * dk,
                        d_v.data_ptr<X>() + r * T * dv, d_i_raw.data_ptr<X>() + r * T, d_log_f.data_ptr<X>() + r * T,
                        d_C0.data_ptr<X>() + r * dk * dv, d_n0.data_ptr<X>() + r * dk, d_m0.data_ptr<X>()[r], T, dk,
                        dv, e, S);
      }
    });
  });
  return {d_q, d_k, d_v, d_i_raw, d_log_f, d_C0, d_n0, d_m0};
}

}  // namespace gatedrnn
