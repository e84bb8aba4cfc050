// What the three native time loops share: activations the compiler can vectorise, the
// per-step GEMM, and the bookkeeping of variable lengths.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

#include "lowp.h"

namespace gatedrnn {

using at::Tensor;
using std::optional;

// Subnormal floats flushed to zero on the calling thread while the guard lives (the MXCSR's
// FTZ and DAZ bits on x86; nothing elsewhere), restored after. Gradients that vanish through
// a long sequence pass through the subnormal range (below 1.2e-38 in float32), where each
// operation takes a microcode assist: a GRU backward at T = 600 ran 3.4x slower at
// initialization. Values that small carry nothing a model can learn from; TensorFlow flushes
// them on CPU for the same reason (its ScopedFlushDenormal).
class FlushDenormals {
 public:
#if defined(__SSE__) || defined(__x86_64__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFlushToZero | kDenormalsAreZero); }
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned int kFlushToZero = 0x8000, kDenormalsAreZero = 0x0040;
  unsigned int saved_;
#endif
};

// The dimensions (T, B) of a (T, B, n) tensor, for sums over every step and row. Named, not a
// brace list: torch >= 2.11 overloads Tensor::sum so that sum({0, 1}) is ambiguous.
inline constexpr int64_t kStepsAndRowsDims[] = {0, 1};
inline const at::IntArrayRef kStepsAndRows(kStepsAndRowsDims);

// exp for float without a library call, so that loops over it vectorise: Cody-Waite range
// reduction x = n ln2 + r, a degree-6 polynomial for exp(r) (the cephes coefficients), and
// 2^n put in the exponent bits. Relative error about 2 ulp on [-87, 88]; inputs beyond are
// clamped (exp(88) ~ 1.7e38 stands for overflow, which the callers only divide by). The
// comparisons are false for NaN, so a NaN stays NaN.
inline float exp_vectorisable(float x) {
  x = x > 88.0f ? 88.0f : x;
  x = x < -87.0f ? -87.0f : x;
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t x) {
  return scalar_t(1) / (scalar_t(1) + std::exp(-x));
}
template <>
inline float sigmoid<float>(float x) {
  return 1.0f / (1.0f + exp_vectorisable(-x));
}

template <typename scalar_t>
inline scalar_t tanh_(scalar_t x) {
  return std::tanh(x);
}
template <>
inline float tanh_<float>(float x) {
  // tanh x = 1 - 2 / (exp(2x) + 1): exact at both tails, absolute error ~1e-7 near 0
  return 1.0f - 2.0f / (exp_vectorisable(2.0f * x) + 1.0f);
}

// Layer normalization of n values (Ba et al. 2016, eps as torch's layer_norm): writes
// y = (v - mean) / sqrt(var + eps) to y and returns 1 / sqrt(var + eps).
// The sums are `omp simd` reductions (honoured under -fopenmp-simd and -fopenmp alike):
// reassociated into vector lanes, which a plain sum loop does not allow the compiler to do.
template <typename scalar_t>
inline std::pair<scalar_t, scalar_t> mean_and_rstd(const scalar_t* __restrict__ v, int64_t n) {
  scalar_t mean = 0, var = 0;
#pragma omp simd reduction(+ : mean)
  for (int64_t k = 0; k < n; ++k) mean += v[k];
  mean /= n;
#pragma omp simd reduction(+ : var)
  for (int64_t k = 0; k < n; ++k) var += (v[k] - mean) * (v[k] - mean);
  return {mean, scalar_t(1) / std::sqrt(var / n + scalar_t(1e-5))};
}

template <typename scalar_t>
inline scalar_t normalize(const scalar_t* __restrict__ v, scalar_t* __restrict__ y, int64_t n) {
  const auto [mean, rstd] = mean_and_rstd(v, n);
  for (int64_t k = 0; k < n; ++k) y[k] = (v[k] - mean) * rstd;
  return rstd;
}

// y = γ LN(v) + β (β may be null): a layer norm with its gain and bias, in one row.
template <typename scalar_t>
inline void layer_norm_row(const scalar_t* __restrict__ v, const scalar_t* __restrict__ gain,
                           const scalar_t* __restrict__ bias, scalar_t* __restrict__ y, int64_t n) {
  const auto [mean, rstd] = mean_and_rstd(v, n);
  if (bias) {
    for (int64_t k = 0; k < n; ++k) y[k] = gain[k] * ((v[k] - mean) * rstd) + bias[k];
  } else {
    for (int64_t k = 0; k < n; ++k) y[k] = gain[k] * ((v[k] - mean) * rstd);
  }
}

// The gradient of v from that of y = normalize(v), in place in d (d_y in, d_v out):
// d_v = rstd (d_y - mean(d_y) - y mean(d_y y)).
template <typename scalar_t>
inline void normalize_backward(scalar_t* __restrict__ d, const scalar_t* __restrict__ y, scalar_t rstd, int64_t n) {
  scalar_t sum = 0, dot = 0;
#pragma omp simd reduction(+ : sum, dot)
  for (int64_t k = 0; k < n; ++k) {
    sum += d[k];
    dot += d[k] * y[k];
  }
  sum /= n;
  dot /= n;
  for (int64_t k = 0; k < n; ++k) d[k] = rstd * (d[k] - sum - y[k] * dot);
}

// BLAS as libtorch links it (MKL, OpenBLAS, ...): its Fortran gemm entry points, declared weak,
// so that a torch build which does not export them leaves them null and the products go
// through at::mm instead.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
}

