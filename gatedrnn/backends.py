"""Which implementation runs a layer.

- ``"reference"``: the readable loop of :mod:`gatedrnn.reference`, differentiated by autograd.
- ``"fused"``: :mod:`gatedrnn.fused`, native time loops with a hand-written backward.
- ``"auto"`` (default): the fastest one that supports the configuration. On the CPU, for a
  plain cell (no variant or regularizer in force) without trace or lengths, outside
  torch.compile, both torch's own kernel (oneDNN's LSTM primitive, torch.nn's RNN and GRU
  loops) and the fused loop can run it: the first call of each shape class times both and the
  faster is remembered (:mod:`gatedrnn.autotune`); with autotuning off, the static rule
  :func:`static_backend` decides. On other devices, torch's kernel (cuDNN) whenever no trace or
  lengths are asked for; the fused backend everywhere else.

While a graph is captured (:func:`capture_backend`) the backend is one whose graph runs at
every sequence length: under ``torch.export`` and ONNX's dynamo exporter the reference step
inside torch's ``scan`` (:mod:`gatedrnn.exportable`); under ``torch.jit.trace`` and the legacy
ONNX exporter built on it, torch's kernels for a plain cell.

Under ``torch.func`` transforms (``grad``, ``jacrev``, ``jvp``, ``vmap``, ...) and forward-mode
AD (``torch.autograd.forward_ad``) every backend runs the reference loop: the fused custom ops
and torch's kernels have no forward-mode formula, and the reference is differentiable to
any order. Double backward needs no routing: the fused ops' backward rebuilds the reference
graph when ``create_graph=True``.
"""

from __future__ import annotations

import warnings

import torch
import torch.autograd.forward_ad as forward_ad
from torch import _VF
from torch.nn.utils.rnn import PackedSequence

from gatedrnn import autotune, capture, exportable, fused, reference, static_rule

BACKENDS = ("auto", "reference", "fused")

_TORCH_KERNELS = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}


def select_backend(layer, x, lengths, want_trace, states=None) -> str:
    """The backend that runs this call, for :func:`run` (``states``, the call's initial
    states, let ``auto`` time its candidates on the call's own shapes)."""
    name = layer.backend if layer.backend != "auto" else auto_backend(layer, x, lengths, want_trace, states)
    if layer.beyond_torch() and name == "torch":
        name = "fused"  # a variant or a regularizer in force: torch's kernel has none of them
    elif name == "torch" and layer.training and layer.weight_dropout:
        name = "fused"  # torch's kernel reads the weights itself: it would miss the dropped W_hh
    return capture_backend(layer, name, x, lengths, want_trace)


def plan_key(layer, x) -> tuple | None:
    """The key under which a layer remembers a plain call's outcome, or None where the call
    must take the whole path of checks and choice.

    A plain call: a ``torch.Tensor`` input on the CPU, no ``lengths``, no trace (the caller
    asks only then), and none of the states that change the routing: no graph captured (Dynamo,
    ``torch.jit.trace``, export), no ``torch.func`` transform or forward-mode level, no
    saved-tensor hooks. Its input checks and backend depend only on what the key holds (the
    input's shape and dtype, the weights' dtype and device, whether a gradient is wanted,
    training or not, the autotuner's switch, memory and thread count, whether the native loops
    are in use) and on the layer's attributes, whose assignment or deletion clears what a layer
    remembers (:class:`gatedrnn.RNNBase`). So a layer's second call of the same kind skips the
    Python that made torch.nn faster than ``auto`` at small shapes, where a call takes tens of
    microseconds (``benchmarks/call_overhead.py``).
    """
    if type(x) is not torch.Tensor or not x.is_cpu or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return None
    if capture.exporting() or torch._C._functorch.peek_interpreter_stack() is not None:
        return None
    if forward_ad._current_level >= 0 or _saving_hooks():
        return None
    weights = layer._flat_weights
    w = weights[0]
    grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or any(v.requires_grad for v in weights))
    return (x.shape, x.dtype, w.dtype, w.is_cpu, grad, layer.training, autotune.autotune_enabled(),
            autotune.generation(), torch.get_num_threads(), fused.native_available())  # fmt: skip


