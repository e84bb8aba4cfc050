// The gate math of the one-state gated cells for the time loop of loop.h: torch's GRU (reset
// after the recurrent product), Cho et al.'s original GRU (reset before it: a second product
// per step), Zhou et al.'s minimal gated unit (one gate, also a second product), and the
// layer-norm GRU (haste's form; its input side is normalized before the loop).
#include "loop.h"

namespace gatedrnn {
namespace {

// torch's and cuDNN's GRU: n = tanh(x_n + r (W_hn h + b_hn)). Saves r, z, n and W_hn h + b_hn.
template <typename T>
struct GruCell {
  using scalar_t = T;
  static constexpr bool kTwoStates = false, kTwoStage = false, kNeedsFreshH = false, kDirectH = true;
  int64_t H, G, R1, R2 = 0, S, A, E = 0, gated = 0;  // S: r's and z's columns; n's is scaled by r
  explicit GruCell(int64_t H) : H(H), G(3 * H), R1(3 * H), S(2 * H), A(4 * H) {}

  void forward(const StepRow<T>& row) const { forward_row(row.x, row.gh, row.h_prev, row.act, row.h); }

  void forward_row(const T* __restrict__ x, const T* __restrict__ gh, const T* __restrict__ h_prev,
                   T* __restrict__ act, T* __restrict__ h) const {
    const T one = 1;
    for (int64_t j = 0; j < H; ++j) {
      const T r = sigmoid(x[j] + gh[j]);                    // reset gate
      const T z = sigmoid(x[H + j] + gh[H + j]);            // update gate
      const T n = tanh_(x[2 * H + j] + r * gh[2 * H + j]);  // candidate (reset after)
      act[j] = r;
      act[H + j] = z;
      act[2 * H + j] = n;
      act[3 * H + j] = gh[2 * H + j];
      h[j] = (one - z) * n + z * h_prev[j];
    }
  }

  template <bool kTrace>
  void backward(const GradRow<T>& row) const {
    backward_row<kTrace>(row.act, row.h_prev, row.d_h, row.d_act, row.d_x, row.d_gh, row.d_h_direct);
  }

  template <bool kTrace>
  void backward_row(const T* __restrict__ act, const T* __restrict__ h_prev, const T* __restrict__ d_h,
                    const T* __restrict__ d_tr, T* __restrict__ d_x, T* __restrict__ d_gh,
                    T* __restrict__ direct) const {
    const T one = 1;
    for (int64_t j = 0; j < H; ++j) {
      const T r = act[j], z = act[H + j], n = act[2 * H + j], hn = act[3 * H + j];
      T d_r = kTrace ? d_tr[j] : T(0);
      const T d_z = d_h[j] * (h_prev[j] - n) + (kTrace ? d_tr[H + j] : T(0));
      const T d_n = d_h[j] * (one - z) + (kTrace ? d_tr[2 * H + j] : T(0));
      const T d_an = d_n * (one - n * n);
      d_r += d_an * hn;
      const T d_ar = d_r * r * (one - r), d_az = d_z * z * (one - z);
      d_x[j] = d_ar;
      d_x[H + j] = d_az;
      d_x[2 * H + j] = d_an;
      d_gh[j] = d_ar;
      d_gh[H + j] = d_az;
      d_gh[2 * H + j] = d_an * r;
      direct[j] = d_h[j] * z;
    }
  }

  template <bool kTrace>
  void backward_first(const GradRow<T>&) const {}
  void forward2(const StepRow<T>&) const {}
};

// Cho et al. 2014: n = tanh(x_n + W_hn (r h_in) + b_hn). Stage one r and z from the first
// product (rows r, z), stage two n from the second (rows n) of r h_in. Saves r, z, n, r h_in.
template <typename T>
struct ChoGruCell {
  using scalar_t = T;
  static constexpr bool kTwoStates = false, kTwoStage = true, kNeedsFreshH = false, kDirectH = true;
  int64_t H, G, R1, R2, S, A, E = 0, gated;
  explicit ChoGruCell(int64_t H) : H(H), G(3 * H), R1(2 * H), R2(H), S(G), A(4 * H), gated(3 * H) {}

