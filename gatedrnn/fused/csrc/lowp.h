// The products in bfloat16: where the CPU multiplies bfloat16 natively (AVX-512 BF16, AMX), a
// bfloat16 layer, or a float32 one under torch.autocast("cpu", torch.bfloat16), has its GEMMs
// computed from bfloat16 operands, while the gate math, the carried states and the saved
// activations stay float32 (the loops still compute in float: only each product's operands are
// rounded to bfloat16, and its result comes back into float).
//
// How a per-step product runs in bfloat16 (PackedRight, packed.h): on a CPU with AVX-512 BF16
// the weight is laid out once per call of the loop in bfloat16 panels and multiplied by our own
// kernel (panels.h, tile_bf16.h), from the rows of the left operand rounded to bfloat16, with
// every sum and the result in float32. Where those panels are off, the weight is copied to
// bfloat16 once per call; at each step the rows of the left operand are rounded into a bfloat16
// scratch, at::mm_out (oneDNN) multiplies them into a bfloat16 (rows, N) scratch, and that is
// converted (or added) into the float result. The products over the whole sequence (the input
// projection before the loop, the weight gradients) take oneDNN's (mm_maybe_bf16, below). What
// else was tried on this machine (AVX-512 BF16, no AMX) and found no faster than float32: MKL's
// cblas_gemm_bf16bf16f32 (exported, but it takes an AVX2 emulation here: 150-180 GFLOPS),
// cpublas::brgemm (needs AMX to pack bfloat16), and cpublas::gemm with a float result (not
// exported from libtorch).
//
// The Python side (fused/_ops.py, call_kernel) turns the switch on for one call of an op when
// one of its floating-point arguments is bfloat16 or CPU autocast runs in bfloat16, and only on
// a CPU with native bfloat16 GEMMs; every other call is today's float32 path.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace gatedrnn {

using at::Tensor;

// The switch, per calling thread: set through the bindings around one call of an op. A loop reads it
// once, on the calling thread, when it builds its products (PackedRight's constructors, before
// for_row_blocks); the worker threads use the value captured then and never read it themselves
// (a thread_local read on a worker is that worker's own, unset, value).
inline bool& bf16_products_requested() {
  thread_local bool on = false;
  return on;
}

// Which products take bfloat16 once the switch is on: 0 by the rule below, 1 every product
// (tests: the bfloat16 path at the smallest sizes), -1 none (the switch then changes nothing).
inline int& bf16_gemm_mode() {
  static int mode = 0;
  return mode;
}

// Products computed in bfloat16 since the last reset (tests: proof that the path ran).
inline std::atomic<int64_t>& bf16_product_count() {
  static std::atomic<int64_t> count{0};
  return count;
}

// The rule for oneDNN's product (the bfloat16 panels have none: panels.h, uses_bf16_panels):
// bfloat16 once a thread's product has rows * K * N >= 2^21 multiply-adds. oneDNN's
// bfloat16 GEMM (at::mm) runs ~2x float32's speed on large products but costs ~30 µs a call.
// Measured here, one worker of for_row_blocks (one thread), (rows, K, N), bfloat16 against
// float32: (32, 256, 1024) 108 vs 199 µs, (48, 768, 2304) 881 vs 2001, (64, 256, 1024) 189 vs
// 402, (8, 256, 1024) 52 vs 76 (2^21: the smallest that pays); (16, 128, 512) 33 vs 31 and
// (1, 256, 1024) 36 vs 26, where the call's cost outweighs the faster kernel. `rows` is a
// thread's share of the product's rows (B / threads for a per-step product).
inline bool bf16_pays(int64_t rows, int64_t K, int64_t N) {
  const int mode = bf16_gemm_mode();
  if (mode != 0) return mode == 1;
  constexpr int64_t kMinWork = int64_t(1) << 21;
  return rows * K * N >= kMinWork;
}

// Whether a product with these sizes takes bfloat16 operands: the switch on (read here, so call
// it on the calling thread only) and the rule saying it pays. float only: double layers and the
// reference tests' float64 stay as they are.
template <typename T>
inline bool bf16_product(int64_t rows, int64_t K, int64_t N) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    return bf16_products_requested() && K > 0 && N > 0 && bf16_pays(rows, K, N);
  }
}

// float -> bfloat16, rounding to nearest even (as c10::BFloat16's constructor, a NaN kept a quiet
// NaN), written as integer operations on the bits so that the row loops below vectorise (the
// constructor's branch on NaN kept GCC from vectorising them).
inline uint16_t bf16_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return (bits & 0x7FFFFFFFu) > 0x7F800000u ? uint16_t(0x7FC0u) : uint16_t(rounded);
}

inline float bf16_value(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// a (rows, n; row stride lda) rounded to bfloat16 into dst (rows, n), contiguous.
inline void round_rows_to_bf16(int64_t rows, int64_t n, const float* a, int64_t lda, at::BFloat16* dst) {
  static_assert(sizeof(at::BFloat16) == sizeof(uint16_t), "bfloat16 is 16 bits");
  uint16_t* bits = reinterpret_cast<uint16_t*>(dst);
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict__ src = a + r * lda;
    uint16_t* __restrict__ out = bits + r * n;
    for (int64_t k = 0; k < n; ++k) out[k] = bf16_bits(src[k]);
  }
}

// out (rows, n; ldo) = src (rows, n), or += src when accumulate: a bfloat16 product into float.
inline void widen_rows(int64_t rows, int64_t n, const at::BFloat16* src, float* out, int64_t ldo, bool accumulate) {
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(src);
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* __restrict__ s = bits + r * n;
    float* __restrict__ o = out + r * ldo;
    if (accumulate) {
      for (int64_t k = 0; k < n; ++k) o[k] += bf16_value(s[k]);
    } else {
      for (int64_t k = 0; k < n; ++k) o[k] = bf16_value(s[k]);
    }
  }
}

// a b for float tensors a (M, K) and b (K, N), any strides, in float32 (whole-sequence products:
// the weight gradients, the input projection before the loop): from bfloat16 operands when the
// switch is on and the rule pays at this thread count (the product is shared by all threads),
// else at::mm as before. The result is float32, its values rounded to bfloat16 (at::mm has no
// bfloat16 -> float32 form on CPU in torch 2.13: mm.dtype is CUDA-only).
inline Tensor mm_maybe_bf16(const Tensor& a, const Tensor& b) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  if (a.scalar_type() != at::kFloat || !bf16_product<float>(a.size(0) / threads, a.size(1), b.size(1)))
    return at::mm(a, b);
  bf16_product_count().fetch_add(1, std::memory_order_relaxed);
  return at::mm(a.to(at::kBFloat16), b.to(at::kBFloat16)).to(at::kFloat);
}

}  // namespace gatedrnn
