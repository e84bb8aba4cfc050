// The LSTM's gate math for the time loop of loop.h: torch's cell, Gers & Schmidhuber's
// peepholes and Greff et al.'s coupled input and forget gates (CIFG), as template flags; and
// the layer-norm LSTM (Ba et al. 2016, haste's form), whose input side is normalized before
// the loop (it is no recurrence), its recurrent product and cell state here.
#include "loop.h"

namespace gatedrnn {
namespace {

// Gates i, f, g, o (saved in that order, A = 4H, also when coupled: i = 1 - f); x and the
// recurrent product hold the blocks i, f, g, o, or f, g, o when coupled (G = 3H).
template <typename T, bool kPeephole, bool kCoupled>
struct LstmCell {
  using scalar_t = T;
  static constexpr bool kTwoStates = true, kTwoStage = false, kNeedsFreshH = false, kDirectH = false;
  static constexpr int64_t kF = kCoupled ? 0 : 1;  // the forget gate's block; g and o follow it
  int64_t H, G, R1, R2 = 0, S, A, E = 0, gated = 0;
  const T* w_ci;  // peepholes (H each): c_{t-1} into i and f, c_t into o
  const T* w_cf;
  const T* w_co;

  LstmCell(int64_t H, const T* peephole)
      : H(H),
        G((kCoupled ? 3 : 4) * H),
        R1(G),
        S(G),
        A(4 * H),
        w_ci(peephole),
        w_cf(peephole ? peephole + H : nullptr),
        w_co(peephole ? peephole + 2 * H : nullptr) {}

  void forward(const StepRow<T>& r) const { forward_row(r.x, r.gh, r.c_prev, r.act, r.c, r.h); }

  void forward_row(const T* __restrict__ x, const T* __restrict__ gh, const T* __restrict__ c_prev,
                   T* __restrict__ act, T* __restrict__ c, T* __restrict__ m) const {
    for (int64_t j = 0; j < H; ++j) {
      const T cp = c_prev[j];
      T a_f = x[kF * H + j] + gh[kF * H + j];
      if constexpr (kPeephole) a_f += w_cf[j] * cp;
      const T f = sigmoid(a_f);  // forget gate
      T i;                       // input gate
      if constexpr (kCoupled) {
        i = T(1) - f;
      } else {
        T a_i = x[j] + gh[j];
        if constexpr (kPeephole) a_i += w_ci[j] * cp;
        i = sigmoid(a_i);
      }
      const T g = tanh_(x[(kF + 1) * H + j] + gh[(kF + 1) * H + j]);  // candidate
      const T c_t = f * cp + i * g;
      T a_o = x[(kF + 2) * H + j] + gh[(kF + 2) * H + j];
      if constexpr (kPeephole) a_o += w_co[j] * c_t;
      const T o = sigmoid(a_o);  // output gate
      act[j] = i;
      act[H + j] = f;
      act[2 * H + j] = g;
      act[3 * H + j] = o;
      c[j] = c_t;
      m[j] = o * tanh_(c_t);
    }
  }

  // From d_m (the gradient of o tanh(c)) and d_c (of the new c), the pre-activations'
  // gradients and that of c_{t-1}.
  template <bool kTrace>
  void backward(const GradRow<T>& r) const {
    backward_row<kTrace>(r.act, r.c, r.c_prev, r.d_h, r.d_c, r.d_act, r.d_x, r.d_c_prev);
  }

