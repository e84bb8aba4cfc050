// The LSTM time loop of one layer and direction, forward and hand-written backward.
// Input projections (W_ih x + b_ih for all steps) come in as one tensor and their weight
// gradients are one GEMM outside: only the recurrent GEMM and one pointwise pass run per step.
#include "common.h"

namespace gatedrnn {
namespace {

// One row of one step: the gates, the cell state and m = o * tanh(c) (h before projection).
template <typename scalar_t>
void forward_row(const scalar_t* __restrict__ x, const scalar_t* __restrict__ gh, const scalar_t* __restrict__ c_prev,
                 scalar_t* __restrict__ gates, scalar_t* __restrict__ c, scalar_t* __restrict__ m, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t i = sigmoid(x[j] + gh[j]);                      // input gate
    const scalar_t f = sigmoid(x[H + j] + gh[H + j]);              // forget gate
    const scalar_t g = tanh_(x[2 * H + j] + gh[2 * H + j]);        // candidate
    const scalar_t o = sigmoid(x[3 * H + j] + gh[3 * H + j]);      // output gate
    const scalar_t c_t = f * c_prev[j] + i * g;
    gates[j] = i;
    gates[H + j] = f;
    gates[2 * H + j] = g;
    gates[3 * H + j] = o;
    c[j] = c_t;
    m[j] = o * tanh_(c_t);
  }
}

// One row of one step backwards: from d_m (the gradient of o * tanh(c)) and the carried d_c,
// the gradients of the four pre-activations; d_c becomes the gradient of c_prev. The trace's
// gradients d_gates_tr, d_c_tr join in when kTrace (a template flag, so both loops vectorise).
template <bool kTrace, typename scalar_t>
void backward_row(const scalar_t* __restrict__ gates, const scalar_t* __restrict__ c, const scalar_t* __restrict__ c_prev,
                  const scalar_t* __restrict__ d_m, const scalar_t* __restrict__ d_gates_tr,
                  const scalar_t* __restrict__ d_c_tr, scalar_t* __restrict__ d_c, scalar_t* __restrict__ d_pre,
                  int64_t H) {
  const scalar_t one = 1;
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t i = gates[j], f = gates[H + j], g = gates[2 * H + j], o = gates[3 * H + j];
    const scalar_t tc = tanh_(c[j]);
    scalar_t d_o = d_m[j] * tc;
    scalar_t d_c_t = d_c[j] + d_m[j] * o * (one - tc * tc);
    if (kTrace) d_c_t += d_c_tr[j];
    scalar_t d_i = d_c_t * g, d_f = d_c_t * c_prev[j], d_g = d_c_t * i;
    if (kTrace) {
      d_i += d_gates_tr[j];
      d_f += d_gates_tr[H + j];
      d_g += d_gates_tr[2 * H + j];
      d_o += d_gates_tr[3 * H + j];
    }
    d_c[j] = d_c_t * f;
    d_pre[j] = d_i * i * (one - i);
    d_pre[H + j] = d_f * f * (one - f);
    d_pre[2 * H + j] = d_g * (one - g * g);
    d_pre[3 * H + j] = d_o * o * (one - o);
  }
}

}  // namespace