  void forward(const StepRow<T>& row) const { forward_row(row.x, row.gh, row.h_in, row.act); }

  void forward_row(const T* __restrict__ x, const T* __restrict__ gh, const T* __restrict__ h_in,
                   T* __restrict__ act) const {
    for (int64_t j = 0; j < H; ++j) {
      const T r = sigmoid(x[j] + gh[j]);          // reset gate
      const T z = sigmoid(x[H + j] + gh[H + j]);  // update gate
      act[j] = r;
      act[H + j] = z;
      act[3 * H + j] = r * h_in[j];  // the second product's input
    }
  }

  void forward2(const StepRow<T>& row) const { forward2_row(row.x, row.gh2, row.h_prev, row.act, row.h); }

  void forward2_row(const T* __restrict__ x, const T* __restrict__ gh2, const T* __restrict__ h_prev,
                    T* __restrict__ act, T* __restrict__ h) const {
    const T one = 1;
    for (int64_t j = 0; j < H; ++j) {
      const T z = act[H + j];
      const T n = tanh_(x[2 * H + j] + gh2[j]);  // candidate (reset before)
      act[2 * H + j] = n;
      h[j] = (one - z) * n + z * h_prev[j];
    }
  }

  template <bool kTrace>
  // z and n, before the second product
  void backward(const GradRow<T>& row) const {
    backward_row<kTrace>(row.act, row.h_prev, row.d_h, row.d_act, row.d_x, row.d_h_direct);
  }

  template <bool kTrace>
  void backward_row(const T* __restrict__ act, const T* __restrict__ h_prev, const T* __restrict__ d_h,
                    const T* __restrict__ d_tr, T* __restrict__ d_x, T* __restrict__ direct) const {
    const T one = 1;
    for (int64_t j = 0; j < H; ++j) {
      const T z = act[H + j], n = act[2 * H + j];
      const T d_z = d_h[j] * (h_prev[j] - n) + (kTrace ? d_tr[H + j] : T(0));
      const T d_n = d_h[j] * (one - z) + (kTrace ? d_tr[2 * H + j] : T(0));
      d_x[H + j] = d_z * z * (one - z);
      d_x[2 * H + j] = d_n * (one - n * n);
      direct[j] = d_h[j] * z;
    }
  }

  template <bool kTrace>
  // r, from the gradient of r h_in
  void backward_first(const GradRow<T>& row) const {
    backward_first_row<kTrace>(row.act, row.h_in, row.d_gated, row.d_act, row.d_x, row.d_h_in);
  }

  template <bool kTrace>
  void backward_first_row(const T* __restrict__ act, const T* __restrict__ h_in, const T* __restrict__ d_gated,
                          const T* __restrict__ d_tr, T* __restrict__ d_x, T* __restrict__ d_h_in) const {
    const T one = 1;
    for (int64_t j = 0; j < H; ++j) {
      const T r = act[j];
      const T d_r = d_gated[j] * h_in[j] + (kTrace ? d_tr[j] : T(0));
      d_x[j] = d_r * r * (one - r);
      d_h_in[j] = d_gated[j] * r;
    }
  }
};

// Zhou et al. 2016: f from the first product, n = tanh(x_n + W_hn (f h_in) + b_hn) from the
// second, h = (1 - f) h_prev + f n. Saves f, n, f h_in.
template <typename T>
struct MguCell {
  using scalar_t = T;
  static constexpr bool kTwoStates = false, kTwoStage = true, kNeedsFreshH = false, kDirectH = true;
  int64_t H, G, R1, R2, S, A, E = 0, gated;
  explicit MguCell(int64_t H) : H(H), G(2 * H), R1(H), R2(H), S(G), A(3 * H), gated(2 * H) {}

  void forward(const StepRow<T>& row) const { forward_row(row.x, row.gh, row.h_in, row.act); }

