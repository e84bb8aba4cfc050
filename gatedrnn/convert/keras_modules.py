"""The torch modules a Keras layer or model becomes (:func:`gatedrnn.convert.keras.from_keras`),
and what :func:`~gatedrnn.convert.keras_export.to_keras` takes back: :class:`KerasRecurrent`, a
gatedrnn layer called the way Keras calls its recurrent layer (``return_sequences``,
``return_state``, ``go_backwards``, the ``Bidirectional`` merge mode, a right-padding mask as
``lengths``); :class:`MaskedEmbedding` and :class:`Masking`, which make Keras' masks; and
:class:`KerasModel`, a chain of them under their Keras names. None of them needs Keras.
"""

from __future__ import annotations

import torch
from torch import nn

from gatedrnn.conv import ConvLSTM
from gatedrnn.layers import GRU, LSTM, RNN

MERGE_MODES = ("concat", "sum", "mul", "ave", None)  # Keras' Bidirectional merge modes


def right_padding_lengths(mask: torch.Tensor) -> torch.Tensor:
    """Each sequence's number of valid steps from a Keras mask ``(B, T)``, which must be a
    right-padding mask (valid steps first, then padding); anything else is a ``ValueError``."""
    mask = mask.to(torch.bool)
    lengths = mask.sum(1)  # (B,)
    right = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]  # (B, T)
    if not torch.equal(mask, right):
        rows = (mask != right).any(1).nonzero().flatten().tolist()
        raise ValueError(f"mask must be a right-padding mask (each sequence's valid steps first, then only padding) "
                         f"for gatedrnn's lengths, got another pattern in batch rows {rows[:5]}")  # fmt: skip
    return lengths


def _steps_index(lengths: torch.Tensor, T: int) -> torch.Tensor:
    return torch.arange(T, device=lengths.device)[None, :].expand(lengths.shape[0], T)  # (B, T)


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, index[b, t]]`` along dimension 1 of ``x`` (B, T, ...)."""
    index = index.reshape(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:])
    return x.gather(1, index)


def _where_time(keep: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x`` where ``keep`` (B, T) holds, zeros elsewhere."""
    return torch.where(keep.reshape(*keep.shape, *([1] * (x.dim() - 2))), x, torch.zeros((), dtype=x.dtype))


