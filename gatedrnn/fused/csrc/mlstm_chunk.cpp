// The inside of the mLSTM's chunkwise form (gatedrnn/xlstm/mlstm.py, chunkwise_form: the batched
// Python there is the specification, and what runs where this file is not built) and its
// hand-written backward,
// one chunk at a time: every L x L matrix of a chunk stays in the cache while all of its
// products and element-wise passes run, where batched products over all chunks would stream
// each one through memory between passes. Per chunk, with rows t and columns j <= t:
//
//   D[t, j] = exp(a_j + neg_M_t)          (a and neg_M in double: their sum is exact)
//   S = (q k^T) * D                       causal (zero above the diagonal)
//   numerator = S v + w0 * (q C0)         (L, dv): C_t^T q_t
//   qn        = S 1 + w0 * (q n0)         (L): n_t^T q_t
//   h~        = numerator / (max(|qn|, floor) + eps)     floor = e^{-m_t}
//
// The backward recomputes S and D from q, k, a and neg_M (one product and one exp per entry)
// instead of keeping them: nothing of size L x L per chunk is saved between the passes. It
// keeps h~ and qn, and takes C^T q = h~ (max(|qn|, floor) + eps) from them.
//
// Before that, what each chunk writes by its end, (w k)^T v and (w k)^T 1 (mlstm_chunk_write_*),
// from which the caller takes the states between chunks.
#include "common.h"
#include "tile_gemm.h"

namespace gatedrnn {
namespace {

// exp of a log weight (<= 0 on and below the diagonal; -inf for a column that writes nothing),
// summed in double and rounded to T: exact zero below float's range.
template <typename T>
inline T weight(double log_w) {
  if constexpr (std::is_same_v<T, float>) {
    const float x = static_cast<float>(log_w);
    return x < -87.0f ? 0.0f : exp_vectorisable(x);
  } else {
    return std::exp(log_w);
  }
}

template <typename T>
T dot(const T* __restrict__ x, const T* __restrict__ y, int64_t n) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

struct Dims {
  int64_t N, L, dk, dv;
};

Dims check(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& a, const Tensor& neg_M, const Tensor& w0,
           const Tensor& C0, const Tensor& n0, const Tensor& floor) {
  TORCH_CHECK(q.dim() == 3 && v.dim() == 3, "gatedrnn: mlstm_chunk wants q, k (N, L, dk) and v (N, L, dv)");
  const Dims d{q.size(0), q.size(1), q.size(2), v.size(2)};
  TORCH_CHECK(k.sizes() == q.sizes() && v.size(0) == d.N && v.size(1) == d.L,
              "gatedrnn: mlstm_chunk wants k shaped as q and v (N, L, dv)");
  TORCH_CHECK(a.sizes() == at::IntArrayRef({d.N, d.L}) && neg_M.sizes() == a.sizes() && w0.sizes() == a.sizes() &&
                  floor.sizes() == a.sizes(),
              "gatedrnn: mlstm_chunk wants a, neg_M, w0 and floor (N, L)");
  TORCH_CHECK(C0.sizes() == at::IntArrayRef({d.N, d.dk, d.dv}) && n0.sizes() == at::IntArrayRef({d.N, d.dk}),
              "gatedrnn: mlstm_chunk wants C0 (N, dk, dv) and n0 (N, dk)");
  TORCH_CHECK(a.scalar_type() == at::kDouble && neg_M.scalar_type() == at::kDouble,
              "gatedrnn: mlstm_chunk wants a and neg_M in float64");
  for (const Tensor* t : {&k, &v, &w0, &C0, &n0, &floor}) {
    TORCH_CHECK(t->scalar_type() == q.scalar_type(),
                "gatedrnn: mlstm_chunk wants q, k, v, w0, C0, n0 and floor of one dtype");
  }
  return d;
}

// op(A) @ op(B) of one chunk's matrices (row-major, as gemm_op): float32 through tile_gemm
// where it applies (op(B) = B: a transposed B would need a copy, which cost more than the tile
// product saved, so those go to BLAS, which packs B anyway), else BLAS.
template <typename T>
void chunk_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                int64_t ldb, T* C, int64_t ldc, bool accumulate, const at::TensorOptions& opts) {
  if constexpr (std::is_same_v<T, float>) {
    if (!trans_b && tile_gemm(trans_a, M, N, K, A, lda, B, ldb, C, ldc, accumulate)) return;
  }
  gemm_op<T>(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate, opts);
}

// One thread's working memory over its chunks (every buffer any of the kernels below uses), and
// its products (chunk_gemm).
template <typename T>
struct ChunkWork {
  ChunkWork(const at::TensorOptions& opts, const Dims& d)
      : S(d.L * d.L), D(d.L * d.L), G(d.L * d.L), R(d.L * d.dk), qw(d.L * d.dk), dn(d.L * d.dv), dqn(d.L),
        columns(d.L), opts_(opts) {}
  void mm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
          int64_t ldb, T* C, int64_t ldc, bool accumulate) {
    chunk_gemm<T>(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate, opts_);
  }
  std::vector<T> S, D, G, R, qw, dn, dqn, columns;