// Whether the products may go straight to BLAS (on by default; tests turn it off to run the
// at::mm path on the same build).
inline bool& direct_blas_enabled() {
  static bool enabled = true;
  return enabled;
}

// Whether libtorch exports the BLAS entry points the direct path calls.
inline bool direct_blas_available() { return sgemm_ != nullptr && dgemm_ != nullptr; }

// out (M, N) = op(a) @ op(b), plus out when accumulate; row-major, each given by its first
// element and row stride, op(x) = x^T where its flag is set (a stored (K, M), b stored (N, K)).
// Straight to BLAS where libtorch exports it: a per-step product then skips the dispatcher and
// the tensors around it (~2 us a call, most of a small step).
template <typename T>
bool blas_gemm_op(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* a, int64_t lda, const T* b,
                  int64_t ldb, T* out, int64_t ldo, bool accumulate) {
  if (!direct_blas_enabled()) return false;
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  if (M > kMax || N > kMax || K > kMax || lda > kMax || ldb > kMax || ldo > kMax) return false;
  if (M == 0 || N == 0) return true;
  // row-major out = op(a) op(b) is column-major out' (N, M) = op(b)' (N, K) op(a)' (K, M): a
  // row-major matrix read column-major is its transpose, so each flag passes through as it is
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(std::max<int64_t>(ldb, std::max<int64_t>(trans_b ? K : N, 1)));
  const int lb = static_cast<int>(std::max<int64_t>(lda, std::max<int64_t>(trans_a ? M : K, 1)));
  const int lc = static_cast<int>(std::max<int64_t>(ldo, std::max<int64_t>(N, 1)));
  const char* op_b = trans_b ? "T" : "N";
  const char* op_a = trans_a ? "T" : "N";
  const T alpha = 1, beta = accumulate ? 1 : 0;
  if constexpr (std::is_same_v<T, float>) {
    if (sgemm_ == nullptr) return false;
    sgemm_(op_b, op_a, &m, &n, &k, &alpha, b, &la, a, &lb, &beta, out, &lc);
    return true;
  } else if constexpr (std::is_same_v<T, double>) {
    if (dgemm_ == nullptr) return false;
    dgemm_(op_b, op_a, &m, &n, &k, &alpha, b, &la, a, &lb, &beta, out, &lc);
    return true;
  }
  return false;
}

// out (M, N) = a (M, K) @ b (K, N), plus out when accumulate (blas_gemm_op without transposes).
template <typename T>
bool blas_gemm(int64_t M, int64_t N, int64_t K, const T* a, int64_t lda, const T* b, int64_t ldb, T* out,
               int64_t ldo, bool accumulate) {
  return blas_gemm_op(false, false, M, N, K, a, lda, b, ldb, out, ldo, accumulate);
}