  template <bool kTrace>
  void backward_row(const T* __restrict__ act, const T* __restrict__ c, const T* __restrict__ c_prev,
                    const T* __restrict__ d_m, const T* __restrict__ d_c, const T* __restrict__ d_tr,
                    T* __restrict__ d_x, T* __restrict__ d_c_prev) const {
    const T one = 1;
    for (int64_t j = 0; j < H; ++j) {
      const T i = act[j], f = act[H + j], g = act[2 * H + j], o = act[3 * H + j];
      const T tc = tanh_(c[j]);
      T d_o = d_m[j] * tc;
      if constexpr (kTrace) d_o += d_tr[3 * H + j];
      const T d_ao = d_o * o * (one - o);
      T d_ct = d_c[j] + d_m[j] * o * (one - tc * tc);
      if constexpr (kPeephole) d_ct += d_ao * w_co[j];
      T d_i = d_ct * g, d_f = d_ct * c_prev[j], d_g = d_ct * i;
      if constexpr (kTrace) {
        d_i += d_tr[j];
        d_f += d_tr[H + j];
        d_g += d_tr[2 * H + j];
      }
      const T d_ag = d_g * (one - g * g);
      T d_cp = d_ct * f;
      if constexpr (kCoupled) {
        const T d_af = (d_f - d_i) * f * (one - f);  // i = 1 - f
        d_x[j] = d_af;
        if constexpr (kPeephole) d_cp += d_af * w_cf[j];
      } else {
        const T d_ai = d_i * i * (one - i), d_af = d_f * f * (one - f);
        d_x[j] = d_ai;
        d_x[H + j] = d_af;
        if constexpr (kPeephole) d_cp += d_ai * w_ci[j] + d_af * w_cf[j];
      }
      d_x[(kF + 1) * H + j] = d_ag;
      d_x[(kF + 2) * H + j] = d_ao;
      d_c_prev[j] = d_cp;
    }
  }

  template <bool kTrace>
  void backward_first(const GradRow<T>&) const {}
  void forward2(const StepRow<T>&) const {}

  // The projection's input m = o tanh(c), (T, B, H), from the saved gates and new c.
  Tensor projected(const Tensor& act, const Tensor& c) const { return act.narrow(2, 3 * H, H) * at::tanh(c); }
};

// Layer norm: a = x + γ_h LN(W_hh h_in) + b_hh (x arrives as γ_x LN(W_ih x) + b_ih), gates as
// torch's, c = f c_prev + i g, m = o tanh(γ_c LN(c) + β_c). Saves i, f, g, o | LN(W_hh h_in)
// (4H) | LN(c) (H) | the two 1/std; keeps d(γ_c LN(c) + β_c) per step for γ_c and β_c.
// In inference (nothing saved) x may arrive as W_ih x alone, with gain_ih (and bias_ih) given:
// the row then applies the input side's norm itself, saving a pass over all T·B rows.
template <typename T>
struct LnLstmCell {
  using scalar_t = T;
  static constexpr bool kTwoStates = true, kTwoStage = false, kNeedsFreshH = false, kDirectH = false;
  int64_t H, G, R1, R2 = 0, S = 0, A, E, gated = 0;  // the product's gradient goes through the norm
  const T* gain_hh;
  const T* bias_hh;  // added after the norm; null without biases
  const T* gain_c;
  const T* bias_c;
  const T* gain_ih = nullptr;  // given: x is W_ih x, normalized here (inference only)
  const T* bias_ih = nullptr;
  Tensor gain_c_t, bias_c_t;

  LnLstmCell(int64_t H, const Tensor& gain_hh, const optional<Tensor>& bias_hh, const Tensor& ln_c,
             const Tensor& ln_ih = Tensor())
      : H(H),
        G(4 * H),
        R1(4 * H),
        A(9 * H + 2),
        E(H),
        gain_hh(gain_hh.data_ptr<T>()),
        bias_hh(given(bias_hh) ? bias_hh->data_ptr<T>() : nullptr),
        gain_c(ln_c.data_ptr<T>()),
        bias_c(ln_c.data_ptr<T>() + H),
        gain_ih(ln_ih.defined() ? ln_ih.data_ptr<T>() : nullptr),
        bias_ih(ln_ih.defined() && ln_ih.size(0) == 2 ? ln_ih.data_ptr<T>() + 4 * H : nullptr),
        gain_c_t(ln_c[0]),
        bias_c_t(ln_c[1]) {}

  void forward(const StepRow<T>& r) const {
    forward_row(r.x, r.gh, r.c_prev, r.act, r.act + 4 * H, r.act + 8 * H, r.c, r.h);
  }

