// The per-step float32 products from a weight laid out once in column panels, multiplied by this
// project's own AVX-512 kernel (tile_gemm.h). A time loop multiplies by the same weight at every
// step: copying it once per call into panels of 64 columns, each a contiguous (K, 64) block,
// lets every step read the weight in the order the kernel wants it, 128 rows of a panel (32 KiB,
// in L1) at a time against every row of the left operand.
//
// Why our own kernel: MKL, which torch's float32 GEMMs call here, takes an AVX2 path on AMD
// CPUs, packed or not. Measured on this project's AMD EPYC (Zen 5), one thread, one product
// (rows, K, N), MKL's packed GEMM (cblas_sgemm_compute) against the panels: (32, 256, 1024)
// 186 vs 154 µs, (64, 512, 2048) 1473 vs 1238, (128, 650, 2600) 4725 vs 4355, (8, 256, 1024)
// 63 vs 41, (1, 256, 1024) 18 vs 11; against a plain sgemm call at small sizes, (16, 64, 256)
// 6.4 vs 4.9, (1, 32, 128) 0.5 vs 0.1. The panels ran at ~105-111 GFLOPS from 16 rows up, as
// fast as oneDNN's float32 product on one core here (~108). Each output is one float32 sum in
// the order of K, as a plain loop would add it: the results differ from BLAS's within float32
// rounding.
//
// Only where the extension is built for AVX-512 (elsewhere the products stay with BLAS, packed
// or not: packed.h), and only for float (double goes to BLAS).
//
// With the products in bfloat16 (lowp.h) on a CPU with AVX-512 BF16, the panels hold the weight
// in bfloat16, its rows interleaved in pairs (tile_bf16.h), and each product rounds the rows of
// its left operand to bfloat16 into a scratch of the calling thread's and sums in float32.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "lowp.h"
#include "tile_bf16.h"
#include "tile_gemm.h"

namespace gatedrnn {

// Which weights of float32 per-step products are laid out in panels: 0 where the rule says
// (AVX-512 builds, a weight used by two products or more), 1 every one (tests: the panels at the
// smallest sizes), -1 none (the products then go to BLAS as before: packed.h).
inline int& panel_gemm_mode() {
  static int mode = 0;
  return mode;
}

// Whether this build has the panels' kernel (built for AVX-512).
inline bool panel_gemm_available() {
#if defined(__AVX512F__)
  return true;
#else
  return false;
#endif
}

// The rule: panels for a weight multiplied at least twice. Laying out a weight costs one pass
// over it, about what one product by a single row costs; the kernel was faster than MKL at every
// size measured (above), so the rule asks nothing of the sizes.
inline bool uses_panels(int64_t uses) {
  if (!panel_gemm_available()) return false;
  const int mode = panel_gemm_mode();
  if (mode != 0) return mode == 1;
  return uses >= 2;
}

// Whether a float32 loop whose products take bfloat16 (the switch of lowp.h, read on the calling
// thread) lays its weights out in bfloat16 panels: the CPU has AVX-512 BF16, the panels' rule
// says yes, and bf16_gemm_mode is not -1. Every size: the kernel has no cost per call, so the
// size rule of lowp.h (bf16_pays, for oneDNN's product) does not apply.
template <typename T>
inline bool uses_bf16_panels(int64_t uses) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    return bf16_products_requested() && bf16_gemm_mode() != -1 && tile_bf16::available() && uses_panels(uses);
  }
}

class Panels {
 public:
  Panels() = default;