def capture_backend(layer, name, x, lengths, want_trace) -> str:
    """The backend to run while a graph is captured, one whose graph runs at every T:

    - ``torch.export`` and ``torch.onnx.export(..., dynamo=True)``: ``"export"``, the reference
      step in torch's ``scan`` (every cell and variant);
    - ``torch.jit.trace`` and ``torch.onnx.export(..., dynamo=False)`` (built on it): torch's
      kernel (``aten::lstm``, ``gru``, ``rnn_*``, which ONNX exports as its LSTM, GRU, RNN ops)
      for a plain cell; under ``torch.jit.trace`` alone the fused custom ops for the rest (the
      native loops: every variant and regularizer; ONNX has no translation of them);
    - anything else traced: the reference loop, unrolled over the traced T, with a
      :class:`torch.jit.TracerWarning` that says so.

    Outside a capture, ``name`` unchanged.
    """
    if capture.exporting():
        if exportable.scan_op is None:
            warn_unrolled(type(layer).__name__, {}, x.shape[0], "this torch has no scan operator")
            return "reference"
        return "export"
    if not torch.jit.is_tracing():
        return name
    onnx = torch.onnx.is_in_onnx_export()
    plain = not layer.beyond_torch()
    whole = lengths is None and not want_trace and not (layer.training and layer.weight_dropout)
    if plain and whole and not (onnx and layer.proj_size):  # ONNX's LSTM has no projection
        return "torch"
    if not onnx and fused.native_available_for(x.device):
        return "fused"  # the native ops take every T, every variant and regularizer included
    why = {k: v for k, v in layer.variant().items() if k != "cell"}
    why |= {"zoneout": layer.zoneout_given()} if any(layer.zoneout) else {}
    why |= {"recurrent_dropout": layer.recurrent_dropout} if layer.training and layer.recurrent_dropout else {}
    why |= {"proj_size": layer.proj_size} if layer.proj_size else {}
    why |= ({"lengths": "given"} if lengths is not None else {}) | ({"return_trace": True} if want_trace else {})
    why |= {"weight_dropout": layer.weight_dropout} if layer.training and layer.weight_dropout else {}
    warn_unrolled(type(layer).__name__, why, x.shape[0])
    return "reference"


def warn_unrolled(what: str, why: dict, T: int, remedy: str | None = None) -> None:
    """Says that a captured graph holds the time loop unrolled: it runs at the traced T only."""
    if capture.exporting():
        exporter = "torch.export"
    else:
        exporter = "torch.onnx.export(..., dynamo=False)" if torch.onnx.is_in_onnx_export() else "torch.jit.trace"
    options = ", ".join(f"{k}={v}" for k, v in why.items())
    remedy = remedy or "torch.export.export or torch.onnx.export(..., dynamo=True) capture it for every length"
    warnings.warn(
        f"{exporter} unrolls the time loop of gatedrnn.{what}({options}) over the traced length T={T}: the "
        f"captured graph runs at that length only; {remedy}",
        torch.jit.TracerWarning, stacklevel=3,
    )  # fmt: skip


RUNS = {"fused": fused, "export": exportable, "reference": reference}  # each backend's module: its run_direction


def run(name, layer, x, states, lengths, want_trace):
    """Runs ``layer`` on ``x`` (``(T, B, I)``) with backend ``name``: ``(output, final
    states, trace values or None)``. The reference loop instead where a ``torch.func``
    transform or a forward-mode tangent needs it."""
    if name not in ("reference", "export") and needs_reference(x, states, layer):
        name = "reference"
    return run_as(name, layer, x, states, lengths, want_trace)


def run_as(name, layer, x, states, lengths, want_trace):
    """:func:`run` without its test for a transform or a tangent: for a call a layer remembers,
    whose key (:func:`plan_key`) rules both out."""
    if name == "torch":
        return run_torch(layer, x, states, lengths, want_trace)
    return layer.run_layers(RUNS[name].run_direction, x, states, lengths, want_trace)


def needs_reference(x, states, layer) -> bool:
    """Whether a torch.func transform is active or the input, a state or a weight carries a
    forward-mode tangent: then only the reference loop gives the right derivatives."""
    return needs_reference_for([x, *states, *layer._flat_weights])