 private:
  at::TensorOptions opts_;
};

// body(c, work) for every chunk c < d.N, the chunks split over threads, each thread with its own work.
template <typename T, typename Body>
void for_each_chunk(const Dims& d, const at::TensorOptions& opts, const Body& body) {
  at::parallel_for(0, d.N, 1, [&](int64_t begin, int64_t end) {
    ChunkWork<T> work(opts, d);
    for (int64_t c = begin; c < end; ++c) body(c, work);
  });
}

// S = (q k^T) * D of one chunk, causal; D kept where wanted (the backward's), row sums where wanted.
template <typename T>
void weighted_scores(const T* q, const T* k, const double* a, const double* neg_M, const Dims& d, T* S, T* D,
                     T* row_sums, ChunkWork<T>& work) {
  const int64_t L = d.L;
  work.mm(false, true, L, L, d.dk, q, d.dk, k, d.dk, S, L, false);
  for (int64_t t = 0; t < L; ++t) {
    T* __restrict__ S_t = S + t * L;
    T* __restrict__ D_t = D == nullptr ? nullptr : D + t * L;
    const double nm = neg_M[t];
    T sum = 0;
    if (D_t == nullptr) {
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j <= t; ++j) {
        const T s = S_t[j] * weight<T>(a[j] + nm);
        S_t[j] = s;
        sum += s;
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j <= t; ++j) {
        const T w = weight<T>(a[j] + nm);
        D_t[j] = w;
        S_t[j] *= w;
      }
      for (int64_t j = t + 1; j < L; ++j) D_t[j] = T(0);
    }
    for (int64_t j = t + 1; j < L; ++j) S_t[j] = T(0);
    if (row_sums != nullptr) row_sums[t] = sum;
  }
}

// Through S = (q k^T) * exp(log D), causal: from G = d S (without d_qn's broadcast, added
// here per row), G becomes d (q k^T) = d S * D, and d log D = d S * S gives d a (its column
// sums) and d neg_M (its row sums). columns: L scratch values.
template <typename T>
void scores_backward(T* G, const T* S, const T* D, const T* d_qn, int64_t L, T* columns, double* d_a,
                     double* d_neg_M) {
  for (int64_t j = 0; j < L; ++j) columns[j] = T(0);
  for (int64_t t = 0; t < L; ++t) {
    T* __restrict__ G_t = G + t * L;
    const T* __restrict__ S_t = S + t * L;
    const T* __restrict__ D_t = D + t * L;
    T* __restrict__ col = columns;
    const T dqn = d_qn[t];
    T row = 0;
#pragma omp simd reduction(+ : row)
    for (int64_t j = 0; j <= t; ++j) {
      const T ds = G_t[j] + dqn;
      const T d_log = ds * S_t[j];
      col[j] += d_log;
      row += d_log;
      G_t[j] = ds * D_t[j];
    }
    for (int64_t j = t + 1; j < L; ++j) G_t[j] = T(0);
    d_neg_M[t] = row;
  }
  for (int64_t j = 0; j < L; ++j) d_a[j] = columns[j];
}

// kw = w k (one step's row) and n += kw.
template <typename T>
void scale_and_add(T* __restrict__ kw, const T* __restrict__ k, T w, T* __restrict__ n, int64_t dk) {
#pragma omp simd
  for (int64_t i = 0; i < dk; ++i) {
    kw[i] = w * k[i];
    n[i] += kw[i];
  }
}