  void forward_row(const T* __restrict__ x, const T* __restrict__ gh, const T* __restrict__ h_in,
                   T* __restrict__ act) const {
    for (int64_t j = 0; j < H; ++j) {
      const T f = sigmoid(x[j] + gh[j]);  // the one gate
      act[j] = f;
      act[2 * H + j] = f * h_in[j];
    }
  }

  void forward2(const StepRow<T>& row) const { forward2_row(row.x, row.gh2, row.h_prev, row.act, row.h); }

  void forward2_row(const T* __restrict__ x, const T* __restrict__ gh2, const T* __restrict__ h_prev,
                    T* __restrict__ act, T* __restrict__ h) const {
    const T one = 1;
    for (int64_t j = 0; j < H; ++j) {
      const T f = act[j];
      const T n = tanh_(x[H + j] + gh2[j]);  // candidate
      act[H + j] = n;
      h[j] = (one - f) * h_prev[j] + f * n;
    }
  }

  template <bool kTrace>
  // n, and f's share through the blend (kept in d_x)
  void backward(const GradRow<T>& row) const {
    backward_row<kTrace>(row.act, row.h_prev, row.d_h, row.d_act, row.d_x, row.d_h_direct);
  }

  template <bool kTrace>
  void backward_row(const T* __restrict__ act, const T* __restrict__ h_prev, const T* __restrict__ d_h,
                    const T* __restrict__ d_tr, T* __restrict__ d_x, T* __restrict__ direct) const {
    const T one = 1;
    for (int64_t j = 0; j < H; ++j) {
      const T f = act[j], n = act[H + j];
      const T d_n = d_h[j] * f + (kTrace ? d_tr[H + j] : T(0));
      d_x[j] = d_h[j] * (n - h_prev[j]) + (kTrace ? d_tr[j] : T(0));
      d_x[H + j] = d_n * (one - n * n);
      direct[j] = d_h[j] * (one - f);
    }
  }

  template <bool kTrace>
  // f, adding its share through f h_in
  void backward_first(const GradRow<T>& row) const {
    backward_first_row<kTrace>(row.act, row.h_in, row.d_gated, row.d_x, row.d_h_in);
  }

  template <bool kTrace>
  void backward_first_row(const T* __restrict__ act, const T* __restrict__ h_in, const T* __restrict__ d_gated,
                          T* __restrict__ d_x, T* __restrict__ d_h_in) const {
    const T one = 1;
    for (int64_t j = 0; j < H; ++j) {
      const T f = act[j];
      const T d_f = d_x[j] + d_gated[j] * h_in[j];
      d_x[j] = d_f * f * (one - f);
      d_h_in[j] = d_gated[j] * f;
    }
  }
};

// Layer norm: a_h = γ_h LN(W_hh h_in) + b_hh (x arrives as γ_x LN(W_ih x) + b_ih), then
// torch's GRU on x and a_h. Saves r, z, n, the n block of a_h | LN(W_hh h_in) (3H) | 1/std;
// keeps the gradient of a_h per step for γ_h and b_hh. In inference (nothing saved) x may
// arrive as W_ih x alone, with gain_ih (and bias_ih): the row then normalizes it itself.
template <typename T>
struct LnGruCell {
  using scalar_t = T;
  static constexpr bool kTwoStates = false, kTwoStage = false, kNeedsFreshH = false, kDirectH = true;
  int64_t H, G, R1, R2 = 0, S = 0, A, E, gated = 0;  // the products' gradient goes through the norm
  const T* gain_hh;
  const T* bias_hh;  // null without biases
  const T* gain_ih = nullptr;  // given: x is W_ih x, normalized here (inference only)
  const T* bias_ih = nullptr;
  LnGruCell(int64_t H, const Tensor& gain_hh, const Tensor& bias_hh, const Tensor& ln_ih = Tensor())
      : H(H),
        G(3 * H),
        R1(3 * H),
        A(7 * H + 1),
        E(3 * H),
        gain_hh(gain_hh.data_ptr<T>()),
        bias_hh(bias_hh.defined() ? bias_hh.data_ptr<T>() : nullptr),
        gain_ih(ln_ih.defined() ? ln_ih.data_ptr<T>() : nullptr),
        bias_ih(ln_ih.defined() && ln_ih.size(0) == 2 ? ln_ih.data_ptr<T>() + 3 * H : nullptr) {}

