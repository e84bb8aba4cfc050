// The GRU time loop of one layer and direction, forward and hand-written backward
// (torch's reset-after form: n = tanh(x_n + r * (W_hn h + b_hn))).
#include "common.h"

namespace gatedrnn {
namespace {

// One row of one step: reset and update gates, candidate, and the new state.
template <typename scalar_t>
void forward_row(const scalar_t* __restrict__ x, const scalar_t* __restrict__ gh, const scalar_t* __restrict__ h_prev,
                 scalar_t* __restrict__ gates, scalar_t* __restrict__ hn, scalar_t* __restrict__ h, int64_t H) {
  const scalar_t one = 1;
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t r = sigmoid(x[j] + gh[j]);                      // reset gate
    const scalar_t z = sigmoid(x[H + j] + gh[H + j]);              // update gate
    const scalar_t n = tanh_(x[2 * H + j] + r * gh[2 * H + j]);    // candidate (reset after)
    gates[j] = r;
    gates[H + j] = z;
    gates[2 * H + j] = n;
    hn[j] = gh[2 * H + j];
    h[j] = (one - z) * n + z * h_prev[j];
  }
}

// One row of one step backwards: d_h (carried) plus d_out gives the gradients of the three
// input pre-activations (d_x), of the recurrent ones (d_gh, where n's is scaled by r) and
// the path d_h * z straight to h_prev (direct). The trace's gradients join in when kTrace.
template <bool kTrace, typename scalar_t>
void backward_row(const scalar_t* __restrict__ gates, const scalar_t* __restrict__ hn,
                  const scalar_t* __restrict__ h_prev, const scalar_t* __restrict__ d_h,
                  const scalar_t* __restrict__ d_out, const scalar_t* __restrict__ d_gates_tr,
                  scalar_t* __restrict__ d_x, scalar_t* __restrict__ d_gh, scalar_t* __restrict__ direct, int64_t H) {
  const scalar_t one = 1;
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t r = gates[j], z = gates[H + j], n = gates[2 * H + j];
    const scalar_t d_h_t = d_h[j] + d_out[j];
    scalar_t d_r = kTrace ? d_gates_tr[j] : scalar_t(0);
    const scalar_t d_z = d_h_t * (h_prev[j] - n) + (kTrace ? d_gates_tr[H + j] : scalar_t(0));
    const scalar_t d_n = d_h_t * (one - z) + (kTrace ? d_gates_tr[2 * H + j] : scalar_t(0));
    const scalar_t d_an = d_n * (one - n * n);
    d_r += d_an * hn[j];
    const scalar_t d_ar = d_r * r * (one - r);
    const scalar_t d_az = d_z * z * (one - z);
    d_x[j] = d_ar;
    d_x[H + j] = d_az;
    d_x[2 * H + j] = d_an;
    d_gh[j] = d_ar;
    d_gh[H + j] = d_az;
    d_gh[2 * H + j] = d_an * r;
    direct[j] = d_h_t * z;
  }
}

}  // namespace

// xw (T, B, 3H) input projections; h0 (B, H); w_hh (3H, H); b_hh (3H). Returns out (T, B, H)
// zero past each length, h_n and, when save, hs (T, B, H) carried states (empty without
// lengths: out is hs), gates (T, B, 3H) activations r, z, n (zero past each length) and
// hn (T, B, H) = W_hn h_prev + b_hn, which the reset gate scaled.
std::vector<Tensor> gru_forward(const Tensor& xw_in, const Tensor& h0, const Tensor& w_hh,
                                const optional<Tensor>& b_hh, const optional<Tensor>& lengths, bool reverse,
                                bool save) {
  const Tensor xw = xw_in.contiguous();
  const int64_t T = xw.size(0), B = xw.size(1), H = h0.size(1);
  const Lengths len(lengths);
  const auto opts = xw.options();
  const Tensor w_hh_t = w_hh.t().contiguous();  // (H, 3H)
  Tensor out = at::empty({T, B, H}, opts);
  Tensor hs = len.any() ? at::empty({T, B, H}, opts) : out;
  Tensor gates = at::empty({save ? T : 1, B, 3 * H}, opts);
  Tensor hn = at::empty({save ? T : 1, B, H}, opts);
  Tensor gh = at::empty({B, 3 * H}, opts);  // W_hh h + b_hh
  const Tensor h0c = h0.contiguous();

  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "gru_forward", [&] {
    int64_t t_prev = -1;
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = reverse ? T - 1 - s : s;
      const int64_t slot = save ? t : 0;
      const Tensor h_prev = s == 0 ? h0c : hs[t_prev];
      linear_into(gh, h_prev, w_hh_t, b_hh);
      const scalar_t* x_t = xw[t].data_ptr<scalar_t>();
      const scalar_t* gh_p = gh.data_ptr<scalar_t>();
      const scalar_t* hp = h_prev.data_ptr<scalar_t>();
      scalar_t* g_t = gates[slot].data_ptr<scalar_t>();
      scalar_t* hn_t = hn[slot].data_ptr<scalar_t>();
      scalar_t* h_t = hs[t].data_ptr<scalar_t>();
      for_rows(B, 3 * H, [&](int64_t b) {
        const scalar_t* __restrict__ xr = x_t + b * 3 * H;
        const scalar_t* __restrict__ gr = gh_p + b * 3 * H;
        const scalar_t* __restrict__ hpr = hp + b * H;
        scalar_t* __restrict__ gt = g_t + b * 3 * H;
        scalar_t* __restrict__ hnr = hn_t + b * H;
        scalar_t* __restrict__ hr = h_t + b * H;
        if (!len.valid(t, b)) {  // past the end: carry the state, trace zeros
          std::memset(gt, 0, sizeof(scalar_t) * 3 * H);
          std::memset(hnr, 0, sizeof(scalar_t) * H);
          std::memcpy(hr, hpr, sizeof(scalar_t) * H);
          return;
        }
        forward_row(xr, gr, hpr, gt, hnr, hr, H);
      });
      if (len.any()) write_output_step(out[t].data_ptr<scalar_t>(), h_t, len, t, B, H);
      t_prev = t;
    }
  });
  Tensor h_n = hs[reverse ? 0 : T - 1].clone();
  if (!save) return {out, h_n, empty0(xw), empty0(xw), empty0(xw)};
  return {out, h_n, len.any() ? hs : empty0(xw), gates, hn};
}