// One step's row of the writing's backward: g (in: d (w k) less d_n; out: d k), d_n added;
// kw = w k for the product that gives d v; returns d w = k . d (w k).
template <typename T>
T scale_grad(T* __restrict__ g, const T* __restrict__ k, const T* __restrict__ d_n, T w, T* __restrict__ kw,
             int64_t dk) {
  T d_w = 0;
#pragma omp simd reduction(+ : d_w)
  for (int64_t i = 0; i < dk; ++i) {
    const T d_kw = g[i] + d_n[i];
    d_w += k[i] * d_kw;
    g[i] = w * d_kw;
    kw[i] = w * k[i];
  }
  return d_w;
}

// qw = w q (one row) and returns qw . n0: the starting state's part of n^T q.
template <typename T>
T scale_and_dot(T* __restrict__ qw, const T* __restrict__ q, T w, const T* __restrict__ n0, int64_t dk) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < dk; ++i) {
    qw[i] = w * q[i];
    sum += qw[i] * n0[i];
  }
  return sum;
}

// One row through h~ = num / (max(|qn|, floor) + eps), given h~: writes d num (dv values) and
// d qn, returns d floor.
template <typename T>
T read_backward(const T* __restrict__ d_h, const T* __restrict__ h, T qn, T floor, T eps, T* __restrict__ d_num,
                T& d_qn, int64_t dv) {
  const T size = std::abs(qn), denominator = std::max(size, floor) + eps, r = T(1) / denominator;
  T d_h_dot_h = 0;
#pragma omp simd reduction(+ : d_h_dot_h)
  for (int64_t i = 0; i < dv; ++i) {
    d_num[i] = d_h[i] * r;
    d_h_dot_h += d_h[i] * h[i];
  }
  const T d_denominator = -d_h_dot_h * r;  // d (1 / x) = -d x / x^2, and num = h x
  const T to_qn = size > floor ? T(1) : size < floor ? T(0) : T(0.5);
  d_qn = to_qn * d_denominator * (qn > 0 ? T(1) : qn < 0 ? T(-1) : T(0));
  return (T(1) - to_qn) * d_denominator;
}

// One row of the starting state's backward, with R = d num C0^T: d q += w R + w d_qn n0,
// d n0 += w d_qn q, qw = w q (for d C0 = qw^T d num); returns d w0 = q . R + d_qn (q . n0).
template <typename T>
T start_backward(const T* __restrict__ q, const T* __restrict__ R, const T* __restrict__ n0, T w, T d_qn,
                 T* __restrict__ d_q, T* __restrict__ d_n0, T* __restrict__ qw, int64_t dk) {
  const T w_dqn = w * d_qn;
  T qR = 0, qn0 = 0;
#pragma omp simd reduction(+ : qR, qn0)
  for (int64_t i = 0; i < dk; ++i) {
    qR += q[i] * R[i];
    qn0 += q[i] * n0[i];
    d_q[i] += w * R[i] + w_dqn * n0[i];
    d_n0[i] += w_dqn * q[i];
    qw[i] = w * q[i];
  }
  return qR + d_qn * qn0;
}

}  // namespace

