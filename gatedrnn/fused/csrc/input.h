// Each step's input projection xw_t = W_ih x_t + b_ih (G values a row) as the time loop reads
// it: from xw (T, B, G), computed for all steps at once before the loop, or projected inside
// the loop from the layer's input x (T, B, I), each block of rows its own product for a chunk
// of k steps at a time into a (B, k, G) buffer that the gate math then reads from cache.
//
// In the loop, xw never goes to memory: a (T, B, G) tensor written by one GEMM and read back by
// the gate math, 26 MB at (64, 100, 256, 256) for the LSTM, plus the copy of b_ih into every
// row that an addmm makes first. The products are as fast as the one large GEMM here (each
// block runs at one core's peak with W_ih packed once). In training too: the backward never
// reads xw (only its gradient, which the ops then hand on to x, W_ih and b_ih: fused/_ops.py).
//
// With the products in bfloat16 (lowp.h) both ways take bfloat16 operands where they pay: the
// products in the loop through PackedRight, the one before it through sequence_mm (panels.h),
// which takes the float32 panels otherwise.
#pragma once

#include "packed.h"
#include "rows.h"

namespace gatedrnn {

// Where the input projections are computed, in one place: 0 by the rule below, 1 always in the
// loop, -1 always before it (tests and benchmarks force each).
inline int& input_projection_mode() {
  static int mode = 0;
  return mode;
}

// The rule: in the loop once each block has 8 rows or more (B / threads). Measured here both
// ways forced (benchmarks/input_projection.py, 2 threads, in loop / before), first one step at
// a time: 0.81-0.94 for the LSTM and GRU from (64, 100, 256, 256) up, 0.94-0.97 for the RNN,
// 0.95-0.98 at (32, 100, 64, 128), 1.04-1.14 for the gated cells at B = 16 and B = 1; then with
// chunks of steps (input_chunk_steps) and one parallel region per call: 0.75-0.95 at B = 16
// (8 rows a block), 0.96-1.04 at B = 1, which stays before the loop. Training, where only the
// forward changes: 0.91-1.00.
inline bool projects_in_loop(int64_t B, int64_t I, int64_t G, int64_t steps) {
  const int mode = input_projection_mode();
  if (mode != 0) return mode == 1;
  constexpr int64_t kMinRows = 8, kMinSteps = 8;
  const int64_t rows = B / std::max<int64_t>(1, at::get_num_threads());
  return steps >= kMinSteps && rows >= kMinRows && I > 0 && G > 0;
}

// Steps a block projects at once in the loop, k: its product then has k times the block's rows
// (a product of 32 rows ran at 114 GFLOPS on one core here, of 128 rows at 153, of 256 at 161),
// and the k steps' projections, (rows, k, G), stay in cache for the gate math. Up to 128 rows
// a product and 8 steps; 0 here is the rule, a positive value a fixed k (tests).
inline int64_t& input_chunk_override() {
  static int64_t k = 0;
  return k;
}

// Chunks against one step at a time (inference, ratio to torch.nn): LSTM 1.07 -> 0.99 at
// (64, 100, 256, 256) and 1.14 -> 1.07 at (32, 200, 128, 512), the GRU and the tanh RNN 3-7%
// faster at those shapes, 2-4% at (128, 50, 512, 512) with k = 2; k = 8 against 4, or 16
// against 8, the same; k = 2 against 1 at 128 rows, the same.
inline int64_t input_chunk_steps(int64_t rows, int64_t steps) {
  const int64_t fixed = input_chunk_override();
  constexpr int64_t kRows = 128, kMaxSteps = 8;
  const int64_t k = fixed > 0 ? fixed : std::min(kMaxSteps, kRows / std::max<int64_t>(1, rows));
  return std::max<int64_t>(1, std::min(k, steps));
}

template <typename T>
class InputRows {
 public:
  // xw (T, B, G) when w_ih is not given; else x (T, B, I) with w_ih (G, I) and b_ih (G) or none.
  // reverse: the loop reads the steps from the last to the first.
  InputRows(const Tensor& xw_or_x, const optional<Tensor>& w_ih, const optional<Tensor>& b_ih, int64_t G,
            bool reverse)
      : G_(G), steps_(xw_or_x.size(0)), reverse_(reverse) {
    const int64_t B = xw_or_x.size(1);
    if (!given(w_ih)) {
      xw_ = xw_or_x.contiguous();
    } else {
      const int64_t I = xw_or_x.size(2);
      TORCH_CHECK(w_ih->dim() == 2 && w_ih->size(0) == G && w_ih->size(1) == I,
                  "gatedrnn: w_ih must be (", G, ", ", I, "), got ", w_ih->sizes());
      TORCH_CHECK(!given(b_ih) || (b_ih->dim() == 1 && b_ih->size(0) == G), "gatedrnn: b_ih must be (", G, ")");
      if (!projects_in_loop(B, I, G, steps_)) {
        // one product over every step's rows (panels.h, sequence_mm: the panels, bfloat16, or at::mm)
        xw_ = sequence_mm(xw_or_x.reshape({-1, I}), w_ih->t(), given(b_ih) ? *b_ih : Tensor()).view({steps_, B, G});
      } else {
        x_ = xw_or_x.contiguous();
        w_ = w_ih->contiguous();
        if (given(b_ih)) b_ = b_ih->contiguous();
        I_ = I;
        B_ = B;
        k_ = input_chunk_steps(B / std::max<int64_t>(1, at::get_num_threads()), steps_);
        packed_.emplace(PackedRight<T>::transposed(B * k_, I, G, w_, steps_));
        chunk_ = at::empty({B, k_, G}, x_.options());      // row b, step j of the chunk
        if (k_ > 1) staging_ = at::zeros({B, k_, I}, x_.options());  // x's rows in that order
      }
    }
  }

