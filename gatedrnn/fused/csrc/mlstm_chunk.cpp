// The inside of the mLSTM's chunkwise form (gatedrnn/xlstm/mlstm.py, _InsideChunk: the
// specification, and what runs where this file is not built) and its hand-written backward,
// one chunk at a time: every L x L matrix of a chunk stays in the cache while all of its
// products and element-wise passes run, where batched products over all chunks would stream
// each one through memory between passes. Per chunk, with rows t and columns j <= t:
//
//   D[t, j] = exp(a_j + neg_M_t)          (a and neg_M in double: their sum is exact)
//   S = (q k^T) * D                       causal (zero above the diagonal)
//   numerator = S v + w0 * (q C0)         (L, dv)
//   qn        = S 1 + w0 * (q n0)         (L)
//
// The backward recomputes S and D from q, k, a and neg_M (one product and one exp per entry)
// instead of keeping them: nothing of size L x L per chunk is saved between the passes.
#include "common.h"

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
           const Tensor& C0, const Tensor& n0) {
  TORCH_CHECK(q.dim() == 3 && v.dim() == 3, "gatedrnn: mlstm_chunk wants q, k (N, L, dk) and v (N, L, dv)");
  const Dims d{q.size(0), q.size(1), q.size(2), v.size(2)};
  TORCH_CHECK(k.sizes() == q.sizes() && v.size(0) == d.N && v.size(1) == d.L,
              "gatedrnn: mlstm_chunk wants k shaped as q and v (N, L, dv)");
  TORCH_CHECK(a.sizes() == at::IntArrayRef({d.N, d.L}) && neg_M.sizes() == a.sizes() && w0.sizes() == a.sizes(),
              "gatedrnn: mlstm_chunk wants a, neg_M and w0 (N, L)");
  TORCH_CHECK(C0.sizes() == at::IntArrayRef({d.N, d.dk, d.dv}) && n0.sizes() == at::IntArrayRef({d.N, d.dk}),
              "gatedrnn: mlstm_chunk wants C0 (N, dk, dv) and n0 (N, dk)");
  TORCH_CHECK(a.scalar_type() == at::kDouble && neg_M.scalar_type() == at::kDouble,
              "gatedrnn: mlstm_chunk wants a and neg_M in float64");
  for (const Tensor* t : {&k, &v, &w0, &C0, &n0}) {
    TORCH_CHECK(t->scalar_type() == q.scalar_type(), "gatedrnn: mlstm_chunk wants q, k, v, w0, C0, n0 of one dtype");
  }
  return d;
}

// S = (q k^T) * D of one chunk, causal; D kept where wanted (the backward's), row sums where wanted.
template <typename T>
void weighted_scores(const T* q, const T* k, const double* a, const double* neg_M, const Dims& d, T* S, T* D,
                     T* row_sums, const at::TensorOptions& opts) {
  const int64_t L = d.L;
  gemm_op<T>(false, true, L, L, d.dk, q, d.dk, k, d.dk, S, L, false, opts);
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

}  // namespace

// q, k (N, L, dk), v (N, L, dv), a, neg_M (N, L) float64, w0 (N, L), C0 (N, dk, dv), n0 (N, dk).
// Returns {numerator (N, L, dv), qn (N, L)}.
std::vector<Tensor> mlstm_chunk_forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                        const Tensor& a_in, const Tensor& neg_M_in, const Tensor& w0_in,
                                        const Tensor& C0_in, const Tensor& n0_in) {
  const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous(), a = a_in.contiguous();
  const Tensor neg_M = neg_M_in.contiguous(), w0 = w0_in.contiguous(), C0 = C0_in.contiguous();
  const Tensor n0 = n0_in.contiguous();
  const Dims d = check(q, k, v, a, neg_M, w0, C0, n0);
  Tensor numerator = at::empty({d.N, d.L, d.dv}, q.options()), qn = at::empty({d.N, d.L}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "mlstm_chunk_forward", [&] {
    using T = scalar_t;
    const auto opts = q.options();
    const int64_t L = d.L, dk = d.dk, dv = d.dv;
    at::parallel_for(0, d.N, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> S(L * L), qw(L * dk);
      for (int64_t c = begin; c < end; ++c) {
        const T* q_c = q.const_data_ptr<T>() + c * L * dk;
        const T* C0_c = C0.const_data_ptr<T>() + c * dk * dv;
        const T* n0_c = n0.const_data_ptr<T>() + c * dk;
        const T* w0_c = w0.const_data_ptr<T>() + c * L;
        T* num_c = numerator.data_ptr<T>() + c * L * dv;
        T* qn_c = qn.data_ptr<T>() + c * L;
        weighted_scores<T>(q_c, k.const_data_ptr<T>() + c * L * dk, a.const_data_ptr<double>() + c * L,
                           neg_M.const_data_ptr<double>() + c * L, d, S.data(), nullptr, qn_c, opts);
        gemm_op<T>(false, false, L, dv, L, S.data(), L, v.const_data_ptr<T>() + c * L * dv, dv, num_c, dv, false,
                   opts);
        for (int64_t t = 0; t < L; ++t) {  // the starting state's read, weighted per row
          const T* __restrict__ q_t = q_c + t * dk;
          T* __restrict__ qw_t = qw.data() + t * dk;
          const T w = w0_c[t];
          for (int64_t i = 0; i < dk; ++i) qw_t[i] = w * q_t[i];
          qn_c[t] += dot(qw_t, n0_c, dk);
        }
        gemm_op<T>(false, false, L, dv, dk, qw.data(), dk, C0_c, dv, num_c, dv, true, opts);
      }
    });
  });
  return {numerator, qn};
}