// q, k (N, L, dk), v (N, L, dv), a, neg_M (N, L) float64, w0 (N, L), C0 (N, dk, dv), n0 (N, dk),
// floor (N, L) (e^{-m_t}), eps. Returns {h (N, L, dv), qn (N, L)}.
std::vector<Tensor> mlstm_chunk_forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                        const Tensor& a_in, const Tensor& neg_M_in, const Tensor& w0_in,
                                        const Tensor& C0_in, const Tensor& n0_in, const Tensor& floor_in,
                                        double eps) {
  const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous(), a = a_in.contiguous();
  const Tensor neg_M = neg_M_in.contiguous(), w0 = w0_in.contiguous(), C0 = C0_in.contiguous();
  const Tensor n0 = n0_in.contiguous(), floor = floor_in.contiguous();
  const Dims d = check(q, k, v, a, neg_M, w0, C0, n0, floor);
  Tensor h = at::empty({d.N, d.L, d.dv}, q.options()), qn = at::empty({d.N, d.L}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "mlstm_chunk_forward", [&] {
    using T = scalar_t;
    const auto opts = q.options();
    const int64_t L = d.L, dk = d.dk, dv = d.dv;
    for_each_chunk<T>(d, opts, [&](int64_t c, ChunkWork<T>& work) {
      const T* q_c = q.const_data_ptr<T>() + c * L * dk;
      const T* n0_c = n0.const_data_ptr<T>() + c * dk;
      const T* w0_c = w0.const_data_ptr<T>() + c * L;
      const T* floor_c = floor.const_data_ptr<T>() + c * L;
      T* h_c = h.data_ptr<T>() + c * L * dv;
      T* qn_c = qn.data_ptr<T>() + c * L;
      weighted_scores<T>(q_c, k.const_data_ptr<T>() + c * L * dk, a.const_data_ptr<double>() + c * L,
                         neg_M.const_data_ptr<double>() + c * L, d, work.S.data(), nullptr, qn_c, work);
      work.mm(false, false, L, dv, L, work.S.data(), L, v.const_data_ptr<T>() + c * L * dv, dv, h_c, dv, false);
      for (int64_t t = 0; t < L; ++t) {  // the starting state's read, weighted per row
        qn_c[t] += scale_and_dot<T>(work.qw.data() + t * dk, q_c + t * dk, w0_c[t], n0_c, dk);
      }
      // C^T q for every row: the chunk's own steps' part plus the starting state's
      work.mm(false, false, L, dv, dk, work.qw.data(), dk, C0.const_data_ptr<T>() + c * dk * dv, dv, h_c, dv, true);
      for (int64_t t = 0; t < L; ++t) {  // h~ = C^T q / (max(|n^T q|, e^{-m}) + eps)
        const T r = T(1) / (std::max(std::abs(qn_c[t]), floor_c[t]) + T(eps));
        T* __restrict__ h_t = h_c + t * dv;
        for (int64_t i = 0; i < dv; ++i) h_t[i] *= r;
      }
    });
  });
  return {h, qn};
}

