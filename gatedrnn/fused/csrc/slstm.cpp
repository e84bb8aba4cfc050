// The sLSTM's gate math (xLSTM's scalar memory: Beck et al. 2024, eqs. 8-17) for the time loop
// of loop.h, forward and hand-written backward; the specification is gatedrnn/cells/slstm.py,
// slstm_step.
//
// How the cell fits the loop as it is:
//  - the recurrent product is one GEMM with the block-diagonal R expanded to its dense (4H, H)
//    matrix (cells/slstm.py, block_diagonal), as the LSTM's W_hh h: the same multiply-adds as
//    torch.nn.LSTM's, in one BLAS call a step instead of one per head; the weight gradient the
//    loop returns is the dense one, whose diagonal blocks are R's (fused/slstm.py takes them);
//  - the states c, n, m ride together as the loop's second state, one (B, 3H) row [c; n; m]:
//    carried past a sequence's end, saved per step and differentiated like the LSTM's c.
// Saved activations per row (A = 6H): i', f', tanh(z~), sigmoid(o~) (the trace's first four),
// then d log f / d f~ (sigmoid(-f~) for the sigmoid forget gate, 1 for exp) and the share of
// the stabilizer's gradient that max() sends to log f + m_{t-1} (1, 1/2 at a tie as
// torch.maximum, 0; 0 into an empty state).
// An empty state is one whose n is zero; the entry points run with subnormals flushed
// (bindings.cpp), so a subnormal n0 (below 1.2e-38 in float32, 2.2e-308 in float64) counts as
// empty here (n never falls below min(n0, 1), so only a caller's n0 can be that small).
#include "loop.h"

namespace gatedrnn {
namespace {

// log(1 + u) for u in [0, 1], without a library call so that the row loops vectorise: the
// cephes logf polynomial on the mantissa of v = 1 + u, then Goldberg's correction
// u / ((1 + u) - 1), exact where 1 + u rounds (the small u of a large |f~|).
inline float log1p_unit(float u) {
  const float v = 1.0f + u;
  int32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  float e = float(((bits >> 23) & 0xff) - 126);  // v = x 2^e, x in [0.5, 1)
  bits = (bits & 0x007fffff) | 0x3f000000;
  float x;
  std::memcpy(&x, &bits, sizeof x);
  const bool low = x < 0.707106781186547524f;
  e = low ? e - 1.0f : e;
  x = low ? x + x - 1.0f : x - 1.0f;  // now v = (1 + x) 2^e, x in [-0.29, 0.41)
  const float z = x * x;
  float y = 7.0376836292e-2f;
  y = y * x - 1.1514610310e-1f;
  y = y * x + 1.1676998740e-1f;
  y = y * x - 1.2420140846e-1f;
  y = y * x + 1.4249322787e-1f;
  y = y * x - 1.6668057665e-1f;
  y = y * x + 2.0000714765e-1f;
  y = y * x - 2.4999993993e-1f;
  y = y * x + 3.3333331174e-1f;
  y = y * x * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  float log_v = x + y + 0.693359375f * e;
  const float w = v - 1.0f;
  return w == 0.0f ? u : log_v * (u / w);
}

// log sigmoid(x) = min(x, 0) - log(1 + exp(-|x|)) and sigmoid(-x) (its derivative), from one exp.
template <typename T>
inline void log_sigmoid(T x, T& log_s, T& d_log_s) {
  const T ax = x < T(0) ? -x : x;
  const T u = std::exp(-ax);
  log_s = (x < T(0) ? x : T(0)) - std::log1p(u);
  d_log_s = x < T(0) ? T(1) / (T(1) + u) : u / (T(1) + u);
}
template <>
inline void log_sigmoid<float>(float x, float& log_s, float& d_log_s) {
  const float ax = x < 0.0f ? -x : x;
  const float u = exp_vectorisable(-ax);
  log_s = (x < 0.0f ? x : 0.0f) - log1p_unit(u);
  d_log_s = (x < 0.0f ? 1.0f : u) / (1.0f + u);
}

template <typename T>
inline T exp_(T x) {
  return std::exp(x);
}
template <>
inline float exp_<float>(float x) {
  return exp_vectorisable(x);
}

// Pre-activations i~, f~, z~, o~ in x + gh (gate-major, H each); the second state s = [c; n; m].
template <typename T, bool kExpForget>
struct SlstmCell {
  using scalar_t = T;
  static constexpr bool kTwoStates = true, kTwoStage = false, kNeedsFreshH = false, kDirectH = false;
  int64_t H, G, R1, R2 = 0, S, A, E = 0, gated = 0;  // the loop's H is the second state's width, 3H
  int64_t n;                                           // the hidden size

