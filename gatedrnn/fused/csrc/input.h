// Each step's input projection xw_t = W_ih x_t + b_ih (G values a row) as the time loop reads
// it: from xw (T, B, G), computed for all steps at once before the loop, or projected inside
// the loop from the layer's input x (T, B, I), each block of rows its own product into a
// (B, G) buffer that the gate math then reads from cache.
//
// In the loop, xw never goes to memory: a (T, B, G) tensor written by one GEMM and read back by
// the gate math, 26 MB at (64, 100, 256, 256) for the LSTM, plus the copy of b_ih into every
// row that an addmm makes first. The products are as fast as the one large GEMM here (each
// block runs at one core's peak with W_ih packed once). In training too: the backward never
// reads xw (only its gradient, which the ops then hand on to x, W_ih and b_ih: fused/_ops.py).
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

// The rule: in the loop once each block's products have 16 rows or more (B / threads). Measured
// here both ways forced (benchmarks/input_projection.py, 2 threads, in loop / before):
// 0.81-0.94 for the LSTM and GRU from (64, 100, 256, 256) up, 0.94-0.97 for the RNN; 0.95-0.98 at
// (32, 100, 64, 128); 1.04-1.14 for the gated cells at B = 16 and B = 1, where a block's product
// is a few rows and the one GEMM over all T·B rows is the better way. Training (forward and
// backward, where only the forward changes): 0.93-0.98 for the gated cells from
// (128, 50, 512, 512) up, 0.98-1.04 elsewhere (the machine's noise).
inline bool projects_in_loop(int64_t B, int64_t I, int64_t G, int64_t steps) {
  const int mode = input_projection_mode();
  if (mode != 0) return mode == 1;
  constexpr int64_t kMinRows = 16, kMinSteps = 8;
  const int64_t rows = B / std::max<int64_t>(1, at::get_num_threads());
  return steps >= kMinSteps && rows >= kMinRows && I > 0 && G > 0;
}

template <typename T>
class InputRows {
 public:
  // xw (T, B, G) when w_ih is not given; else x (T, B, I) with w_ih (G, I) and b_ih (G) or none.
  InputRows(const Tensor& xw_or_x, const optional<Tensor>& w_ih, const optional<Tensor>& b_ih, int64_t G)
      : G_(G) {
    const int64_t steps = xw_or_x.size(0), B = xw_or_x.size(1);
    if (!given(w_ih)) {
      xw_ = xw_or_x.contiguous();
    } else {
      const int64_t I = xw_or_x.size(2);
      TORCH_CHECK(w_ih->dim() == 2 && w_ih->size(0) == G && w_ih->size(1) == I,
                  "gatedrnn: w_ih must be (", G, ", ", I, "), got ", w_ih->sizes());
      TORCH_CHECK(!given(b_ih) || (b_ih->dim() == 1 && b_ih->size(0) == G), "gatedrnn: b_ih must be (", G, ")");
      if (!projects_in_loop(B, I, G, steps)) {
        xw_ = at::linear(xw_or_x, *w_ih, b_ih.has_value() ? *b_ih : Tensor()).contiguous();
      } else {
        x_ = xw_or_x.contiguous();
        w_ = w_ih->contiguous();
        if (given(b_ih)) b_ = b_ih->contiguous();
        packed_.emplace(PackedRight<T>::transposed(B, I, G, w_, steps));
        step_ = at::empty({B, G}, x_.options());
        I_ = I;
        B_ = B;
      }
    }
  }

  // Rows b0..b1 of step t, written to the step's buffer when the loop projects (else nothing to do).
  void project(int64_t t, int64_t b0, int64_t b1) const {
    if (!packed_) return;
    packed_->linear(b1 - b0, x_.const_data_ptr<T>() + (t * B_ + b0) * I_, I_,
                    b_.defined() ? b_.const_data_ptr<T>() : nullptr, step_.data_ptr<T>() + b0 * G_, G_,
                    x_.options());
  }

  // Row 0 of step t's projections (rows of G).
  const T* rows(int64_t t) const {
    return packed_ ? step_.const_data_ptr<T>() : xw_.const_data_ptr<T>() + t * xw_.size(1) * G_;
  }

  bool in_loop() const { return packed_.has_value(); }
  int64_t input_size() const { return packed_ ? I_ : 0; }

 private:
  int64_t G_, I_ = 0, B_ = 0;
  Tensor xw_, x_, w_, b_, step_;
  std::optional<PackedRight<T>> packed_;
};

}  // namespace gatedrnn
