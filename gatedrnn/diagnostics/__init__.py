"""What makes gating work, measured: gradient flow across time, gate activations, GRU update
gates as moving-average time constants; and the HTML report that shows them."""

from gatedrnn.diagnostics.gates import ewma_time_constants, gate_trace
from gatedrnn.diagnostics.gradflow import hidden_gradient_norms

__all__ = ["ewma_time_constants", "gate_trace", "hidden_gradient_norms"]