class KerasRecurrent(nn.Module):
    r"""A gatedrnn layer called the way Keras calls its recurrent layer.

    ``rnn`` holds the weights and runs the recurrence; this module adds what Keras' call does
    around it: the output is the last step (``return_sequences=False``) or every step, the
    final states follow it as a flat tuple with ``return_state=True`` (``h, c`` for an LSTM,
    each ``(B, H)``; a bidirectional layer gives the forward direction's then the backward's),
    ``go_backwards`` runs the sequence reversed and returns outputs in the order it ran them, a
    bidirectional layer merges its two directions' outputs by ``merge_mode``, and a
    ``ConvLSTM2D``'s frames are channels last, ``(B, T, H, W, C)``.

    A Keras mask (``mask``, ``(B, T)``) must be a right-padding mask: it becomes ``rnn``'s
    ``lengths``. Past a sequence's end Keras repeats the last valid output
    (``zero_output_for_mask=False``) or writes zeros (``True``; always so in a
    ``Bidirectional`` returning sequences); a sequence with no valid step outputs zeros and keeps
    its initial state; this module does the same.

    Args:
        rnn (RNNBase or ConvLSTM): the gatedrnn layer, batch first, one layer
            (``bidirectional`` for a Keras ``Bidirectional``); ``num_layers > 1`` for a run of
            Keras layers of one kind and size, each returning sequences to the next (with
            ``Dropout(dropout)`` between them), which gatedrnn runs as one stack.
        return_sequences (bool): every step's output rather than the last. Default: ``False``.
        return_state (bool): also return the final states. Default: ``False``.
        go_backwards (bool): run the sequence reversed (one direction only). Default: ``False``.
        merge_mode (str or None): a bidirectional layer's merge of its directions:
            ``"concat"``, ``"sum"``, ``"mul"``, ``"ave"`` or ``None`` (both, as two outputs).
            Default: ``"concat"``.
        zero_output_for_mask (bool): zeros past a sequence's end rather than its last output.
            Default: ``False``.
        keras_config (dict, optional): the Keras layer's settings that gatedrnn does not use
            (its name, input dropout...), kept so that :func:`to_keras` rebuilds it as it was.

    Inputs:
        - **x** (Tensor): ``(B, T, I)``, or ``(B, T, H, W, C)`` frames for a ConvLSTM.
        - **initial_state** (list of Tensors, optional): Keras' order: ``[h, c]`` (LSTM),
          ``[h]`` (SimpleRNN, GRU), the forward direction's then the backward's for a
          bidirectional layer; each ``(B, H)`` (frames: ``(B, H, W, C)``). Default: zeros.
        - **mask** (Tensor, optional): ``(B, T)``, true at valid steps; a right-padding mask.
        - **return_trace** (bool): also return ``rnn``'s :class:`~gatedrnn.Trace` (batch first,
          ``(D, B, T, H)``; with ``go_backwards`` in the order the steps ran).

    Outputs:
        ``output`` (``(B, T, D*H)`` or ``(B, D*H)``; two outputs with ``merge_mode=None``), then
        the states with ``return_state``, then the trace with ``return_trace``; ``output``
        alone when neither is asked for.

    Examples:
        >>> import torch, gatedrnn
        >>> from gatedrnn.convert.keras import KerasRecurrent
        >>> layer = KerasRecurrent(gatedrnn.LSTM(3, 5, batch_first=True), return_state=True)
        >>> last, h, c = layer(torch.randn(2, 7, 3))
        >>> last.shape, torch.equal(last, h)
        (torch.Size([2, 5]), True)
    """

    def __init__(self, rnn, *, return_sequences=False, return_state=False, go_backwards=False, merge_mode="concat",
                 zero_output_for_mask=False, keras_config=None):  # fmt: skip
        super().__init__()
        if not isinstance(rnn, (RNN, LSTM, GRU, ConvLSTM)):
            raise TypeError(f"rnn must be a gatedrnn RNN, LSTM, GRU or ConvLSTM, got {type(rnn).__name__}")
        if not rnn.batch_first:
            raise ValueError("rnn must be batch first, as Keras' layers are, got batch_first=False")
        if rnn.num_layers > 1 and (return_state or go_backwards or isinstance(rnn, ConvLSTM)):
            raise ValueError(f"a stack (num_layers={rnn.num_layers}) runs forward and returns no states here: Keras "
                             f"returns one layer's; got return_state={return_state}, go_backwards={go_backwards}")  # fmt: skip
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got {merge_mode!r}")
        self.rnn = rnn
        self.bidirectional = bool(getattr(rnn, "bidirectional", False))
        if go_backwards and self.bidirectional:
            raise ValueError("go_backwards=True applies to one direction; a bidirectional rnn runs both already")
        self.return_sequences, self.return_state = bool(return_sequences), bool(return_state)
        self.go_backwards, self.merge_mode = bool(go_backwards), merge_mode
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.keras_config = dict(keras_config or {})
        self.frames = isinstance(rnn, ConvLSTM)

    def extra_repr(self) -> str:
        flags = ["return_sequences", "return_state", "go_backwards", "zero_output_for_mask"]
        s = ", ".join(f"{name}=True" for name in flags if getattr(self, name))
        return s + (f"{', ' if s else ''}merge_mode={self.merge_mode!r}" if self.bidirectional else "")

    def _initial(self, initial_state, B: int):
        """Keras' flat list of states → rnn's ``hx``, each (D, B, ...)."""
        if initial_state is None:
            return None
        if self.rnn.num_layers > 1:
            raise ValueError(f"initial_state is one Keras layer's; this stack has num_layers={self.rnn.num_layers}")
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        per = 2 if self.rnn.mode == "LSTM" else 1
        D = 2 if self.bidirectional else 1
        if len(states) != per * D:
            raise ValueError(f"initial_state must hold {per * D} tensors (Keras' order: "
                             f"{'h, c' if per == 2 else 'h'}{' per direction' if D == 2 else ''}), got {len(states)}")  # fmt: skip
        if self.frames:
            states = [s.permute(0, 3, 1, 2) for s in states]  # (B, C, H, W)
        hx = tuple(torch.stack([states[d * per + k] for d in range(D)]) for k in range(per))  # each (D, B, ...)
        return hx if per == 2 else hx[0]

    def forward(self, x, initial_state=None, mask=None, return_trace=False):
        if self.frames:
            x = x.permute(0, 1, 4, 2, 3)  # (B, T, C, H, W)
        B, T = x.shape[0], x.shape[1]
        hx = self._initial(initial_state, B)
        lengths = empty = None
        if mask is not None:
            lengths = right_padding_lengths(mask.to(x.device))
            if bool((lengths == T).all()):
                lengths = None
            else:
                empty = lengths == 0  # (B,): Keras keeps their initial state and outputs zeros
                lengths = lengths.clamp(min=1)
        t = _steps_index(lengths, T) if lengths is not None else None  # (B, T)
        if self.go_backwards:  # the valid steps reversed, padding left where it is
            x = x.flip(1) if lengths is None else _gather_time(x, torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t))
        if self.frames:
            result = self.rnn(x, hx, lengths=lengths, return_trace=return_trace)
        else:
            result = self.rnn(x, hx, lengths, return_trace)
        out, final = result[0], result[1]  # (B, T, D*H), (D, B, H) or a pair
        final = final if isinstance(final, tuple) else (final,)
        if empty is not None and bool(empty.any()):
            start = hx if isinstance(hx, tuple) else (hx,) if hx is not None else tuple(torch.zeros_like(s) for s in final)
            keep = empty.reshape(1, B, *([1] * (final[0].dim() - 2)))
            final = tuple(torch.where(keep, s0, s) for s0, s in zip(start, final))
            out = _where_time(~empty[:, None].expand(B, T), out)
        if lengths is not None:
            if self.go_backwards:  # in the order Keras ran them: the padding first (zeros), then the valid steps
                shift = T - lengths[:, None]  # (B, 1)
                out = _where_time(t >= shift, _gather_time(out, (t - shift).clamp(min=0)))
            elif not self.bidirectional and not self.zero_output_for_mask:  # the last valid output, repeated
                out = _gather_time(out, torch.minimum(t, lengths[:, None] - 1))
        if self.bidirectional:
            H = out.shape[2] // 2
            forward, backward = out[:, :, :H], out[:, :, H:]
            if not self.return_sequences:  # each direction's last step in the order it ran
                forward, backward = final[0][-2], final[0][-1]  # the last layer's, (B, H) each
                if empty is not None:
                    forward, backward = (_where_time(~empty[:, None], v[:, None])[:, 0] for v in (forward, backward))
            outputs = self._merge(forward, backward)
        else:
            outputs = (out if self.return_sequences else out[:, -1],)
        if self.frames:
            outputs = tuple(o.permute(0, 1, 3, 4, 2) if o.dim() == 5 else o.permute(0, 2, 3, 1) for o in outputs)
        results = outputs
        if self.return_state:
            D = 2 if self.bidirectional else 1
            states = [s[d] for d in range(D) for s in final]  # Keras' order: h, c of each direction
            if self.frames:
                states = [s.permute(0, 2, 3, 1) for s in states]
            results += tuple(states)
        if return_trace:
            results += (result[2],)
        return results[0] if len(results) == 1 else results

    def _merge(self, forward, backward):
        if self.merge_mode == "concat":
            return (torch.cat([forward, backward], dim=-1),)
        if self.merge_mode == "sum":
            return (forward + backward,)
        if self.merge_mode == "ave":
            return ((forward + backward) / 2,)
        if self.merge_mode == "mul":
            return (forward * backward,)
        return (forward, backward)


