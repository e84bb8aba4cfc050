"""The model the trainer fits: inputs (embedded when they are tokens) → a gatedrnn layer →
a linear readout of every step or of the last one.

With ``tie_weights`` the readout reuses the embedding matrix (Press & Wolf 2017; Inan et al.
2017): a language model's input and output word vectors are one table, which halves its
largest parameter and usually lowers perplexity. With ``adaptive_softmax`` cutoffs the readout
is an adaptive softmax (Grave et al. 2017) over a vocabulary sorted by frequency: the frequent
words get a full-size softmax, the rare ones smaller clusters; still an exact distribution
over every token, at a fraction of the cost of a full softmax when the vocabulary is large."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from gatedrnn import xlstm  # its names (sLSTM, mLSTM, xLSTM) are imported on first use
from gatedrnn.layers import GRU, LSTM, MGU, RNN
from gatedrnn.minimal import MinGRU, MinLSTM

XLSTM_CLASSES = {"slstm": "sLSTM", "mlstm": "mLSTM", "xlstm": "xLSTM"}  # --cell: the gatedrnn.xlstm class
XLSTM_CELLS = tuple(XLSTM_CLASSES)

# The xLSTM layers' own settings, offered by the tasks whose model takes them as task options
# (``--num-heads``, ``--slstm-at``): {name: (type, default, help)}, as Task.options holds them
XLSTM_OPTIONS = {
    "num_heads": (int, 4, "slstm, mlstm, xlstm cells: heads (hidden size divisible by it)"),
    "slstm_at": (str, "", "xlstm cell: the blocks that are sLSTM, comma-separated from 0 (e.g. 1 or 0,2); "
                          "the others are mLSTM; needs --layers above the largest"),
}  # fmt: skip


def _xlstm_layer(cell: str):
    """A builder of the ``gatedrnn.xlstm`` layer of ``cell`` with the other layers' call,
    ``(input_size, hidden_size, num_layers, batch_first=..., backend=..., dropout=..., **options)``:
    the class is imported when the first such layer is built, and ``backend`` reaches it only
    where it takes one."""

    def build(input_size, hidden_size, num_layers=1, *, batch_first=False, backend="auto", dropout=0.0, **options):
        cls = getattr(xlstm, XLSTM_CLASSES[cell])
        if "backend" in inspect.signature(cls).parameters:
            options["backend"] = backend
        return cls(input_size, hidden_size, num_layers=num_layers, batch_first=batch_first, dropout=dropout,
                   **options)  # fmt: skip

    build.__name__ = build.__qualname__ = XLSTM_CLASSES[cell]
    return build


def xlstm_options(cell: str, num_heads: int = 4, slstm_at: str = "") -> dict:
    """The layer keywords of the task options :data:`XLSTM_OPTIONS` for ``cell``: ``{}`` for
    the cells that take none. ``slstm_at`` is ``"1"`` or ``"0,2"`` (block indices), for the
    ``xlstm`` cell only; a ValueError names the option for anything else.

    Args:
        cell (str): the ``--cell`` value.
        num_heads (int): ``--num-heads``. Default: ``4``.
        slstm_at (str): ``--slstm-at``, comma-separated block indices. Default: ``""``.

    Examples:
        >>> from gatedrnn.models import xlstm_options
        >>> xlstm_options("xlstm", num_heads=2, slstm_at="1")
        {'num_heads': 2, 'slstm_at': (1,)}
        >>> xlstm_options("lstm")
        {}
    """
    if str(slstm_at).strip() and cell != "xlstm":
        raise ValueError(f"--slstm-at places sLSTM blocks in the xlstm cell's stack, got --cell {cell}")
    if cell not in XLSTM_CLASSES:
        return {}
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"--num-heads must be a positive integer, got {num_heads!r}")
    options = {"num_heads": num_heads}
    if cell == "xlstm":
        text = str(slstm_at).strip()
        try:
            blocks = tuple(int(part) for part in text.split(",")) if text else ()
        except ValueError:
            raise ValueError(f"--slstm-at must be block indices separated by commas (e.g. 1 or 0,2), "
                             f"got {slstm_at!r}") from None  # fmt: skip
        if any(b < 0 for b in blocks) or len(set(blocks)) != len(blocks):
            raise ValueError(f"--slstm-at must be distinct block indices from 0, got {slstm_at!r}")
        options["slstm_at"] = tuple(sorted(blocks))
    return options


def xlstm_task_options(cell: str, extra: dict) -> dict:
    """:func:`xlstm_options` of a run's task options (``TrainConfig.extra``), defaults filled in.

    Args:
        cell (str): the ``--cell`` value.
        extra (dict): the run's task options, where ``num_heads`` and ``slstm_at`` may be.
    """
    return xlstm_options(cell, **{name: extra.get(name, default) for name, (_, default, _) in XLSTM_OPTIONS.items()})


CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU, "mgu": MGU, "mingru": MinGRU, "minlstm": MinLSTM,
         **{cell: _xlstm_layer(cell) for cell in XLSTM_CLASSES}}  # fmt: skip


class SequenceModel(nn.Module):
    """The model of the built-in sequence tasks: an optional embedding, a gatedrnn layer
    (batch first), dropout, and a linear readout of every step or of the last one.

    Args:
        cell (str): the layer: ``"rnn"``, ``"lstm"``, ``"gru"``, ``"mgu"``, ``"mingru"``,
            ``"minlstm"``, or xLSTM's ``"slstm"``, ``"mlstm"`` and ``"xlstm"`` (the stack of
            blocks, ``cell_options={"slstm_at": (1,)}``; see :func:`xlstm_options`).
        input_size (int): features per step (the embedding size for token inputs).
        hidden_size (int): the layer's ``hidden_size``.
        output_size (int): outputs per readout (classes, vocabulary, values).
        num_layers (int): the layer's ``num_layers``. Default: ``1``.
        vocab_size (int, optional): for token inputs, the embedding's number of rows;
            ``None`` for real-valued inputs. Default: ``None``.
        readout (str): ``"all"``, an output at every step, or ``"last"``, one per sequence
            from its last valid step. Default: ``"all"``.
        backend (str): the layer's ``backend``. Default: ``"auto"``.
        forget_bias (float): the LSTM's ``forget_bias`` (other cells ignore it).
            Default: ``1.0``.
        dropout (float): dropout on the embedding, on the layer's output and between layers.
            Default: ``0.0``.
        tie_weights (bool): the readout reuses the embedding matrix (Press & Wolf 2017);
            needs token inputs and ``input_size == hidden_size``. Default: ``False``.
        adaptive_softmax (tuple[int, ...]): cutoffs of an adaptive softmax readout (Grave et
            al. 2017) over a vocabulary sorted by frequency; empty for a linear readout.
            Default: ``()``.
        cell_options (dict, optional): more keywords for the layer (variants,
            regularizers: ``{"peephole": True}``). Default: ``None``.

    Inputs:
        - **x** (Tensor): ``(B, T, I)`` features or ``(B, T)`` token ids.
        - **hx** (optional): the layer's initial state. Default: zeros.
        - **return_trace** (bool): also return the layer's trace. Default: ``False``.
        - **return_state** (bool): also return the layer's final state. Default: ``False``.
        - **lengths** (Tensor, optional): ``(B,)``, each sequence's valid steps.

    Outputs:
        - **output**: ``(B, T, O)`` logits (readout ``"all"``) or ``(B, O)`` (``"last"``);
          log-probabilities with an adaptive softmax.
        - **state** (with ``return_state=True``), then **trace** (with ``return_trace=True``).

    Examples:
        >>> import torch
        >>> from gatedrnn.models import SequenceModel
        >>> model = SequenceModel("gru", input_size=2, hidden_size=16, output_size=1, readout="last")
        >>> model(torch.rand(4, 30, 2)).shape
        torch.Size([4, 1])
        >>> lm = SequenceModel("lstm", 32, 32, output_size=100, vocab_size=100, tie_weights=True)
        >>> lm(torch.randint(0, 100, (2, 10))).shape
        torch.Size([2, 10, 100])
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, output_size: int, num_layers: int = 1,
                 vocab_size: int | None = None, readout: str = "all", backend: str = "auto",
                 forget_bias: float = 1.0, dropout: float = 0.0, tie_weights: bool = False,
                 adaptive_softmax: tuple[int, ...] = (), cell_options: dict | None = None):  # fmt: skip
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        if readout not in ("all", "last"):
            raise ValueError(f"readout must be 'all' or 'last', got {readout!r}")
        self.cell, self.readout = cell, readout
        self.embed = nn.Embedding(vocab_size, input_size) if vocab_size else None
        self.drop = nn.Dropout(dropout)  # on the embedding and the recurrent output (Zaremba et al. 2014)
        kwargs = ({"forget_bias": forget_bias} if cell == "lstm" else {}) | (cell_options or {})  # variants
        self.rnn = CELLS[cell](input_size, hidden_size, num_layers, batch_first=True, backend=backend,
                               dropout=dropout if num_layers > 1 else 0.0, **kwargs)  # fmt: skip
        self.head_bias = None
        if adaptive_softmax:
            if not vocab_size or output_size != vocab_size or readout != "all":
                raise ValueError("adaptive_softmax (--adaptive-softmax) is a language-model readout: it needs "
                                 "token inputs and a prediction over the vocabulary at every step")  # fmt: skip
            if tie_weights:
                raise ValueError("--tie-weights and --adaptive-softmax cannot be combined")
            cutoffs = list(adaptive_softmax)
            if cutoffs != sorted(set(cutoffs)) or cutoffs[0] < 1 or cutoffs[-1] >= output_size:
                raise ValueError(f"adaptive_softmax (--adaptive-softmax) cutoffs must increase strictly between "
                                 f"1 and the vocabulary size {output_size - 1}, got {cutoffs}")  # fmt: skip
            if hidden_size // 4 ** len(cutoffs) < 1:  # cluster k projects to hidden_size // 4^k dimensions
                raise ValueError(f"adaptive_softmax (--adaptive-softmax): {len(cutoffs)} cutoffs leave the last "
                                 f"cluster hidden_size // 4^{len(cutoffs)} = 0 dimensions at hidden size "
                                 f"{hidden_size}; use fewer cutoffs or a larger hidden size")  # fmt: skip
            self.head = nn.AdaptiveLogSoftmaxWithLoss(hidden_size, output_size, cutoffs, div_value=4.0)
        elif tie_weights:
            if not vocab_size or output_size != vocab_size:
                raise ValueError("tie_weights (--tie-weights) needs token inputs and outputs over the same vocabulary")
            if input_size != hidden_size:
                raise ValueError(f"tie_weights (--tie-weights) needs the embedding size to equal the hidden size, "
                                 f"got {input_size} and {hidden_size}")  # fmt: skip
            self.head = None
            self.head_bias = nn.Parameter(torch.zeros(output_size))
        else:
            self.head = nn.Linear(hidden_size, output_size)
        self.adaptive = bool(adaptive_softmax)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the layer reads: ``x`` itself, or for tokens ``(B, T)`` their embeddings
        ``(B, T, I)`` after dropout.

        Args:
            x (Tensor): ``(B, T, I)`` features or ``(B, T)`` token ids.
        """
        return self.drop(self.embed(x)) if self.embed is not None else x  # (B, T, I)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """The readout: (..., H) → (..., O) logits (log-probabilities with an adaptive softmax).

        Args:
            h (Tensor): hidden outputs ``(..., H)``.
        """
        if self.adaptive:
            return self.head.log_prob(h.reshape(-1, h.shape[-1])).view(*h.shape[:-1], -1)
        return self.head(h) if self.head_bias is None else F.linear(h, self.embed.weight, self.head_bias)

    def hidden(self, x, hx=None, return_trace=False, lengths=None):
        """The recurrent part: ((B, T, H) outputs after dropout, final state[, trace]).

        Args:
            x (Tensor): ``(B, T, I)`` features or ``(B, T)`` tokens.
            hx (optional): the layer's initial state. Default: zeros.
            return_trace (bool): also return the layer's trace. Default: ``False``.
            lengths (Tensor, optional): ``(B,)``, each sequence's valid steps.
        """
        result = self.rnn(self.features(x), hx, return_trace=return_trace, lengths=lengths)
        return (self.drop(result[0]),) + tuple(result[1:])

    def token_nll(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """−log p(target) per token, (B, T), from the hidden outputs: an adaptive softmax scores
        only each target's cluster, never the whole vocabulary.

        Args:
            h (Tensor): hidden outputs ``(B, T, H)``.
            targets (Tensor): token ids ``(B, T)``.
        """
        if self.adaptive:
            return -self.head(h.reshape(-1, h.shape[-1]), targets.reshape(-1)).output.view(targets.shape)
        logits = self.project(h)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               reduction="none").view(targets.shape)  # fmt: skip

    def stream(self, x: torch.Tensor, state=None):
        """One chunk of a stream: ``out, state = model.stream(chunk, state)``, as a layer's
        ``out, state = layer(chunk, state)``.

        ``x`` is the next chunk, (B, T_chunk, I) features or (B, T_chunk) tokens (one step:
        ``T_chunk = 1``); ``state`` is what the previous call returned (None to start). Returns
        the chunk's outputs, (B, T_chunk, O) (with readout "last" the chunk's last step, (B, O)),
        and the state after it. In eval mode, a sequence fed chunk by chunk gives what it gives
        in one call: the chunks' outputs concatenated are the whole sequence's (readout "last":
        the last chunk's is the whole's).

        Args:
            x (Tensor): the next chunk, ``(B, T_chunk, I)`` or ``(B, T_chunk)``.
            state (optional): what the previous call returned; ``None`` to start.

        Examples:
            >>> import torch
            >>> from gatedrnn.models import SequenceModel
            >>> model = SequenceModel("lstm", 1, 8, 1).eval()
            >>> x = torch.randn(1, 12, 1)
            >>> out_a, state = model.stream(x[:, :5])
            >>> out_b, state = model.stream(x[:, 5:], state)
            >>> torch.allclose(torch.cat([out_a, out_b], 1), model(x), atol=1e-6)
            True
        """
        return self(x, state, return_state=True)

    def forward(self, x, hx=None, return_trace=False, return_state=False, lengths=None):
        """x: (B, T, I) features or (B, T) tokens; ``lengths`` (B,) marks padded batches.
        Returns (B, T, O), or (B, O) with readout "last" (each sequence's last valid step);
        with return_trace / return_state also the trace / final state.

        Args:
            x (Tensor): ``(B, T, I)`` features or ``(B, T)`` token ids.
            hx (optional): the layer's initial state. Default: zeros.
            return_trace (bool): also return the layer's trace. Default: ``False``.
            return_state (bool): also return the final state (before the trace).
                Default: ``False``.
            lengths (Tensor, optional): ``(B,)``, each sequence's valid steps.
                Default: ``None``.
        """
        result = self.hidden(x, hx, return_trace=return_trace, lengths=lengths)
        h = result[0]  # (B, T, H)
        if self.readout == "last":
            h = h[:, -1] if lengths is None else h[torch.arange(h.shape[0]), lengths - 1]  # (B, H)
        out = self.project(h)
        extras = ()
        if return_state:
            extras += (result[1],)
        if return_trace:
            extras += (result[2],)
        return (out,) + extras if extras else out
