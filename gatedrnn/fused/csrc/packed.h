// The per-step products with their weight packed once: MKL's packed GEMM (cblas_sgemm_pack
// and cblas_sgemm_compute, exported by libtorch's x86 builds). A plain GEMM call re-packs
// the weight into the kernel's blocked layout every time; a time loop multiplies by the same
// W_hh at every step, so packing it once per call of the loop and computing from the packed
// copy saves that work T - 1 times. Measured on this project's Xeon (2 threads), one step's
// product h (B, H) W_hh' (H, G), plain → packed: 90 → 80 µs at (64, 256, 1024), 710 → 598
// at (128, 512, 2048), 16.5 → 12.9 at (32, 128, 512), level at (16, 64, 256). The results are
// the same numbers (the same kernel on the same blocks).
//
// float only (MKL packs doubles too, but libtorch does not export those entry points); where
// the symbols are absent, the direct BLAS path is off, or a loop is too short to repay the
// packing, the products go through gemm_rows as before.
//
// Which engine a PackedRight takes, in order: bfloat16 panels (panels.h: the products in
// bfloat16, AVX-512 BF16); oneDNN's bfloat16 product where it pays (below); float32 panels
// (panels.h: our own AVX-512 kernel, faster than MKL's packed GEMM on the AMD CPU it was measured
// on, whose MKL takes an AVX2 path); MKL's packed GEMM (this file); a plain GEMM (gemm_rows).
//
// With the products in bfloat16 (lowp.h: a bfloat16 layer or autocast, on a CPU with native
// bfloat16 GEMMs) and the bfloat16 panels off, a PackedRight whose product pays holds a bfloat16
// copy of its weight instead, and multiply() rounds the rows of a to bfloat16, multiplies them with
// oneDNN (at::mm_out) and widens the result into out. Every per-step product of loop.h goes
// through here (the recurrent ones, a two-stage cell's second, the projection W_hr, and their
// gradients' d_gh W_hh), and so does the input projection in the loop (input.h): every cell
// gets the bfloat16 products with no code of its own. The numbers the choice rests on, measured
// on this project's CPU (AVX-512 BF16, no AMX), one worker of for_row_blocks, (rows, K, N),
// at::mm in bfloat16 against float32: (32, 256, 1024) 108 vs 199 µs, (48, 768, 2304) 881 vs
// 2001, (64, 256, 1024) 189 vs 402, (8, 256, 1024) 52 vs 76; but ~30 µs a call whatever the
// size: (1, 256, 1024) 36 vs 26, (16, 128, 512) 33 vs 31. Hence the rule of lowp.h (bf16_pays:
// a thread's rows * K * N >= 2^21), and a float32 weight everywhere below it.
#pragma once

#include "common.h"
#include "lowp.h"
#include "panels.h"

extern "C" {
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha, const float* src,
                      int ld, float* dest) __attribute__((weak));
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a, int lda,
                         const float* b, int ldb, float beta, float* c, int ldc) __attribute__((weak));
}

namespace gatedrnn {

// Whether libtorch exports the packed GEMM entry points.
inline bool packed_gemm_available() {
  return cblas_sgemm_pack_get_size != nullptr && cblas_sgemm_pack != nullptr && cblas_sgemm_compute != nullptr;
}

// Packing rule, in one place (packs_weight): 0 packs where it pays, 1 packs every product
// (tests: the packed path at small sizes), -1 never. It pays for at least 8 products, each of
// 2^23 multiply-adds or more, or with at least 8 rows and a weight of 2^16 values or more. Whole
// loops, plain → packed (benchmarks/packed_gemm.py): 2-5% faster from (64, 100, 256, 256) up; at
// (16, 500, 32, 64) the GRU's inference took 19% longer and at (32, 100, 64, 128) 3-4% (the
// packed call costs more per call than it saves on a small product). The second clause came
// with the input projections in the loop (two products a step of one weight each), measured
// with every product packed against the first clause alone, inference: the tanh RNN 0.85 at
// (64, 100, 256, 256) (training 0.92), 0.95 at (32, 200, 128, 512); the LSTM at (8, 200, 256, 256)
// and the GRU at (16, 100, 256, 256) 0.96; 1.02-1.04 at B = 1 and 1.07 for the GRU at
// (64, 50, 128, 128) (a 128 x 384 weight), which it leaves unpacked.
inline int& packed_gemm_mode() {
  static int mode = 0;
  return mode;
}

inline bool packs_weight(int64_t M, int64_t K, int64_t N, int64_t uses) {
  const int mode = packed_gemm_mode();
  if (mode != 0) return mode == 1;
  constexpr int64_t kMinSteps = 8, kMinWork = int64_t(1) << 23, kMinRows = 8, kMinWeight = int64_t(1) << 16;
  return uses >= kMinSteps && (M * K * N >= kMinWork || (M >= kMinRows && K * N >= kMinWeight));
}

// The right operand b (K, N; row stride ldb) of `uses` products with up to M rows each, packed
// once when the rule says so; multiply() then computes a (rows, K) b from the packed copy,
// else it calls gemm_rows on b itself. With the products in bfloat16 where they pay (lowp.h,
// decided here, on the calling thread, once per loop), from a bfloat16 copy of b instead.
template <typename T>
class PackedRight {
 public:
  PackedRight(int64_t M, int64_t K, int64_t N, const T* b, int64_t ldb, int64_t uses)
      : K_(K), N_(N), b_(b), ldb_(ldb) {
    if (uses > 0 && lay_out_bf16(b, ldb, false, uses)) return;
    if (uses > 0 && in_bf16(M)) {
      b16_ = at::from_blob(const_cast<T*>(b), {K, N}, {ldb, 1}, at::TensorOptions().dtype(at::kFloat))
                 .to(at::kBFloat16)
                 .contiguous();  // (K, N)
      return;
    }
    if (lay_out(b, ldb, false, uses)) return;
    pack(M, b, ldb, false, uses);
  }

