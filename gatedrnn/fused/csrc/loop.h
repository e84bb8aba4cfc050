// The one time loop every cell runs in: forward and hand-written backward through time of one
// layer and direction. A cell (lstm.cpp, gru.cpp, rnn.cpp) supplies only its gate math, for
// one row of one step, as a struct the loop is instantiated with; its variants are template
// flags of that struct, so no variant branches inside the loop or the row loops.
//
// What the loop does around the cell, the same for every cell:
//  - the recurrent product gh = W_hh h_in + b_hh per step (the input projections xw come in
//    for all steps at once), and a second product for two-stage cells (Cho's GRU, MGU), whose
//    input (a gate times h_in) the cell leaves in its saved activations;
//  - recurrent dropout: h_in = h_prev * mask (one mask per sequence, Gal & Ghahramani 2016);
//  - an output projection h = W_hr m (the LSTM's proj_size);
//  - zoneout: each state s_t = k s_{t-1} + (1 - k) s~_t, with k a (T, B, n) mask in training or
//    the probability itself in eval (Krueger et al. 2017);
//  - variable lengths: past a sequence's end the state is carried, outputs and saved
//    activations are zero, and gradients pass through unchanged;
//  - the weight gradients as one GEMM over all steps.
// Everything is row-local, and row b of a step needs only row b of the step before (forward) or
// after (backward), so the whole loop runs as one parallel region over blocks of rows
// (common.h, for_row_blocks), each block every step of its rows: its own products (packed.h),
// input projections (input.h) and gate math.
//
// A cell struct provides (see LstmCell in lstm.cpp for a full example):
//   using scalar_t;  static constexpr bool kTwoStates (h and c), kTwoStage (two products),
//   kNeedsFreshH (its backward reads the new h), kDirectH (d_h_direct written);
//   int64_t H, G (xw row width), R1 (first product's rows), R2 (second's; 0 for one stage),
//   S (how many leading columns of the products' gradient equal d_x's: all R1 + R2 when it is
//   d_x itself; a two-stage cell shares all), the loop keeps only the other R1 + R2 - S,
//   A (saved activations per row), E (per-row gradients the cell keeps for its own parameters'
//   gradients, e.g. a layer norm's gain), gated (where a two-stage cell keeps the second
//   product's input);
//   void forward(const StepRow&), forward2(const StepRow&) (two stage) (the rows: rows.h),
//   template <bool kTrace> void backward(const GradRow&), backward_first(const GradRow&) (two stage).
// Each of these hands the row's pointers on to a *_row method whose parameters are __restrict__:
// GCC vectorizes the row loops only then (restrict on pointers read out of a struct was not
// enough: the fused GRU and LSTM ran 2x slower per step until the pointers became parameters).
#pragma once

#include <vector>

#include "buffers.h"
#include "common.h"
#include "input.h"
#include "packed.h"
#include "rows.h"

