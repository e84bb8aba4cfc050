"""The model the trainer fits: inputs (embedded when they are tokens) → a gatedrnn layer →
a linear readout of every step or of the last one."""

from __future__ import annotations

import torch
from torch import nn

import gatedrnn

CELLS = {"rnn": gatedrnn.RNN, "lstm": gatedrnn.LSTM, "gru": gatedrnn.GRU}


class SequenceModel(nn.Module):
    def __init__(self, cell: str, input_size: int, hidden_size: int, output_size: int, num_layers: int = 1,
                 vocab_size: int | None = None, readout: str = "all", backend: str = "auto",
                 forget_bias: float = 1.0, dropout: float = 0.0):  # fmt: skip
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        if readout not in ("all", "last"):
            raise ValueError(f"readout must be 'all' or 'last', got {readout!r}")
        self.cell, self.readout = cell, readout
        self.embed = nn.Embedding(vocab_size, input_size) if vocab_size else None
        self.drop = nn.Dropout(dropout)  # on the embedding and the recurrent output (Zaremba et al. 2014)
        kwargs = {"forget_bias": forget_bias} if cell == "lstm" else {}
        self.rnn = CELLS[cell](input_size, hidden_size, num_layers, batch_first=True, backend=backend,
                               dropout=dropout if num_layers > 1 else 0.0, **kwargs)  # fmt: skip
        self.head = nn.Linear(hidden_size, output_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.embed(x)) if self.embed is not None else x  # (B, T, I)

    def forward(self, x, hx=None, return_trace=False, return_state=False, lengths=None):
        """x: (B, T, I) features or (B, T) tokens; ``lengths`` (B,) marks padded batches.
        Returns (B, T, O), or (B, O) with readout "last" (each sequence's last valid step);
        with return_trace / return_state also the trace / final state."""
        result = self.rnn(self.features(x), hx, return_trace=return_trace, lengths=lengths)
        h = self.drop(result[0])  # (B, T, H)
        if self.readout == "last":
            h = h[:, -1] if lengths is None else h[torch.arange(h.shape[0]), lengths - 1]  # (B, H)
        out = self.head(h)
        extras = ()
        if return_state:
            extras += (result[1],)
        if return_trace:
            extras += (result[2],)
        return (out,) + extras if extras else out