  // The same product from b's transpose w (N, K; row stride ldw), a weight as torch stores it:
  // packed straight from w where the rule packs, else multiplied through a contiguous copy of
  // w' (the transposing copy took 0.36 ms for a 256 x 1024 weight here, on every call).
  static PackedRight transposed(int64_t M, int64_t K, int64_t N, const Tensor& w, int64_t uses) {
    TORCH_CHECK(w.dim() == 2 && w.size(0) == N && w.size(1) == K && (K <= 1 || w.stride(1) == 1),
                "gatedrnn: PackedRight::transposed wants w (N, K) with contiguous rows");
    PackedRight p(K, N);
    if (uses > 0 && p.lay_out_bf16(w.const_data_ptr<T>(), w.stride(0), true, uses)) return p;
    if (uses > 0 && p.in_bf16(M)) {
      p.b16_ = w.to(at::kBFloat16).contiguous().t();  // (K, N), a view of w's bfloat16 copy (N, K)
      return p;
    }
    if (p.lay_out(w.const_data_ptr<T>(), w.stride(0), true, uses)) return p;
    p.pack(M, w.const_data_ptr<T>(), w.stride(0), true, uses);
    if (!p.packed()) {
      p.b_copy_ = w.t().contiguous();
      p.b_ = p.b_copy_.template const_data_ptr<T>();
      p.ldb_ = N;
    }
    return p;
  }

  // out (rows, N; row stride ldo) = a (rows, K; lda) b, plus out when accumulate.
  void multiply(int64_t rows, const T* a, int64_t lda, T* out, int64_t ldo, bool accumulate,
                const at::TensorOptions& opts) const {
    if constexpr (std::is_same_v<T, float>) {
      if (b16_.defined()) {
        multiply_bf16(rows, a, lda, out, ldo, accumulate);
        return;
      }
      if (panels_.defined()) {
        panels_.multiply(rows, a, lda, out, ldo, accumulate);
        return;
      }
      if (packed_.defined()) {
        cblas_sgemm_compute(kColMajor, kPacked, kNoTrans, int(N_), int(rows), int(K_), packed_.const_data_ptr<float>(),
                            int(N_), a, int(lda), accumulate ? 1.0f : 0.0f, out, int(ldo));
        return;
      }
    }
    gemm_rows(rows, N_, K_, a, lda, b_, ldb_, out, ldo, accumulate, opts);
  }

  // out = bias + a b; bias (N) or null.
  void linear(int64_t rows, const T* a, int64_t lda, const T* bias, T* out, int64_t ldo,
              const at::TensorOptions& opts) const {
    if (bias)
      for (int64_t r = 0; r < rows; ++r) std::memcpy(out + r * ldo, bias, sizeof(T) * N_);
    multiply(rows, a, lda, out, ldo, bias != nullptr, opts);
  }

  bool packed() const { return packed_.defined(); }
  bool in_panels() const { return panels_.defined(); }
  bool bf16() const { return b16_.defined() || (panels_.defined() && panels_.bf16()); }