  void forward(const StepRow<T>& row) const {
    if (gain_ih) {  // inference: γ_x LN(W_ih x) + b_ih into gn once a_h is formed (nothing keeps gn then)
      forward_row(row.x, row.gh, row.h_prev, row.act, row.act + 4 * H, row.act + 4 * H, row.h);
    } else {
      forward_row(row.x, row.gh, row.h_prev, row.act, row.act + 4 * H, nullptr, row.h);
    }
  }

  // xn: where the normalized input goes when x comes without its norm (then gn's place)
  void forward_row(const T* x, const T* __restrict__ gh, const T* __restrict__ h_prev, T* __restrict__ act, T* gn,
                   T* xn, T* __restrict__ h) const {
    act[7 * H] = normalize(gh, gn, 3 * H);
    // a_h in act until the gates replace it; two branch-free loops, so that both vectorize
    // (a ternary on the bias inside the gate loop kept GCC from vectorizing it: 2.3x slower)
    if (bias_hh) {
      for (int64_t k = 0; k < 3 * H; ++k) act[k] = gain_hh[k] * gn[k] + bias_hh[k];
    } else {
      for (int64_t k = 0; k < 3 * H; ++k) act[k] = gain_hh[k] * gn[k];
    }
    if (xn) {
      layer_norm_row(x, gain_ih, bias_ih, xn, 3 * H);
      x = xn;
    }
    gates_row(x, h_prev, act, h);
  }

  void gates_row(const T* __restrict__ x, const T* __restrict__ h_prev, T* __restrict__ act,
                 T* __restrict__ h) const {
    const T one = 1;
    for (int64_t j = 0; j < H; ++j) {
      const T a_n = act[2 * H + j];
      const T r = sigmoid(x[j] + act[j]);
      const T z = sigmoid(x[H + j] + act[H + j]);
      const T n = tanh_(x[2 * H + j] + r * a_n);
      act[j] = r;
      act[H + j] = z;
      act[2 * H + j] = n;
      act[3 * H + j] = a_n;
      h[j] = (one - z) * n + z * h_prev[j];
    }
  }

  // torch's GRU backward on r, z, n, a_hn (act's first 4H), its gradient of a_h kept in d_extra
  // for gamma_h and b_hh; then through the norm to W_hh h_in
  template <bool kTrace>
  void backward(const GradRow<T>& row) const {
    GruCell<T>(H).template backward_row<kTrace>(row.act, row.h_prev, row.d_h, row.d_act, row.d_x, row.d_extra,
                                                row.d_h_direct);
    norm_backward_row(row.d_extra, row.act + 4 * H, row.act[7 * H], row.d_gh);
  }

  void norm_backward_row(const T* __restrict__ d_a, const T* __restrict__ gn, T rstd, T* __restrict__ d_gh) const {
    for (int64_t k = 0; k < 3 * H; ++k) d_gh[k] = d_a[k] * gain_hh[k];
    normalize_backward(d_gh, gn, rstd, 3 * H);
  }