// Gradients of gru_forward. d_out (T, B, H), d_h_n (B, H); d_gates (T, B, 3H) comes from a
// trace. Returns d_xw (T, B, 3H), d_h0, d_w_hh, d_b_hh.
std::vector<Tensor> gru_backward(const optional<Tensor>& d_out, const Tensor& d_h_n,
                                 const optional<Tensor>& d_gates, const Tensor& hs, const Tensor& gates,
                                 const Tensor& hn, const Tensor& h0, const Tensor& w_hh,
                                 const optional<Tensor>& lengths, bool reverse) {
  const int64_t T = gates.size(0), B = gates.size(1), H = hs.size(2);
  const bool has_d_out = d_out.has_value() && d_out->defined();
  const bool has_d_gates = d_gates.has_value() && d_gates->defined();
  const Lengths len(lengths);
  const auto opts = gates.options();
  Tensor d_xw = at::empty({T, B, 3 * H}, opts);  // gradients of the input pre-activations
  Tensor d_gh = at::empty({T, B, 3 * H}, opts);  // ... and of W_hh h + b_hh (differ in n)
  Tensor d_h = d_h_n.contiguous().clone(), d_h_next = at::empty({B, H}, opts);
  Tensor direct = at::empty({B, H}, opts);  // d_h * z: the path around the GEMM
  const Tensor h0c = h0.contiguous();
  const Tensor d_out_c = has_d_out ? d_out->contiguous() : Tensor();
  const Tensor d_gates_c = has_d_gates ? d_gates->contiguous() : Tensor();
  const Tensor zeros = at::zeros({H}, opts);  // stands in for an output gradient not given

  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "gru_backward", [&] {
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t t = reverse ? T - 1 - s : s;
      const int64_t t_prev = reverse ? t + 1 : t - 1;
      const scalar_t* hp = (s == 0 ? h0c : hs[t_prev]).data_ptr<scalar_t>();
      const scalar_t* g_t = gates[t].data_ptr<scalar_t>();
      const scalar_t* hn_t = hn[t].data_ptr<scalar_t>();
      const scalar_t* dot = has_d_out ? d_out_c[t].data_ptr<scalar_t>() : nullptr;
      const scalar_t* dg_tr = has_d_gates ? d_gates_c[t].data_ptr<scalar_t>() : nullptr;
      scalar_t* dh = d_h.data_ptr<scalar_t>();
      scalar_t* dx_t = d_xw[t].data_ptr<scalar_t>();
      scalar_t* dgh_t = d_gh[t].data_ptr<scalar_t>();
      scalar_t* dir = direct.data_ptr<scalar_t>();
      const scalar_t* zeros_p = zeros.data_ptr<scalar_t>();
      for_rows(B, 3 * H, [&](int64_t b) {
        scalar_t* __restrict__ dxr = dx_t + b * 3 * H;
        scalar_t* __restrict__ dghr = dgh_t + b * 3 * H;
        scalar_t* __restrict__ dirr = dir + b * H;
        const scalar_t* __restrict__ dhr = dh + b * H;
        if (!len.valid(t, b)) {  // no step here: the gradient passes through unchanged
          std::memset(dxr, 0, sizeof(scalar_t) * 3 * H);
          std::memset(dghr, 0, sizeof(scalar_t) * 3 * H);
          std::memcpy(dirr, dhr, sizeof(scalar_t) * H);
          return;
        }
        const scalar_t* __restrict__ gr = g_t + b * 3 * H;
        const scalar_t* __restrict__ hnr = hn_t + b * H;
        const scalar_t* __restrict__ hpr = hp + b * H;
        const scalar_t* dor = dot ? dot + b * H : zeros_p;
        if (dg_tr)
          backward_row<true>(gr, hnr, hpr, dhr, dor, dg_tr + b * 3 * H, dxr, dghr, dirr, H);
        else
          backward_row<false>(gr, hnr, hpr, dhr, dor, dg_tr, dxr, dghr, dirr, H);
      });
      at::addmm_out(d_h_next, direct, d_gh[t], w_hh);  // d_h_prev = d_h z + d_gh W_hh
      std::swap(d_h, d_h_next);
    }
  });
  Tensor d_w_hh = recurrent_weight_grad(d_gh, hs, h0c, reverse);
  return {d_xw, d_h, d_w_hh, d_gh.sum({0, 1})};
}

}  // namespace gatedrnn
