// A float32 product for the small matrices of one mLSTM chunk (64 x 64 and the like), held in
// the cache: C (M, N) = op(A) (M, K) @ B (K, N), plus C when accumulating, row-major, on
// AVX-512. Measured on one core of this project's AMD EPYC (Zen 5) at 64 x 64 x 64 with the
// operands in L1: ~105 GFLOPS, against ~86 for MKL's sgemm (which takes an AVX2 path on AMD
// and packs both operands on every call, a third of its time at this size inside the chunk
// loop). No packing here: B's rows are read as they are, 64 columns at a time in four
// registers, and each of six rows of A is broadcast against them (24 accumulators).
//
// tile_gemm returns false where it does not apply (not built for AVX-512, N not a multiple of
// 64, float64, or switched off): the caller then takes BLAS.
#pragma once

#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace gatedrnn {

// Whether tile_gemm may run (on by default; tests turn it off to compare with BLAS).
inline bool& tile_gemm_enabled() {
  static bool enabled = true;
  return enabled;
}

#if defined(__AVX512F__)
namespace tile {

// R rows of C, 64 columns from j0: C[r, j0:j0+64] (+)= sum_k op(A)[r, k] B[k, j0:j0+64]. op(A)[r, k]
// is A[r * lda + k], or A[k * lda + r] when trans_a (A stored (K, M)).
template <int R>
inline void rows(bool trans_a, int64_t K, const float* __restrict__ A, int64_t lda, const float* __restrict__ B,
                 int64_t ldb, float* __restrict__ C, int64_t ldc, bool accumulate) {
  __m512 c[R][4];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < 4; ++j) c[r][j] = accumulate ? _mm512_loadu_ps(C + r * ldc + 16 * j) : _mm512_setzero_ps();
  }
  const int64_t step_r = trans_a ? 1 : lda, step_k = trans_a ? lda : 1;
  for (int64_t k = 0; k < K; ++k) {
    const float* b = B + k * ldb;
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
    const __m512 b2 = _mm512_loadu_ps(b + 32), b3 = _mm512_loadu_ps(b + 48);
    const float* a_k = A + k * step_k;
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(a_k[r * step_r]);
      c[r][0] = _mm512_fmadd_ps(a, b0, c[r][0]);
      c[r][1] = _mm512_fmadd_ps(a, b1, c[r][1]);
      c[r][2] = _mm512_fmadd_ps(a, b2, c[r][2]);
      c[r][3] = _mm512_fmadd_ps(a, b3, c[r][3]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(C + r * ldc + 16 * j, c[r][j]);
  }
}

}  // namespace tile
#endif

// Whether tile_gemm takes a product of N columns.
inline bool tile_gemm_applies(int64_t N) {
#if defined(__AVX512F__)
  return tile_gemm_enabled() && N % 64 == 0;
#else
  (void)N;
  return false;
#endif
}

inline bool tile_gemm(bool trans_a, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                      int64_t ldb, float* C, int64_t ldc, bool accumulate) {
#if defined(__AVX512F__)
  if (!tile_gemm_applies(N)) return false;
  for (int64_t j0 = 0; j0 < N; j0 += 64) {
    int64_t i = 0;
    // the first row of op(A) block i: A + i * lda, or A + i when trans_a
    auto a_at = [&](int64_t row) { return trans_a ? A + row : A + row * lda; };
    for (; i + 6 <= M; i += 6) tile::rows<6>(trans_a, K, a_at(i), lda, B + j0, ldb, C + i * ldc + j0, ldc, accumulate);
    for (; i + 4 <= M; i += 4) tile::rows<4>(trans_a, K, a_at(i), lda, B + j0, ldb, C + i * ldc + j0, ldc, accumulate);
    for (; i < M; ++i) tile::rows<1>(trans_a, K, a_at(i), lda, B + j0, ldb, C + i * ldc + j0, ldc, accumulate);
  }
  return true;
#else
  (void)trans_a, (void)M, (void)N, (void)K, (void)A, (void)lda, (void)B, (void)ldb, (void)C, (void)ldc,
      (void)accumulate;
  return false;
#endif
}

}  // namespace gatedrnn
