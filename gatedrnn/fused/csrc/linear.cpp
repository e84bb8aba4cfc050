// The linear recurrence h_t = a_t * h_{t-1} + b_t (elementwise) over T steps: the time loop of
// the minimal cells (MinGRU, MinLSTM), whose gates see the input alone, so that a and b come
// for all steps at once and only this pass is sequential. Its gradient is the same recurrence
// run backwards (fused/linear.py), so no backward kernel is needed.
#include "common.h"

namespace gatedrnn {
namespace {

template <typename T>
void step(T* __restrict__ h, const T* __restrict__ a, const T* __restrict__ h_prev, const T* __restrict__ b,
          int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] = a[i] * h_prev[i] + b[i];
}

}  // namespace

// a, b (T, B, H); h0 (B, H); reverse reads from the last step to the first. Returns {h (T, B, H)}.
std::vector<Tensor> linear_recurrence(const Tensor& a_in, const Tensor& b_in, const Tensor& h0_in, bool reverse) {
  const Tensor a = a_in.contiguous(), b = b_in.contiguous(), h0 = h0_in.contiguous();
  const int64_t T = a.size(0), N = a.numel() / std::max<int64_t>(T, 1);
  Tensor h = at::empty_like(a);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "linear_recurrence", [&] {
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const scalar_t* bp = b.data_ptr<scalar_t>();
    const scalar_t* h0p = h0.data_ptr<scalar_t>();
    scalar_t* hp = h.data_ptr<scalar_t>();
    // each chunk of the B*H values runs all its steps: no synchronization between steps
    at::parallel_for(0, N, 16384, [&](int64_t begin, int64_t end) {
      const int64_t n = end - begin;
      const scalar_t* prev = h0p + begin;
      for (int64_t s = 0; s < T; ++s) {
        const int64_t t = reverse ? T - 1 - s : s;
        scalar_t* ht = hp + t * N + begin;
        step(ht, ap + t * N + begin, prev, bp + t * N + begin, n);
        prev = ht;
      }
    });
  });
  return {h};
}

}  // namespace gatedrnn
