"""Recurrent layers: a cell stacked over time, layers and directions; drop-ins for
torch.nn.RNN, torch.nn.LSTM and torch.nn.GRU, with variable lengths and gate traces. Each is a
cell's parameters and step on :class:`gatedrnn.rnnbase.RNNBase`, which runs them."""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from gatedrnn import _checks
from gatedrnn.cells import layernorm
from gatedrnn.cells.base import CellBase
from gatedrnn.cells.gru import gru_step
from gatedrnn.cells.layernorm import ln_gru_step, ln_lstm_step
from gatedrnn.cells.lstm import PEEPHOLES, forget_block, lstm_step, peephole_names
from gatedrnn.rnnbase import RNNBase


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