 private:
  static constexpr int kColMajor = 102, kNoTrans = 111, kTrans = 112, kPacked = 151, kAMatrix = 161;
  PackedRight(int64_t K, int64_t N) : K_(K), N_(N), b_(nullptr), ldb_(N) {}

  // Whether this loop's products by b take bfloat16 operands: the switch (read on the calling
  // thread, which builds every PackedRight before for_row_blocks) and the rule, on a thread's
  // share of the M rows.
  bool in_bf16(int64_t M) const {
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    return bf16_product<T>((M + threads - 1) / threads, K_, N_);
  }

  // out (rows, N; ldo) = a (rows, K; lda) b, plus out when accumulate, from bfloat16 operands:
  // a's rows rounded into a scratch of the calling (worker) thread's own, one oneDNN product
  // into a bfloat16 scratch, widened into out.
  void multiply_bf16(int64_t rows, const float* a, int64_t lda, float* out, int64_t ldo, bool accumulate) const {
    if (rows == 0) return;
    thread_local std::vector<at::BFloat16> a16, out16;  // grown to the largest product, kept
    a16.resize(size_t(std::max<int64_t>(a16.size(), rows * K_)));
    out16.resize(size_t(std::max<int64_t>(out16.size(), rows * N_)));
    round_rows_to_bf16(rows, K_, a, lda, a16.data());
    const auto bf16 = at::TensorOptions().dtype(at::kBFloat16);
    Tensor ta = at::from_blob(a16.data(), {rows, K_}, bf16);
    Tensor to = at::from_blob(out16.data(), {rows, N_}, bf16);
    at::mm_out(to, ta, b16_);
    widen_rows(rows, N_, out16.data(), out, ldo, accumulate);
    bf16_product_count().fetch_add(1, std::memory_order_relaxed);
  }

  // Lays b (K, N; ldb), or b given as its transpose (N, K; ldb), out in panels for this project's
  // own kernel (panels.h) where that applies; whether it did.
  bool lay_out(const T* b, int64_t ldb, bool b_transposed, int64_t uses) {
    if constexpr (std::is_same_v<T, float>) {
      if (K_ == 0 || N_ == 0 || !uses_panels(uses)) return false;
      panels_ = Panels(K_, N_, b, ldb, b_transposed);
      return true;
    }
    return false;
  }

  // The same in bfloat16 panels, where the products take bfloat16 and the CPU has AVX-512 BF16.
  bool lay_out_bf16(const T* b, int64_t ldb, bool b_transposed, int64_t uses) {
    if constexpr (std::is_same_v<T, float>) {
      if (K_ == 0 || N_ == 0 || !uses_bf16_panels<T>(uses)) return false;
      panels_ = Panels(K_, N_, b, ldb, b_transposed, true);
      return true;
    }
    return false;
  }

  // Packs b (K, N; ldb), or b given as its transpose (N, K; ldb), where the rule says it pays.
  void pack(int64_t M, const T* b, int64_t ldb, bool b_transposed, int64_t uses) {
    if constexpr (std::is_same_v<T, float>) {
      constexpr int64_t kMax = std::numeric_limits<int>::max();
      if (!packs_weight(M, K_, N_, uses) || !direct_blas_enabled() || !packed_gemm_available()) return;
      if (M == 0 || N_ == 0 || K_ == 0) return;
      if (M > kMax || N_ > kMax || K_ > kMax || ldb > kMax) return;
      // row-major out (M, N) = a b is column-major out' (N, M) = b' a': b' is the left operand,
      // stored column-major (N, K) as b is row-major, or transposed (K, N) as w' is
      const size_t bytes = cblas_sgemm_pack_get_size(kAMatrix, int(N_), int(M), int(K_));
      packed_ = at::empty({int64_t(bytes / sizeof(float)) + 16}, at::kFloat);  // 64-byte aligned
      cblas_sgemm_pack(kColMajor, kAMatrix, b_transposed ? kTrans : kNoTrans, int(N_), int(M), int(K_), 1.0f, b,
                       int(ldb), packed_.data_ptr<float>());
    }
  }

  int64_t K_, N_;
  const T* b_;
  int64_t ldb_;
  Panels panels_;   // b in column panels (panels.h), when laid out
  Tensor packed_;  // undefined when not packed
  Tensor b_copy_;  // b made contiguous from a transposed weight, when not packed
  Tensor b16_;     // b (K, N) in bfloat16 when the products take bfloat16 operands, else undefined
};

}  // namespace gatedrnn