  // gn: the normalized product, cn: the normalized cell state (both kept in act)
  void forward_row(const T* __restrict__ x, const T* __restrict__ gh, const T* __restrict__ c_prev,
                   T* __restrict__ act, T* __restrict__ gn, T* __restrict__ cn, T* __restrict__ c,
                   T* __restrict__ m) const {
    act[9 * H] = normalize(gh, gn, 4 * H);
    // the pre-activations, in act until the gates replace them; branch-free loops, so they vectorize
    if (bias_hh) {
      for (int64_t k = 0; k < 4 * H; ++k) act[k] = gain_hh[k] * gn[k] + bias_hh[k];
    } else {
      for (int64_t k = 0; k < 4 * H; ++k) act[k] = gain_hh[k] * gn[k];
    }
    if (gain_ih) {  // inference: γ_x LN(W_ih x) + b_ih into gn, which nothing keeps then
      layer_norm_row(x, gain_ih, bias_ih, gn, 4 * H);
      for (int64_t k = 0; k < 4 * H; ++k) act[k] += gn[k];
    } else {
      for (int64_t k = 0; k < 4 * H; ++k) act[k] += x[k];
    }
    for (int64_t j = 0; j < H; ++j) {
      const T i = sigmoid(act[j]), f = sigmoid(act[H + j]), g = tanh_(act[2 * H + j]), o = sigmoid(act[3 * H + j]);
      act[j] = i;
      act[H + j] = f;
      act[2 * H + j] = g;
      act[3 * H + j] = o;
      c[j] = f * c_prev[j] + i * g;
    }
    act[9 * H + 1] = normalize(c, cn, H);
    for (int64_t j = 0; j < H; ++j) m[j] = act[3 * H + j] * tanh_(gain_c[j] * cn[j] + bias_c[j]);
  }

  template <bool kTrace>
  void backward(const GradRow<T>& r) const {
    backward_row<kTrace>(r.act, r.act + 4 * H, r.act + 8 * H, r.c_prev, r.d_h, r.d_c, r.d_act, r.d_x, r.d_gh,
                         r.d_extra, r.d_c_prev);
  }

  // d_y: the gradient of γ_c LN(c) + β_c, kept for γ_c and β_c
  template <bool kTrace>
  void backward_row(const T* __restrict__ act, const T* __restrict__ gn, const T* __restrict__ cn,
                    const T* __restrict__ c_prev, const T* __restrict__ d_m, const T* __restrict__ d_c,
                    const T* __restrict__ d_tr, T* __restrict__ d_x, T* __restrict__ d_gh, T* __restrict__ d_y,
                    T* __restrict__ d_c_prev) const {
    const T rstd = act[9 * H], rstd_c = act[9 * H + 1];
    const T one = 1;
    for (int64_t j = 0; j < H; ++j) {  // through tanh into the normalized c: d_c_prev holds it a moment
      const T o = act[3 * H + j], ty = tanh_(gain_c[j] * cn[j] + bias_c[j]);
      d_y[j] = d_m[j] * o * (one - ty * ty);
      d_c_prev[j] = d_y[j] * gain_c[j];
    }
    normalize_backward(d_c_prev, cn, rstd_c, H);  // now the gradient of c through its norm
    for (int64_t j = 0; j < H; ++j) {
      const T i = act[j], f = act[H + j], g = act[2 * H + j], o = act[3 * H + j];
      const T ty = tanh_(gain_c[j] * cn[j] + bias_c[j]);
      const T d_ct = d_c[j] + d_c_prev[j];
      T d_o = d_m[j] * ty, d_i = d_ct * g, d_f = d_ct * c_prev[j], d_g = d_ct * i;
      if constexpr (kTrace) {
        d_i += d_tr[j];
        d_f += d_tr[H + j];
        d_g += d_tr[2 * H + j];
        d_o += d_tr[3 * H + j];
      }
      d_x[j] = d_i * i * (one - i);
      d_x[H + j] = d_f * f * (one - f);
      d_x[2 * H + j] = d_g * (one - g * g);
      d_x[3 * H + j] = d_o * o * (one - o);
      d_c_prev[j] = d_ct * f;
    }
    for (int64_t k = 0; k < 4 * H; ++k) d_gh[k] = d_x[k] * gain_hh[k];
    normalize_backward(d_gh, gn, rstd, 4 * H);
  }

