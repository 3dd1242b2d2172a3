"""Recurrent image classifiers (many-to-one): a 1x28x28 image read as a sequence of its 28 rows,
each row a time step of 28 features; the last hidden state goes through one dense layer.

    image (N, C, H, W) -> rows (T=H, N, C*W) -> LSTM / GRU -> h_T (N, hidden) -> Linear -> (N, classes)

With ``num_layers > 1`` the classifier reads the last layer's final state; with
``bidirectional=True`` it concatenates the final states of both directions (the forward one
has read the whole image top to bottom, the backward one bottom to top).
"""
from __future__ import annotations

from .. import nn
from ..tensor import cat
from .registry import Recipe, register

__all__ = ["RowRNNClassifier", "lstm", "gru"]

_LAYERS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RowRNNClassifier(nn.Module):
    """Many-to-one sequence classifier over image rows.

    ``cell`` is 'lstm', 'gru' or 'rnn'; ``width`` the image side the model reads (each step
    has ``in_channels * width`` features)."""

    def __init__(self, cell="lstm", num_classes=10, in_channels=1, width=28, hidden_size=128,
                 num_layers=1, bidirectional=False, dropout=0.0):
        if cell not in _LAYERS:
            raise ValueError(f"RowRNNClassifier: cell must be one of {', '.join(_LAYERS)}, got {cell!r}")
        self.cell = cell
        self.in_channels, self.width = in_channels, width
        self.rnn = _LAYERS[cell](in_channels * width, hidden_size, num_layers=num_layers,
                                 dropout=dropout, bidirectional=bidirectional)
        self.fc = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[3] != self.width:
            raise ValueError(f"{type(self).__name__}: expected images (N, {self.in_channels}, H, "
                             f"{self.width}) read row by row, got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        # time-major rows: (H, N, C, W) -> (H, N, C*W); a strided view that the kernel reads as is
        seq = x.permute(2, 0, 1, 3).reshape(h, n, c * w) if c > 1 else x.reshape(n, h, w).permute(1, 0, 2)
        _, state = self.rnn(seq)
        h_n = state[0] if self.cell == "lstm" else state  # (layers * directions, N, hidden)
        last = cat([h_n[-2], h_n[-1]], dim=1) if self.rnn.bidirectional else h_n[-1]
        return self.fc(last)


@register("lstm", Recipe(lr=2e-3, epochs=5, batch_size=128, optimizer="adam"))
def lstm(num_classes=10, in_channels=1, hidden_size=128, num_layers=1, bidirectional=False,
         dropout=0.0, width=28):
    """LSTM over the 28 rows of a Fashion-MNIST image, hidden 128, last state -> Linear."""
    return RowRNNClassifier("lstm", num_classes, in_channels, width, hidden_size, num_layers,
                            bidirectional, dropout)


@register("gru", Recipe(lr=2e-3, epochs=5, batch_size=128, optimizer="adam"))
def gru(num_classes=10, in_channels=1, hidden_size=128, num_layers=1, bidirectional=False,
        dropout=0.0, width=28):
    """GRU over the 28 rows of a Fashion-MNIST image, hidden 128, last state -> Linear."""
    return RowRNNClassifier("gru", num_classes, in_channels, width, hidden_size, num_layers,
                            bidirectional, dropout)
