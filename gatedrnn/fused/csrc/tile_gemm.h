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

// R rows of C, 16 J columns from j0 (the last 16 masked by `last`): C[r, j0:j0+16J] (+)=
// sum_k op(A)[r, k] B[k, j0:j0+16J]. op(A)[r, k] is A[r * lda + k], or A[k * lda + r] when
// trans_a (A stored (K, M)). B's columns past the mask are read (and must exist) but not stored.
template <int R, int J = 4>
inline void rows(bool trans_a, int64_t K, const float* __restrict__ A, int64_t lda, const float* __restrict__ B,
                 int64_t ldb, float* __restrict__ C, int64_t ldc, bool accumulate, __mmask16 last = 0xFFFF) {
  __m512 c[R][J];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < J; ++j) {
      const __mmask16 mask = j == J - 1 ? last : __mmask16(0xFFFF);
      c[r][j] = accumulate ? _mm512_maskz_loadu_ps(mask, C + r * ldc + 16 * j) : _mm512_setzero_ps();
    }
  }
  const int64_t step_r = trans_a ? 1 : lda, step_k = trans_a ? lda : 1;
  for (int64_t k = 0; k < K; ++k) {
    const float* b_k = B + k * ldb;
    __m512 b[J];
    for (int j = 0; j < J; ++j) b[j] = _mm512_loadu_ps(b_k + 16 * j);
    const float* a_k = A + k * step_k;
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(a_k[r * step_r]);
      for (int j = 0; j < J; ++j) c[r][j] = _mm512_fmadd_ps(a, b[j], c[r][j]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < J; ++j) {
      const __mmask16 mask = j == J - 1 ? last : __mmask16(0xFFFF);
      _mm512_mask_storeu_ps(C + r * ldc + 16 * j, mask, c[r][j]);
    }
  }
}

// All M rows of C against 16 J columns of B: blocks of six rows (24 accumulators at J = 4),
// then the rest in one smaller block.
template <int J>
inline void column_block(bool trans_a, int64_t M, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                         float* C, int64_t ldc, bool accumulate, __mmask16 last) {
  // the first row of op(A) block i: A + i * lda, or A + i when trans_a
  const auto a_at = [&](int64_t row) { return trans_a ? A + row : A + row * lda; };
  int64_t i = 0;
  for (; i + 6 <= M; i += 6) rows<6, J>(trans_a, K, a_at(i), lda, B, ldb, C + i * ldc, ldc, accumulate, last);
  const float* a = a_at(i);
  float* c = C + i * ldc;
  switch (M - i) {
    case 5: rows<5, J>(trans_a, K, a, lda, B, ldb, c, ldc, accumulate, last); break;
    case 4: rows<4, J>(trans_a, K, a, lda, B, ldb, c, ldc, accumulate, last); break;
    case 3: rows<3, J>(trans_a, K, a, lda, B, ldb, c, ldc, accumulate, last); break;
    case 2: rows<2, J>(trans_a, K, a, lda, B, ldb, c, ldc, accumulate, last); break;
    case 1: rows<1, J>(trans_a, K, a, lda, B, ldb, c, ldc, accumulate, last); break;
    default: break;
  }
}

// column_block for the `width` (1..64) columns from B and C: J = ceil(width / 16), the last
// vector masked to what is left.
inline void columns(bool trans_a, int64_t M, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                    float* C, int64_t ldc, bool accumulate, int64_t width) {
  const int J = int((width + 15) / 16);
  const __mmask16 last = __mmask16((1u << (width - 16 * (J - 1))) - 1u);
  switch (J) {
    case 4: column_block<4>(trans_a, M, K, A, lda, B, ldb, C, ldc, accumulate, last); break;
    case 3: column_block<3>(trans_a, M, K, A, lda, B, ldb, C, ldc, accumulate, last); break;
    case 2: column_block<2>(trans_a, M, K, A, lda, B, ldb, C, ldc, accumulate, last); break;
    default: column_block<1>(trans_a, M, K, A, lda, B, ldb, C, ldc, accumulate, last); break;
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
  for (int64_t j0 = 0; j0 < N; j0 += 64) tile::columns(trans_a, M, K, A, lda, B + j0, ldb, C + j0, ldc, accumulate, 64);
  return true;
#else
  (void)trans_a, (void)M, (void)N, (void)K, (void)A, (void)lda, (void)B, (void)ldb, (void)C, (void)ldc,
      (void)accumulate;
  return false;
#endif
}

}  // namespace gatedrnn