  template <bool kTrace>
  void backward_first(const GradRow<T>&) const {}
  void forward2(const StepRow<T>&) const {}

  Tensor projected(const Tensor& act, const Tensor&) const {
    return act.narrow(2, 3 * H, H) * at::tanh(act.narrow(2, 8 * H, H) * gain_c_t + bias_c_t);
  }
};

// f(cell) with the cell of these flags; peephole (3, H) rows w_ci, w_cf, w_co, or undefined.
template <typename T, typename F>
void with_cell(int64_t H, const Tensor& peephole, bool coupled, const F& f) {
  const T* p = peephole.defined() ? peephole.data_ptr<T>() : nullptr;
  if (p && coupled) f(LstmCell<T, true, true>(H, p));
  if (p && !coupled) f(LstmCell<T, true, false>(H, p));
  if (!p && coupled) f(LstmCell<T, false, true>(H, p));
  if (!p && !coupled) f(LstmCell<T, false, false>(H, p));
}

Tensor contiguous_or_undefined(const optional<Tensor>& t) { return given(t) ? t->contiguous() : Tensor(); }

}  // namespace

// xw (T, B, 4H or 3H coupled) input projections; h0 (B, P); c0 (B, H); w_hh (4H or 3H, P);
// b_hh; w_hr (P, H) when projecting; peephole (3, H) rows w_ci (zeros when coupled), w_cf, w_co;
// rmask (B, P) recurrent dropout; keep_h (T, B, P), keep_c (T, B, H) zoneout (one value: eval);
// layer norm: ln_hh (4H) the recurrent product's gain, ln_c (2, H) the cell state's gain and
// bias (xw then comes normalized, and b_hh is added after the norm), unless ln_ih (1 or 2, 4H)
// the input side's gain (and bias) is given: then xw is W_ih x and each row is normalized in
// the loop (save must be false). Returns out (T, B, P), h_n,
// c_n and, when save, hs, cs (T, B, H) carried cell states, gates (T, B, 4H, or 9H + 2 with
// layer norm) i, f, g, o first (zero past each length), cf (T, B, H) new c before zoneout
// (empty without zoneout on c); see loop_forward.
// w_ih (G, I) given: xw is the layer's input x (T, B, I), projected with w_ih and b_ih by the loop
// (input.h).
std::vector<Tensor> lstm_forward(const Tensor& xw, const Tensor& h0, const Tensor& c0, const Tensor& w_hh,
                                 const optional<Tensor>& b_hh, const optional<Tensor>& w_hr,
                                 const optional<Tensor>& peephole, bool coupled, const optional<Tensor>& rmask,
                                 const optional<Tensor>& keep_h, const optional<Tensor>& keep_c,
                                 const optional<Tensor>& ln_hh, const optional<Tensor>& ln_c,
                                 const optional<Tensor>& ln_ih, const optional<Tensor>& lengths, bool reverse,
                                 bool save, const optional<Tensor>& w_ih, const optional<Tensor>& b_ih) {
  std::vector<Tensor> r;
  const Tensor peep = contiguous_or_undefined(peephole);
  TORCH_CHECK(!given(ln_ih) || !save, "lstm_forward: xw without its norm (ln_ih given) is for inference only");
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "lstm_forward", [&] {
    if (given(ln_hh)) {  // b_hh is added after the norm, by the cell
      const LnLstmCell<scalar_t> cell(c0.size(1), ln_hh->contiguous(), contiguous_or_undefined(b_hh),
                                      ln_c->contiguous(), contiguous_or_undefined(ln_ih));
      r = loop_forward(cell, xw, w_ih, b_ih, h0, c0, w_hh, {}, w_hr, rmask, keep_h, keep_c, lengths, reverse, save);
      return;
    }
    with_cell<scalar_t>(c0.size(1), peep, coupled, [&](const auto& cell) {
      r = loop_forward(cell, xw, w_ih, b_ih, h0, c0, w_hh, b_hh, w_hr, rmask, keep_h, keep_c, lengths, reverse, save);
    });
  });
  return {r[0], r[1], r[2], r[3], r[4], r[5], r[7]};
}

