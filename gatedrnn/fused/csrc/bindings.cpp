// Python bindings of the native time loops.
#include <torch/extension.h>

#include "buffers.h"
#include "common.h"
#include "input.h"
#include "lowp.h"
#include "packed.h"
#include "panels.h"
#include "tile_gemm.h"

namespace gatedrnn {
using OT = optional<Tensor>;
std::vector<Tensor> lstm_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const OT&, const OT&,
                                 const OT&, bool, const OT&, const OT&, const OT&, const OT&, const OT&, const OT&,
                                 const OT&, bool, bool, const OT&, const OT&);
std::vector<Tensor> lstm_backward(const OT&, const Tensor&, const Tensor&, const OT&, const OT&, const Tensor&,
                                  const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                  const Tensor&, const OT&, const OT&, bool, const OT&, const OT&, const OT&,
                                  const OT&, const OT&, const OT&, const OT&, bool);
std::vector<Tensor> gru_forward(const Tensor&, const Tensor&, const Tensor&, const OT&, int64_t, const OT&, const OT&,
                                const OT&, const OT&, const OT&, bool, bool, const OT&, const OT&);
std::vector<Tensor> gru_backward(const OT&, const Tensor&, const OT&, const Tensor&, const Tensor&, const Tensor&,
                                 const Tensor&, const OT&, int64_t, const OT&, const OT&, const OT&, const OT&, bool);
std::vector<Tensor> rnn_forward(const Tensor&, const Tensor&, const Tensor&, const OT&, bool, const OT&, const OT&,
                                const OT&, bool, bool, const OT&, const OT&);
std::vector<Tensor> rnn_backward(const OT&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                 bool, const OT&, const OT&, const OT&, bool);
std::vector<Tensor> linear_recurrence(const Tensor&, const Tensor&, const Tensor&, bool);
std::vector<Tensor> min_gru_inference(const Tensor&, const Tensor&, bool);
std::vector<Tensor> lstm_rows_forward(const Tensor&, const OT&, const Tensor&, bool);
std::vector<Tensor> lstm_rows_backward(const Tensor&, const Tensor&, const OT&, const Tensor&, const Tensor&,
                                       const Tensor&);
std::vector<Tensor> gru_rows_forward(const Tensor&, const Tensor&, const Tensor&, bool);
std::vector<Tensor> gru_rows_backward(const Tensor&, const OT&, const Tensor&, const Tensor&);
std::vector<Tensor> slstm_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const OT&, const OT&,
                                  bool, bool, bool);
std::vector<Tensor> slstm_backward(const OT&, const Tensor&, const Tensor&, const OT&, const OT&, const Tensor&,
                                   const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                   const OT&, bool, bool);
std::vector<Tensor> mlstm_recurrent(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    const Tensor&, const Tensor&, const Tensor&, double, bool);
std::vector<Tensor> mlstm_recurrent_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                             const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                             const Tensor&, const Tensor&, const Tensor&, const Tensor&, double);
std::vector<Tensor> mlstm_chunk_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                        const Tensor&, const Tensor&, const Tensor&, const Tensor&, double);
std::vector<Tensor> mlstm_chunk_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                         const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                         const Tensor&, const Tensor&, double);
std::vector<Tensor> mlstm_chunk_write_forward(const Tensor&, const Tensor&, const Tensor&);
std::vector<Tensor> mlstm_chunk_write_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                               const Tensor&);
}  // namespace gatedrnn