  explicit SlstmCell(int64_t hidden) : H(3 * hidden), G(4 * hidden), R1(4 * hidden), S(4 * hidden), A(6 * hidden), n(hidden) {}

  void forward(const StepRow<T>& r) const {
    T* a = r.act;
    forward_row(r.x, r.gh, r.c_prev, a, a + n, a + 2 * n, a + 3 * n, a + 4 * n, a + 5 * n, r.c, r.c + n, r.c + 2 * n,
                r.h);
  }

  // Each block written gets a pointer of its own: blocks of one pointer at offsets k n, n unknown,
  // would need a run-time overlap check per pair, more than GCC versions a loop for (it then
  // left this loop scalar).
  void forward_row(const T* __restrict__ x, const T* __restrict__ gh, const T* __restrict__ s_prev,
                   T* __restrict__ act_i, T* __restrict__ act_f, T* __restrict__ act_z, T* __restrict__ act_o,
                   T* __restrict__ act_d, T* __restrict__ act_w, T* __restrict__ s_c, T* __restrict__ s_n,
                   T* __restrict__ s_m, T* __restrict__ h) const {
    const T one = 1, zero = 0;
    for (int64_t j = 0; j < n; ++j) {
      const T i_raw = x[j] + gh[j];  // eq. 14-17: W x + R h + b
      const T f_raw = x[n + j] + gh[n + j];
      const T z_raw = x[2 * n + j] + gh[2 * n + j];
      const T o_raw = x[3 * n + j] + gh[3 * n + j];
      const T c_prev = s_prev[j], n_prev = s_prev[n + j], m_prev = s_prev[2 * n + j];
      T log_f, d_log_f;  // eq. 13
      if constexpr (kExpForget) {
        log_f = f_raw;
        d_log_f = one;
      } else {
        log_sigmoid(f_raw, log_f, d_log_f);
      }
      // every value computed on both sides of each choice, then selected: the loop stays
      // branch-free, so it vectorises
      const bool empty = n_prev == zero;  // an empty state: m afresh from i~, f' = 0
      const T log_f_m = log_f + m_prev;
      const bool forget_wins = log_f_m > i_raw;
      const T m_full = forget_wins ? log_f_m : i_raw;
      const T m = empty ? i_raw : m_full;        // eq. 15
      const T i = exp_(i_raw - m);               // eq. 16
      const T f_full = exp_(log_f_m - m_full);   // eq. 17
      const T f = empty ? zero : f_full;
      const T z = tanh_(z_raw);                  // eq. 11
      const T o = sigmoid(o_raw);                // eq. 14
      const T c = f * c_prev + i * z;            // eq. 8
      const T nn = f * n_prev + i;               // eq. 9
      h[j] = o * (c / nn);                       // eq. 10
      s_c[j] = c;
      s_n[j] = nn;
      s_m[j] = m;
      act_i[j] = i;
      act_f[j] = f;
      act_z[j] = z;
      act_o[j] = o;
      act_d[j] = d_log_f;
      const T w = forget_wins ? one : (log_f_m == i_raw ? T(0.5) : zero);
      act_w[j] = empty ? zero : w;
    }
  }

  // From d_h and d_s (the gradients of the new h and [c; n; m]), the pre-activations' gradients
  // and that of [c; n; m]_{t-1}.
  template <bool kTrace>
  void backward(const GradRow<T>& r) const {
    backward_row<kTrace>(r.act, r.c, r.c_prev, r.d_h, r.d_c, r.d_act, r.d_x, r.d_c_prev);
  }

  template <bool kTrace>
  void backward_row(const T* __restrict__ act, const T* __restrict__ s, const T* __restrict__ s_prev,
                    const T* __restrict__ d_h, const T* __restrict__ d_s, const T* __restrict__ d_tr,
                    T* __restrict__ d_x, T* __restrict__ d_s_prev) const {
    const T one = 1, zero = 0;
    for (int64_t j = 0; j < n; ++j) {
      const T i = act[j], f = act[n + j], z = act[2 * n + j], o = act[3 * n + j];
      const T d_log_f = act[4 * n + j], w = act[5 * n + j];
      const T c = s[j], nn = s[n + j];
      const T c_prev = s_prev[j], n_prev = s_prev[n + j];
      const T q = c / nn;  // h = o q
      T d_o = d_h[j] * q;
      const T d_q = d_h[j] * o;
      const T d_c = d_s[j] + d_q / nn;
      const T d_n = d_s[n + j] - d_q * q / nn;
      T d_i = d_c * z + d_n, d_f = d_c * c_prev + d_n * n_prev, d_z = d_c * i;
      if constexpr (kTrace) {
        d_i += d_tr[j];
        d_f += d_tr[n + j];
        d_z += d_tr[2 * n + j];
        d_o += d_tr[3 * n + j];
      }
      const T g_i = d_i * i;  // through i' = exp(i~ - m)
      const T g_f = d_f * f;  // through f' = exp(log f + m_{t-1} - m)
      const T d_m = d_s[2 * n + j] - g_i - g_f;
      const T d_log_f_m = n_prev == zero ? zero : g_f + d_m * w;  // max(): w to log f + m_{t-1}
      d_x[j] = g_i + d_m * (one - w);                              // and 1 - w to i~
      d_x[n + j] = d_log_f_m * d_log_f;
      d_x[2 * n + j] = d_z * (one - z * z);
      d_x[3 * n + j] = d_o * o * (one - o);
      d_s_prev[j] = d_c * f;
      d_s_prev[n + j] = d_n * f;
      d_s_prev[2 * n + j] = d_log_f_m;
    }
  }