// Gradients of lstm_forward. d_gates (T, B, 4H) and d_cs (T, B, H) come from a trace. Returns
// d_xw, d_h0, d_c0, d_w_hh, d_b_hh, d_w_hr (empty without a projection), d_peephole (3, H)
// (empty without peepholes), d_ln_hh (4H) and d_ln_c (2, H) (empty without layer norm).
std::vector<Tensor> lstm_backward(const optional<Tensor>& d_out, const Tensor& d_h_n, const Tensor& d_c_n,
                                  const optional<Tensor>& d_gates, const optional<Tensor>& d_cs, const Tensor& hs,
                                  const Tensor& cs, const Tensor& gates, const Tensor& cf, const Tensor& h0,
                                  const Tensor& c0, const Tensor& w_hh, const optional<Tensor>& w_hr,
                                  const optional<Tensor>& peephole, bool coupled, const optional<Tensor>& rmask,
                                  const optional<Tensor>& keep_h, const optional<Tensor>& keep_c,
                                  const optional<Tensor>& ln_hh, const optional<Tensor>& ln_c,
                                  const optional<Tensor>& b_hh, const optional<Tensor>& lengths, bool reverse) {
  std::vector<Tensor> r;
  const Tensor peep = contiguous_or_undefined(peephole);
  const int64_t H = cs.size(2);
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_backward", [&] {
    if (given(ln_hh)) {
      const LnLstmCell<scalar_t> cell(H, ln_hh->contiguous(), contiguous_or_undefined(b_hh), ln_c->contiguous());
      r = loop_backward(cell, d_out, d_h_n, d_c_n, d_gates, d_cs, hs, cs, gates, empty0(gates), cf, h0, c0, w_hh,
                        w_hr, rmask, keep_h, keep_c, lengths, reverse);
      return;
    }
    with_cell<scalar_t>(H, peep, coupled, [&](const auto& cell) {
      r = loop_backward(cell, d_out, d_h_n, d_c_n, d_gates, d_cs, hs, cs, gates, empty0(gates), cf, h0, c0, w_hh,
                        w_hr, rmask, keep_h, keep_c, lengths, reverse);
    });
  });
  Tensor d_peephole = empty0(gates);
  if (peep.defined()) {  // sum over steps and rows of each gate's pre-activation gradient times its c
    const Tensor& d_xw = r[0];
    const Tensor c_prev = previous_steps(cs, c0, reverse), c_new = cf.numel() ? cf : cs;
    auto sum = [&](int64_t block, const Tensor& c) {
      return (d_xw.narrow(2, block * H, H) * c).sum(kStepsAndRows);
    };
    const int64_t f = coupled ? 0 : 1;
    d_peephole = at::stack({coupled ? at::zeros({H}, gates.options()) : sum(0, c_prev), sum(f, c_prev),
                            sum(f + 2, c_new)});
  }
  Tensor d_ln_hh = empty0(gates), d_ln_c = empty0(gates);
  if (given(ln_hh)) {  // the gains' and biases' gradients from the kept per-step gradients
    // the pre-activations' gradient d_a (r[0]): γ_h's times LN(W_hh h), and b_hh's
    const std::vector<Tensor> hh = gain_and_bias_grads(r[0], gates, 4 * H);
    d_ln_hh = hh[0];
    r[4] = hh[1];
    const std::vector<Tensor> c = gain_and_bias_grads(r[6], gates, 8 * H);  // d_y: γ_c's and β_c's
    d_ln_c = at::stack({c[0], c[1]});
  }
  return {r[0], r[1], r[2], r[3], r[4], r[5], d_peephole, d_ln_hh, d_ln_c};
}