  // The right operand b (K, N; row stride ldb), or b given as its transpose (N, K; row stride
  // ldb), a weight as torch stores it, when transposed; in float32, or in bfloat16 pairs.
  Panels(int64_t K, int64_t N, const float* b, int64_t ldb, bool transposed, bool bf16 = false)
      : K_(K), N_(N), bf16_(bf16) {
    const int64_t count = (N + kWidth - 1) / kWidth;
    // b[k, n], from b or from its transpose
    const auto at = [&](int64_t k, int64_t n) { return transposed ? b[n * ldb + k] : b[k * ldb + n]; };
    if (bf16) {
      const int64_t pairs = (K + 1) / 2;
      data_ = at::zeros({count, pairs, kWidth, 2}, at::kBFloat16);  // zero past column N and row K
      uint16_t* d = reinterpret_cast<uint16_t*>(data_.data_ptr<at::BFloat16>());
      for (int64_t p = 0; p < count; ++p) {
        const int64_t width = std::min(kWidth, N - p * kWidth);
        for (int64_t j = 0; j < width; ++j) {
          for (int64_t k = 0; k < K; ++k) d[((p * pairs + k / 2) * kWidth + j) * 2 + (k & 1)] = bf16_bits(at(k, p * kWidth + j));
        }
      }
      return;
    }
    data_ = at::zeros({count, K, kWidth}, at::kFloat);  // zero past column N
    float* d = data_.data_ptr<float>();
    // the panels on all threads when b is large (an operand over the whole sequence; at::parallel_for
    // runs on the calling thread inside a parallel region)
    at::parallel_for(0, count, std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, K * kWidth)),
                     [&](int64_t p0, int64_t p1) {
                       for (int64_t p = p0; p < p1; ++p) {
                         const int64_t width = std::min(kWidth, N - p * kWidth);
                         float* panel = d + p * K * kWidth;
                         if (transposed) {
                           for (int64_t j = 0; j < width; ++j) {
                             for (int64_t k = 0; k < K; ++k) panel[k * kWidth + j] = at(k, p * kWidth + j);
                           }
                         } else {
                           for (int64_t k = 0; k < K; ++k) std::copy_n(b + k * ldb + p * kWidth, width, panel + k * kWidth);
                         }
                       }
                     });
  }

  bool defined() const { return data_.defined(); }
  bool bf16() const { return bf16_; }

  // out (rows, N; row stride ldo) = op(a) b, plus out when accumulate: op(a) = a (rows, K; row
  // stride lda), or the transpose of a stored (K, rows; row stride lda) when trans_a (float32
  // panels only).
  void multiply(int64_t rows, const float* a, int64_t lda, float* out, int64_t ldo, bool accumulate,
                bool trans_a = false) const {
#if defined(__AVX512F__)
    if (rows == 0 || N_ == 0) return;
    if (K_ == 0) {
      if (!accumulate)
        for (int64_t r = 0; r < rows; ++r) std::fill_n(out + r * ldo, N_, 0.0f);
      return;
    }
    if (bf16_) {
      TORCH_CHECK(!trans_a, "gatedrnn: the bfloat16 panels take a's rows as they are");
      multiply_bf16(rows, a, lda, out, ldo, accumulate);
      return;
    }
    const float* d = data_.const_data_ptr<float>();
    for (int64_t k0 = 0; k0 < K_; k0 += kDepth) {
      const int64_t depth = std::min(kDepth, K_ - k0);
      const float* a_k0 = trans_a ? a + k0 * lda : a + k0;  // op(a)[0, k0]
      for (int64_t p = 0; p * kWidth < N_; ++p) {
        tile::columns(trans_a, rows, depth, a_k0, lda, d + (p * K_ + k0) * kWidth, kWidth, out + p * kWidth, ldo,
                      accumulate || k0 > 0, std::min(kWidth, N_ - p * kWidth));
      }
    }
#else
    (void)rows, (void)a, (void)lda, (void)out, (void)ldo, (void)accumulate;
    TORCH_CHECK(false, "gatedrnn: Panels::multiply needs a build for AVX-512");
#endif
  }

 private:
  static constexpr int64_t kWidth = 64, kDepth = 128;

#if defined(__AVX512F__)
  // a's rows rounded to bfloat16 (a zero after an odd K) into the calling thread's scratch, then
  // the bfloat16 panels, 128 pairs of rows (32 KiB of a panel) at a time.
  void multiply_bf16(int64_t rows, const float* a, int64_t lda, float* out, int64_t ldo, bool accumulate) const {
    const int64_t pairs = (K_ + 1) / 2, ld = 2 * pairs;
    thread_local std::vector<uint16_t> a16;  // grown to the largest product, kept
    a16.resize(size_t(std::max<int64_t>(int64_t(a16.size()), rows * ld)));
    for (int64_t r = 0; r < rows; ++r) {
      const float* __restrict__ src = a + r * lda;
      uint16_t* __restrict__ dst = a16.data() + r * ld;
      for (int64_t k = 0; k < K_; ++k) dst[k] = bf16_bits(src[k]);
      if (K_ % 2) dst[K_] = 0;
    }
    const uint16_t* d = reinterpret_cast<const uint16_t*>(data_.const_data_ptr<at::BFloat16>());
    for (int64_t k0 = 0; k0 < pairs; k0 += kDepth) {
      const int64_t depth = std::min(kDepth, pairs - k0);
      for (int64_t p = 0; p * kWidth < N_; ++p) {
        tile_bf16::columns(rows, depth, a16.data() + 2 * k0, ld, d + (p * pairs + k0) * kWidth * 2, out + p * kWidth,
                           ldo, accumulate || k0 > 0, std::min(kWidth, N_ - p * kWidth));
      }
    }
    bf16_product_count().fetch_add(1, std::memory_order_relaxed);
  }