// blas_gemm_op, or at::mm on tensors over the same memory where the direct path is off or absent.
template <typename T>
void gemm_op(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* a, int64_t lda, const T* b,
             int64_t ldb, T* out, int64_t ldo, bool accumulate, const at::TensorOptions& opts) {
  if (blas_gemm_op(trans_a, trans_b, M, N, K, a, lda, b, ldb, out, ldo, accumulate)) return;
  Tensor ta = at::from_blob(const_cast<T*>(a), {trans_a ? K : M, trans_a ? M : K}, {lda, 1}, opts);
  Tensor tb = at::from_blob(const_cast<T*>(b), {trans_b ? N : K, trans_b ? K : N}, {ldb, 1}, opts);
  if (trans_a) ta = ta.t();
  if (trans_b) tb = tb.t();
  Tensor to = at::from_blob(out, {M, N}, {ldo, 1}, opts);
  if (accumulate) {
    to.addmm_(ta, tb);
  } else {
    at::mm_out(to, ta, tb);
  }
}

// out (M, N) = a (M, K) @ b (K, N), plus out when accumulate (gemm_op without transposes).
template <typename T>
void gemm_rows(int64_t M, int64_t N, int64_t K, const T* a, int64_t lda, const T* b, int64_t ldb, T* out,
               int64_t ldo, bool accumulate, const at::TensorOptions& opts) {
  gemm_op(false, false, M, N, K, a, lda, b, ldb, out, ldo, accumulate, opts);
}

// Valid steps: step t of row b is valid when t < lengths[b] (every step when no lengths).
struct Lengths {
  const int64_t* data = nullptr;
  explicit Lengths(const optional<Tensor>& lengths) {
    if (lengths.has_value() && lengths->defined()) data = lengths->data_ptr<int64_t>();
  }
  bool any() const { return data != nullptr; }
  bool valid(int64_t t, int64_t b) const { return data == nullptr || t < data[b]; }
};

// f(b0, b1) over blocks of B rows, one block per thread, once a step holds enough work
// (multiply-adds) to share; else f(0, B) on the calling thread. The loops hand it a whole time
// loop: row b of a step needs only row b of the step before, so each block runs every step of
// its rows, its own products (BLAS called inside a parallel region runs on its one thread) and
// gate math, with no barrier between steps. Measured here, one thread on half the rows took
// 78 µs where two threads on all of them took 86 (64 x 256 x 1024), 2.2 against 3.7
// (16 x 64 x 256). With a parallel region per step, sharing steps below 2^17 multiply-adds
// cost more than it saved (the tanh RNN at (16, 500, 32, 64) took 2.0 ms split against 1.3);
// with one region per call, split against unsplit: 0.94-0.95 for that RNN (inference,
// training), 0.85 for the GRU at (8, 200, 32, 64), 0.94-0.95 at (16, 100, 16, 16), 1.00 for the
// RNN at (4, 200, 16, 32) (6,144 a step), so the bound is now 2^13. Tests lower it to 0 to run
// the split at the smallest sizes.
inline int64_t& min_shared_work() {
  static int64_t work = int64_t(1) << 13;
  return work;
}

template <typename F>
inline void for_row_blocks(int64_t B, int64_t work, const F& f) {
  const int64_t threads = at::get_num_threads();
  if (threads <= 1 || B < 2 || work < min_shared_work() || at::in_parallel_region()) {
    f(int64_t(0), B);
    return;
  }
  at::parallel_for(0, B, (B + threads - 1) / threads, [&](int64_t b0, int64_t b1) { f(b0, b1); });
}

// Rows of a (B, n) step run in parallel once a step holds enough work to share.
template <typename F>
inline void for_rows(int64_t B, int64_t row_size, const F& f) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, row_size));
  at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) f(b);
  });
}

inline Tensor empty0(const Tensor& like) { return at::empty({0}, like.options()); }