// The LSTM's gate math over rows that come from elsewhere: the convolutional LSTM's pixels,
// channels last, so that each pixel's 4H pre-activations (torch's order i, f, g, o) are a row.
// xg (N, 4H) the pre-activations, plus hg (N, 4H) when given (a second convolution's);
// c_prev (N, H). Returns h (N, H), c (N, H) and, when save, the gates (N, 4H) (else empty: a
// row's gates then live in a small scratch buffer, not in memory the size of the maps).
std::vector<Tensor> lstm_rows_forward(const Tensor& xg, const optional<Tensor>& hg, const Tensor& c_prev, bool save) {
  const Tensor x = xg.contiguous(), cp = c_prev.contiguous();
  const Tensor g = given(hg) ? hg->contiguous() : Tensor();
  const int64_t N = cp.size(0), H = cp.size(1);
  TORCH_CHECK(x.dim() == 2 && x.size(0) == N && x.size(1) == 4 * H && (!g.defined() || g.sizes() == x.sizes()),
              "gatedrnn: lstm_rows_forward wants xg, hg (N, 4H) and c_prev (N, H)");
  Tensor h = buffer_empty({N, H}, x.options()), c = buffer_empty({N, H}, x.options());
  Tensor act = save ? buffer_empty({N, 4 * H}, x.options()) : empty0(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_rows_forward", [&] {
    using T = scalar_t;
    const LstmCell<T, false, false> cell(H, nullptr);
    const T *xp = x.const_data_ptr<T>(), *gp = g.defined() ? g.const_data_ptr<T>() : nullptr;
    const T* cpp = cp.const_data_ptr<T>();
    T *hp = h.data_ptr<T>(), *c_p = c.data_ptr<T>(), *ap = save ? act.data_ptr<T>() : nullptr;
    const std::vector<T> zeros(gp ? 0 : 4 * H, T(0));  // the missing second input, one row read by all
    at::parallel_for(0, N, std::max<int64_t>(1, 32768 / (4 * H)), [&](int64_t begin, int64_t end) {
      std::vector<T> scratch(ap ? 0 : 4 * H);
      for (int64_t n = begin; n < end; ++n) {
        cell.forward_row(xp + n * 4 * H, gp ? gp + n * 4 * H : zeros.data(), cpp + n * H,
                         ap ? ap + n * 4 * H : scratch.data(), c_p + n * H, hp + n * H);
      }
    });
  });
  return {h, c, act};
}

// Gradients of lstm_rows_forward (saved): d_h, d_c (N, H), d_act (N, 4H) from a trace. Returns
// the pre-activations' gradient (N, 4H) (xg's and hg's alike) and c_prev's (N, H).
std::vector<Tensor> lstm_rows_backward(const Tensor& d_h, const Tensor& d_c, const optional<Tensor>& d_act,
                                       const Tensor& act, const Tensor& c, const Tensor& c_prev) {
  const Tensor dh = d_h.contiguous(), dc = d_c.contiguous(), a = act.contiguous(), cn = c.contiguous();
  const Tensor cp = c_prev.contiguous(), da = given(d_act) ? d_act->contiguous() : Tensor();
  const int64_t N = cp.size(0), H = cp.size(1);
  Tensor d_pre = buffer_empty({N, 4 * H}, a.options()), d_c_prev = buffer_empty({N, H}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "lstm_rows_backward", [&] {
    using T = scalar_t;
    const LstmCell<T, false, false> cell(H, nullptr);
    const T *ap = a.const_data_ptr<T>(), *cnp = cn.const_data_ptr<T>(), *cpp = cp.const_data_ptr<T>();
    const T *dhp = dh.const_data_ptr<T>(), *dcp = dc.const_data_ptr<T>();
    const T* dap = da.defined() ? da.const_data_ptr<T>() : nullptr;
    T *dpp = d_pre.data_ptr<T>(), *dcpp = d_c_prev.data_ptr<T>();
    for_rows(N, 4 * H, [&](int64_t n) {
      if (dap) {
        cell.template backward_row<true>(ap + n * 4 * H, cnp + n * H, cpp + n * H, dhp + n * H, dcp + n * H,
                                         dap + n * 4 * H, dpp + n * 4 * H, dcpp + n * H);
      } else {
        cell.template backward_row<false>(ap + n * 4 * H, cnp + n * H, cpp + n * H, dhp + n * H, dcp + n * H,
                                          nullptr, dpp + n * 4 * H, dcpp + n * H);
      }
    });
  });
  return {d_pre, d_c_prev};
}

}  // namespace gatedrnn