  // At the first step s of each chunk, rows b0..b1 of its k steps projected into the chunk's
  // buffer when the loop projects (else nothing to do). s counts steps in reading order.
  void project(int64_t s, int64_t b0, int64_t b1) const {
    if (!packed_ || s % k_ != 0) return;
    const T* x = x_.const_data_ptr<T>();
    const T* a = x + (time(s) * B_ + b0) * I_;  // k = 1: the step's rows, as they are in x
    if (k_ > 1) {
      T* staging = staging_.data_ptr<T>();
      const int64_t n = std::min(k_, steps_ - s);  // the last chunk may be short: its other rows stay finite
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t j = 0; j < n; ++j)
          std::memcpy(staging + (b * k_ + j) * I_, x + (time(s + j) * B_ + b) * I_, sizeof(T) * I_);
      a = staging + b0 * k_ * I_;
    }
    packed_->linear((b1 - b0) * k_, a, I_, b_.defined() ? b_.const_data_ptr<T>() : nullptr,
                    chunk_.data_ptr<T>() + b0 * k_ * G_, G_, x_.options());
  }

  // Row 0 of step s's projections (in reading order; t is its index in time), rows row_stride() apart.
  const T* rows(int64_t s, int64_t t) const {
    return packed_ ? chunk_.const_data_ptr<T>() + (s % k_) * G_ : xw_.const_data_ptr<T>() + t * xw_.size(1) * G_;
  }
  int64_t row_stride() const { return packed_ ? k_ * G_ : G_; }

  int64_t input_size() const { return packed_ ? I_ : 0; }

 private:
  int64_t time(int64_t s) const { return reverse_ ? steps_ - 1 - s : s; }

  int64_t G_, steps_, I_ = 0, B_ = 0, k_ = 1;
  bool reverse_;
  Tensor xw_, x_, w_, b_, chunk_, staging_;
  std::optional<PackedRight<T>> packed_;
};

}  // namespace gatedrnn