def needs_reference_for(tensors) -> bool:
    """:func:`needs_reference` for any layer's tensors.

    While Dynamo traces (``torch.compile``) functorch's interpreter stack is not empty even
    without a transform, so it is not read there: the compiled graph keeps the fused ops
    instead of an unrolled reference loop."""
    if not torch.compiler.is_compiling() and torch._C._functorch.peek_interpreter_stack() is not None:
        return True
    if forward_ad._current_level < 0:  # no dual level entered: no tensor can carry a tangent
        return False
    return any(t is not None and forward_ad.unpack_dual(t).tangent is not None for t in tensors)


def auto_backend(layer, x, lengths, want_trace, states=None) -> str:
    """``auto``'s choice for this call: measured where two implementations can run it (see the
    module docstring), else the only one that can."""
    if not _tunable(layer, x, lengths, want_trace, states):
        return static_backend(layer, x, lengths, want_trace)
    key, grad = _shape_class(layer, x)
    winner = autotune.provisional(key) or autotune.remembered(key)
    if winner in ("fused", "torch"):
        return winner  # the common case, every call after a shape class's first: two lookups
    # detached, so that the timed backward stops here: a state carried from an earlier call
    # still holds the caller's graph, which that backward would otherwise run through and free
    fresh = tuple(s.detach() for s in states)
    prefixes = {}

    def prefix(steps):
        if steps not in prefixes:
            prefixes[steps] = x[:steps].detach().requires_grad_(grad and x.requires_grad)
        return prefixes[steps]

    def candidate(name):
        def call(steps):
            short = prefix(steps)
            out = run(name, layer, short, fresh, None, False)[0]
            if grad:
                wanted = [w for w in (short, *layer._flat_weights) if w is not None and w.requires_grad]
                torch.autograd.grad(out, wanted, torch.ones_like(out))

        return call

    static = static_backend(layer, x, lengths, want_trace)
    order = (static, *(n for n in ("fused", "torch") if n != static))  # a tie keeps the static choice
    return autotune.choose(key, {name: candidate(name) for name in order}, x.shape[0], prefer="torch",
                           margin=autotune.TORCH_MARGIN)  # fmt: skip


def _shape_class(layer, x) -> tuple[str, bool]:
    """The autotuner's shape class of this call (:func:`gatedrnn.autotune.shape_class`), and
    whether it wants a gradient."""
    # a plain cell's parameters are its _flat_weights (a list: cheaper than parameters())
    grad = torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in layer._flat_weights))
    T, B, I = x.shape  # noqa: E741
    key = autotune.shape_class(layer.mode, x.dtype, grad, layer.num_layers, layer.num_directions, B, T, I,
                               layer.hidden_size)  # fmt: skip
    return key, grad


def provisional_key(layer, x) -> str | None:
    """The autotuner's shape class of this call where ``auto``'s choice for it is provisional
    (:func:`gatedrnn.autotune.choose`), else None: a layer remembers such a choice with its
    plans (:func:`plan_key`) only until the autotuner's second look is due, so that the first
    call after it comes back to take that look."""
    if layer.backend != "auto":
        return None
    key = _shape_class(layer, x)[0]
    return key if autotune.pending(key) else None


def _tunable(layer, x, lengths, want_trace, states) -> bool:
    """Whether both torch's kernel and the fused loop can run this call and may be timed. On
    every call of an ``auto`` layer: the checks run cheapest first (they cost about 4.6 us a
    call in the order of their meaning; a call of a small layer takes 30-200 us)."""
    if lengths is not None or want_trace or states is None or not x.is_cpu or layer.mode not in _TORCH_KERNELS:
        return False  # (plain Python values and a tensor's device: safe to read under a trace too)
    if not autotune.autotune_enabled() or torch.jit.is_tracing() or capture.exporting():
        return False  # (before the checks below, which would read traced values)
    return (
        not torch.compiler.is_compiling() and not layer.beyond_torch() and not (layer.training and layer.weight_dropout)
        and not needs_reference(x, states, layer) and not _saving_hooks() and fused.native_available()
    )  # fmt: skip


def _saving_hooks() -> bool:
    """Whether saved-tensor hooks are active (activation checkpointing, offloading): a timed
    backward inside them would run through the caller's hooks."""
    return _TOP_HOOKS is None or _TOP_HOOKS(False) is not None


_TOP_HOOKS = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)  # (a torch without it: assume hooks)


