"""Recurrent layers: a cell stacked over time, layers and directions; drop-ins for
torch.nn.RNN, torch.nn.LSTM and torch.nn.GRU, with variable lengths and gate traces."""

from __future__ import annotations

import copy
import functools
import numbers
import warnings

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from gatedrnn import _checks, backends, regularizers
from gatedrnn.backends import BACKENDS, autocast_dtype, forward_in_dtype, select_backend
from gatedrnn.cells import layernorm
from gatedrnn.cells.base import CellBase
from gatedrnn.cells.gru import gru_step
from gatedrnn.cells.layernorm import ln_gru_step, ln_lstm_step
from gatedrnn.cells.lstm import PEEPHOLES, forget_block, lstm_step, peephole_names
from gatedrnn.capture import RefusesScript, exporting
from gatedrnn.reference import STEPS
from gatedrnn.trace import TRACE_NAMES, Trace


def _dropout_warning(dropout: float, num_layers: int) -> str:
    """torch.nn's warning for a dropout with one layer, word for word, so a filter written for
    torch.nn's layers (``message="dropout option adds dropout"``) silences ours too."""
    return ("dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
            f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}")  # fmt: skip


MAX_PLANS = 64  # call signatures a layer remembers (a generation loop of growing T would add one per length)
_ABSENT = object()


