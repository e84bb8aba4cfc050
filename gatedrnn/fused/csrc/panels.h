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
    for (int64_t p = 0; p < count; ++p) {
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
  }

  bool defined() const { return data_.defined(); }
  bool bf16() const { return bf16_; }

  // out (rows, N; row stride ldo) = a (rows, K; lda) b, plus out when accumulate.
  void multiply(int64_t rows, const float* a, int64_t lda, float* out, int64_t ldo, bool accumulate) const {
#if defined(__AVX512F__)
    if (rows == 0 || N_ == 0) return;
    if (K_ == 0) {
      if (!accumulate)
        for (int64_t r = 0; r < rows; ++r) std::fill_n(out + r * ldo, N_, 0.0f);
      return;
    }
    if (bf16_) {
      multiply_bf16(rows, a, lda, out, ldo, accumulate);
      return;
    }
    const float* d = data_.const_data_ptr<float>();
    for (int64_t k0 = 0; k0 < K_; k0 += kDepth) {
      const int64_t depth = std::min(kDepth, K_ - k0);
      for (int64_t p = 0; p * kWidth < N_; ++p) {
        tile::columns(false, rows, depth, a + k0, lda, d + (p * K_ + k0) * kWidth, kWidth, out + p * kWidth, ldo,
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

}  // namespace gatedrnn