def static_backend(layer, x, lengths, want_trace) -> str:
    """``auto``'s choice without measuring: torch's kernel on other devices for a plain call.
    On the CPU, where both torch's kernel and the fused loop can run it (float32, a plain
    cell without projection, no trace or lengths, outside torch.compile, native kernels
    built: what :func:`_tunable` times), the table fitted on a grid of shapes decides
    (:func:`gatedrnn.static_rule.decide`: the decision at the nearest grid point, for the
    cell and for inference or training); everywhere else on the CPU the hand rule of
    :func:`gatedrnn.static_rule.hand_rule` (the fused loop, and torch's kernel for a float32
    LSTM without projection in inference). An LSTM with a projection is left out of the grid:
    oneDNN's primitive has no projection, so torch runs it in its generic loop.

    Args:
        layer (RNNBase): the layer.
        x (Tensor): its input, ``(T, B, I)``.
        lengths (Tensor or None): the call's.
        want_trace (bool): whether a trace is asked for.
    """
    plain = not want_trace and lengths is None and not torch.compiler.is_compiling()
    if plain and x.device.type != "cpu":
        return "torch"
    if plain and layer.mode in _TORCH_KERNELS and not layer.proj_size and x.dtype == torch.float32:
        grad = _wants_grad(layer, x)
        both = not layer.beyond_torch() and not (layer.training and layer.weight_dropout)
        if both and fused.native_available():  # (on the CPU here)
            T, B, I = x.shape  # noqa: E741
            return static_rule.decide(layer.mode, grad, B, T, I, layer.hidden_size)
        return static_rule.hand_rule(layer.mode, grad)
    return "fused"


def _wants_grad(layer, x) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in layer.parameters()))


def run_torch(layer, x, states, lengths, want_trace):
    """torch's own kernel on the layer's weights: same results as torch.nn, no trace."""
    hx = states if layer.mode == "LSTM" else states[0]
    result = _TORCH_KERNELS[layer.mode](
        x, hx, layer._flat_weights, layer.bias, layer.num_layers, layer.dropout, layer.training,
        layer.bidirectional, False,
    )  # fmt: skip
    return result[0], tuple(result[1:]), None


def autocast_dtype(layer, input) -> torch.dtype | None:
    """The dtype torch.nn's layer would run in under the active autocast, or None.

    CPU autocast lists ``rnn_tanh``, ``rnn_relu`` and ``lstm`` (its padded form only) among
    its lower-precision ops, so torch.nn's RNN, and its LSTM on padded input, run wholly in
    that dtype; ``gru`` and the packed ``lstm`` are not listed (their GEMMs autocast, the
    state stays float32, as the reference and fused loops do unchanged; measured on torch
    2.13). On other devices cuDNN's ``rnn`` is listed for all three.
    """
    packed = isinstance(input, PackedSequence)
    data = input.data if packed else input
    if not isinstance(data, torch.Tensor):
        return None  # the argument checks say what is wrong
    device = data.device.type
    try:
        enabled = torch.is_autocast_enabled(device)
    except RuntimeError:  # a device type autocast does not know (meta): no autocast there
        return None
    if not enabled or (device == "cpu" and (layer.mode == "GRU" or (layer.mode == "LSTM" and packed))):
        return None
    if layer.weight_ih_l0.dtype != torch.float32:
        return None
    return torch.get_autocast_dtype(device)


def forward_in_dtype(layer, dtype, input, hx, **kwargs):
    """``layer(input, hx, **kwargs)`` with its weights, input and states cast to ``dtype`` and
    autocast off: what torch.nn does with a layer on autocast's lower-precision list."""

    def cast(t):
        return t.to(dtype) if isinstance(t, (torch.Tensor, PackedSequence)) and _floating(t) else t

    device = (input.data if isinstance(input, PackedSequence) else input).device.type
    weights = {name: w.to(dtype) for name, w in layer.named_parameters()}
    hx = tuple(cast(h) for h in hx) if isinstance(hx, (tuple, list)) else cast(hx)
    with torch.autocast(device, enabled=False):
        return torch.func.functional_call(layer, weights, (cast(input), hx), kwargs)


def _floating(t) -> bool:
    return (t.data if isinstance(t, PackedSequence) else t).dtype == torch.float32
