// What the time loop (loop.h) and the cells' row math share: the rows a cell reads and writes,
// zoneout, the end of a forward step (carry past a sequence's end, zoneout), and the pointwise
// helpers around the recurrent products.
#pragma once

#include "common.h"

namespace gatedrnn {

// One row (sequence b) of one step, as a cell's forward reads and writes it.
template <typename T>
struct StepRow {
  const T* x;       // (G) input projection W_ih x_t + b_ih
  const T* gh;      // (R1) first recurrent product W_hh h_in + b_hh
  const T* gh2;     // (R2) second product, two-stage cells
  const T* h_in;    // (P) h_prev as it entered the products (recurrent dropout applied)
  const T* h_prev;  // (P) carried h
  const T* c_prev;  // (H) carried c (two-state cells)
  T* act;           // (A) saved activations
  T* h;             // new h before zoneout (the LSTM writes m = o tanh(c) here, before any projection)
  T* c;             // new c before zoneout (two-state cells)
};

// One row of one step backwards: the forward's values, the gradients that reach the new
// states, and what the cell writes.
template <typename T>
struct GradRow {
  const T* act;
  const T* h_in;
  const T* h_prev;
  const T* c_prev;
  const T* h;        // new h before zoneout (kNeedsFreshH cells)
  const T* c;        // new c before zoneout
  const T* d_h;      // gradient of the new h (the LSTM's: of m)
  const T* d_c;      // gradient of the new c
  const T* d_act;    // trace gradient of act (read only when kTrace)
  const T* d_gated;  // two-stage: gradient of the second product's input
  T* d_x;            // (G) gradient of the input projection
  T* d_gh;           // (R1 + R2) gradient of the products (may be d_x itself)
  T* d_h_direct;     // (P) gradient of h_prev other than through h_in
  T* d_h_in;         // (P) two-stage: gradient of h_in other than through the first product
  T* d_c_prev;       // (H) gradient of c_prev
  T* d_extra;        // (E) kept for the cell's own parameters' gradients
};

// Zoneout of one state: none, the eval expectation (one probability), or a (T, B, n) mask.
struct Zoneout {
  Tensor mask;
  double p = 0.0;
  bool on = false;
  explicit Zoneout(const optional<Tensor>& keep) {
    if (!keep.has_value() || !keep->defined()) return;
    on = true;
    if (keep->numel() == 1) {
      p = keep->item<double>();
    } else {
      mask = keep->contiguous();
    }
  }
  // k at step t for row b (of B), as a pointer into the mask or a constant
  template <typename T>
  void row(int64_t t, int64_t b, int64_t n, const T*& k, T& k_const) const {
    if (mask.defined()) {
      k = mask.template const_data_ptr<T>() + (t * mask.size(1) + b) * n;
    } else {
      k = nullptr;
      k_const = static_cast<T>(p);
    }
  }
};

// s = k * s_prev + (1 - k) * s_new over n values, in place in s (which holds s_new).
template <typename T>
inline void zone_out(T* __restrict__ s, const T* __restrict__ s_prev, const T* __restrict__ k, T k_const, int64_t n) {
  if (k) {
    for (int64_t j = 0; j < n; ++j) s[j] = s[j] + k[j] * (s_prev[j] - s[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) s[j] = s[j] + k_const * (s_prev[j] - s[j]);
  }
}

// The gradient that zoneout passes to the new state, d_new = (1 - k) d, over n values.
template <typename T>
inline void zone_out_grad(T* __restrict__ d_new, const T* __restrict__ d, const T* __restrict__ k, T k_const,
                          int64_t n) {
  if (k) {
    for (int64_t j = 0; j < n; ++j) d_new[j] = d[j] * (T(1) - k[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) d_new[j] = d[j] * (T(1) - k_const);
  }
}

// to += k * from over n values (what zoneout keeps of a state keeps its gradient).
template <typename T>
inline void add_kept(T* __restrict__ to, const T* __restrict__ from, const T* __restrict__ k, T k_const, int64_t n) {
  if (k) {
    for (int64_t j = 0; j < n; ++j) to[j] += k[j] * from[j];
  } else {
    for (int64_t j = 0; j < n; ++j) to[j] += k_const * from[j];
  }
}

template <typename T>
inline void add_into(T* __restrict__ to, const T* __restrict__ from, int64_t n) {
  for (int64_t j = 0; j < n; ++j) to[j] += from[j];
}

// The gradient of h_prev: through h_in (times the recurrent dropout mask, if any) plus the
// cell's direct path (if any).
template <typename T>
inline void h_prev_grad(T* __restrict__ to, const T* __restrict__ through, const T* __restrict__ mask,
                        const T* __restrict__ direct, int64_t n) {
  if (mask) {
    for (int64_t j = 0; j < n; ++j) to[j] = mask[j] * through[j];
  } else {
    std::memcpy(to, through, sizeof(T) * n);
  }
  if (direct) add_into(to, direct, n);
}

// The end of a forward step for row b: past its sequence's end the states are carried and the
// activations zeroed (the new h and c too: the weight gradients read them); else zoneout
// mixes the new states s~ (h_new, c_new) with the previous ones into h_t, c_t.
template <bool kTwoStates, typename T>
inline void finish_row(int64_t b, int64_t t, const T* h_prev, T* h_new, T* h_t, T* act_t, T* c_t, const T* c_prev,
                       T* c_new, const Zoneout& zh, const Zoneout& zc, const Lengths& len, int64_t P, int64_t H,
                       int64_t A) {
  if (!len.valid(t, b)) {
    std::memcpy(h_t + b * P, h_prev + b * P, sizeof(T) * P);
    if constexpr (kTwoStates) std::memcpy(c_t + b * H, c_prev + b * H, sizeof(T) * H);
    if (A) std::memset(act_t + b * A, 0, sizeof(T) * A);
    if (zh.on) std::memset(h_new + b * P, 0, sizeof(T) * P);
    if constexpr (kTwoStates)
      if (zc.on) std::memset(c_new + b * H, 0, sizeof(T) * H);
    return;
  }
  const T* k = nullptr;
  T k_const = 0;
  if (zh.on) {
    zh.row(t, b, P, k, k_const);
    std::memcpy(h_t + b * P, h_new + b * P, sizeof(T) * P);
    zone_out(h_t + b * P, h_prev + b * P, k, k_const, P);
  }
  if constexpr (kTwoStates) {
    if (zc.on) {
      zc.row(t, b, H, k, k_const);
      std::memcpy(c_t + b * H, c_new + b * H, sizeof(T) * H);
      zone_out(c_t + b * H, c_prev + b * H, k, k_const, H);
    }
  }
}

inline bool given(const optional<Tensor>& t) { return t.has_value() && t->defined(); }

// Steps before each step in reading order, (T, B, n): first (h0 or c0), then the carried states.
inline Tensor previous_steps(const Tensor& carried, const Tensor& first, bool reverse) {
  const int64_t T = carried.size(0);
  const Tensor head = first.unsqueeze(0);
  if (T == 1) return head;
  return reverse ? at::cat({carried.narrow(0, 1, T - 1), head}) : at::cat({head, carried.narrow(0, 0, T - 1)});
}

}  // namespace gatedrnn
