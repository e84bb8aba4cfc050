// The bfloat16 form of tile_gemm.h's kernel, for the panels of panels.h: C (M, N) (+)= A B with
// A's rows and B in bfloat16 and every sum in float32, on AVX-512 BF16 (VDPBF16PS: each 32-bit
// lane multiplies a pair of bfloat16 values by a pair and adds both products into one float).
// B comes as panels of 64 columns in which consecutive rows k, k + 1 are interleaved, (K / 2,
// 64, 2), so that one 64-byte load holds 16 columns' pairs; A's rows are bfloat16 with an even
// row length (a zero after an odd K), and a pair of A is broadcast as one 32-bit value.
//
// Measured on this project's AMD EPYC (Zen 5, AVX-512 BF16, no AMX), one thread, (rows, K, N):
// 184-207 GFLOPS from (16, 64, 256) to (128, 640, 2560), about 1.85x the float32 panels
// (~108), and with no cost per call: (8, 256, 1024) 21 µs against 50 for oneDNN's bfloat16
// product (at::mm), (16, 64, 256) 2.8 against 16, (1, 256, 1024) 4.6 against 34; level with it
// from (64, 512, 2048) up. Unlike that product, the result is not rounded to bfloat16.
//
// Compiled for AVX-512 BF16 whatever the build's flags (the target attribute): callers check
// tile_bf16::available() (the CPU has the instructions) first.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#define GATEDRNN_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#endif

namespace gatedrnn {
namespace tile_bf16 {

// Whether this build has the kernel and this CPU the instructions it needs.
inline bool available() {
#if defined(__AVX512F__)
  static const bool has = __builtin_cpu_supports("avx512bf16");
  return has;
#else
  return false;
#endif
}

#if defined(__AVX512F__)
// R rows of C, 16 J columns (the last 16 masked by `last`), over `pairs` pairs of rows of B.
// A: bfloat16 bits, row stride lda (even); B: one panel, (pairs, 64, 2) bfloat16 bits.
template <int R, int J>
GATEDRNN_BF16_TARGET inline void rows(int64_t pairs, const uint16_t* __restrict__ A, int64_t lda,
                                      const uint16_t* __restrict__ B, float* __restrict__ C, int64_t ldc,
                                      bool accumulate, __mmask16 last) {
  __m512 c[R][J];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < J; ++j) {
      const __mmask16 mask = j == J - 1 ? last : __mmask16(0xFFFF);
      c[r][j] = accumulate ? _mm512_maskz_loadu_ps(mask, C + r * ldc + 16 * j) : _mm512_setzero_ps();
    }
  }
  for (int64_t k = 0; k < pairs; ++k) {
    __m512bh b[J];
    for (int j = 0; j < J; ++j) b[j] = (__m512bh)_mm512_loadu_si512(B + k * 128 + 32 * j);
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      std::memcpy(&pair, A + r * lda + 2 * k, sizeof pair);
      const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
      for (int j = 0; j < J; ++j) c[r][j] = _mm512_dpbf16_ps(c[r][j], a, b[j]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < J; ++j) {
      const __mmask16 mask = j == J - 1 ? last : __mmask16(0xFFFF);
      _mm512_mask_storeu_ps(C + r * ldc + 16 * j, mask, c[r][j]);
    }
  }
}

// All M rows against one panel's 16 J columns: blocks of six rows, then the rest in one block.
template <int J>
GATEDRNN_BF16_TARGET inline void column_block(int64_t M, int64_t pairs, const uint16_t* A, int64_t lda,
                                              const uint16_t* B, float* C, int64_t ldc, bool accumulate,
                                              __mmask16 last) {
  int64_t i = 0;
  for (; i + 6 <= M; i += 6) rows<6, J>(pairs, A + i * lda, lda, B, C + i * ldc, ldc, accumulate, last);
  const uint16_t* a = A + i * lda;
  float* c = C + i * ldc;
  switch (M - i) {
    case 5: rows<5, J>(pairs, a, lda, B, c, ldc, accumulate, last); break;
    case 4: rows<4, J>(pairs, a, lda, B, c, ldc, accumulate, last); break;
    case 3: rows<3, J>(pairs, a, lda, B, c, ldc, accumulate, last); break;
    case 2: rows<2, J>(pairs, a, lda, B, c, ldc, accumulate, last); break;
    case 1: rows<1, J>(pairs, a, lda, B, c, ldc, accumulate, last); break;
    default: break;
  }
}

// column_block for the `width` (1..64) columns of one panel.
GATEDRNN_BF16_TARGET inline void columns(int64_t M, int64_t pairs, const uint16_t* A, int64_t lda, const uint16_t* B,
                                         float* C, int64_t ldc, bool accumulate, int64_t width) {
  const int J = int((width + 15) / 16);
  const __mmask16 last = __mmask16((1u << (width - 16 * (J - 1))) - 1u);
  switch (J) {
    case 4: column_block<4>(M, pairs, A, lda, B, C, ldc, accumulate, last); break;
    case 3: column_block<3>(M, pairs, A, lda, B, C, ldc, accumulate, last); break;
    case 2: column_block<2>(M, pairs, A, lda, B, C, ldc, accumulate, last); break;
    default: column_block<1>(M, pairs, A, lda, B, C, ldc, accumulate, last); break;
  }
}
#endif

}  // namespace tile_bf16
}  // namespace gatedrnn
