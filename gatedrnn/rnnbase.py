"""The layer all of gatedrnn's torch.nn drop-ins share: torch.nn's constructor, parameters and
forward, the argument checks, the backend choice and the plans a layer keeps of its plain calls.
The cells' own layers (RNN, LSTM, GRU, MGU) are in :mod:`gatedrnn.layers`."""

from __future__ import annotations

import numbers
import warnings

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from gatedrnn import _checks, autotune, backends, regularizers
from gatedrnn.backends import BACKENDS, autocast_dtype, forward_in_dtype, select_backend
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
        if name is not None and type(name) is not str:  # (name, shape class): auto's provisional choice,
            name = None if autotune.due(name[1]) else name[0]  # a plan until its second look is due
        if name is not None:  # a call like an earlier one: its input checks passed, its backend is known
            x, unbatched = self._as_checked(input)
            states = self._check_hx(hx, x.shape[1], unbatched, x)
            output, final, values = backends.run_as(name, self, x, states, None, False)
            return self._results(output, final, values, None, unbatched)

        packed = input if isinstance(input, PackedSequence) else None
        x, lengths, unbatched = _checks.layer_input(input, lengths, self.weight_ih_l0, self._check_input)
        packed_lengths = lengths  # a packing's, on the CPU (for pack_padded_sequence below)
        T, B = x.shape[0], x.shape[1]
        if lengths is not None:
            lengths = self._check_lengths(lengths, T, B, x, unbatched)
        states = self._check_hx(hx, B, unbatched, x)
        if packed is not None and packed.sorted_indices is not None:
            states = tuple(s.index_select(1, packed.sorted_indices) for s in states)

        name = select_backend(self, x, lengths, return_trace, states)
        output, final, values = backends.run(name, self, x, states, lengths, return_trace)
        if key is not None:
            confirm = backends.provisional_key(self, x)
            self._remember_plan(plans, key, name if confirm is None else (name, confirm))
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

    def _remember_plan(self, plans: dict, key: tuple, name: str | tuple[str, str]) -> None:
        """Remembers in ``plans`` (the layer's, as the call began) that a call with ``key``
        (:func:`gatedrnn.backends.plan_key`) passed its checks and ran on backend ``name``, or
        on ``name[0]``, ``auto``'s provisional choice for shape class ``name[1]``
        (:func:`gatedrnn.autotune.choose`), until its second look is due; at most ``MAX_PLANS``
        keys (then it starts over)."""
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
