// The vanilla RNN's step for the time loop of loop.h: h = tanh(a) or relu(a), a = x + W_hh h + b_hh.
#include "loop.h"

namespace gatedrnn {
namespace {

template <typename T, bool kRelu>
struct RnnCell {
  using scalar_t = T;
  static constexpr bool kTwoStates = false, kTwoStage = false, kNeedsFreshH = true, kDirectH = false;
  int64_t H, G, R1, R2 = 0, S, A = 0, E = 0, gated = 0;
  explicit RnnCell(int64_t H) : H(H), G(H), R1(H), S(H) {}

  void forward(const StepRow<T>& row) const { forward_row(row.x, row.gh, row.h); }

  void forward_row(const T* __restrict__ x, const T* __restrict__ gh, T* __restrict__ h) const {
    for (int64_t j = 0; j < H; ++j) {
      const T a = x[j] + gh[j];
      if constexpr (kRelu) {
        h[j] = a < T(0) ? T(0) : a;  // NaN stays NaN
      } else {
        h[j] = tanh_(a);
      }
    }
  }

  template <bool kTrace>
  void backward(const GradRow<T>& row) const { backward_row<kTrace>(row.h, row.d_h, row.d_x); }

  template <bool kTrace>
  void backward_row(const T* __restrict__ h, const T* __restrict__ d_h, T* __restrict__ d_x) const {
    for (int64_t j = 0; j < H; ++j) {
      if constexpr (kRelu) {
        d_x[j] = h[j] > T(0) ? d_h[j] : T(0);
      } else {
        d_x[j] = d_h[j] * (T(1) - h[j] * h[j]);
      }
    }
  }

  template <bool kTrace>
  void backward_first(const GradRow<T>&) const {}
  void forward2(const StepRow<T>&) const {}
};

}  // namespace

// xw (T, B, H) input projections; h0 (B, H); w_hh (H, H); b_hh (H); relu picks the
// nonlinearity (else tanh); rmask (B, H) recurrent dropout; keep_h (T, B, H) zoneout (one value:
// eval). Returns out (T, B, H), h_n and, when save, hs (empty without lengths: out is hs) and
// hf (T, B, H) the new h before zoneout (empty without zoneout).
// w_ih (G, I) given: xw is the layer's input x (T, B, I), projected with w_ih and b_ih by the loop
// (input.h).
std::vector<Tensor> rnn_forward(const Tensor& xw, const Tensor& h0, const Tensor& w_hh, const optional<Tensor>& b_hh,
                                bool relu, const optional<Tensor>& rmask, const optional<Tensor>& keep_h,
                                const optional<Tensor>& lengths, bool reverse, bool save, const optional<Tensor>& w_ih,
                                const optional<Tensor>& b_ih) {
  std::vector<Tensor> r;
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "rnn_forward", [&] {
    const int64_t H = h0.size(1);
    auto run = [&](const auto& cell) {
      r = loop_forward(cell, xw, w_ih, b_ih, h0, {}, w_hh, b_hh, {}, rmask, keep_h, {}, lengths, reverse, save);
    };
    relu ? run(RnnCell<scalar_t, true>(H)) : run(RnnCell<scalar_t, false>(H));
  });
  return {r[0], r[1], r[3], r[6]};
}

// Gradients of rnn_forward. Returns d_xw, d_h0, d_w_hh, d_b_hh.
std::vector<Tensor> rnn_backward(const optional<Tensor>& d_out, const Tensor& d_h_n, const Tensor& hs,
                                 const Tensor& hf, const Tensor& h0, const Tensor& w_hh, bool relu,
                                 const optional<Tensor>& rmask, const optional<Tensor>& keep_h,
                                 const optional<Tensor>& lengths, bool reverse) {
  std::vector<Tensor> r;
  const Tensor act = at::empty({hs.size(0), hs.size(1), 0}, hs.options());
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "rnn_backward", [&] {
    const int64_t H = hs.size(2);
    auto run = [&](const auto& cell) {
      r = loop_backward(cell, d_out, d_h_n, {}, {}, {}, hs, empty0(hs), act, hf, empty0(hs), h0, {}, w_hh, {}, rmask,
                        keep_h, {}, lengths, reverse);
    };
    relu ? run(RnnCell<scalar_t, true>(H)) : run(RnnCell<scalar_t, false>(H));
  });
  return {r[0], r[1], r[3], r[4]};
}

}  // namespace gatedrnn