class RNNBase(RefusesScript, nn.RNNBase):
    """What RNN, LSTM and GRU share: torch.nn's constructor, parameters and forward.

    A subclass of :class:`torch.nn.RNNBase`, whose ``__init__`` registers the parameters
    under torch's names in torch's order (``weight_ih_l0``, ``weight_hh_l0``,
    ``bias_ih_l0``, ``bias_hh_l0``, ``weight_hr_l0``, then ``..._reverse``, then the next
    layer) and initializes them, so a ``state_dict`` moves between this module and
    torch.nn's with no mapping and a seeded model starts with torch.nn's weights;
    ``_flat_weights``, ``all_weights``, ``flatten_parameters``, ``.to()`` and pickling are
    torch.nn's too. It is not a :class:`torch.nn.LSTM` (or GRU, RNN): torch.compile's
    Dynamo refuses to trace those (README, Differences from torch.nn).

    Build :class:`LSTM`, :class:`GRU`, :class:`RNN` or :class:`MGU`, whose pages describe
    each argument in full; the arguments below are theirs.

    Args:
        mode (str): the cell, as torch.nn names it: ``"LSTM"``, ``"GRU"``, ``"RNN_TANH"`` or
            ``"RNN_RELU"``.
        input_size (int): ``I``, the number of features in each step of the input.
        hidden_size (int): ``H``, the number of features of the hidden state.
        num_layers (int): how many layers are stacked. Default: ``1``.
        bias (bool): whether the layers have the biases ``bias_ih_l{k}``, ``bias_hh_l{k}``.
            Default: ``True``.
        batch_first (bool): ``(B, T, *)`` input and output instead of ``(T, B, *)``.
            Default: ``False``.
        dropout (float): dropout probability on each layer's output but the last, in
            training. Default: ``0.0``.
        bidirectional (bool): run each layer in both directions. Default: ``False``.
        proj_size (int): the LSTM's projected size of ``h`` (``0``: none; LSTM only).
            Default: ``0``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' dtype. Default: ``None``.
        backend (str): ``"auto"``, ``"reference"`` or ``"fused"``. Keyword only.
            Default: ``"auto"``.
        recurrent_dropout (float): variational dropout on ``h_{t-1}`` in the recurrent
            products, in training. Keyword only. Default: ``0.0``.
        weight_dropout (float): DropConnect on ``weight_hh_l{k}``, in training. Keyword only.
            Default: ``0.0``.
        zoneout (float or tuple[float, float]): zoneout probability (an LSTM also takes
            ``(p_c, p_h)``). Keyword only. Default: ``0.0``.

    Examples:
        >>> import torch, gatedrnn
        >>> layer = gatedrnn.LSTM(4, 8, num_layers=2, bidirectional=True)
        >>> isinstance(layer, (gatedrnn.RNNBase, torch.nn.RNNBase)), isinstance(layer, torch.nn.LSTM)
        (True, False)
        >>> [w.shape for w in layer.weights(layer=1, direction=1)[:2]]  # weight_ih_l1_reverse, ...
        [torch.Size([32, 16]), torch.Size([32, 8])]
        >>> torch.nn.LSTM(4, 8).load_state_dict(gatedrnn.LSTM(4, 8).state_dict())  # no mapping
        <All keys matched successfully>
    """

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        backend: str = "auto",
        recurrent_dropout: float = 0.0,
        weight_dropout: float = 0.0,
        zoneout=0.0,
    ):
        input_size = _checks.positive_int("input_size", input_size)
        hidden_size = _checks.positive_int("hidden_size", hidden_size)
        num_layers = _checks.positive_int("num_layers", num_layers)
        _checks.boolean("bias", bias)
        _checks.boolean("batch_first", batch_first)
        dropout = _checks.probability("dropout", dropout)
        _checks.boolean("bidirectional", bidirectional)
        if isinstance(proj_size, bool) or not isinstance(proj_size, numbers.Integral):
            raise TypeError(f"proj_size must be an int, got {type(proj_size).__name__} {proj_size!r}")
        if proj_size < 0:
            raise ValueError(f"proj_size must be 0 (no projection) or positive, got {proj_size}")
        if proj_size and mode != "LSTM":
            raise ValueError(f"proj_size is only supported by LSTM, got proj_size={proj_size} for {mode}")
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size={hidden_size}, got {proj_size}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
        if dropout > 0 and num_layers == 1:  # torch.nn's warning, at the caller's line rather than torch's
            warnings.warn(_dropout_warning(dropout, num_layers), UserWarning, stacklevel=3)
        self.backend = backend
        self.recurrent_dropout = _checks.probability("recurrent_dropout", recurrent_dropout)
        self.weight_dropout = _checks.probability("weight_dropout", weight_dropout)
        self.zoneout = regularizers.zoneout_probabilities(mode, zoneout)
        # torch.nn would warn a second time: it is given no dropout where it would, then told the value
        # (a warnings.catch_warnings() here would reset Python's registry of warnings already shown)
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first,
                         dropout if num_layers > 1 else 0.0, bidirectional, int(proj_size), device, dtype)  # fmt: skip
        self.dropout = float(dropout)

    # -- structure ------------------------------------------------------------------

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def weights(self, layer: int, direction: int):
        """``(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)`` of one layer and
        direction; absent ones are ``None``.

        Args:
            layer (int): the layer, ``0`` to ``num_layers - 1``.
            direction (int): ``0`` forward, ``1`` reverse (``bidirectional`` layers only).
        """
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        return tuple(
            getattr(self, kind + suffix, None)
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
        )

    def __setstate__(self, state: dict) -> None:
        if "_all_weights" not in state:  # pickled by gatedrnn 0.1, whose RNNBase was not torch.nn's
            names = state["_flat_weights_names"]
            n = len(names) // (state["num_layers"] * (2 if state["bidirectional"] else 1))
            state["_all_weights"] = [names[k : k + n] for k in range(0, len(names), n)]
            state["_flat_weights"] = [state["_parameters"][name] for name in names]
        super().__setstate__(state)
        # a torch.nn layer pickled whole and loaded as ours (torch.nn's classes swapped for gatedrnn's), or a
        # pickle from before an option existed: what it lacks takes the constructor's default, torch.nn's behaviour
        for name, value in self._defaults().items():
            if name not in state:
                setattr(self, name, value)

    def _defaults(self) -> dict:
        """The constructor's defaults of what gatedrnn adds to torch.nn's attributes (the
        plain cell, no regularizer): what a pickle that lacks them loads with."""
        return {"backend": "auto", "recurrent_dropout": 0.0, "weight_dropout": 0.0,
                "zoneout": regularizers.zoneout_probabilities(self.mode, 0.0)}  # fmt: skip

    def extra_repr(self) -> str:
        s = super().extra_repr()  # torch.nn's, word for word
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        for name in ("recurrent_dropout", "weight_dropout"):
            s += f", {name}={getattr(self, name)}" if getattr(self, name) else ""
        if any(self.zoneout):
            s += f", zoneout={self.zoneout_given()}"
        return s

    def zoneout_given(self):
        """Zoneout as the constructor takes it: ``p``, or ``(p_c, p_h)`` for an LSTM."""
        return self.zoneout[0] if len(set(self.zoneout)) == 1 else tuple(reversed(self.zoneout))

    # -- regularizers: drawn here, outside every loop, from torch's generator -------

    def beyond_torch(self) -> bool:
        """Whether torch's kernel cannot run this call: a variant, zoneout (training: masks;
        eval: the expectation), or recurrent dropout in training. The fused loops run them all."""
        return bool(self.variant()) or any(self.zoneout) or (self.training and self.recurrent_dropout > 0)

    def _regularized(self, weights, step, x, state):
        """One layer and direction's weights, step and loop options with this forward's
        regularizer masks drawn (:func:`gatedrnn.regularizers.draw`)."""
        weights, step, options = regularizers.draw(self, weights, step, x, state)
        if step is not STEPS[self.mode] or options:
            options["step"] = step
        return weights, options

    def _config(self) -> dict:
        config = {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bias": self.bias,
            "batch_first": self.batch_first,
            "dropout": self.dropout,
            "bidirectional": self.bidirectional,
        }
        if self.mode == "LSTM":
            config["proj_size"] = self.proj_size
        if self.mode.startswith("RNN"):
            config["nonlinearity"] = self.mode[4:].lower()
        return config

    # -- conversion to and from torch.nn ------------------------------------------

    @classmethod
    def from_torch(cls, module: nn.Module, *, backend: str = "auto"):
        """A copy of the matching torch.nn layer, with its weights, device, dtype and mode.

        Args:
            module (torch.nn.Module): a :class:`torch.nn.LSTM` for ``LSTM.from_torch`` (a
                ``torch.nn.GRU`` for ``GRU``, a ``torch.nn.RNN`` for ``RNN``); anything else
                is a ``TypeError``.
            backend (str): the new layer's ``backend``. Keyword only. Default: ``"auto"``.

        Returns:
            The gatedrnn layer, in ``module``'s train or eval mode.

        Examples:
            >>> import torch, gatedrnn
            >>> theirs = torch.nn.LSTM(4, 8, num_layers=2)
            >>> ours = gatedrnn.LSTM.from_torch(theirs)
            >>> x = torch.randn(7, 3, 4)
            >>> torch.allclose(ours(x)[0], theirs(x)[0], atol=1e-6)
            True
        """
        torch_cls = getattr(nn, cls.__name__)
        if not isinstance(module, torch_cls):
            raise TypeError(f"module must be a torch.nn.{cls.__name__}, got {type(module).__name__}")
        config = {
            "input_size": module.input_size,
            "hidden_size": module.hidden_size,
            "num_layers": module.num_layers,
            "bias": module.bias,
            "batch_first": module.batch_first,
            "dropout": float(module.dropout),
            "bidirectional": module.bidirectional,
        }
        if cls.__name__ == "LSTM":
            config["proj_size"] = module.proj_size
        if cls.__name__ == "RNN":
            config["nonlinearity"] = module.nonlinearity
        w = module.weight_ih_l0
        quiet = {"dropout": 0.0} if module.num_layers == 1 else {}  # torch.nn warned of its dropout already
        layer = cls(**config | quiet, device=w.device, dtype=w.dtype, backend=backend)
        layer.dropout = config["dropout"]
        layer.load_state_dict(module.state_dict())
        return layer.train(module.training)

    def variant(self) -> dict:
        """The variant keywords in force, ``{}`` for the plain cell (torch.nn's). Backends
        and conversions read it: torch.nn's kernels serve the plain cell only."""
        return {}

    def step(self, layer: int, direction: int):
        """The step function of one layer and direction (``reference.STEPS``' for the plain
        cell), with the variant's own parameters and choices bound in."""
        return STEPS[self.mode]

    def to_torch(self) -> nn.Module:
        """A torch.nn layer with a copy of this layer's weights, device, dtype and mode.

        A variant or zoneout has no torch.nn equivalent: converting such a layer is a
        ``ValueError`` (the dropouts, active in training only, are left behind).
        """
        if self.variant() or any(self.zoneout):  # zoneout changes the eval function too; the dropouts do not
            what = self.variant() | ({"zoneout": self.zoneout_given()} if any(self.zoneout) else {})
            raise ValueError(f"torch.nn.{type(self).__name__} has no {what}: this layer cannot be converted")
        w, config = self.weight_ih_l0, self._config()
        quiet = {"dropout": 0.0} if self.num_layers == 1 else {}  # this layer warned of its dropout already
        module = getattr(nn, type(self).__name__)(**config | quiet, device=w.device, dtype=w.dtype)
        module.dropout = config["dropout"]
        module.load_state_dict(self.state_dict())
        return module.train(self.training)

    # -- forward ------------------------------------------------------------------

    def forward(self, input, hx=None, lengths=None, return_trace=False):
        """Run the layer over a sequence, as torch.nn's forward does.

        ``input`` is ``(T, B, I)``, ``(B, T, I)`` with ``batch_first``, ``(T, I)``
        unbatched, or a ``PackedSequence``. ``lengths`` (a 1-D integer tensor of size
        ``B``, on the CPU or the parameters' device) marks each sequence's valid steps:
        outputs past them are zero and the final states are those at each sequence's last
        valid step. With ``return_trace=True`` a third value, a :class:`~gatedrnn.Trace`,
        holds every gate and state at every step.

        Every tensor argument is checked (shape, dtype, and device against the
        parameters') before any kernel runs; a call like an earlier one (the same input
        shape and dtype, gradient wanted or not, training or not) reuses that check's outcome
        and the backend chosen then, until an attribute of the layer is assigned
        (:func:`gatedrnn.backends.plan_key`). ``lengths`` and ``return_trace`` may come by
        position too: ``torch.onnx.export(..., dynamo=False)`` passes every defaulted
        argument so.

        Args:
            input (Tensor or PackedSequence): the sequence, ``(T, B, I)``, ``(B, T, I)`` with
                ``batch_first``, ``(T, I)`` unbatched, or packed.
            hx (Tensor or tuple, optional): the initial state, ``h_0`` of shape
                ``(L*D, B, H)`` (``(L*D, H)`` unbatched), or ``(h_0, c_0)`` for an LSTM
                (``h_0`` with ``proj_size`` features when ``proj_size > 0``). Default: zeros.
            lengths (Tensor, optional): ``(B,)`` integers in ``[1, T]``, each sequence's
                number of valid steps; ``None`` with packed input. Default: ``None``, every
                sequence full.
            return_trace (bool): also return a :class:`~gatedrnn.Trace`. Default: ``False``.

        Returns:
            ``(output, h_n)`` (an LSTM: ``(output, (h_n, c_n))``), then the trace with
            ``return_trace``: ``output`` ``(T, B, D*H_out)`` (batch-first ``(B, T, D*H_out)``),
            each final state ``(L*D, B, *)``, each trace tensor ``(L*D, T, B, *)``.

        Raises:
            ShapeError: a tensor of the wrong shape (also a ``ValueError`` and a
                ``RuntimeError``).
            DTypeError: a tensor of another dtype than the parameters'.
            DeviceError: a tensor on another device than the parameters.
        """
        dtype = autocast_dtype(self, input)
        if dtype is not None:  # as torch.nn: the whole layer in autocast's lower precision
            return forward_in_dtype(self, dtype, input, hx, lengths=lengths, return_trace=return_trace)
        if not exporting():  # (export reads the weights by name; it warns of this assignment)
            self._sync_flat_weights()
        key = backends.plan_key(self, input) if lengths is None and not return_trace else None
        # (taken now: an assignment from another thread during this call leaves it orphaned, not stale)
        plans = self.__dict__.setdefault("_plans", {})
        name = plans.get(key) if key is not None else None
        if name is not None:  # a call like an earlier one: its input checks passed, its backend is known
            x, unbatched = self._as_checked(input)
            states = self._check_hx(hx, x.shape[1], unbatched, x)
            output, final, values = backends.run_as(name, self, x, states, None, False)
            return self._results(output, final, values, None, unbatched)

        packed = input if isinstance(input, PackedSequence) else None
        if packed is not None:
            if lengths is not None:
                raise ValueError("lengths must be None when input is a PackedSequence (it carries its own)")
            _checks.float_tensor("input", packed.data, self.weight_ih_l0)
            # (T, B, I) in the packing's batch order, by decreasing length, as torch.nn runs it
            x, lengths = pad_packed_sequence(PackedSequence(packed.data, packed.batch_sizes))
            packed_lengths, unbatched = lengths, False  # on the CPU
        else:
            x, unbatched = self._check_input(input)
        T, B = x.shape[0], x.shape[1]
        if T == 0:
            shape = tuple(x.shape)
            raise _checks.ShapeError(f"input must hold at least one time step, got T=0 (shape {shape})")
        if lengths is not None:
            lengths = self._check_lengths(lengths, T, B, x, unbatched)
        states = self._check_hx(hx, B, unbatched, x)
        if packed is not None and packed.sorted_indices is not None:
            states = tuple(s.index_select(1, packed.sorted_indices) for s in states)

        name = select_backend(self, x, lengths, return_trace, states)
        output, final, values = backends.run(name, self, x, states, lengths, return_trace)
        if key is not None:
            self._remember_plan(plans, key, name)
        if packed is not None:
            data = pack_padded_sequence(output, packed_lengths).data  # (sum(lengths), D*H)
            output = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        return self._results(output, final, values, packed, unbatched)

    def _results(self, output, final, values, packed, unbatched):
        """What forward returns, in the caller's layout: from the time-major output
        ``(T, B, D*H_out)`` (or the packed output), the final states, each ``(L*D, B, *)``, and
        the trace values, each ``(L*D, T, B, *)``, or None."""
        if packed is not None:
            back = packed.unsorted_indices  # to the caller's batch order
            if back is not None:
                final = tuple(s.index_select(1, back) for s in final)
                if values is not None:
                    values = tuple(v.index_select(2, back) for v in values)
        elif unbatched:
            output = output.squeeze(1)  # (T, D*H)
            final = tuple(s.squeeze(1) for s in final)  # (L*D, H)
        elif self.batch_first:
            output = output.transpose(0, 1)  # (B, T, D*H)
        result = (output, final if self.mode == "LSTM" else final[0])
        if values is None:
            return result
        trace = {}
        for name, value in zip(TRACE_NAMES[self.mode], values):  # each (L*D, T, B, H)
            if unbatched:
                value = value.squeeze(2)  # (L*D, T, H)
            elif self.batch_first:
                value = value.transpose(1, 2)  # (L*D, B, T, H)
            trace[name] = value
        return result + (Trace(trace),)

    # -- what a layer remembers of its plain calls -----------------------------------

    def _remember_plan(self, plans: dict, key: tuple, name: str) -> None:
        """Remembers in ``plans`` (the layer's, as the call began) that a call with ``key``
        (:func:`gatedrnn.backends.plan_key`) passed its checks and ran on backend ``name``; at
        most ``MAX_PLANS`` keys (then it starts over)."""
        if len(plans) >= MAX_PLANS:
            plans.clear()
        plans[key] = name

    def __setattr__(self, name: str, value) -> None:
        # the checks and the backend a plan stands for read the layer's attributes: any assignment (a
        # weight, training, batch_first, backend, a regularizer, _flat_weights after .to()) forgets them
        self.__dict__.pop("_plans", None)
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        self.__dict__.pop("_plans", None)  # (a patched attribute restored by deleting it, too)
        super().__delattr__(name)

    def _sync_flat_weights(self) -> None:
        """torch.nn's ``_update_flat_weights`` (``_flat_weights`` follow a weight swapped in by
        ``torch.func.functional_call``, a parametrization, an assignment), with its usual case,
        nothing changed, read from ``_parameters`` in a fraction of its cost. Its weak references
        are compared too: an assignment updates ``_flat_weights`` but not them, and torch.nn's
        check, which reads them, must see the next change."""
        parameters = self._parameters
        for name, weight, ref in zip(self._flat_weights_names, self._flat_weights, self._flat_weight_refs):
            if parameters.get(name, _ABSENT) is not weight or (ref is not None and ref() is not weight):
                self._update_flat_weights()
                return

    def _as_checked(self, input: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """:meth:`_check_input`'s result for an input like one it has accepted already."""
        if input.dim() == 2:
            return input.unsqueeze(1), True  # (T, 1, I)
        return (input.transpose(0, 1) if self.batch_first else input), False

    def run_layers(self, run_direction, x, states, lengths, want_trace):
        """Runs every layer and direction: returns the output (T, B, D*H_out), the final
        states, each (L*D, B, *), and the trace values, each (L*D, T, B, *), or None."""
        finals, traces = [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                state = tuple(s[k] for s in states)
                weights, options = self._regularized(self.weights(layer, direction), self.step(layer, direction),
                                                     x, state)  # fmt: skip
                out, state, values = run_direction(self.mode, x, state, weights, lengths, direction == 1,
                                                   want_trace, **options)  # fmt: skip
                outputs.append(out)
                finals.append(state)
                traces.append(values)
            x = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]  # (T, B, D*H_out)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = regularizers.between_layers(x, self.dropout, lengths)
        final = tuple(torch.stack(s) for s in zip(*finals))
        # one layer and direction: its trace values as they are, not copied into a stack of one
        values = tuple(torch.stack(v) if len(v) > 1 else v[0][None] for v in zip(*traces)) if want_trace else None
        return x, final, values

    # -- argument checks -------------------------------------------------------------

    def _check_input(self, input) -> tuple[torch.Tensor, bool]:
        """The input as ``(T, B, I)`` and whether it came unbatched."""
        return _checks.sequence_input(input, self.weight_ih_l0, self.input_size, self.batch_first)

    def _check_lengths(self, lengths, T: int, B: int, x: torch.Tensor, unbatched: bool) -> torch.Tensor | None:
        """The lengths as int64 on the input's device, or None when every sequence is full."""
        if unbatched:
            raise ValueError("lengths is only accepted with batched input, got 2-D (T, I) unbatched input")
        return _checks.lengths(lengths, T, B, x.device)

    def _check_hx(self, hx, B: int, unbatched: bool, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The initial states, each ``(L*D, B, size)``: ``(h0, c0)`` for an LSTM, else ``(h0,)``."""
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        sizes = (self.proj_size or H, H) if self.mode == "LSTM" else (H,)
        if self.mode == "LSTM":
            if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError(f"hx must be a tuple (h_0, c_0) for an LSTM, got {type(hx).__name__}")
            given = (None, None) if hx is None else tuple(hx)
            names = ("hx[0] (h_0)", "hx[1] (c_0)")
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"hx must be a tensor h_0 for {type(self).__name__}, got a {type(hx).__name__}")
            given, names = (hx,), ("hx",)
        states = []
        for name, value, size in zip(names, given, sizes):
            if value is None:
                states.append(x.new_zeros(LD, B, size))
                continue
            expected = (LD, size) if unbatched else (LD, B, size)
            # the usual case costs one test (the list's weight_ih_l0: the attribute costs more than the test)
            if not _checks.matches(value, self._flat_weights[0], expected):
                value = _checks.float_tensor(name, value, self.weight_ih_l0)
                meaning = "(num_layers * num_directions, " + ("" if unbatched else "batch, ") + "hidden)"
                _checks.shape(name, value, expected, meaning)
            states.append(value.unsqueeze(1) if unbatched else value)
        return tuple(states)


class RNN(RNNBase):
    r"""A stack of vanilla RNN layers; a drop-in for :class:`torch.nn.RNN`.

    Each layer runs :class:`gatedrnn.RNNCell` over time,
    :math:`h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})`, with
    ``nonlinearity`` :math:`\phi` ``'tanh'`` or ``'relu'``. Arguments and results are
    torch.nn.RNN's; see :meth:`RNNBase.forward` for ``lengths`` and ``return_trace``
    (the trace holds ``hidden``).

    Args:
        input_size (int): ``I``, the number of features in each step of the input.
        hidden_size (int): ``H``, the number of features of the hidden state ``h``.
        num_layers (int): how many layers are stacked; layer ``k > 0`` reads the output
            sequence of layer ``k - 1``. Default: ``1``.
        nonlinearity (str): :math:`\phi`, ``"tanh"`` or ``"relu"``. Default: ``"tanh"``.
        bias (bool): if ``False``, the layer has no ``bias_ih_l{k}`` and ``bias_hh_l{k}``.
            Default: ``True``.
        batch_first (bool): if ``True``, ``input`` and ``output`` are ``(B, T, *)`` instead
            of ``(T, B, *)``; ``h_0`` and ``h_n`` keep their layout. Default: ``False``.
        dropout (float): in training, the probability with which each output of a layer is
            zeroed before the next layer reads it (not after the last layer). Default: ``0.0``.
        bidirectional (bool): if ``True``, each layer also runs over the reversed sequence
            (parameters ending in ``_reverse``), ``D = 2``. Default: ``False``.
        proj_size (int): only ``0``: it holds torch.nn.RNN's positional slot. Default: ``0``.
        device (torch.device, optional): where the parameters are created. Default: ``None``,
            torch's default device.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default:
            ``None``, torch's default dtype.
        backend (str): ``"reference"`` (the cell's equations in a PyTorch loop), ``"fused"``
            (native time loops with a hand-written backward) or ``"auto"``, the fastest
            that supports the call. Keyword only. Default: ``"auto"``.
        recurrent_dropout (float): in training, variational dropout (Gal & Ghahramani 2016):
            one mask per sequence, layer and direction multiplies ``h_{t-1}`` where it enters
            the recurrent products. Keyword only. Default: ``0.0``.
        weight_dropout (float): in training, DropConnect on ``weight_hh_l{k}`` (Merity et al.
            2017), one mask per forward call. Keyword only. Default: ``0.0``.
        zoneout (float): zoneout (Krueger et al. 2017): in training each unit keeps its
            previous ``h`` with this probability, in eval the expectation. Keyword only.
            Default: ``0.0``.

    Inputs:
        - **input** (Tensor or PackedSequence): ``(T, B, I)``, ``(B, T, I)`` with
          ``batch_first=True``, ``(T, I)`` unbatched, or a packed sequence.
        - **hx** (Tensor, optional): ``h_0``, ``(L*D, B, H)`` (``(L*D, H)`` unbatched), the
          initial state. Default: zeros.
        - **lengths** (Tensor, optional): ``(B,)`` integers in ``[1, T]``: each sequence's
          valid steps (see :meth:`RNNBase.forward`).
        - **return_trace** (bool): if ``True``, also return the gate trace.

    Outputs:
        - **output**: ``(T, B, D*H)`` (``(B, T, D*H)`` with ``batch_first``, ``(T, D*H)``
          unbatched, packed for packed input): the last layer's ``h_t`` at every step.
        - **h_n**: ``(L*D, B, H)``, every layer's and direction's final ``h``.
        - **trace**: a :class:`~gatedrnn.Trace` of ``hidden``, each ``(L*D, T, B, H)``
          (``(L*D, B, T, H)`` with ``batch_first``).

    Shape:
        ``B`` batch size, ``T`` sequence length, ``I = input_size``, ``H = hidden_size``,
        ``L = num_layers``, ``D = 2`` if ``bidirectional`` else ``1``.

    Attributes:
        weight_ih_l{k} (Tensor): ``(H, I)`` for ``k = 0``, ``(H, D*H)`` after: ``W_ih``.
        weight_hh_l{k} (Tensor): ``(H, H)``, ``W_hh``.
        bias_ih_l{k} (Tensor): ``(H,)``, ``b_ih``.
        bias_hh_l{k} (Tensor): ``(H,)``, ``b_hh``.
        weight_ih_l{k}_reverse (Tensor): the reverse direction's parameters (every name
            above with ``_reverse``), when ``bidirectional``.

    All are uniform in :math:`(-1/\sqrt{H}, 1/\sqrt{H})` at the start, as torch's.

    Examples:
        >>> import torch, gatedrnn
        >>> rnn = gatedrnn.RNN(10, 20, num_layers=2, nonlinearity="relu")
        >>> output, h_n = rnn(torch.randn(5, 3, 10), torch.zeros(2, 3, 20))
        >>> output.shape, h_n.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0, device=None,
                 dtype=None, *, backend="auto", recurrent_dropout=0.0, weight_dropout=0.0, zoneout=0.0):  # fmt: skip
        # proj_size holds torch.nn.RNN's positional slot (it passes it on to RNNBase); only 0 is valid
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(f"RNN_{nonlinearity.upper()}", input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, proj_size, device, dtype, backend=backend,
                         recurrent_dropout=recurrent_dropout, weight_dropout=weight_dropout, zoneout=zoneout)  # fmt: skip


class LSTM(RNNBase):
    r"""A stack of LSTM layers; a drop-in for :class:`torch.nn.LSTM`.

    Each layer runs :class:`gatedrnn.LSTMCell` over time (gates ``i, f, g, o``, states
    ``h, c``); with ``proj_size > 0`` the output is projected,
    :math:`h_t = W_{hr}(o_t \odot \tanh(c_t))` (Sak et al. 2014). ``forget_bias`` is
    added to every layer's forget-gate input bias after torch's initialization
    (Jozefowicz et al. 2015 recommend 1.0). The trace holds ``input, forget, candidate,
    output, cell, hidden`` (``hidden`` is the projected output when ``proj_size > 0``).

    ``peephole=True`` adds Gers & Schmidhuber's peepholes (:class:`gatedrnn.LSTMCell`):
    parameters ``weight_ci_l{k}``, ``weight_cf_l{k}``, ``weight_co_l{k}`` of shape ``(H,)``
    (``_reverse`` for the reverse direction), zero at initialization. ``coupled=True`` is
    Greff et al.'s CIFG, :math:`i_t = 1 - f_t`: the gate weights and biases hold 3H rows, in
    the order f, g, o (no ``weight_ci`` with peepholes).

    Args:
        input_size (int): ``I``, the number of features in each step of the input.
        hidden_size (int): ``H``, the number of features of the hidden state ``h`` and of the
            cell state ``c``.
        num_layers (int): how many LSTM layers are stacked; layer ``k > 0`` reads the output
            sequence of layer ``k - 1``. Default: ``1``.
        bias (bool): if ``False``, the layer has no ``bias_ih_l{k}`` and ``bias_hh_l{k}``.
            Default: ``True``.
        batch_first (bool): if ``True``, ``input`` and ``output`` are ``(B, T, *)`` instead
            of ``(T, B, *)``; the states ``h_0, c_0, h_n, c_n`` keep their layout.
            Default: ``False``.
        dropout (float): in training, the probability with which each output of a layer is
            zeroed (the rest scaled by ``1 / (1 - p)``) before the next layer reads it; the
            last layer's output is left alone. Default: ``0.0``.
        bidirectional (bool): if ``True``, each layer also runs over the reversed sequence
            (parameters ending in ``_reverse``) and its output holds both directions' features,
            ``D = 2``. Default: ``False``.
        proj_size (int): if ``> 0``, ``h_t`` is projected to ``proj_size`` features by
            ``weight_hr_l{k}`` (Sak et al. 2014); must be smaller than ``hidden_size``.
            Default: ``0`` (no projection).
        device (torch.device, optional): where the parameters are created. Default: ``None``,
            torch's default device.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default:
            ``None``, torch's default dtype.
        backend (str): which implementation runs the layer: ``"reference"`` (the cell's
            equations in a PyTorch loop), ``"fused"`` (native time loops with a hand-written
            backward) or ``"auto"``, the fastest that supports the call (torch's own kernel
            for a plain float32 LSTM where it can). Keyword only. Default: ``"auto"``.
        forget_bias (float): a constant added to every layer's forget-gate input bias
            ``b_if`` after torch's initialization; needs ``bias=True``. Keyword only.
            Default: ``0.0``, so a seeded layer starts with torch.nn's weights.
        peephole (bool): Gers & Schmidhuber's peepholes, parameters ``weight_ci_l{k}``,
            ``weight_cf_l{k}``, ``weight_co_l{k}`` of shape ``(H,)``, zero at the start.
            Keyword only. Default: ``False``.
        coupled (bool): coupled input and forget gates (CIFG), ``i_t = 1 - f_t``, with 3H
            gate rows in the order f, g, o. Keyword only. Default: ``False``.
        layer_norm (bool): layer normalization (Ba et al. 2016) of the input and recurrent
            pre-activations and of the cell state before its ``tanh``, with parameters
            ``layer_norm_ih_l{k}``, ``layer_norm_hh_l{k}`` ``(4H,)`` and
            ``layer_norm_c_weight_l{k}``, ``layer_norm_c_bias_l{k}`` ``(H,)``; does not
            combine with ``peephole`` or ``coupled``. Keyword only. Default: ``False``.
        recurrent_dropout (float): in training, variational dropout (Gal & Ghahramani 2016):
            one mask per sequence, layer and direction multiplies ``h_{t-1}`` where it enters
            the recurrent product. Keyword only. Default: ``0.0``.
        weight_dropout (float): in training, DropConnect on ``weight_hh_l{k}`` (Merity et al.
            2017), one mask per forward call. Keyword only. Default: ``0.0``.
        zoneout (float or tuple[float, float]): zoneout (Krueger et al. 2017): in training
            each unit keeps its previous value with this probability, in eval the
            expectation; ``p`` for both states or ``(p_c, p_h)``. Keyword only.
            Default: ``0.0``.

    Inputs:
        - **input** (Tensor or PackedSequence): ``(T, B, I)``, ``(B, T, I)`` with
          ``batch_first=True``, ``(T, I)`` unbatched, or a packed sequence.
        - **hx** (tuple of two Tensors, optional): ``(h_0, c_0)``, the initial states,
          ``(L*D, B, H_out)`` and ``(L*D, B, H)`` (without the ``B`` for unbatched input).
          Default: zeros.
        - **lengths** (Tensor, optional): ``(B,)`` integers in ``[1, T]``, on the CPU or the
          parameters' device: each sequence's valid steps, instead of packing. Outputs past
          a length are zero and the final states are those of each sequence's last valid
          step.
        - **return_trace** (bool): if ``True``, also return the gate trace.

    Outputs:
        - **output**: ``(T, B, D*H_out)`` (``(B, T, D*H_out)`` with ``batch_first``,
          ``(T, D*H_out)`` unbatched, packed for packed input): the last layer's ``h_t`` at
          every step.
        - **h_n**: ``(L*D, B, H_out)``, every layer's and direction's final ``h``.
        - **c_n**: ``(L*D, B, H)``, every layer's and direction's final cell state.
        - **trace**: a :class:`~gatedrnn.Trace` of ``input, forget, candidate, output, cell,
          hidden``, each ``(L*D, T, B, H)`` (``(L*D, B, T, H)`` with ``batch_first``).

    Shape:
        ``B`` batch size, ``T`` sequence length, ``I = input_size``, ``H = hidden_size``,
        ``H_out = proj_size`` if ``proj_size > 0`` else ``hidden_size``,
        ``L = num_layers``, ``D = 2`` if ``bidirectional`` else ``1``.

    Attributes:
        weight_ih_l{k} (Tensor): ``(4H, I)`` for ``k = 0``, ``(4H, D*H_out)`` after:
            ``[W_ii; W_if; W_ig; W_io]`` of layer ``k`` (``3H`` rows, f, g, o, when coupled).
        weight_hh_l{k} (Tensor): ``(4H, H_out)``, ``[W_hi; W_hf; W_hg; W_ho]``.
        bias_ih_l{k} (Tensor): ``(4H,)``, ``[b_ii; b_if; b_ig; b_io]``.
        bias_hh_l{k} (Tensor): ``(4H,)``, ``[b_hi; b_hf; b_hg; b_ho]``.
        weight_hr_l{k} (Tensor): ``(H_out, H)``, the projection, when ``proj_size > 0``.
        weight_ih_l{k}_reverse (Tensor): the reverse direction's parameters (every name above
            with ``_reverse``), when ``bidirectional``.

    All are uniform in :math:`(-1/\sqrt{H}, 1/\sqrt{H})` at the start, as torch's.

    Examples:
        >>> import torch, gatedrnn
        >>> lstm = gatedrnn.LSTM(10, 20, num_layers=2)
        >>> x = torch.randn(5, 3, 10)  # (T, B, I)
        >>> output, (h_n, c_n) = lstm(x)
        >>> output.shape, h_n.shape, c_n.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]), torch.Size([2, 3, 20]))
        >>> lengths = torch.tensor([5, 2, 4])
        >>> output, (h_n, c_n), trace = lstm(x, lengths=lengths, return_trace=True)
        >>> trace.forget.shape  # (L*D, T, B, H)
        torch.Size([2, 5, 3, 20])
        >>> bool(output[2:, 1].eq(0).all())  # past sequence 1's length
        True
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None,
                 *, backend="auto", forget_bias=0.0, peephole=False, coupled=False, layer_norm=False,
                 recurrent_dropout=0.0, weight_dropout=0.0, zoneout=0.0):  # fmt: skip
        self.forget_bias = float(forget_bias)
        if self.forget_bias and not bias:
            raise ValueError(f"forget_bias={forget_bias} needs bias=True, got bias=False")
        self.peephole = _checks.boolean("peephole", peephole)
        self.coupled = _checks.boolean("coupled", coupled)
        self.layer_norm = _checks.boolean("layer_norm", layer_norm)
        if self.layer_norm and (self.peephole or self.coupled):
            raise ValueError("layer_norm=True does not combine with peephole=True or coupled=True (yet); choose one")
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype, backend=backend, recurrent_dropout=recurrent_dropout,
                         weight_dropout=weight_dropout, zoneout=zoneout)  # fmt: skip
        kw = {"device": device, "dtype": dtype}
        if self.coupled:  # torch's RNNBase built 4H rows: the CIFG has 3 (f, g, o)
            for name in self._flat_weights_names:
                if name.startswith(("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
                    rows = getattr(self, name).shape
                    setattr(self, name, nn.Parameter(torch.empty(3 * self.hidden_size, *rows[1:], **kw)))
        if self.peephole:  # after torch's parameters, so a seeded layer keeps torch.nn's weights
            for layer in range(self.num_layers):
                for suffix in ("", "_reverse")[: self.num_directions]:
                    for name in peephole_names(self.coupled):
                        setattr(self, f"{name}_l{layer}{suffix}", nn.Parameter(torch.zeros(self.hidden_size, **kw)))
        if self.layer_norm:  # after torch's parameters, so a seeded layer keeps torch.nn's weights
            layernorm.add_parameters(self, {"ih": 4, "hh": 4, "c_weight": 1, "c_bias": 1}, kw)
            layernorm.reset_parameters(self)
        if self.coupled:  # the 3H-row parameters replaced torch's: draw them
            self.reset_parameters()

    def _defaults(self) -> dict:
        return super()._defaults() | {"forget_bias": 0.0, "peephole": False, "coupled": False, "layer_norm": False}

    def flatten_parameters(self) -> None:
        """torch.nn's, except for a coupled layer: cuDNN knows no 3H-row LSTM."""
        if not getattr(self, "coupled", False):
            super().flatten_parameters()

    def variant(self) -> dict:
        names = ("peephole", "coupled", "layer_norm")
        return {name: True for name in names if getattr(self, name, False)}

    def weights(self, layer: int, direction: int):
        return layernorm.loop_weights(self, super().weights(layer, direction))

    def step(self, layer: int, direction: int):
        if not self.variant():
            return super().step(layer, direction)
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        if self.layer_norm:
            gains = {k: getattr(self, f"layer_norm_{k}{suffix}") for k in ("ih", "hh", "c_weight", "c_bias")}
            return functools.partial(ln_lstm_step, bias_ih=getattr(self, "bias_ih" + suffix, None),
                                     gain_ih=gains["ih"], gain_hh=gains["hh"], gain_c=gains["c_weight"],
                                     bias_c=gains["c_bias"])  # fmt: skip
        peephole = tuple(getattr(self, name + suffix, None) for name in PEEPHOLES) if self.peephole else None
        return functools.partial(lstm_step, peephole=peephole, coupled=self.coupled)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            if self.forget_bias:
                H, block = self.hidden_size, forget_block(getattr(self, "coupled", False))
                for name in self._flat_weights_names:
                    if name.startswith("bias_ih"):
                        getattr(self, name)[block * H : (block + 1) * H] += self.forget_bias
            for name, value in self.named_parameters():
                if name.startswith(PEEPHOLES):
                    value.zero_()
        layernorm.reset_parameters(self)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        s += f", forget_bias={self.forget_bias}" if self.forget_bias else ""
        return s + "".join(f", {name}=True" for name in self.variant())


class GRU(RNNBase):
    r"""A stack of GRU layers; a drop-in for :class:`torch.nn.GRU`.

    Each layer runs :class:`gatedrnn.GRUCell` over time (gates ``r, z, n``,
    :math:`h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}`, reset applied after the
    recurrent product as in torch and cuDNN). The trace holds ``reset, update,
    candidate, hidden``. ``reset_after=False`` is Cho et al. 2014's original candidate,
    :math:`n_t = \tanh(W_{in} x_t + b_{in} + W_{hn}(r_t \odot h_{t-1}) + b_{hn})`, with the same
    parameters (a state_dict loads either way; Keras' GRU with ``reset_after=False``).

    Args:
        input_size (int): ``I``, the number of features in each step of the input.
        hidden_size (int): ``H``, the number of features of the hidden state ``h``.
        num_layers (int): how many layers are stacked; layer ``k > 0`` reads the output
            sequence of layer ``k - 1``. Default: ``1``.
        bias (bool): if ``False``, the layer has no ``bias_ih_l{k}`` and ``bias_hh_l{k}``.
            Default: ``True``.
        batch_first (bool): if ``True``, ``input`` and ``output`` are ``(B, T, *)`` instead
            of ``(T, B, *)``; ``h_0`` and ``h_n`` keep their layout. Default: ``False``.
        dropout (float): in training, the probability with which each output of a layer is
            zeroed before the next layer reads it (not after the last layer). Default: ``0.0``.
        bidirectional (bool): if ``True``, each layer also runs over the reversed sequence
            (parameters ending in ``_reverse``), ``D = 2``. Default: ``False``.
        proj_size (int): only ``0``: it holds torch.nn.GRU's positional slot. Default: ``0``.
        device (torch.device, optional): where the parameters are created. Default: ``None``,
            torch's default device.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default:
            ``None``, torch's default dtype.
        backend (str): ``"reference"`` (the cell's equations in a PyTorch loop), ``"fused"``
            (native time loops with a hand-written backward) or ``"auto"``, the fastest
            that supports the call. Keyword only. Default: ``"auto"``.
        reset_after (bool): ``True`` applies ``r`` after the recurrent product (torch, cuDNN);
            ``False`` before it (Cho et al. 2014). Keyword only. Default: ``True``.
        layer_norm (bool): layer normalization (Ba et al. 2016) of the input and recurrent
            pre-activations, with gains ``layer_norm_ih_l{k}``, ``layer_norm_hh_l{k}``
            ``(3H,)``; needs ``reset_after=True``. Keyword only. Default: ``False``.
        recurrent_dropout (float): in training, variational dropout (Gal & Ghahramani 2016):
            one mask per sequence, layer and direction multiplies ``h_{t-1}`` where it enters
            the recurrent products. Keyword only. Default: ``0.0``.
        weight_dropout (float): in training, DropConnect on ``weight_hh_l{k}`` (Merity et al.
            2017), one mask per forward call. Keyword only. Default: ``0.0``.
        zoneout (float): zoneout (Krueger et al. 2017): in training each unit keeps its
            previous ``h`` with this probability, in eval the expectation. Keyword only.
            Default: ``0.0``.

    Inputs:
        - **input** (Tensor or PackedSequence): ``(T, B, I)``, ``(B, T, I)`` with
          ``batch_first=True``, ``(T, I)`` unbatched, or a packed sequence.
        - **hx** (Tensor, optional): ``h_0``, ``(L*D, B, H)`` (``(L*D, H)`` unbatched), the
          initial state. Default: zeros.
        - **lengths** (Tensor, optional): ``(B,)`` integers in ``[1, T]``: each sequence's
          valid steps (see :meth:`RNNBase.forward`).
        - **return_trace** (bool): if ``True``, also return the gate trace.

    Outputs:
        - **output**: ``(T, B, D*H)`` (``(B, T, D*H)`` with ``batch_first``, ``(T, D*H)``
          unbatched, packed for packed input): the last layer's ``h_t`` at every step.
        - **h_n**: ``(L*D, B, H)``, every layer's and direction's final ``h``.
        - **trace**: a :class:`~gatedrnn.Trace` of ``reset, update, candidate, hidden``, each
          ``(L*D, T, B, H)`` (``(L*D, B, T, H)`` with ``batch_first``).

    Shape:
        ``B`` batch size, ``T`` sequence length, ``I = input_size``, ``H = hidden_size``,
        ``L = num_layers``, ``D = 2`` if ``bidirectional`` else ``1``.

    Attributes:
        weight_ih_l{k} (Tensor): ``(3H, I)`` for ``k = 0``, ``(3H, D*H)`` after: ``[W_ir; W_iz; W_in]``.
        weight_hh_l{k} (Tensor): ``(3H, H)``, ``[W_hr; W_hz; W_hn]``.
        bias_ih_l{k} (Tensor): ``(3H,)``, ``[b_ir; b_iz; b_in]``.
        bias_hh_l{k} (Tensor): ``(3H,)``, ``[b_hr; b_hz; b_hn]``.
        weight_ih_l{k}_reverse (Tensor): the reverse direction's parameters (every name
            above with ``_reverse``), when ``bidirectional``.

    All are uniform in :math:`(-1/\sqrt{H}, 1/\sqrt{H})` at the start, as torch's.

    Examples:
        >>> import torch, gatedrnn
        >>> gru = gatedrnn.GRU(10, 20, batch_first=True)
        >>> output, h_n, trace = gru(torch.randn(3, 5, 10), return_trace=True)
        >>> output.shape, h_n.shape, trace.update.shape
        (torch.Size([3, 5, 20]), torch.Size([1, 3, 20]), torch.Size([1, 3, 5, 20]))
        >>> theirs = gru.to_torch()  # a torch.nn.GRU with the same weights
        >>> torch.allclose(theirs(torch.ones(3, 5, 10))[0], gru(torch.ones(3, 5, 10))[0], atol=1e-6)
        True
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None,
                 *, backend="auto", reset_after=True, layer_norm=False, recurrent_dropout=0.0, weight_dropout=0.0,
                 zoneout=0.0):  # fmt: skip
        # proj_size holds torch.nn.GRU's positional slot (it passes it on to RNNBase); only 0 is valid
        self.reset_after = _checks.boolean("reset_after", reset_after)
        self.layer_norm = _checks.boolean("layer_norm", layer_norm)
        if self.layer_norm and not self.reset_after:
            raise ValueError("layer_norm=True does not combine with reset_after=False (yet); choose one")
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype, backend=backend, recurrent_dropout=recurrent_dropout,
                         weight_dropout=weight_dropout, zoneout=zoneout)  # fmt: skip
        if self.layer_norm:  # after torch's parameters, so a seeded layer keeps torch.nn's weights
            layernorm.add_parameters(self, {"ih": 3, "hh": 3}, {"device": device, "dtype": dtype})
            layernorm.reset_parameters(self)

    def _defaults(self) -> dict:
        return super()._defaults() | {"reset_after": True, "layer_norm": False}

    def variant(self) -> dict:
        return ({} if self.reset_after else {"reset_after": False}) | ({"layer_norm": True} if self.layer_norm else {})

    def weights(self, layer: int, direction: int):
        return layernorm.loop_weights(self, super().weights(layer, direction))

    def step(self, layer: int, direction: int):
        if getattr(self, "layer_norm", False):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            return functools.partial(ln_gru_step, bias_ih=getattr(self, "bias_ih" + suffix, None),
                                     gain_ih=getattr(self, "layer_norm_ih" + suffix),
                                     gain_hh=getattr(self, "layer_norm_hh" + suffix))  # fmt: skip
        return gru_step if self.reset_after else functools.partial(gru_step, reset_after=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        layernorm.reset_parameters(self)

    def extra_repr(self) -> str:
        s = super().extra_repr() + ("" if self.reset_after else ", reset_after=False")
        return s + (", layer_norm=True" if getattr(self, "layer_norm", False) else "")


def to_torch(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with each gatedrnn layer and cell in it replaced by its
    torch.nn twin (same weights, device, dtype and train/eval mode); a gatedrnn layer or
    cell itself gives its twin.

    For tools that match torch.nn's types exactly, such as dynamic quantization:
    ``torch.ao.quantization.quantize_dynamic(gatedrnn.to_torch(model), {nn.LSTM, nn.Linear})``.

    Args:
        module (torch.nn.Module): any module; it is copied, never changed.

    Returns:
        The copy (or the twin). A layer or cell with a variant torch.nn lacks (peepholes,
        ``layer_norm``, zoneout, an MGU...) is a ``ValueError``.

    Examples:
        >>> import torch, gatedrnn
        >>> model = torch.nn.Sequential(gatedrnn.GRUCell(4, 8), torch.nn.Linear(8, 2))
        >>> type(gatedrnn.to_torch(model)[0]).__module__
        'torch.nn.modules.rnn'
    """
    if isinstance(module, (RNNBase, CellBase)):
        return module.to_torch()
    module = copy.deepcopy(module)

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, (RNNBase, CellBase)):
                setattr(parent, name, child.to_torch())
            else:
                swap(child)

    swap(module)
    return module