  template <bool kTrace>
  void backward_first(const GradRow<T>&) const {}
  void forward2(const StepRow<T>&) const {}
};

// The cell of a form: 0 torch's GRU, 1 Cho et al.'s, 2 the MGU.
template <typename T, typename F>
void with_cell(int64_t H, int64_t form, const F& f) {
  TORCH_CHECK(form >= 0 && form <= 2, "gatedrnn: unknown GRU form ", form);
  if (form == 0) f(GruCell<T>(H));
  if (form == 1) f(ChoGruCell<T>(H));
  if (form == 2) f(MguCell<T>(H));
}

}  // namespace

// xw (T, B, G) input projections (G = 3H, or 2H for the MGU); h0 (B, H); w_hh (G, H); b_hh (G);
// form 0 torch's GRU, 1 Cho et al.'s, 2 the MGU; rmask (B, H) recurrent dropout; keep_h (T, B, H)
// zoneout (one value: eval); ln_hh (3H) the recurrent product's layer-norm gain (form 0 only; xw
// then comes normalized, and b_hh is added after the norm, unless ln_ih (1 or 2, 3H), the input
// side's gain (and bias), is given: then xw is W_ih x, normalized row by row in the loop, and
// save must be false). Returns out (T, B, H), h_n and,
// when save, hs (empty without lengths: out is hs) and act (T, B, A): r, z, n, W_hn h + b_hn
// (form 0); r, z, n, r h_in (1); f, n, f h_in (2); r, z, n, a_hn, LN(W_hh h), 1/std (layer
// norm); zero past each length.
// w_ih (G, I) given: xw is the layer's input x (T, B, I), projected with w_ih and b_ih by the loop
// (input.h).
std::vector<Tensor> gru_forward(const Tensor& xw, const Tensor& h0, const Tensor& w_hh, const optional<Tensor>& b_hh,
                                int64_t form, const optional<Tensor>& rmask, const optional<Tensor>& keep_h,
                                const optional<Tensor>& ln_hh, const optional<Tensor>& ln_ih,
                                const optional<Tensor>& lengths, bool reverse, bool save, const optional<Tensor>& w_ih,
                                const optional<Tensor>& b_ih) {
  std::vector<Tensor> r;
  TORCH_CHECK(!given(ln_ih) || !save, "gru_forward: xw without its norm (ln_ih given) is for inference only");
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "gru_forward", [&] {
    if (given(ln_hh)) {  // b_hh is added after the norm, by the cell
      const LnGruCell<scalar_t> cell(h0.size(1), ln_hh->contiguous(), given(b_hh) ? b_hh->contiguous() : Tensor(),
                                     given(ln_ih) ? ln_ih->contiguous() : Tensor());
      r = loop_forward(cell, xw, w_ih, b_ih, h0, {}, w_hh, {}, {}, rmask, keep_h, {}, lengths, reverse, save);
      return;
    }
    with_cell<scalar_t>(h0.size(1), form, [&](const auto& cell) {
      r = loop_forward(cell, xw, w_ih, b_ih, h0, {}, w_hh, b_hh, {}, rmask, keep_h, {}, lengths, reverse, save);
    });
  });
  return {r[0], r[1], r[3], r[5]};
}

// Gradients of gru_forward; d_act (T, B, A) comes from a trace. Returns d_xw, d_h0, d_w_hh, d_b_hh,
// d_ln_hh (3H; empty without layer norm).
std::vector<Tensor> gru_backward(const optional<Tensor>& d_out, const Tensor& d_h_n, const optional<Tensor>& d_act,
                                 const Tensor& hs, const Tensor& act, const Tensor& h0, const Tensor& w_hh,
                                 const optional<Tensor>& b_hh, int64_t form, const optional<Tensor>& rmask,
                                 const optional<Tensor>& keep_h, const optional<Tensor>& ln_hh,
                                 const optional<Tensor>& lengths, bool reverse) {
  std::vector<Tensor> r;
  const int64_t H = hs.size(2);
  AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "gru_backward", [&] {
    if (given(ln_hh)) {
      const LnGruCell<scalar_t> cell(H, ln_hh->contiguous(), given(b_hh) ? b_hh->contiguous() : Tensor());
      r = loop_backward(cell, d_out, d_h_n, {}, d_act, {}, hs, empty0(act), act, empty0(act), empty0(act), h0, {},
                        w_hh, {}, rmask, keep_h, {}, lengths, reverse);
      return;
    }
    with_cell<scalar_t>(hs.size(2), form, [&](const auto& cell) {
      r = loop_backward(cell, d_out, d_h_n, {}, d_act, {}, hs, empty0(act), act, empty0(act), empty0(act), h0, {},
                        w_hh, {}, rmask, keep_h, {}, lengths, reverse);
    });
  });
  Tensor d_ln_hh = empty0(act);
  if (given(ln_hh)) {  // γ_h's and b_hh's gradients from the kept gradients of a_h
    const std::vector<Tensor> hh = gain_and_bias_grads(r[6], act, 4 * H);
    d_ln_hh = hh[0];
    r[4] = hh[1];
  }
  return {r[0], r[1], r[3], r[4], d_ln_hh};
}