namespace gatedrnn {

// Forward of one layer and direction. xw (T, B, G), or the input x (T, B, I) when w_ih (G, I) is
// given, with b_ih (input.h: the loop may then project each step's rows itself); h0 (B, P);
// c0 (B, H) for two-state cells; w_hh (R1 + R2, P); b_hh; w_hr (P, H) projection; rmask (B, P);
// keep_h, keep_c zoneout.
// Returns out (T, B, P) (zero past each length), h_n, c_n (empty for one state) and, when
// save: hs (T, B, P) carried h (empty without lengths: out is hs), cs (T, B, H) carried c,
// act (T, B, A) (zero past each length), hf (T, B, P) new h before zoneout (kNeedsFreshH with
// zoneout on h, else empty), cf (T, B, H) new c before zoneout (with zoneout on c, else empty).
template <class Cell>
std::vector<Tensor> loop_forward(const Cell& cell, const Tensor& xw_in, const optional<Tensor>& w_ih,
                                 const optional<Tensor>& b_ih, const Tensor& h0, const optional<Tensor>& c0,
                                 const Tensor& w_hh, const optional<Tensor>& b_hh, const optional<Tensor>& w_hr,
                                 const optional<Tensor>& rmask, const optional<Tensor>& keep_h,
                                 const optional<Tensor>& keep_c, const optional<Tensor>& lengths, bool reverse,
                                 bool save) {
  using T = typename Cell::scalar_t;
  const Tensor& xw = xw_in;  // for options and empty results; the rows come from input
  const InputRows<T> input(xw_in, w_ih, b_ih, cell.G, reverse);
  const int64_t x_stride = input.row_stride();
  const int64_t steps = xw.size(0), B = xw.size(1), P = h0.size(1), H = cell.H, A = cell.A;
  const bool proj = given(w_hr), dropped = given(rmask);
  const Zoneout zh(keep_h), zc(keep_c);
  const Lengths len(lengths);
  const auto opts = xw.options();
  const optional<Tensor> b1 = given(b_hh) ? optional<Tensor>(b_hh->narrow(0, 0, cell.R1)) : optional<Tensor>();
  optional<Tensor> b2;
  if constexpr (Cell::kTwoStage) {
    if (given(b_hh)) b2 = b_hh->narrow(0, cell.R1, cell.R2);
  }
  const Tensor mask = dropped ? rmask->contiguous() : Tensor();
  Tensor out = buffer_empty({steps, B, P}, opts);
  Tensor hs = len.any() ? buffer_empty({steps, B, P}, opts) : out;
  Tensor cs = Cell::kTwoStates ? buffer_empty({save ? steps : 2, B, H}, opts) : empty0(xw);  // two rolling slots unsaved
  Tensor act = buffer_empty({save ? steps : 1, B, A}, opts);
  Tensor hf = zh.on ? buffer_empty({save && Cell::kNeedsFreshH ? steps : 1, B, P}, opts) : empty0(xw);
  Tensor cf = Cell::kTwoStates && zc.on ? buffer_empty({save ? steps : 1, B, H}, opts) : empty0(xw);
  Tensor gh = at::empty({B, cell.R1}, opts);
  Tensor gh2 = Cell::kTwoStage ? at::empty({B, cell.R2}, opts) : Tensor();
  Tensor h_in = dropped ? at::empty({B, P}, opts) : Tensor();
  Tensor m = proj ? at::empty({B, H}, opts) : Tensor();  // the LSTM's o tanh(c) before the projection
  const Tensor h0c = h0.contiguous();
  const Tensor c0c = Cell::kTwoStates ? c0->contiguous() : Tensor();
  const Tensor b1c = b1.has_value() ? b1->contiguous() : Tensor();
  const Tensor b2c = b2.has_value() ? b2->contiguous() : Tensor();
  // every per-step buffer as a raw pointer: a tensor view per step costs a dispatcher call
  const T* b1_p = b1c.defined() ? b1c.const_data_ptr<T>() : nullptr;
  const T* b2_p = b2c.defined() ? b2c.const_data_ptr<T>() : nullptr;
  const T* mask_p = dropped ? mask.const_data_ptr<T>() : nullptr;
  const T* h0_p = h0c.const_data_ptr<T>();
  const T* c0_p = Cell::kTwoStates ? c0c.const_data_ptr<T>() : nullptr;
  T* hs_p = hs.data_ptr<T>();
  T* out_p = out.data_ptr<T>();
  T* cs_p = Cell::kTwoStates ? cs.data_ptr<T>() : nullptr;
  T* act_p = act.data_ptr<T>();
  T* hf_p = zh.on ? hf.data_ptr<T>() : nullptr;
  T* cf_p = Cell::kTwoStates && zc.on ? cf.data_ptr<T>() : nullptr;
  T* gh_p = gh.data_ptr<T>();
  T* gh2_p = Cell::kTwoStage ? gh2.data_ptr<T>() : nullptr;
  T* h_in_p = dropped ? h_in.data_ptr<T>() : nullptr;
  T* m_p = proj ? m.data_ptr<T>() : nullptr;
  // the weights of the per-step products, packed once where that pays (packed.h)
  // from the weights as torch stores them, (out, in): the products multiply by their transposes
  const Tensor w_hh_c = w_hh.contiguous();
  const auto packed_from = [&](bool used, const Tensor& w) {
    return used ? PackedRight<T>::transposed(B, w.size(1), w.size(0), w, steps)
                : PackedRight<T>::transposed(B, 0, 0, at::empty({0, 0}, opts), 0);
  };
  const auto w1_packed = packed_from(true, w_hh_c.narrow(0, 0, cell.R1));                   // h_in (P) -> R1
  const auto w2_packed = packed_from(Cell::kTwoStage, w_hh_c.narrow(0, cell.R1, cell.R2));  // gated (H) -> R2
  const auto wr_packed = packed_from(proj, proj ? w_hr->contiguous() : Tensor());           // m (H) -> P

  // Every part of a step is row-local, and row b of a step needs only row b of the step before:
  // each block of rows runs the whole time loop on its own thread, products and gate math,
  // with no barrier between steps (common.h, for_row_blocks). A region per step cost the
  // tanh RNN at (64, 100, 256, 256) 14% of its samples in libgomp, threads waiting at each
  // step's end for the other.
  for_row_blocks(B, B * (P + input.input_size()) * cell.G, [&](int64_t b0, int64_t b1) {
    const int64_t M = b1 - b0;
    int64_t t_prev = -1, c_slot_prev = -1;
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = reverse ? steps - 1 - s : s;
      const int64_t c_slot = save ? t : s % 2, a_slot = save ? t : 0;
      const T* h_prev = s == 0 ? h0_p : hs_p + t_prev * B * P;
      const T* h_input = dropped ? h_in_p : h_prev;
      T* act_t = act_p + a_slot * B * A;
      T* h_t = hs_p + t * B * P;
      T* h_new = zh.on ? hf_p + (save && Cell::kNeedsFreshH ? t : 0) * B * P : h_t;  // before zoneout
      StepRow<T> row0{};
      row0.x = input.rows(s, t);
      row0.gh = gh_p;
      row0.h_in = h_input;
      row0.h_prev = h_prev;
      row0.act = act_t;
      row0.h = proj ? m_p : h_new;
      const int64_t h_width = proj ? H : P;
      T* c_t = nullptr;
      if constexpr (Cell::kTwoStates) {
        row0.c_prev = s == 0 ? c0_p : cs_p + c_slot_prev * B * H;
        c_t = cs_p + c_slot * B * H;
        row0.c = zc.on ? cf_p + (save ? t : 0) * B * H : c_t;
      }
      auto row_of = [&](int64_t b) {
        StepRow<T> r = row0;
        r.x += b * x_stride;
        r.gh += b * cell.R1;
        r.h_in += b * P;
        r.h_prev += b * P;
        r.act += b * A;
        r.h += b * h_width;
        if constexpr (Cell::kTwoStates) {
          r.c_prev += b * H;
          r.c += b * H;
        }
        return r;
      };
      input.project(s, b0, b1);
      if (dropped)
        for (int64_t j = b0 * P; j < b1 * P; ++j) h_in_p[j] = h_prev[j] * mask_p[j];
      w1_packed.linear(M, h_input + b0 * P, P, b1_p, gh_p + b0 * cell.R1, cell.R1, opts);
      for (int64_t b = b0; b < b1; ++b)
        if (len.valid(t, b)) cell.forward(row_of(b));
      if constexpr (Cell::kTwoStage) {  // gh2 = W_h2 (gate * h_in) + b_h2, the gate's product written in act
        w2_packed.linear(M, act_t + b0 * A + cell.gated, A, b2_p, gh2_p + b0 * cell.R2, cell.R2, opts);
        for (int64_t b = b0; b < b1; ++b) {
          if (!len.valid(t, b)) continue;
          StepRow<T> r = row_of(b);
          r.gh2 = gh2_p + b * cell.R2;
          cell.forward2(r);
        }
      }
      if (proj) wr_packed.multiply(M, m_p + b0 * H, H, h_new + b0 * P, P, false, opts);  // h = W_hr m
      for (int64_t b = b0; b < b1; ++b) {
        finish_row<Cell::kTwoStates>(b, t, h_prev, h_new, h_t, act_t, c_t, row0.c_prev, row0.c, zh, zc, len, P, H, A);
        if (len.any()) write_output_row(out_p + t * B * P, h_t, len, t, b, P);
      }
      t_prev = t;
      c_slot_prev = c_slot;
    }
  });
  const int64_t last = reverse ? 0 : steps - 1;
  Tensor h_n = hs[last].clone();
  Tensor c_n = Cell::kTwoStates ? cs[save ? last : (steps - 1) % 2].clone() : empty0(xw);
  if (!save) return {out, h_n, c_n, empty0(xw), empty0(xw), empty0(xw), empty0(xw), empty0(xw)};
  return {out, h_n, c_n, len.any() ? hs : empty0(xw), cs, act, Cell::kNeedsFreshH ? hf : empty0(xw), cf};
}