// Rows r0..r1 of gain_and_bias_grads, added into dot and sum.
template <typename T>
void add_column_sums(const T* __restrict__ g, int64_t ldg, const T* __restrict__ y, int64_t ldy, int64_t r0,
                     int64_t r1, int64_t n, double* __restrict__ dot, double* __restrict__ sum) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* __restrict__ gr = g + r * ldg;
    const T* __restrict__ yr = y + r * ldy;
    for (int64_t k = 0; k < n; ++k) {
      dot[k] += double(gr[k]) * double(yr[k]);
      sum[k] += double(gr[k]);
    }
  }
}

// The gradients of a layer norm's gain and of a bias added after it, from the per-row
// gradient g (T, B, n) of γ LN(v) + β and the normalized values, columns offset..offset + n of
// y (T, B, m): {Σ g ⊙ LN(v), Σ g} over every step and row. One pass over both, each thread a
// block of rows summed in double, the blocks added after; as tensor ops (a product, then two
// sums) it read and wrote three times as much (1.1 ms a layer-norm LSTM backward at
// (16, 500, 32, 64)).
inline std::vector<Tensor> gain_and_bias_grads(const Tensor& g_in, const Tensor& y, int64_t offset) {
  const Tensor g = g_in.contiguous();
  TORCH_CHECK(y.is_contiguous() && y.size(0) == g.size(0) && y.size(1) == g.size(1), "gain_and_bias_grads: shapes");
  const int64_t N = g.size(0) * g.size(1), n = g.size(2), m = y.size(2);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), N / 256));
  std::vector<double> part(size_t(blocks * 2 * n), 0.0);
  Tensor dot = at::empty({n}, g.options()), sum = at::empty({n}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "gain_and_bias_grads", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.const_data_ptr<scalar_t>() + offset;
    at::parallel_for(0, blocks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double* d = part.data() + c * 2 * n;
        add_column_sums(gp, n, yp, m, N * c / blocks, N * (c + 1) / blocks, n, d, d + n);
      }
    });
    scalar_t* dp = dot.data_ptr<scalar_t>();
    scalar_t* sp = sum.data_ptr<scalar_t>();
    for (int64_t k = 0; k < n; ++k) {
      double a = 0, b = 0;
      for (int64_t c = 0; c < blocks; ++c) {
        a += part[c * 2 * n + k];
        b += part[c * 2 * n + n + k];
      }
      dp[k] = scalar_t(a);
      sp[k] = scalar_t(b);
    }
  });
  return {dot, sum};
}

// Row b of out[t]: hs[t]'s on a valid step, zeros past the sequence's end. Rows are (B, n).
template <typename scalar_t>
void write_output_row(scalar_t* out_t, const scalar_t* h_t, const Lengths& len, int64_t t, int64_t b, int64_t n) {
  if (len.valid(t, b))
    std::memcpy(out_t + b * n, h_t + b * n, sizeof(scalar_t) * n);
  else
    std::memset(out_t + b * n, 0, sizeof(scalar_t) * n);
}

// sum_t d_pre[t]^T h_prev[t] as one GEMM over all T*B rows (plus one for the first step),
// h_prev being h0 at the first step read and the carried state of the step before after it.
// With the products in bfloat16 (lowp.h) each of the two from bfloat16 operands, added in float.
inline Tensor recurrent_weight_grad(const Tensor& d_pre, const Tensor& hs, const Tensor& h0, bool reverse) {
  const int64_t T = d_pre.size(0), G = d_pre.size(2), P = hs.size(2);
  const Tensor first = d_pre[reverse ? T - 1 : 0].t();  // (G, B)
  if (T > 1) {
    const Tensor later = (reverse ? d_pre.narrow(0, 0, T - 1) : d_pre.narrow(0, 1, T - 1)).reshape({-1, G}).t();
    const Tensor before = (reverse ? hs.narrow(0, 1, T - 1) : hs.narrow(0, 0, T - 1)).reshape({-1, P});
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    if (d_pre.scalar_type() == at::kFloat && bf16_product<float>(later.size(0) / threads, later.size(1), P))
      return mm_maybe_bf16(first, h0).add_(mm_maybe_bf16(later, before));
    Tensor d_w = at::mm(first, h0);
    d_w.addmm_(later, before);
    return d_w;
  }
  return mm_maybe_bf16(first, h0);
}

}  // namespace gatedrnn