  template <bool kTrace>
  void backward_first(const GradRow<T>&) const {}
  void forward2(const StepRow<T>&) const {}
  Tensor projected(const Tensor& act, const Tensor&) const { return empty0(act); }  // no projection
};

template <typename T, typename F>
void with_cell(int64_t hidden, bool exp_forget, const F& f) {
  if (exp_forget) {
    f(SlstmCell<T, true>(hidden));
  } else {
    f(SlstmCell<T, false>(hidden));
  }
}

}  // namespace

// xw (T, B, 4H) input projections W_ih x + b_ih, blocks i~, f~, z~, o~ (head j's units at
// j d:(j + 1) d inside each); h0 (B, H); s0 (B, 3H) the initial [c; n; m]; w_hh (4H, H) the
// block-diagonal recurrent matrix, dense; b_hh (4H) or none; lengths (B) int64 or none;
// exp_forget: log f = f~ (else log sigmoid(f~)). Returns out (T, B, H) (zero past each length),
// h_n (B, H), s_n (B, 3H) and, when save, hs (T, B, H) carried h (empty without lengths: out is
// hs), ss (T, B, 3H) carried [c; n; m], act (T, B, 6H) (zero past each length); see the top.
std::vector<Tensor> slstm_forward(const Tensor& xw, const Tensor& h0, const Tensor& s0, const Tensor& w_hh,
                                  const optional<Tensor>& b_hh, const optional<Tensor>& lengths, bool reverse,
                                  bool save, bool exp_forget) {
  const int64_t H = h0.size(1);
  TORCH_CHECK(xw.dim() == 3 && xw.size(2) == 4 * H && s0.dim() == 2 && s0.size(1) == 3 * H &&
                  w_hh.dim() == 2 && w_hh.size(0) == 4 * H && w_hh.size(1) == H,
              "slstm_forward: wants xw (T, B, 4H), h0 (B, H), s0 (B, 3H), w_hh (4H, H)");
  std::vector<Tensor> r;
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "slstm_forward", [&] {
    with_cell<scalar_t>(H, exp_forget, [&](const auto& cell) {
      r = loop_forward(cell, xw, {}, {}, h0, s0, w_hh, b_hh, {}, {}, {}, {}, lengths, reverse, save);
    });
  });
  return {r[0], r[1], r[2], r[3], r[4], r[5]};
}

// Gradients of slstm_forward. d_out (T, B, H), d_h_n (B, H), d_s_n (B, 3H); d_act (T, B, 6H)
// and d_ss (T, B, 3H) from a trace (absent when it was not used); hs the carried h (out when
// there were no lengths), ss, act as slstm_forward saved them. Returns d_xw (T, B, 4H), d_h0,
// d_s0, d_w_hh (4H, H) (dense: R's gradient is its diagonal blocks), d_b_hh (4H).
std::vector<Tensor> slstm_backward(const optional<Tensor>& d_out, const Tensor& d_h_n, const Tensor& d_s_n,
                                   const optional<Tensor>& d_act, const optional<Tensor>& d_ss, const Tensor& hs,
                                   const Tensor& ss, const Tensor& act, const Tensor& h0, const Tensor& s0,
                                   const Tensor& w_hh, const optional<Tensor>& lengths, bool reverse,
                                   bool exp_forget) {
  std::vector<Tensor> r;
  const int64_t H = h0.size(1);
  AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "slstm_backward", [&] {
    with_cell<scalar_t>(H, exp_forget, [&](const auto& cell) {
      r = loop_backward(cell, d_out, d_h_n, d_s_n, d_act, d_ss, hs, ss, act, empty0(act), empty0(act), h0, s0,
                        w_hh, {}, {}, {}, {}, lengths, reverse);
    });
  });
  return {r[0], r[1], r[2], r[3], r[4]};
}

}  // namespace gatedrnn
