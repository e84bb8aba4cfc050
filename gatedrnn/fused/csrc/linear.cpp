// The linear recurrence h_t = a_t * h_{t-1} + b_t (elementwise) over T steps: the time loop of
// the minimal cells (MinGRU, MinLSTM), whose gates see the input alone, so that a and b come
// for all steps at once and only this pass is sequential. Its gradient is the same recurrence
// run backwards (fused/linear.py), so no backward kernel is needed.
#include "buffers.h"
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

// The MinGRU without gradients, in one pass from its input projection xw (T, B, 2H) = [k | x_n]:
// z = sigmoid(k), h~ = g(x_n) (x + 1/2 for x >= 0, sigmoid(x) below), h_t = (1 - z) h_{t-1} +
// z h~, each row b running all its steps. The coefficients a = 1 - z and b = z h~ are never
// written to memory: at (64, 100, 256, 256) those were six passes over (T, B, H) tensors,
// about as long as the recurrence itself. h0 (B, H). Returns {h (T, B, H)}.
std::vector<Tensor> min_gru_inference(const Tensor& xw_in, const Tensor& h0_in, bool reverse) {
  const Tensor xw = xw_in.contiguous(), h0 = h0_in.contiguous();
  const int64_t T = xw.size(0), B = xw.size(1), H = h0.size(1);
  TORCH_CHECK(xw.dim() == 3 && xw.size(2) == 2 * H && h0.size(0) == B,
              "gatedrnn: min_gru_inference wants xw (T, B, 2H) and h0 (B, H)");
  Tensor h = buffer_empty({T, B, H}, xw.options());
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "min_gru_inference", [&] {
    using S = scalar_t;
    const S* xp = xw.const_data_ptr<S>();
    const S* h0p = h0.const_data_ptr<S>();
    S* hp = h.data_ptr<S>();
    at::parallel_for(0, B, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, T * H)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const S* prev = h0p + b * H;
        for (int64_t s = 0; s < T; ++s) {
          const int64_t t = reverse ? T - 1 - s : s;
          const S* __restrict__ k = xp + (t * B + b) * 2 * H;
          const S* __restrict__ xn = k + H;
          S* __restrict__ out = hp + (t * B + b) * H;
          for (int64_t j = 0; j < H; ++j) {
            const S z = sigmoid(k[j]);
            const S x = xn[j];
            const S cand = x >= S(0) ? x + S(0.5) : sigmoid(x);
            out[j] = prev[j] + z * (cand - prev[j]);
          }
          prev = out;
        }
      }
    });
  });
  return {h};
}

}  // namespace gatedrnn