// The gradients of mlstm_chunk_forward's inputs from d_numerator (N, L, dv) and d_qn (N, L):
// {d_q, d_k, d_v, d_a (float64), d_neg_M (float64), d_w0, d_C0, d_n0}.
std::vector<Tensor> mlstm_chunk_backward(const Tensor& d_num_in, const Tensor& d_qn_in, const Tensor& q_in,
                                         const Tensor& k_in, const Tensor& v_in, const Tensor& a_in,
                                         const Tensor& neg_M_in, const Tensor& w0_in, const Tensor& C0_in,
                                         const Tensor& n0_in) {
  const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous(), a = a_in.contiguous();
  const Tensor neg_M = neg_M_in.contiguous(), w0 = w0_in.contiguous(), C0 = C0_in.contiguous();
  const Tensor n0 = n0_in.contiguous(), d_num = d_num_in.contiguous(), d_qn = d_qn_in.contiguous();
  const Dims d = check(q, k, v, a, neg_M, w0, C0, n0);
  TORCH_CHECK(d_num.sizes() == at::IntArrayRef({d.N, d.L, d.dv}) && d_qn.sizes() == a.sizes() &&
                  d_num.scalar_type() == q.scalar_type() && d_qn.scalar_type() == q.scalar_type(),
              "gatedrnn: mlstm_chunk_backward wants d_numerator (N, L, dv) and d_qn (N, L) of q's dtype");
  Tensor d_q = at::empty_like(q), d_k = at::empty_like(k), d_v = at::empty_like(v), d_w0 = at::empty_like(w0);
  Tensor d_a = at::empty_like(a), d_neg_M = at::empty_like(neg_M), d_C0 = at::empty_like(C0);
  Tensor d_n0 = at::empty_like(n0);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "mlstm_chunk_backward", [&] {
    using T = scalar_t;
    const auto opts = q.options();
    const int64_t L = d.L, dk = d.dk, dv = d.dv;
    at::parallel_for(0, d.N, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> S(L * L), D(L * L), G(L * L), R(L * dk), qw(L * dk), columns(L);
      for (int64_t c = begin; c < end; ++c) {
        const T* q_c = q.const_data_ptr<T>() + c * L * dk;
        const T* k_c = k.const_data_ptr<T>() + c * L * dk;
        const T* v_c = v.const_data_ptr<T>() + c * L * dv;
        const T* C0_c = C0.const_data_ptr<T>() + c * dk * dv;
        const T* n0_c = n0.const_data_ptr<T>() + c * dk;
        const T* w0_c = w0.const_data_ptr<T>() + c * L;
        const T* dn_c = d_num.const_data_ptr<T>() + c * L * dv;
        const T* dqn_c = d_qn.const_data_ptr<T>() + c * L;
        T* d_q_c = d_q.data_ptr<T>() + c * L * dk;
        double* d_a_c = d_a.data_ptr<double>() + c * L;
        double* d_neg_M_c = d_neg_M.data_ptr<double>() + c * L;
        weighted_scores<T>(q_c, k_c, a.const_data_ptr<double>() + c * L, neg_M.const_data_ptr<double>() + c * L, d,
                           S.data(), D.data(), nullptr, opts);
        // G = d S = d_numerator v^T + d_qn 1^T, then d (q k^T) = d S * D; d log D = d S * S
        gemm_op<T>(false, true, L, L, dv, dn_c, dv, v_c, dv, G.data(), L, false, opts);
        scores_backward<T>(G.data(), S.data(), D.data(), dqn_c, L, columns.data(), d_a_c, d_neg_M_c);
        gemm_op<T>(true, false, L, dv, L, S.data(), L, dn_c, dv, d_v.data_ptr<T>() + c * L * dv, dv, false, opts);
        gemm_op<T>(false, false, L, dk, L, G.data(), L, k_c, dk, d_q_c, dk, false, opts);
        gemm_op<T>(true, false, L, dk, L, G.data(), L, q_c, dk, d_k.data_ptr<T>() + c * L * dk, dk, false, opts);
        // the starting state's terms: R = d_numerator C0^T (L, dk) serves d w0 and d q
        gemm_op<T>(false, true, L, dk, dv, dn_c, dv, C0_c, dv, R.data(), dk, false, opts);
        T* __restrict__ d_n0_c = d_n0.data_ptr<T>() + c * dk;
        for (int64_t i = 0; i < dk; ++i) d_n0_c[i] = T(0);
        for (int64_t t = 0; t < L; ++t) {
          const T* __restrict__ q_t = q_c + t * dk;
          const T* __restrict__ R_t = R.data() + t * dk;
          T* __restrict__ d_q_t = d_q_c + t * dk;
          T* __restrict__ qw_t = qw.data() + t * dk;
          const T w = w0_c[t], wdqn = w * dqn_c[t];
          d_w0.data_ptr<T>()[c * L + t] = dot(q_t, R_t, dk) + dqn_c[t] * dot(q_t, n0_c, dk);
          for (int64_t i = 0; i < dk; ++i) {
            d_q_t[i] += w * R_t[i] + wdqn * n0_c[i];
            d_n0_c[i] += wdqn * q_t[i];
            qw_t[i] = w * q_t[i];
          }
        }
        gemm_op<T>(true, false, dk, dv, L, qw.data(), dk, dn_c, dv, d_C0.data_ptr<T>() + c * dk * dv, dv, false, opts);
      }
    });
  });
  return {d_q, d_k, d_v, d_a, d_neg_M, d_w0, d_C0, d_n0};
}

}  // namespace gatedrnn