class MaskedEmbedding(nn.Embedding):
    """:class:`torch.nn.Embedding` that, as Keras' ``Embedding(mask_zero=True)``, also marks
    the steps whose token is not ``0`` as valid (the mask the recurrent layers read).

    Args:
        num_embeddings (int): the vocabulary size.
        embedding_dim (int): the size of each vector.
        mask_zero (bool): whether token ``0`` is padding. Default: ``False``.
    """

    def __init__(self, num_embeddings, embedding_dim, mask_zero=False, **kwargs):
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        self.mask_zero = bool(mask_zero)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", mask_zero=True" if self.mask_zero else "")

    def compute_mask(self, tokens: torch.Tensor):
        return tokens != 0 if self.mask_zero else None


class Masking(nn.Module):
    """Keras' ``Masking``: a step whose features all equal ``mask_value`` is padding; its
    features are zeroed and the step is marked invalid for the layers after.

    Args:
        mask_value (float): the padding value. Default: ``0.0``.
    """

    def __init__(self, mask_value: float = 0.0):
        super().__init__()
        self.mask_value = float(mask_value)

    def extra_repr(self) -> str:
        return f"mask_value={self.mask_value}"

    def compute_mask(self, x: torch.Tensor) -> torch.Tensor:
        return (x != self.mask_value).any(-1)  # (B, T)

    def forward(self, x):
        return x * self.compute_mask(x)[..., None].to(x.dtype)