// Gradients of loop_forward. d_out (T, B, P), d_h_n (B, P), d_c_n (B, H); d_act (T, B, A) and
// d_cs (T, B, H) from a trace (absent when it was not used); hs the carried h (out when there
// were no lengths); cs, act, hf, cf as loop_forward saved them. Returns d_xw (T, B, G), d_h0,
// d_c0 (empty for one state), d_w_hh, d_b_hh, d_w_hr (empty without a projection), d_extra
// (T, B, E) what the cell kept per step (zero past each length).
template <class Cell>
std::vector<Tensor> loop_backward(const Cell& cell, const optional<Tensor>& d_out, const Tensor& d_h_n,
                                  const optional<Tensor>& d_c_n, const optional<Tensor>& d_act,
                                  const optional<Tensor>& d_cs, const Tensor& hs, const Tensor& cs, const Tensor& act,
                                  const Tensor& hf, const Tensor& cf, const Tensor& h0, const optional<Tensor>& c0,
                                  const Tensor& w_hh, const optional<Tensor>& w_hr, const optional<Tensor>& rmask,
                                  const optional<Tensor>& keep_h, const optional<Tensor>& keep_c,
                                  const optional<Tensor>& lengths, bool reverse) {
  using T = typename Cell::scalar_t;
  const int64_t steps = act.size(0), B = act.size(1), P = hs.size(2), H = cell.H, A = cell.A;
  const int64_t R = cell.R1 + cell.R2;
  const bool proj = given(w_hr), dropped = given(rmask);
  const bool has_d_out = given(d_out), has_d_act = given(d_act), has_d_cs = given(d_cs);
  const Zoneout zh(keep_h), zc(keep_c);
  const Lengths len(lengths);
  const auto opts = act.options();
  // The products' gradient d_gh (T, B, R): its first S columns are d_xw's own, the rest are kept
  // in d_gh_own; a step's full row goes through d_gh_step when the two are mixed (the GRU's).
  const int64_t S = cell.S;
  TORCH_CHECK((S == R && R == cell.G) || (!Cell::kTwoStage && S >= 0 && S < R),
              "gatedrnn: a cell's shared gradient columns");
  Tensor d_xw = buffer_empty({steps, B, cell.G}, opts);
  Tensor d_gh_own = S == R ? Tensor() : buffer_empty({steps, B, R - S}, opts);
  Tensor d_gh_step = S > 0 && S < R ? at::empty({B, R}, opts) : Tensor();
  Tensor d_extra = buffer_empty({steps, B, cell.E}, opts);
  Tensor d_hs = proj ? buffer_empty({steps, B, P}, opts).zero_() : Tensor();  // gradient of each projected h, for d_w_hr
  Tensor d_h = d_h_n.contiguous().clone(), d_h_next = at::empty({B, P}, opts);
  Tensor d_c = Cell::kTwoStates ? d_c_n->contiguous().clone() : Tensor();
  Tensor d_c_next = Cell::kTwoStates ? at::empty({B, H}, opts) : Tensor();
  Tensor d_h_new = zh.on ? at::empty({B, P}, opts) : Tensor();  // with zoneout: the new states' share
  Tensor d_c_new = Cell::kTwoStates && zc.on ? at::empty({B, H}, opts) : Tensor();
  Tensor d_m = proj ? at::empty({B, H}, opts) : Tensor();
  Tensor d_h_direct = at::empty({B, P}, opts), d_h_in = at::empty({B, P}, opts);
  Tensor d_gated = Cell::kTwoStage ? at::empty({B, H}, opts) : Tensor();
  Tensor d_h_in2 = Cell::kTwoStage ? at::empty({B, P}, opts) : Tensor();
  Tensor h_in = dropped ? at::empty({B, P}, opts) : Tensor();
  const Tensor mask = dropped ? rmask->contiguous() : Tensor();
  const Tensor h0c = h0.contiguous();
  const Tensor c0c = Cell::kTwoStates ? c0->contiguous() : Tensor();
  const Tensor d_out_c = has_d_out ? d_out->contiguous() : Tensor();
  const Tensor d_act_c = has_d_act ? d_act->contiguous() : Tensor();
  const Tensor d_cs_c = has_d_cs ? d_cs->contiguous() : Tensor();
  const Tensor w_hh_c = w_hh.contiguous();
  const Tensor w1 = w_hh_c.narrow(0, 0, cell.R1);
  const Tensor w2 = Cell::kTwoStage ? w_hh_c.narrow(0, cell.R1, cell.R2) : Tensor();
  const Tensor w_hr_c = proj ? w_hr->contiguous() : Tensor();
  const Tensor zeros = at::zeros({std::max<int64_t>(A, 1)}, opts);  // stands in for a trace gradient not given

  // every per-step buffer as a raw pointer: a tensor view per step costs a dispatcher call
  const T* hs_p = hs.const_data_ptr<T>();
  const T* h0_p = h0c.const_data_ptr<T>();
  const T* c0_p = Cell::kTwoStates ? c0c.const_data_ptr<T>() : nullptr;
  const T* cs_p = Cell::kTwoStates ? cs.const_data_ptr<T>() : nullptr;
  const T* cf_p = Cell::kTwoStates && zc.on ? cf.const_data_ptr<T>() : nullptr;
  const T* hf_p = Cell::kNeedsFreshH && zh.on ? hf.const_data_ptr<T>() : nullptr;
  const T* act_p = act.const_data_ptr<T>();
  const T* mask_p = dropped ? mask.const_data_ptr<T>() : nullptr;
  const T* d_out_p = has_d_out ? d_out_c.const_data_ptr<T>() : nullptr;
  const T* d_act_p = has_d_act ? d_act_c.const_data_ptr<T>() : nullptr;
  const T* d_cs_p = has_d_cs ? d_cs_c.const_data_ptr<T>() : nullptr;
  const T* w1_p = w1.const_data_ptr<T>();  // (R1, P) rows of w_hh, row stride w_hh.stride(0)
  const T* w2_p = Cell::kTwoStage ? w2.const_data_ptr<T>() : nullptr;
  const T* wr_p = proj ? w_hr_c.const_data_ptr<T>() : nullptr;
  const int64_t ldw = w_hh_c.stride(0);
  T* d_xw_p = d_xw.data_ptr<T>();
  T* d_gh_own_p = S == R ? nullptr : d_gh_own.data_ptr<T>();
  T* d_gh_step_p = d_gh_step.defined() ? d_gh_step.data_ptr<T>() : nullptr;
  T* d_extra_p = d_extra.data_ptr<T>();
  T* d_hs_p = proj ? d_hs.data_ptr<T>() : nullptr;
  T* h_in_p = dropped ? h_in.data_ptr<T>() : nullptr;
  T* d_m_p = proj ? d_m.data_ptr<T>() : nullptr;
  T* d_h_direct_p = d_h_direct.data_ptr<T>();
  T* d_h_in_p = d_h_in.data_ptr<T>();
  T* d_gated_p = Cell::kTwoStage ? d_gated.data_ptr<T>() : nullptr;
  T* d_h_in2_p = Cell::kTwoStage ? d_h_in2.data_ptr<T>() : nullptr;
  // the weights of the per-step products, packed once where that pays (packed.h)
  const PackedRight<T> w1_packed(B, cell.R1, P, w1_p, ldw, steps);
  const PackedRight<T> w2_packed(B, cell.R2, Cell::kTwoStage ? H : 0, w2_p, ldw, Cell::kTwoStage ? steps : 0);
  const PackedRight<T> wr_packed(B, proj ? P : 0, proj ? H : 0, wr_p, H, proj ? steps : 0);

  // rows b0..b1, all steps, on one thread (row-local, as in the forward); the carried gradients
  // alternate between two buffers, by pointer
  T* const d_h_p = d_h.data_ptr<T>();
  T* const d_h_next_p = d_h_next.data_ptr<T>();
  T* const d_c_p = Cell::kTwoStates ? d_c.data_ptr<T>() : nullptr;
  T* const d_c_next_p = Cell::kTwoStates ? d_c_next.data_ptr<T>() : nullptr;
  T* const d_h_new_p = zh.on ? d_h_new.data_ptr<T>() : nullptr;
  T* const d_c_new_p = Cell::kTwoStates && zc.on ? d_c_new.data_ptr<T>() : nullptr;
  for_row_blocks(B, B * P * R, [&](int64_t b0, int64_t b1) {
    const int64_t M = b1 - b0;
    T *dh = d_h_p, *dhx = d_h_next_p, *dc = d_c_p, *dcx = d_c_next_p;
    for (int64_t s = steps - 1; s >= 0; --s) {
      const int64_t t = reverse ? steps - 1 - s : s;
      const int64_t t_prev = reverse ? t + 1 : t - 1;
      const T* h_prev = s == 0 ? h0_p : hs_p + t_prev * B * P;
      const T* h_input = dropped ? h_in_p : h_prev;
      const T* dot = has_d_out ? d_out_p + t * B * P : nullptr;
      const T* dcs = has_d_cs ? d_cs_p + t * B * H : nullptr;
      T* dhn = zh.on ? d_h_new_p : dh;  // the new states' gradients, after zoneout's share
      T* dcn = zc.on ? d_c_new_p : dc;
      T* dhs_t = proj ? d_hs_p + t * B * P : nullptr;
      // this step's products' gradient, rows of R with row stride R (S == R: d_xw's rows, G == R)
      T* d_gh_t = S == R ? d_xw_p + t * B * cell.G : S == 0 ? d_gh_own_p + t * B * R : d_gh_step_p;
      T* d_own_t = S == R ? nullptr : d_gh_own_p + t * B * (R - S);
      GradRow<T> row0{};
      row0.act = act_p + t * B * A;
      row0.h_in = h_input;
      row0.h_prev = h_prev;
      row0.h = Cell::kNeedsFreshH ? (zh.on ? hf_p : hs_p) + t * B * P : nullptr;
      row0.d_h = proj ? d_m_p : dhn;
      row0.d_act = has_d_act ? d_act_p + t * B * A : nullptr;
      row0.d_x = d_xw_p + t * B * cell.G;
      row0.d_gh = d_gh_t;
      row0.d_extra = d_extra_p + t * B * cell.E;
      row0.d_h_direct = d_h_direct_p;
      row0.d_h_in = Cell::kTwoStage ? d_h_in2_p : nullptr;
      row0.d_gated = Cell::kTwoStage ? d_gated_p : nullptr;
      if constexpr (Cell::kTwoStates) {
        row0.c_prev = s == 0 ? c0_p : cs_p + t_prev * B * H;
        row0.c = (zc.on ? cf_p : cs_p) + t * B * H;
        row0.d_c = dcn;
        row0.d_c_prev = dcx;
      }
      const int64_t dm_width = proj ? H : P;
      const T* zeros_p = zeros.data_ptr<T>();
      auto row_of = [&](int64_t b) {
        GradRow<T> r = row0;
        r.act += b * A;
        r.h_in += b * P;
        r.h_prev += b * P;
        if (r.h) r.h += b * P;
        r.d_h += b * dm_width;
        r.d_act = r.d_act ? r.d_act + b * A : zeros_p;
        r.d_x += b * cell.G;
        r.d_gh += b * R;
        r.d_extra += b * cell.E;
        r.d_h_direct += b * P;
        if constexpr (Cell::kTwoStage) {
          r.d_h_in += b * P;
          r.d_gated += b * H;
        }
        if constexpr (Cell::kTwoStates) {
          r.c_prev += b * H;
          r.c += b * H;
          r.d_c += b * H;
          r.d_c_prev += b * H;
        }
        return r;
      };
      {
        if (dropped)
          for (int64_t j = b0 * P; j < b1 * P; ++j) h_in_p[j] = h_prev[j] * mask_p[j];
        // the gradients reaching this step's states: carried, from the output, from the trace;
        // zoneout passes (1 - k) of them to the new states
        for (int64_t b = b0; b < b1; ++b) {
          if (dot && len.valid(t, b)) add_into(dh + b * P, dot + b * P, P);
          const T* k = nullptr;
          T k_const = 0;
          if (zh.on) {
            zh.row(t, b, P, k, k_const);
            zone_out_grad(dhn + b * P, dh + b * P, k, k_const, P);
          }
          if constexpr (Cell::kTwoStates) {
            if (dcs) add_into(dc + b * H, dcs + b * H, H);
            if (zc.on) {
              zc.row(t, b, H, k, k_const);
              zone_out_grad(dcn + b * H, dc + b * H, k, k_const, H);
            }
          }
        }
        if (proj) {
          for (int64_t b = b0; b < b1; ++b)
            if (len.valid(t, b)) std::memcpy(dhs_t + b * P, dhn + b * P, sizeof(T) * P);
          wr_packed.multiply(M, dhn + b0 * P, P, d_m_p + b0 * H, H, false, opts);  // d_m = d_h W_hr
        }
        for (int64_t b = b0; b < b1; ++b) {
          if (!len.valid(t, b)) {  // no step here: nothing reaches the products
            std::memset(row0.d_x + b * cell.G, 0, sizeof(T) * cell.G);
            if (S < R) std::memset(row0.d_gh + b * R, 0, sizeof(T) * R);
            if (S > 0 && S < R) std::memset(d_own_t + b * (R - S), 0, sizeof(T) * (R - S));
            if (cell.E) std::memset(row0.d_extra + b * cell.E, 0, sizeof(T) * cell.E);
            continue;
          }
          if (has_d_act) {
            cell.template backward<true>(row_of(b));
          } else {
            cell.template backward<false>(row_of(b));
          }
          if (S > 0 && S < R) std::memcpy(d_own_t + b * (R - S), row0.d_gh + b * R + S, sizeof(T) * (R - S));
        }
        if constexpr (Cell::kTwoStage) {  // through the second product to its input, then the first stage
          w2_packed.multiply(M, d_gh_t + b0 * R + cell.R1, R, d_gated_p + b0 * H, H, false, opts);
          for (int64_t b = b0; b < b1; ++b) {
            if (!len.valid(t, b)) continue;
            if (has_d_act) {
              cell.template backward_first<true>(row_of(b));
            } else {
              cell.template backward_first<false>(row_of(b));
            }
          }
          std::memcpy(d_h_in_p + b0 * P, d_h_in2_p + b0 * P, sizeof(T) * M * P);
          w1_packed.multiply(M, d_gh_t + b0 * R, R, d_h_in_p + b0 * P, P, true, opts);
        } else {
          w1_packed.multiply(M, d_gh_t + b0 * R, R, d_h_in_p + b0 * P, P, false, opts);  // d_gh W_hh
        }
        // gradients of the previous states: around the products, through h_in, and kept by zoneout
        for (int64_t b = b0; b < b1; ++b) {
          if (!len.valid(t, b)) {  // the gradients pass to the previous step unchanged
            std::memcpy(dhx + b * P, dh + b * P, sizeof(T) * P);
            if constexpr (Cell::kTwoStates) std::memcpy(dcx + b * H, dc + b * H, sizeof(T) * H);
            continue;
          }
          h_prev_grad(dhx + b * P, d_h_in_p + b * P, dropped ? mask_p + b * P : nullptr,
                      Cell::kDirectH ? d_h_direct_p + b * P : nullptr, P);
          const T* k = nullptr;
          T k_const = 0;
          if (zh.on) {
            zh.row(t, b, P, k, k_const);
            add_kept(dhx + b * P, dh + b * P, k, k_const, P);
          }
          if constexpr (Cell::kTwoStates) {
            if (zc.on) {
              zc.row(t, b, H, k, k_const);
              add_kept(dcx + b * H, dc + b * H, k, k_const, H);
            }
          }
        }
      }
      std::swap(dh, dhx);
      std::swap(dc, dcx);
    }
  });
  if (steps % 2 == 1) {  // the last step's gradients are in the other buffer
    std::swap(d_h, d_h_next);
    if constexpr (Cell::kTwoStates) std::swap(d_c, d_c_next);
  }
  // weight gradients, one GEMM over all steps: the first product's input is h_in (h masked)
  const Tensor hs_in = dropped ? hs * mask : hs;
  const Tensor h0_in = dropped ? h0c * mask : h0c;
  Tensor d_w_hh, d_b_hh;
  if (S == R) {  // d_gh is d_xw
    d_w_hh = recurrent_weight_grad(Cell::kTwoStage ? d_xw.narrow(2, 0, cell.R1) : d_xw, hs_in, h0_in, reverse);
    if constexpr (Cell::kTwoStage) {  // the second product's input is the gated h_in kept in act
      const Tensor gated = act.narrow(2, cell.gated, H).reshape({-1, H});
      d_w_hh = at::cat({d_w_hh, mm_maybe_bf16(d_xw.narrow(2, cell.R1, cell.R2).reshape({-1, cell.R2}).t(), gated)});
    }
    d_b_hh = d_xw.sum(kStepsAndRows);
  } else if (S == 0) {
    d_w_hh = recurrent_weight_grad(d_gh_own, hs_in, h0_in, reverse);
    d_b_hh = d_gh_own.sum(kStepsAndRows);
  } else {  // rows of W_hh from the shared columns, then from the kept ones
    const Tensor shared = d_xw.narrow(2, 0, S);
    d_w_hh = at::cat({recurrent_weight_grad(shared, hs_in, h0_in, reverse),
                      recurrent_weight_grad(d_gh_own, hs_in, h0_in, reverse)});
    d_b_hh = at::cat({shared.sum(kStepsAndRows), d_gh_own.sum(kStepsAndRows)});
  }
  Tensor d_w_hr = empty0(act);
  if constexpr (Cell::kTwoStates) {  // the projection's input m = o tanh(c), (T, B, H)
    if (proj)
      d_w_hr = mm_maybe_bf16(d_hs.reshape({-1, P}).t(), cell.projected(act, cf.numel() ? cf : cs).reshape({-1, H}));
  }
  return {d_xw, d_h, Cell::kTwoStates ? d_c : empty0(act), d_w_hh, d_b_hh, d_w_hr, d_extra};
}

}  // namespace gatedrnn