// xw (T, B, 4H) input projections; h0 (B, P); c0 (B, H); w_hh (4H, P); b_hh (4H);
// w_hr (P, H) when projecting. Returns out (T, B, P) zero past each length, h_n, c_n and,
// when save, hs (T, B, P) carried states (empty without lengths: out is hs), cs (T, B, H)
// carried cell states, gates (T, B, 4H) activations i, f, g, o (zero past each length).
std::vector<Tensor> lstm_forward(const Tensor& xw_in, const Tensor& h0, const Tensor& c0, const Tensor& w_hh,
                                 const optional<Tensor>& b_hh, const optional<Tensor>& w_hr,
                                 const optional<Tensor>& lengths, bool reverse, bool save) {
  const Tensor xw = xw_in.contiguous();
  const int64_t T = xw.size(0), B = xw.size(1), H = c0.size(1), P = h0.size(1);
  const bool proj = w_hr.has_value() && w_hr->defined();
  const Lengths len(lengths);
  const auto opts = xw.options();
  const Tensor w_hh_t = w_hh.t().contiguous();  // (P, 4H)
  const Tensor w_hr_t = proj ? w_hr->t().contiguous() : Tensor();  // (H, P)
  Tensor out = at::empty({T, B, P}, opts);
  Tensor hs = len.any() ? at::empty({T, B, P}, opts) : out;
  Tensor cs = at::empty({save ? T : 2, B, H}, opts);  // two rolling slots when not saved
  Tensor gates = at::empty({save ? T : 1, B, 4 * H}, opts);
  Tensor gh = at::empty({B, 4 * H}, opts);  // W_hh h + b_hh
  Tensor m = proj ? at::empty({B, H}, opts) : Tensor();  // o * tanh(c), before the projection
  Tensor h0c = h0.contiguous(), c0c = c0.contiguous();

  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "lstm_forward", [&] {
    int64_t t_prev = -1, c_slot_prev = -1;
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = reverse ? T - 1 - s : s;
      const int64_t c_slot = save ? t : s % 2, g_slot = save ? t : 0;
      const Tensor h_prev = s == 0 ? h0c : hs[t_prev];
      const scalar_t* c_prev = (s == 0 ? c0c : cs[c_slot_prev]).data_ptr<scalar_t>();
      linear_into(gh, h_prev, w_hh_t, b_hh);
      const scalar_t* x_t = xw[t].data_ptr<scalar_t>();
      const scalar_t* gh_p = gh.data_ptr<scalar_t>();
      const scalar_t* hp = h_prev.data_ptr<scalar_t>();
      scalar_t* g_t = gates[g_slot].data_ptr<scalar_t>();
      scalar_t* c_t = cs[c_slot].data_ptr<scalar_t>();
      scalar_t* h_t = hs[t].data_ptr<scalar_t>();
      scalar_t* m_p = proj ? m.data_ptr<scalar_t>() : h_t;
      for_rows(B, 4 * H, [&](int64_t b) {
        const scalar_t* __restrict__ xr = x_t + b * 4 * H;
        const scalar_t* __restrict__ gr = gh_p + b * 4 * H;
        const scalar_t* __restrict__ cp = c_prev + b * H;
        scalar_t* __restrict__ gt = g_t + b * 4 * H;
        scalar_t* __restrict__ ct = c_t + b * H;
        scalar_t* __restrict__ mr = m_p + b * (proj ? H : P);
        if (!len.valid(t, b)) {  // past the end: carry the state, trace zeros
          std::memset(gt, 0, sizeof(scalar_t) * 4 * H);
          std::memcpy(ct, cp, sizeof(scalar_t) * H);
          if (!proj) std::memcpy(mr, hp + b * P, sizeof(scalar_t) * P);
          return;
        }
        forward_row(xr, gr, cp, gt, ct, mr, H);
      });
      if (proj) {
        Tensor h_view = hs[t];
        at::mm_out(h_view, m, w_hr_t);  // h = W_hr m
        carry_invalid_rows(h_t, hp, len, t, B, P);
      }
      if (len.any()) write_output_step(out[t].data_ptr<scalar_t>(), h_t, len, t, B, P);
      t_prev = t;
      c_slot_prev = c_slot;
    }
  });
  const int64_t last = reverse ? 0 : T - 1;
  Tensor h_n = hs[last].clone();
  Tensor c_n = cs[save ? last : (T - 1) % 2].clone();
  if (!save) return {out, h_n, c_n, empty0(xw), empty0(xw), empty0(xw)};
  return {out, h_n, c_n, len.any() ? hs : empty0(xw), cs, gates};
}