#endif

  int64_t K_ = 0, N_ = 0;
  bool bf16_ = false;
  at::Tensor data_;  // float (ceil(N / 64), K, 64), or bfloat16 (ceil(N / 64), ceil(K / 2), 64, 2)
};

// A float32 matrix given by its first element and row stride, as a (rows, cols) tensor stores it
// row-major or as the transpose of one (a.t() of a contiguous matrix): {pointer, stride,
// transposed}, or a contiguous copy's where it is neither.
struct Strided {
  static bool row_major(const at::Tensor& t) { return t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(t.size(1), 1); }
  static bool transposed_view(const at::Tensor& t) {
    return t.stride(0) == 1 && t.stride(1) >= std::max<int64_t>(t.size(0), 1);
  }

  Strided(const at::Tensor& t) {
    if (row_major(t)) {
      data = t.const_data_ptr<float>(), ld = t.stride(0);
    } else if (transposed_view(t)) {
      data = t.const_data_ptr<float>(), ld = t.stride(1), transposed = true;
    } else {
      copy = t.contiguous();
      data = copy.const_data_ptr<float>(), ld = std::max<int64_t>(t.size(1), 1);
    }
  }
  const float* data = nullptr;
  int64_t ld = 0;
  bool transposed = false;
  at::Tensor copy;
};

// a (M, K) b (K, N) for float32 CPU matrices over a whole sequence (the input projection before
// the loop, the input's gradient), on the panels: b laid out once, then each thread a block of
// M's rows, 96 rows at a time against every panel. a and b may be row-major or transposed views.
inline at::Tensor panel_matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias = at::Tensor()) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0), "gatedrnn: panel_matmul got a ", a.sizes(),
              " and b ", b.sizes());
  TORCH_CHECK(a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat, "gatedrnn: panel_matmul takes float32");
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == N && bias.scalar_type() == at::kFloat),
              "gatedrnn: panel_matmul's bias must be float32 (", N, ")");
  if (M == 0 || N == 0 || K == 0) {
    at::Tensor zero = at::zeros({M, N}, a.options());
    return bias.defined() ? zero.add_(bias) : zero;
  }
  const Strided sa(a), sb(b);
  const at::Tensor bias_c = bias.defined() ? bias.contiguous() : bias;
  const float* bias_p = bias.defined() ? bias_c.const_data_ptr<float>() : nullptr;
  const Panels panels(K, N, sb.data, sb.ld, sb.transposed);
  at::Tensor out = at::empty({M, N}, a.options());
  float* o = out.data_ptr<float>();
  constexpr int64_t kRows = 96;
  at::parallel_for(0, M, kRows, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i += kRows) {
      const float* a_i = sa.transposed ? sa.data + i : sa.data + i * sa.ld;  // op(a)[i, 0]
      const int64_t rows = std::min(kRows, r1 - i);
      if (bias_p)
        for (int64_t r = 0; r < rows; ++r) std::copy_n(bias_p, N, o + (i + r) * N);
      panels.multiply(rows, a_i, sa.ld, o + i * N, N, bias_p != nullptr, sa.transposed);
    }
  });
  return out;
}

// a b over a whole sequence for the loops: in bfloat16 where the products take it and it pays
// (mm_maybe_bf16), else on the panels for float32 with a's rows as they are (panel_gemm_mode not
// -1, an AVX-512 build), else at::mm. Measured on this project's AMD EPYC, 2 threads, at::mm
// against panel_matmul, (rows, K, N): x W' at (6400, 256, 768) 19.7 vs 13.9 ms, (8960, 650, 2600)
// 246 vs 206, (6400, 512, 2048) 92 vs 89; d W at (6400, 256, 768) 20.2 vs 13.2, (6400, 128, 2048)
// 29.1 vs 17.1. A transposed a (the weight gradients, d' x, whose depth is every row of the
// sequence) stays with at::mm: 14.1 vs 14.1 ms at (6400, 256, 768), 23.5 vs 25.8 at
// (6400, 128, 2048).
inline at::Tensor sequence_mm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias = at::Tensor()) {
  const bool f32 = a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const bool bf16 = f32 && bf16_product<float>(a.size(0) / threads, a.size(1), b.size(1));
  if (f32 && !bf16 && panel_gemm_available() && panel_gemm_mode() != -1 && a.dim() == 2 &&
      !Strided::transposed_view(a))
    return panel_matmul(a, b, bias);
  if (!bias.defined()) return mm_maybe_bf16(a, b);
  return bf16 ? mm_maybe_bf16(a, b).add_(bias) : at::addmm(bias, a, b);
}

}  // namespace gatedrnn