// The gradients of mlstm_chunk_forward's inputs from d_h (N, L, dv), given its outputs h and
// qn: {d_q, d_k, d_v, d_a (float64), d_neg_M (float64), d_w0, d_C0, d_n0, d_floor}. Through
// the read, C^T q = h (max(|n^T q|, e^{-m}) + eps); the maximum's gradient goes to the larger
// side, half to each on a tie (as torch.maximum's).
std::vector<Tensor> mlstm_chunk_backward(const Tensor& d_h_in, const Tensor& h_in, const Tensor& qn_in,
                                         const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                         const Tensor& a_in, const Tensor& neg_M_in, const Tensor& w0_in,
                                         const Tensor& C0_in, const Tensor& n0_in, const Tensor& floor_in,
                                         double eps) {
  const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous(), a = a_in.contiguous();
  const Tensor neg_M = neg_M_in.contiguous(), w0 = w0_in.contiguous(), C0 = C0_in.contiguous();
  const Tensor n0 = n0_in.contiguous(), floor = floor_in.contiguous(), d_h = d_h_in.contiguous();
  const Tensor h = h_in.contiguous(), qn = qn_in.contiguous();
  const Dims d = check(q, k, v, a, neg_M, w0, C0, n0, floor);
  for (const Tensor* t : {&d_h, &h}) {
    TORCH_CHECK(t->sizes() == at::IntArrayRef({d.N, d.L, d.dv}) && t->scalar_type() == q.scalar_type(),
                "gatedrnn: mlstm_chunk_backward wants d_h and h (N, L, dv) of q's dtype");
  }
  TORCH_CHECK(qn.sizes() == a.sizes() && qn.scalar_type() == q.scalar_type(),
              "gatedrnn: mlstm_chunk_backward wants qn (N, L) of q's dtype");
  Tensor d_q = at::empty_like(q), d_k = at::empty_like(k), d_v = at::empty_like(v), d_w0 = at::empty_like(w0);
  Tensor d_a = at::empty_like(a), d_neg_M = at::empty_like(neg_M), d_C0 = at::empty_like(C0);
  Tensor d_n0 = at::empty_like(n0), d_floor = at::empty_like(floor);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "mlstm_chunk_backward", [&] {
    using T = scalar_t;
    const auto opts = q.options();
    const int64_t L = d.L, dk = d.dk, dv = d.dv;
    for_each_chunk<T>(d, opts, [&](int64_t c, ChunkWork<T>& work) {
      const T* q_c = q.const_data_ptr<T>() + c * L * dk;
      const T* k_c = k.const_data_ptr<T>() + c * L * dk;
      const T* v_c = v.const_data_ptr<T>() + c * L * dv;
      const T* C0_c = C0.const_data_ptr<T>() + c * dk * dv;
      const T* n0_c = n0.const_data_ptr<T>() + c * dk;
      const T* w0_c = w0.const_data_ptr<T>() + c * L;
      T* d_q_c = d_q.data_ptr<T>() + c * L * dk;
      T* d_w0_c = d_w0.data_ptr<T>() + c * L;
      // through the read: dn = d C^T q (L, dv), dqn = d n^T q (L), d_floor
      for (int64_t t = 0; t < L; ++t) {
        const int64_t at = c * L + t;
        d_floor.data_ptr<T>()[at] =
            read_backward<T>(d_h.const_data_ptr<T>() + at * dv, h.const_data_ptr<T>() + at * dv,
                             qn.const_data_ptr<T>()[at], floor.const_data_ptr<T>()[at], T(eps), work.dn.data() + t * dv,
                             work.dqn[t], dv);
      }
      weighted_scores<T>(q_c, k_c, a.const_data_ptr<double>() + c * L, neg_M.const_data_ptr<double>() + c * L, d,
                         work.S.data(), work.D.data(), nullptr, work);
      // G = d S = dn v^T + dqn 1^T, then d (q k^T) = d S * D; d log D = d S * S
      work.mm(false, true, L, L, dv, work.dn.data(), dv, v_c, dv, work.G.data(), L, false);
      scores_backward<T>(work.G.data(), work.S.data(), work.D.data(), work.dqn.data(), L, work.columns.data(),
                         d_a.data_ptr<double>() + c * L, d_neg_M.data_ptr<double>() + c * L);
      work.mm(true, false, L, dv, L, work.S.data(), L, work.dn.data(), dv, d_v.data_ptr<T>() + c * L * dv, dv, false);
      work.mm(false, false, L, dk, L, work.G.data(), L, k_c, dk, d_q_c, dk, false);
      work.mm(true, false, L, dk, L, work.G.data(), L, q_c, dk, d_k.data_ptr<T>() + c * L * dk, dk, false);
      // the starting state's terms: R = dn C0^T (L, dk) serves d w0 and d q
      work.mm(false, true, L, dk, dv, work.dn.data(), dv, C0_c, dv, work.R.data(), dk, false);
      T* __restrict__ d_n0_c = d_n0.data_ptr<T>() + c * dk;
      for (int64_t i = 0; i < dk; ++i) d_n0_c[i] = T(0);
      for (int64_t t = 0; t < L; ++t) {
        d_w0_c[t] = start_backward<T>(q_c + t * dk, work.R.data() + t * dk, n0_c, w0_c[t], work.dqn[t], d_q_c + t * dk,
                                      d_n0_c, work.qw.data() + t * dk, dk);
      }
      work.mm(true, false, dk, dv, L, work.qw.data(), dk, work.dn.data(), dv, d_C0.data_ptr<T>() + c * dk * dv, dv,
              false);
    });
  });
  return {d_q, d_k, d_v, d_a, d_neg_M, d_w0, d_C0, d_n0, d_floor};
}

}  // namespace gatedrnn