// Every entry point runs with subnormals flushed to zero (common.h, FlushDenormals).
template <typename R, typename... Args>
auto flushed(R (*op)(Args...)) {
  return [op](Args... args) -> R {
    gatedrnn::FlushDenormals guard;
    return op(std::forward<Args>(args)...);
  };
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_forward", flushed(&gatedrnn::lstm_forward));
  m.def("lstm_backward", flushed(&gatedrnn::lstm_backward));
  m.def("gru_forward", flushed(&gatedrnn::gru_forward));
  m.def("gru_backward", flushed(&gatedrnn::gru_backward));
  m.def("rnn_forward", flushed(&gatedrnn::rnn_forward));
  m.def("rnn_backward", flushed(&gatedrnn::rnn_backward));
  m.def("slstm_forward", flushed(&gatedrnn::slstm_forward));
  m.def("slstm_backward", flushed(&gatedrnn::slstm_backward));
  m.def("mlstm_recurrent", flushed(&gatedrnn::mlstm_recurrent));
  m.def("mlstm_recurrent_backward", flushed(&gatedrnn::mlstm_recurrent_backward));
  m.def("mlstm_chunk_forward", flushed(&gatedrnn::mlstm_chunk_forward));
  m.def("mlstm_chunk_backward", flushed(&gatedrnn::mlstm_chunk_backward));
  m.def("mlstm_chunk_write_forward", flushed(&gatedrnn::mlstm_chunk_write_forward));
  m.def("mlstm_chunk_write_backward", flushed(&gatedrnn::mlstm_chunk_write_backward));
  m.def("linear_recurrence", flushed(&gatedrnn::linear_recurrence));
  m.def("min_gru_inference", flushed(&gatedrnn::min_gru_inference));
  // the gate math alone over rows (the convolutional layers' pixels)
  m.def("lstm_rows_forward", flushed(&gatedrnn::lstm_rows_forward));
  m.def("lstm_rows_backward", flushed(&gatedrnn::lstm_rows_backward));
  m.def("gru_rows_forward", flushed(&gatedrnn::gru_rows_forward));
  m.def("gru_rows_backward", flushed(&gatedrnn::gru_rows_backward));
  // the per-step products: straight to BLAS (when libtorch exports it) or through at::mm
  m.def("direct_blas_available", &gatedrnn::direct_blas_available);
  m.def("use_direct_blas", [](bool flag) { gatedrnn::direct_blas_enabled() = flag; });
  // the mLSTM chunks' own small products (tile_gemm.h), or BLAS for them too
  m.def("use_tile_gemm", [](bool flag) { gatedrnn::tile_gemm_enabled() = flag; });
  // the per-step products from a weight packed once (packed.h): -1 never, 0 where it pays, 1 always
  m.def("packed_gemm_available", &gatedrnn::packed_gemm_available);
  m.def("use_packed_gemm", [](int mode) { gatedrnn::packed_gemm_mode() = mode; });
  m.def("packs_weight", [](int64_t M, int64_t K, int64_t N, int64_t uses) {
    return gatedrnn::packs_weight(M, K, N, uses);
  });
  // the per-step float32 products from weights laid out in panels, by our own AVX-512 kernel
  // (panels.h): -1 never, 0 by the rule, 1 always; and one such product (tests): out (rows, N)
  // = a (rows, K) b, plus out when accumulate, b (K, N) or, when transposed, given as (N, K);
  // from bfloat16 panels when bf16 (on a CPU with AVX-512 BF16: panel_bf16_available)
  m.def("panel_gemm_available", &gatedrnn::panel_gemm_available);
  m.def("use_panel_gemm", [](int mode) { gatedrnn::panel_gemm_mode() = mode; });
  m.def("uses_panels", &gatedrnn::uses_panels);
  m.def("panel_bf16_available", &gatedrnn::tile_bf16::available);
  m.def("panel_product", [](const at::Tensor& a, const at::Tensor& b, bool transposed, at::Tensor out, bool accumulate,
                            bool bf16) {
    TORCH_CHECK(gatedrnn::panel_gemm_available(), "gatedrnn: panel_product needs a build for AVX-512");
    TORCH_CHECK(!bf16 || gatedrnn::tile_bf16::available(), "gatedrnn: panel_product(bf16=True) needs AVX-512 BF16");
    for (const at::Tensor* t : {&a, &b, static_cast<const at::Tensor*>(&out)})
      TORCH_CHECK(t->scalar_type() == at::kFloat && t->dim() == 2 && t->stride(1) == 1,
                  "gatedrnn: panel_product wants float32 matrices with contiguous rows");
    const int64_t K = a.size(1), N = transposed ? b.size(0) : b.size(1);
    TORCH_CHECK((transposed ? b.size(1) : b.size(0)) == K && out.size(0) == a.size(0) && out.size(1) == N,
                "gatedrnn: panel_product got a ", a.sizes(), ", b ", b.sizes(), ", out ", out.sizes());
    const gatedrnn::Panels panels(K, N, b.const_data_ptr<float>(), b.stride(0), transposed, bf16);
    panels.multiply(a.size(0), a.const_data_ptr<float>(), a.stride(0), out.data_ptr<float>(), out.stride(0),
                    accumulate);
    return out;
  });
  // a product over a whole sequence as the loops take it (panels.h, sequence_mm): float32 on the
  // panels, bfloat16 where the switch and its rule say, else at::mm (fused/_ops.py, the
  // projection's gradients)
  m.def("sequence_mm", [](const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& bias) {
    return gatedrnn::sequence_mm(a, b, bias.value_or(at::Tensor()));
  });
  m.def("panel_matmul", [](const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& bias) {
    TORCH_CHECK(gatedrnn::panel_gemm_available(), "gatedrnn: panel_matmul needs a build for AVX-512");
    return gatedrnn::panel_matmul(a, b, bias.value_or(at::Tensor()));
  });
  // the input projections in the loop, inference (input.h): -1 never, 0 by the rule, 1 always
  m.def("use_input_projection_in_loop", [](int mode) { gatedrnn::input_projection_mode() = mode; });
  m.def("set_input_chunk_steps", [](int64_t k) { gatedrnn::input_chunk_override() = k; });
  m.def("input_chunk_steps", [](int64_t rows, int64_t steps) { return gatedrnn::input_chunk_steps(rows, steps); });
  m.def("input_projection_in_loop", [](int64_t B, int64_t I, int64_t G, int64_t steps) {
    return gatedrnn::projects_in_loop(B, I, G, steps);
  });
  // the cache of large per-call buffers (buffers.h): its limit in bytes (0: off), what it holds
  m.def("buffer_cache_limit", []() { return gatedrnn::BufferCache::instance().limit(); });
  m.def("set_buffer_cache_limit", [](size_t bytes) { gatedrnn::BufferCache::instance().set_limit(bytes); });
  m.def("buffer_cache_bytes", []() { return gatedrnn::BufferCache::instance().cached(); });
  m.def("empty_buffer_cache", []() { gatedrnn::BufferCache::instance().clear(); });
  m.def("buffer_cache_min_bytes", []() { return gatedrnn::BufferCache::instance().min_bytes(); });
  m.def("set_buffer_cache_min_bytes", [](size_t bytes) { gatedrnn::BufferCache::instance().set_min_bytes(bytes); });
  // the products in bfloat16 (lowp.h): the calling thread's switch, which products take it once on
  // (-1 none, 0 where they pay, 1 all), and a count of those computed in bfloat16 (tests)
  m.def("set_bf16_products", [](bool on) { gatedrnn::bf16_products_requested() = on; });
  m.def("bf16_products", []() { return gatedrnn::bf16_products_requested(); });
  m.def("use_bf16_gemm", [](int mode) { gatedrnn::bf16_gemm_mode() = mode; });
  m.def("bf16_gemm_mode", []() { return gatedrnn::bf16_gemm_mode(); });
  m.def("bf16_pays", [](int64_t rows, int64_t K, int64_t N) { return gatedrnn::bf16_pays(rows, K, N); });
  m.def("bf16_product_count", []() { return gatedrnn::bf16_product_count().load(); });
  m.def("reset_bf16_product_count", []() { gatedrnn::bf16_product_count() = 0; });
  // a step's rows split across threads from this many multiply-adds a step (common.h)
  m.def("min_shared_work", []() { return gatedrnn::min_shared_work(); });
  m.def("set_min_shared_work", [](int64_t work) { gatedrnn::min_shared_work() = work; });
}
