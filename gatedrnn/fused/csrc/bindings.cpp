// Python bindings of the native time loops.
#include <torch/extension.h>

#include "common.h"

namespace gatedrnn {
std::vector<Tensor> lstm_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const optional<Tensor>&,
                                 const optional<Tensor>&, const optional<Tensor>&, bool, bool);
std::vector<Tensor> lstm_backward(const optional<Tensor>&, const Tensor&, const Tensor&, const optional<Tensor>&,
                                  const optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&,
                                  const Tensor&, const Tensor&, const Tensor&, const optional<Tensor>&,
                                  const optional<Tensor>&, bool);
std::vector<Tensor> gru_forward(const Tensor&, const Tensor&, const Tensor&, const optional<Tensor>&,
                                const optional<Tensor>&, bool, bool);
std::vector<Tensor> gru_backward(const optional<Tensor>&, const Tensor&, const optional<Tensor>&, const Tensor&,
                                 const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                 const optional<Tensor>&, bool);
std::vector<Tensor> rnn_forward(const Tensor&, const Tensor&, const Tensor&, const optional<Tensor>&,
                                const optional<Tensor>&, bool, bool, bool);
std::vector<Tensor> rnn_backward(const optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&,
                                 const Tensor&, const optional<Tensor>&, bool, bool);
}  // namespace gatedrnn

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_forward", &gatedrnn::lstm_forward);
  m.def("lstm_backward", &gatedrnn::lstm_backward);
  m.def("gru_forward", &gatedrnn::gru_forward);
  m.def("gru_backward", &gatedrnn::gru_backward);
  m.def("rnn_forward", &gatedrnn::rnn_forward);
  m.def("rnn_backward", &gatedrnn::rnn_backward);
}