class KerasModel(nn.Module):
    """A Keras model made of a chain of layers, as torch modules under the Keras layers' names,
    run in order with Keras' mask passed from the layer that makes it (``Embedding(mask_zero=True)``,
    ``Masking``) to the recurrent layers after it.

    Args:
        layers (dict[str, nn.Module]): the layers in order: :class:`MaskedEmbedding`,
            :class:`Masking`, :class:`KerasRecurrent`, ``nn.Dropout``, ``nn.Linear`` (a Dense,
            also inside ``nn.Sequential`` with its activation).
        input_shape (tuple): the Keras input's shape without the batch (``(T,)`` tokens,
            ``None`` for any length), kept for :func:`to_keras`. Default: ``(None,)``.
        input_dtype (str): the Keras input's dtype. Default: ``"int32"``.

    Inputs:
        - **x** (Tensor): what the Keras model takes: ``(B, T)`` token ids, ``(B, T, I)``...
        - **return_trace** (bool): also return a dict of each recurrent layer's
          :class:`~gatedrnn.Trace`, by layer name. Default: ``False``.
    """

    def __init__(self, layers: dict, input_shape=(None,), input_dtype="int32"):
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self.input_shape, self.input_dtype = tuple(input_shape), str(input_dtype)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            layers = self._modules.get("layers")
            if layers is not None and name in layers:
                return layers[name]
            raise

    def forward(self, x, return_trace=False):
        mask, traces = None, {}
        for name, layer in self.layers.items():
            if isinstance(layer, (MaskedEmbedding, Masking)):
                mask = layer.compute_mask(x)
                x = layer(x)
            elif isinstance(layer, KerasRecurrent):
                result = layer(x, mask=mask, return_trace=return_trace)
                result = result if isinstance(result, tuple) else (result,)
                if return_trace:
                    traces[name], result = result[-1], result[:-1]
                if len(result) != 1:
                    raise ValueError(f"layer {name!r} returns {len(result)} tensors (return_state or merge_mode=None); "
                                     f"a KerasModel chains layers of one output")  # fmt: skip
                x = result[0]
                mask = mask if layer.return_sequences else None
            else:
                x = layer(x)
        return (x, traces) if return_trace else x