// torch's GRU gate math over rows that come from elsewhere: the convolutional GRU's pixels,
// channels last (each pixel's 3H pre-activations r, z, n a row). xg (N, 3H) the input
// convolution, hg (N, 3H) the recurrent one (n's part scaled by r here), h_prev (N, H).
// Returns h (N, H) and, when save, act (N, 4H): r, z, n, hg's n block (else empty).
std::vector<Tensor> gru_rows_forward(const Tensor& xg, const Tensor& hg, const Tensor& h_prev, bool save) {
  const Tensor x = xg.contiguous(), g = hg.contiguous(), hp = h_prev.contiguous();
  const int64_t N = hp.size(0), H = hp.size(1);
  TORCH_CHECK(x.sizes() == g.sizes() && x.dim() == 2 && x.size(0) == N && x.size(1) == 3 * H,
              "gatedrnn: gru_rows_forward wants xg, hg (N, 3H) and h_prev (N, H)");
  Tensor h = buffer_empty({N, H}, x.options());
  Tensor act = save ? buffer_empty({N, 4 * H}, x.options()) : empty0(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_rows_forward", [&] {
    using T = scalar_t;
    const GruCell<T> cell(H);
    const T *xp = x.const_data_ptr<T>(), *gp = g.const_data_ptr<T>(), *hpp = hp.const_data_ptr<T>();
    T *ho = h.data_ptr<T>(), *ap = save ? act.data_ptr<T>() : nullptr;
    at::parallel_for(0, N, std::max<int64_t>(1, 32768 / (3 * H)), [&](int64_t begin, int64_t end) {
      std::vector<T> scratch(ap ? 0 : 4 * H);
      for (int64_t n = begin; n < end; ++n) {
        cell.forward_row(xp + n * 3 * H, gp + n * 3 * H, hpp + n * H, ap ? ap + n * 4 * H : scratch.data(),
                         ho + n * H);
      }
    });
  });
  return {h, act};
}

// Gradients of gru_rows_forward: d_h (N, H), d_act (N, 4H) from a trace. Returns xg's (N, 3H),
// hg's (N, 3H) and h_prev's other than through hg (N, H).
std::vector<Tensor> gru_rows_backward(const Tensor& d_h, const optional<Tensor>& d_act, const Tensor& act,
                                      const Tensor& h_prev) {
  const Tensor dh = d_h.contiguous(), a = act.contiguous(), hp = h_prev.contiguous();
  const Tensor da = given(d_act) ? d_act->contiguous() : Tensor();
  const int64_t N = hp.size(0), H = hp.size(1);
  Tensor d_x = buffer_empty({N, 3 * H}, a.options()), d_gh = buffer_empty({N, 3 * H}, a.options());
  Tensor d_h_prev = buffer_empty({N, H}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "gru_rows_backward", [&] {
    using T = scalar_t;
    const GruCell<T> cell(H);
    const T *ap = a.const_data_ptr<T>(), *hpp = hp.const_data_ptr<T>(), *dhp = dh.const_data_ptr<T>();
    const T* dap = da.defined() ? da.const_data_ptr<T>() : nullptr;
    T *dxp = d_x.data_ptr<T>(), *dgp = d_gh.data_ptr<T>(), *dhpp = d_h_prev.data_ptr<T>();
    for_rows(N, 3 * H, [&](int64_t n) {
      if (dap) {
        cell.template backward_row<true>(ap + n * 4 * H, hpp + n * H, dhp + n * H, dap + n * 4 * H, dxp + n * 3 * H,
                                         dgp + n * 3 * H, dhpp + n * H);
      } else {
        cell.template backward_row<false>(ap + n * 4 * H, hpp + n * H, dhp + n * H, nullptr, dxp + n * 3 * H,
                                          dgp + n * 3 * H, dhpp + n * H);
      }
    });
  });
  return {d_x, d_gh, d_h_prev};
}

}  // namespace gatedrnn