namespace gatedrnn {

// What each chunk writes into the memory by its end, in the scale its caller chose:
// written_C = (w * k)^T v (dk, dv) and written_n = (w * k)^T 1 (dk), w (L) a weight per step.
// k (N, L, dk), v (N, L, dv), w (N, L). Returns {written_C (N, dk, dv), written_n (N, dk)}.
std::vector<Tensor> mlstm_chunk_write_forward(const Tensor& k_in, const Tensor& v_in, const Tensor& w_in) {
  const Tensor k = k_in.contiguous(), v = v_in.contiguous(), w = w_in.contiguous();
  TORCH_CHECK(k.dim() == 3 && v.dim() == 3 && v.size(0) == k.size(0) && v.size(1) == k.size(1) &&
                  w.sizes() == k.sizes().slice(0, 2),
              "gatedrnn: mlstm_chunk_write wants k (N, L, dk), v (N, L, dv) and w (N, L)");
  TORCH_CHECK(v.scalar_type() == k.scalar_type() && w.scalar_type() == k.scalar_type(),
              "gatedrnn: mlstm_chunk_write wants k, v and w of one dtype");
  const int64_t N = k.size(0), L = k.size(1), dk = k.size(2), dv = v.size(2);
  Tensor written_C = at::empty({N, dk, dv}, k.options()), written_n = at::empty({N, dk}, k.options());
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "mlstm_chunk_write_forward", [&] {
    using T = scalar_t;
    const auto opts = k.options();
    for_each_chunk<T>(Dims{N, L, dk, dv}, opts, [&](int64_t c, ChunkWork<T>& work) {
      const T* k_c = k.const_data_ptr<T>() + c * L * dk;
      const T* w_c = w.const_data_ptr<T>() + c * L;
      T* n_c = written_n.data_ptr<T>() + c * dk;
      for (int64_t i = 0; i < dk; ++i) n_c[i] = T(0);
      for (int64_t j = 0; j < L; ++j) scale_and_add<T>(work.qw.data() + j * dk, k_c + j * dk, w_c[j], n_c, dk);
      work.mm(true, false, dk, dv, L, work.qw.data(), dk, v.const_data_ptr<T>() + c * L * dv, dv,
              written_C.data_ptr<T>() + c * dk * dv, dv, false);
    });
  });
  return {written_C, written_n};
}

// The gradients of mlstm_chunk_write_forward's inputs from d_written_C (N, dk, dv) and
// d_written_n (N, dk): {d_k, d_v, d_w}.
std::vector<Tensor> mlstm_chunk_write_backward(const Tensor& d_C_in, const Tensor& d_n_in, const Tensor& k_in,
                                               const Tensor& v_in, const Tensor& w_in) {
  const Tensor k = k_in.contiguous(), v = v_in.contiguous(), w = w_in.contiguous();
  const Tensor d_C = d_C_in.contiguous(), d_n = d_n_in.contiguous();
  const int64_t N = k.size(0), L = k.size(1), dk = k.size(2), dv = v.size(2);
  TORCH_CHECK(d_C.sizes() == at::IntArrayRef({N, dk, dv}) && d_n.sizes() == at::IntArrayRef({N, dk}) &&
                  d_C.scalar_type() == k.scalar_type() && d_n.scalar_type() == k.scalar_type(),
              "gatedrnn: mlstm_chunk_write_backward wants d_written_C (N, dk, dv) and d_written_n (N, dk) "
              "of k's dtype");
  Tensor d_k = at::empty_like(k), d_v = at::empty_like(v), d_w = at::empty_like(w);
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "mlstm_chunk_write_backward", [&] {
    using T = scalar_t;
    const auto opts = k.options();
    for_each_chunk<T>(Dims{N, L, dk, dv}, opts, [&](int64_t c, ChunkWork<T>& work) {
      const T* k_c = k.const_data_ptr<T>() + c * L * dk;
      const T* w_c = w.const_data_ptr<T>() + c * L;
      const T* dC_c = d_C.const_data_ptr<T>() + c * dk * dv;
      const T* dn_c = d_n.const_data_ptr<T>() + c * dk;
      T* d_k_c = d_k.data_ptr<T>() + c * L * dk;
      T* d_w_c = d_w.data_ptr<T>() + c * L;
      // d (w k) = v d_C^T + 1 d_n^T, into d_k; then d w = k . d (w k) and d k = w d (w k), per step
      work.mm(false, true, L, dk, dv, v.const_data_ptr<T>() + c * L * dv, dv, dC_c, dv, d_k_c, dk, false);
      for (int64_t j = 0; j < L; ++j) {
        d_w_c[j] = scale_grad<T>(d_k_c + j * dk, k_c + j * dk, dn_c, w_c[j], work.qw.data() + j * dk, dk);
      }
      work.mm(false, false, L, dv, dk, work.qw.data(), dk, dC_c, dv, d_v.data_ptr<T>() + c * L * dv, dv, false);
    });
  });
  return {d_k, d_v, d_w};
}

}  // namespace gatedrnn