// Gradients of lstm_forward. d_out (T, B, P), d_h_n (B, P), d_c_n (B, H); d_gates (T, B, 4H)
// and d_cs (T, B, H) come from a trace (absent when it was not used). hs are the carried
// states (out itself when there were no lengths). Returns d_xw (T, B, 4H), d_h0, d_c0,
// d_w_hh, d_b_hh, d_w_hr (empty without a projection).
std::vector<Tensor> lstm_backward(const optional<Tensor>& d_out, const Tensor& d_h_n, const Tensor& d_c_n,
                                  const optional<Tensor>& d_gates, const optional<Tensor>& d_cs,
                                  const Tensor& hs, const Tensor& cs, const Tensor& gates, const Tensor& h0,
                                  const Tensor& c0, const Tensor& w_hh, const optional<Tensor>& w_hr,
                                  const optional<Tensor>& lengths, bool reverse) {
  const int64_t T = gates.size(0), B = gates.size(1), H = cs.size(2), P = hs.size(2);
  const bool proj = w_hr.has_value() && w_hr->defined();
  const bool has_d_out = d_out.has_value() && d_out->defined();
  const bool has_d_gates = d_gates.has_value() && d_gates->defined();
  const bool has_d_cs = d_cs.has_value() && d_cs->defined();
  const Lengths len(lengths);
  const auto opts = gates.options();
  Tensor d_xw = at::empty({T, B, 4 * H}, opts);
  Tensor d_hs = proj ? at::zeros({T, B, P}, opts) : Tensor();  // d_h per step, for d_w_hr
  Tensor d_h = d_h_n.contiguous().clone(), d_h_next = at::empty({B, P}, opts);
  Tensor d_c = d_c_n.contiguous().clone();
  Tensor d_m = proj ? at::empty({B, H}, opts) : Tensor();
  const Tensor h0c = h0.contiguous(), c0c = c0.contiguous();
  const Tensor d_out_c = has_d_out ? d_out->contiguous() : Tensor();
  const Tensor d_gates_c = has_d_gates ? d_gates->contiguous() : Tensor();
  const Tensor d_cs_c = has_d_cs ? d_cs->contiguous() : Tensor();
  const Tensor zeros = at::zeros({4 * H}, opts);  // stands in for a trace gradient not given

  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_backward", [&] {
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t t = reverse ? T - 1 - s : s;
      const int64_t t_prev = reverse ? t + 1 : t - 1;
      const scalar_t* c_prev = (s == 0 ? c0c : cs[t_prev]).data_ptr<scalar_t>();
      scalar_t* dh = d_h.data_ptr<scalar_t>();
      if (has_d_out) {  // the output's gradient joins the carried one on valid rows
        const scalar_t* dot = d_out_c[t].data_ptr<scalar_t>();
        for (int64_t b = 0; b < B; ++b)
          if (len.valid(t, b))
            for (int64_t j = 0; j < P; ++j) dh[b * P + j] += dot[b * P + j];
      }
      if (proj) {
        Tensor dhs_t = d_hs[t];
        scalar_t* dhs_p = dhs_t.data_ptr<scalar_t>();
        for (int64_t b = 0; b < B; ++b)
          if (len.valid(t, b)) std::memcpy(dhs_p + b * P, dh + b * P, sizeof(scalar_t) * P);
        at::mm_out(d_m, d_h, *w_hr);  // d_m = d_h W_hr
      }
      const scalar_t* dm_p = proj ? d_m.data_ptr<scalar_t>() : dh;
      const scalar_t* g_t = gates[t].data_ptr<scalar_t>();
      const scalar_t* c_t = cs[t].data_ptr<scalar_t>();
      const scalar_t* dg_tr = has_d_gates ? d_gates_c[t].data_ptr<scalar_t>() : nullptr;
      const scalar_t* dc_tr = has_d_cs ? d_cs_c[t].data_ptr<scalar_t>() : nullptr;
      scalar_t* dx_t = d_xw[t].data_ptr<scalar_t>();
      scalar_t* dc = d_c.data_ptr<scalar_t>();
      const scalar_t* zeros_4h = zeros.data_ptr<scalar_t>();
      for_rows(B, 4 * H, [&](int64_t b) {
        scalar_t* __restrict__ dxr = dx_t + b * 4 * H;
        if (!len.valid(t, b)) {  // no step here: gradients pass to the previous one unchanged
          std::memset(dxr, 0, sizeof(scalar_t) * 4 * H);
          if (dc_tr)  // cs holds the carried c here, so its gradient joins the carried one
            for (int64_t j = 0; j < H; ++j) dc[b * H + j] += dc_tr[b * H + j];
          return;
        }
        const scalar_t* __restrict__ gr = g_t + b * 4 * H;
        const scalar_t* __restrict__ cr = c_t + b * H;
        const scalar_t* __restrict__ cp = c_prev + b * H;
        const scalar_t* __restrict__ dmr = dm_p + b * (proj ? H : P);
        scalar_t* __restrict__ dcr = dc + b * H;
        if (dg_tr || dc_tr) {
          backward_row<true>(gr, cr, cp, dmr, dg_tr ? dg_tr + b * 4 * H : zeros_4h, dc_tr ? dc_tr + b * H : zeros_4h,
                             dcr, dxr, H);
        } else {
          backward_row<false>(gr, cr, cp, dmr, dg_tr, dc_tr, dcr, dxr, H);
        }
      });
      at::mm_out(d_h_next, d_xw[t], w_hh);  // d_h_prev = d_gates W_hh
      carry_invalid_rows(d_h_next.data_ptr<scalar_t>(), dh, len, t, B, P);
      std::swap(d_h, d_h_next);
    }
  });
  Tensor d_w_hh = recurrent_weight_grad(d_xw, hs, h0c, reverse);
  Tensor d_b_hh = d_xw.sum({0, 1});
  Tensor d_w_hr = empty0(gates);
  if (proj) {
    const Tensor m = gates.narrow(2, 3 * H, H) * at::tanh(cs);  // o * tanh(c), (T, B, H)
    d_w_hr = at::mm(d_hs.reshape({-1, P}).t(), m.reshape({-1, H}));
  }
  return {d_xw, d_h, d_c, d_w_hh, d_b_hh, d_w_hr};
}

}  // namespace gatedrnn
