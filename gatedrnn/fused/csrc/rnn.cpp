// The vanilla RNN time loop of one layer and direction, forward and hand-written backward.
#include "common.h"

namespace gatedrnn {

// xw (T, B, H) input projections; h0 (B, H); w_hh (H, H); b_hh (H); relu picks the
// nonlinearity (else tanh). Returns out (T, B, H) zero past each length, h_n and, when save
// and lengths are given, hs (T, B, H) carried states (else empty: out is hs).
std::vector<Tensor> rnn_forward(const Tensor& xw_in, const Tensor& h0, const Tensor& w_hh,
                                const optional<Tensor>& b_hh, const optional<Tensor>& lengths, bool reverse,
                                bool save, bool relu) {
  const Tensor xw = xw_in.contiguous();
  const int64_t T = xw.size(0), B = xw.size(1), H = h0.size(1);
  const Lengths len(lengths);
  const auto opts = xw.options();
  const Tensor w_hh_t = w_hh.t().contiguous();
  Tensor out = at::empty({T, B, H}, opts);
  Tensor hs = len.any() ? at::empty({T, B, H}, opts) : out;
  Tensor gh = at::empty({B, H}, opts);
  const Tensor h0c = h0.contiguous();

  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "rnn_forward", [&] {
    int64_t t_prev = -1;
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = reverse ? T - 1 - s : s;
      const Tensor h_prev = s == 0 ? h0c : hs[t_prev];
      linear_into(gh, h_prev, w_hh_t, b_hh);
      const scalar_t* x_t = xw[t].data_ptr<scalar_t>();
      const scalar_t* gh_p = gh.data_ptr<scalar_t>();
      const scalar_t* hp = h_prev.data_ptr<scalar_t>();
      scalar_t* h_t = hs[t].data_ptr<scalar_t>();
      for_rows(B, H, [&](int64_t b) {
        const scalar_t* __restrict__ xr = x_t + b * H;
        const scalar_t* __restrict__ gr = gh_p + b * H;
        scalar_t* __restrict__ hr = h_t + b * H;
        if (!len.valid(t, b)) {
          std::memcpy(hr, hp + b * H, sizeof(scalar_t) * H);
          return;
        }
        if (relu) {
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t a = xr[j] + gr[j];
            hr[j] = a < scalar_t(0) ? scalar_t(0) : a;  // NaN stays NaN
          }
        } else {
          for (int64_t j = 0; j < H; ++j) hr[j] = tanh_(xr[j] + gr[j]);
        }
      });
      if (len.any()) write_output_step(out[t].data_ptr<scalar_t>(), h_t, len, t, B, H);
      t_prev = t;
    }
  });
  Tensor h_n = hs[reverse ? 0 : T - 1].clone();
  return {out, h_n, (save && len.any()) ? hs : empty0(xw)};
}

// Gradients of rnn_forward: d_out (T, B, H), d_h_n (B, H); hs the carried states (out when
// there were no lengths). Returns d_xw (T, B, H), d_h0, d_w_hh, d_b_hh.
std::vector<Tensor> rnn_backward(const optional<Tensor>& d_out, const Tensor& d_h_n, const Tensor& hs,
                                 const Tensor& h0, const Tensor& w_hh, const optional<Tensor>& lengths,
                                 bool reverse, bool relu) {
  const int64_t T = hs.size(0), B = hs.size(1), H = hs.size(2);
  const bool has_d_out = d_out.has_value() && d_out->defined();
  const Lengths len(lengths);
  const auto opts = hs.options();
  Tensor d_xw = at::empty({T, B, H}, opts);
  Tensor d_h = d_h_n.contiguous().clone(), d_h_next = at::empty({B, H}, opts);
  const Tensor h0c = h0.contiguous();
  const Tensor d_out_c = has_d_out ? d_out->contiguous() : Tensor();

  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "rnn_backward", [&] {
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t t = reverse ? T - 1 - s : s;
      const scalar_t* h_t = hs[t].data_ptr<scalar_t>();
      const scalar_t* dot = has_d_out ? d_out_c[t].data_ptr<scalar_t>() : nullptr;
      scalar_t* dh = d_h.data_ptr<scalar_t>();
      scalar_t* dx_t = d_xw[t].data_ptr<scalar_t>();
      for_rows(B, H, [&](int64_t b) {
        scalar_t* __restrict__ dxr = dx_t + b * H;
        if (!len.valid(t, b)) {
          std::memset(dxr, 0, sizeof(scalar_t) * H);
          return;
        }
        const scalar_t* __restrict__ hr = h_t + b * H;
        const scalar_t* __restrict__ dhr = dh + b * H;
        for (int64_t j = 0; j < H; ++j) {
          const scalar_t d_h_t = dhr[j] + (dot ? dot[b * H + j] : scalar_t(0));
          const scalar_t h = hr[j];
          dxr[j] = relu ? (h > scalar_t(0) ? d_h_t : scalar_t(0)) : d_h_t * (scalar_t(1) - h * h);
        }
      });
      at::mm_out(d_h_next, d_xw[t], w_hh);
      carry_invalid_rows(d_h_next.data_ptr<scalar_t>(), dh, len, t, B, H);
      std::swap(d_h, d_h_next);
    }
  });
  Tensor d_w_hh = recurrent_weight_grad(d_xw, hs, h0c, reverse);
  return {d_xw, d_h, d_w_hh, d_xw.sum({0, 1})};
}

}  // namespace gatedrnn