class MGU(RNNBase):
    r"""A stack of minimal gated units (Zhou et al. 2016; :class:`gatedrnn.MGUCell`): one gate
    ``f`` resets ``h_{t-1}`` in the candidate and sets the update rate,
    :math:`h_t = (1 - f_t) \odot h_{t-1} + f_t \odot n_t`. torch.nn's layer API (layers,
    directions, ``batch_first``, ``lengths``, packing, ``hx``, dropout between layers, the
    regularizers); parameters named as torch names them with 2H rows (``[f; n]``). Runs on the
    native loop of the fused backend (``csrc/gru.cpp``), as the GRU does. The trace
    holds ``forget, candidate, hidden``.

    Args:
        input_size (int): ``I``, the number of features in each step of the input.
        hidden_size (int): ``H``, the number of features of the hidden state ``h``.
        num_layers (int): how many layers are stacked; layer ``k > 0`` reads the output
            sequence of layer ``k - 1``. Default: ``1``.
        bias (bool): if ``False``, the layer has no ``bias_ih_l{k}`` and ``bias_hh_l{k}``.
            Default: ``True``.
        batch_first (bool): if ``True``, ``input`` and ``output`` are ``(B, T, *)`` instead
            of ``(T, B, *)``; ``h_0`` and ``h_n`` keep their layout. Default: ``False``.
        dropout (float): in training, the probability with which each output of a layer is
            zeroed before the next layer reads it (not after the last layer). Default: ``0.0``.
        bidirectional (bool): if ``True``, each layer also runs over the reversed sequence
            (parameters ending in ``_reverse``), ``D = 2``. Default: ``False``.
        device (torch.device, optional): where the parameters are created. Default: ``None``,
            torch's default device.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default:
            ``None``, torch's default dtype.
        backend (str): ``"reference"`` (the cell's equations in a PyTorch loop), ``"fused"``
            (native time loops with a hand-written backward) or ``"auto"``, the fastest
            that supports the call. Keyword only. Default: ``"auto"``.
        recurrent_dropout (float): in training, variational dropout (Gal & Ghahramani 2016):
            one mask per sequence, layer and direction multiplies ``h_{t-1}`` where it enters
            the recurrent products. Keyword only. Default: ``0.0``.
        weight_dropout (float): in training, DropConnect on ``weight_hh_l{k}`` (Merity et al.
            2017), one mask per forward call. Keyword only. Default: ``0.0``.
        zoneout (float): zoneout (Krueger et al. 2017): in training each unit keeps its
            previous ``h`` with this probability, in eval the expectation. Keyword only.
            Default: ``0.0``.

    Inputs:
        - **input** (Tensor or PackedSequence): ``(T, B, I)``, ``(B, T, I)`` with
          ``batch_first=True``, ``(T, I)`` unbatched, or a packed sequence.
        - **hx** (Tensor, optional): ``h_0``, ``(L*D, B, H)`` (``(L*D, H)`` unbatched), the
          initial state. Default: zeros.
        - **lengths** (Tensor, optional): ``(B,)`` integers in ``[1, T]``: each sequence's
          valid steps (see :meth:`RNNBase.forward`).
        - **return_trace** (bool): if ``True``, also return the gate trace.

    Outputs:
        - **output**: ``(T, B, D*H)`` (``(B, T, D*H)`` with ``batch_first``, ``(T, D*H)``
          unbatched, packed for packed input): the last layer's ``h_t`` at every step.
        - **h_n**: ``(L*D, B, H)``, every layer's and direction's final ``h``.
        - **trace**: a :class:`~gatedrnn.Trace` of ``forget, candidate, hidden``, each ``(L*D, T, B, H)``
          (``(L*D, B, T, H)`` with ``batch_first``).

    Shape:
        ``B`` batch size, ``T`` sequence length, ``I = input_size``, ``H = hidden_size``,
        ``L = num_layers``, ``D = 2`` if ``bidirectional`` else ``1``.

    Attributes:
        weight_ih_l{k} (Tensor): ``(2H, I)`` for ``k = 0``, ``(2H, D*H)`` after: ``[W_if; W_in]``.
        weight_hh_l{k} (Tensor): ``(2H, H)``, ``[W_hf; W_hn]``.
        bias_ih_l{k} (Tensor): ``(2H,)``, ``[b_if; b_in]``.
        bias_hh_l{k} (Tensor): ``(2H,)``, ``[b_hf; b_hn]``.
        weight_ih_l{k}_reverse (Tensor): the reverse direction's parameters (every name
            above with ``_reverse``), when ``bidirectional``.

    All are uniform in :math:`(-1/\sqrt{H}, 1/\sqrt{H})` at the start, as torch's cells.
    There is no torch.nn twin: ``from_torch`` and ``to_torch`` raise.

    Examples:
        >>> import torch, gatedrnn
        >>> mgu = gatedrnn.MGU(4, 8, bidirectional=True)
        >>> output, h_n = mgu(torch.randn(6, 2, 4))
        >>> output.shape, h_n.shape, mgu.weight_hh_l0.shape
        (torch.Size([6, 2, 16]), torch.Size([2, 2, 8]), torch.Size([16, 8]))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None, *, backend="auto", recurrent_dropout=0.0,
                 weight_dropout=0.0, zoneout=0.0):  # fmt: skip
        # torch's RNNBase knows no MGU: it is built as a GRU, then given the MGU's 2H rows
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
                         device, dtype, backend=backend, recurrent_dropout=recurrent_dropout,
                         weight_dropout=weight_dropout, zoneout=zoneout)  # fmt: skip
        self.mode = "MGU"
        for name in self._flat_weights_names:
            shape = getattr(self, name).shape
            setattr(self, name, nn.Parameter(torch.empty(2 * self.hidden_size, *shape[1:], device=device, dtype=dtype)))
        self.reset_parameters()

    def variant(self) -> dict:
        return {"cell": "MGU"}

    def flatten_parameters(self) -> None:
        """Nothing to flatten: cuDNN has no MGU."""

    @classmethod
    def from_torch(cls, module, *, backend="auto"):
        raise TypeError("torch.nn has no MGU layer to convert from")
