"""Recurrent layers with PyTorch's names, arguments, parameter names and layouts: ``RNN``,
``LSTM``, ``GRU`` (stacked, optionally bidirectional) and the single-step ``RNNCell``,
``LSTMCell``, ``GRUCell``.

Each layer and direction is one graph node (``divenet.functional.lstm`` and friends), so a
sequence of any length costs the autodiff a handful of nodes, not one per gate and step.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from .. import functional as F
from ..tensor import Tensor, cat, stack
from . import init
from ._checks import positive_int as _positive_int
from .module import Module, Parameter

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _param(*shape):
    return Parameter(np.empty(shape, dtype=np.float32))


class _RNNBase(Module):
    """Shared machinery of RNN, LSTM and GRU: parameters ``weight_ih_l{k}``, ``weight_hh_l{k}``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (plus ``_reverse`` for the backward direction), in
    PyTorch's order and layout, initialized U(-1/sqrt(H), 1/sqrt(H))."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False):
        name = type(self).__name__
        self.mode = mode
        self.input_size = _positive_int(name, "input_size", input_size)
        self.hidden_size = _positive_int(name, "hidden_size", hidden_size)
        self.num_layers = _positive_int(name, "num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout must be a number in [0, 1] (the probability of "
                             f"zeroing an element between layers), got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{name}: dropout={dropout} acts between stacked layers only, and "
                          f"num_layers=1 has none", stacklevel=3)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        G, H = _GATES[mode], self.hidden_size
        D = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            layer_in = self.input_size if layer == 0 else H * D
            for suffix in ("", "_reverse")[:D]:
                setattr(self, f"weight_ih_l{layer}{suffix}", _param(G * H, layer_in))
                setattr(self, f"weight_hh_l{layer}{suffix}", _param(G * H, H))
                if self.bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}", _param(G * H))
                    setattr(self, f"bias_hh_l{layer}{suffix}", _param(G * H))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _weights(self, layer, direction):
        suffix = "_reverse" if direction else ""
        get = lambda kind: getattr(self, f"{kind}_l{layer}{suffix}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    # ---- checks ---------------------------------------------------------------------------------
    def _check_input(self, input):
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.ndim not in (2, 3):
            layout = "(N, L, input_size)" if self.batch_first else "(L, N, input_size)"
            raise ValueError(f"{name}: input must be 3-D {layout} or 2-D (L, input_size) "
                             f"unbatched, got shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input has {input.shape[-1]} features (shape "
                             f"{tuple(input.shape)}) but input_size={self.input_size}")

    def _check_state(self, label, h, want):
        name = type(self).__name__
        if not isinstance(h, Tensor):
            raise TypeError(f"{name}: hidden state {label} must be a Tensor, got {type(h).__name__}")
        if tuple(h.shape) != want:
            raise ValueError(f"{name}: expected hidden state {label} of shape {want} "
                             f"(num_layers * num_directions, batch, hidden_size), got "
                             f"{tuple(h.shape)}")

    # ---- forward --------------------------------------------------------------------------------
    def forward(self, input, hx=None):
        self._check_input(input)
        lstm = self.mode == "LSTM"
        D = 2 if self.bidirectional else 1
        unbatched = input.ndim == 2
        if unbatched:
            x = input.unsqueeze(1)
        elif self.batch_first:
            x = input.permute(1, 0, 2)  # a strided view; the kernel reads it as it is
        else:
            x = input
        N = x.shape[1]
        want = (self.num_layers * D, self.hidden_size) if unbatched else \
            (self.num_layers * D, N, self.hidden_size)
        h0 = c0 = None
        if hx is not None:
            if lstm:
                if isinstance(hx, Tensor) or not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError(f"LSTM: hx must be a pair (h_0, c_0) of Tensors, got "
                                    f"{type(hx).__name__}")
                h0, c0 = hx
                self._check_state("h_0", h0, want)
                self._check_state("c_0", c0, want)
            else:
                if not isinstance(hx, Tensor):
                    raise TypeError(f"{type(self).__name__}: hx must be a Tensor of shape {want}, "
                                    f"got {type(hx).__name__}")
                h0 = hx
                self._check_state("h_0", h0, want)
            if unbatched:
                h0 = h0.unsqueeze(1)
                c0 = c0.unsqueeze(1) if c0 is not None else None
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, training=True)
            outs = []
            for d in range(D):
                k = layer * D + d
                h_init = h0[k] if h0 is not None else None
                weights = self._weights(layer, d)
                if lstm:
                    out, h, c = F.lstm(x, h_init, c0[k] if c0 is not None else None, *weights,
                                       reverse=bool(d))
                    c_n.append(c)
                elif self.mode == "GRU":
                    out, h = F.gru(x, h_init, *weights, reverse=bool(d))
                else:
                    out, h = F.rnn(x, h_init, *weights, nonlinearity=self.nonlinearity,
                                   reverse=bool(d))
                outs.append(out)
                h_n.append(h)
            x = outs[0] if D == 1 else cat(outs, dim=2)
        h_n = stack(h_n, 0)
        c_n = stack(c_n, 0) if lstm else None
        if unbatched:
            x = x.squeeze(1)
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if lstm else None
        elif self.batch_first:
            x = x.permute(1, 0, 2)
        return (x, (h_n, c_n)) if lstm else (x, h_n)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(_RNNBase):
    """Elman RNN, h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh or relu.
    ``forward(input, h_0=None) -> (output, h_n)``; input (L, N, input_size), or (N, L, ...)
    with ``batch_first=True``, or (L, input_size) unbatched."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional)


class LSTM(_RNNBase):
    """Long short-term memory (gates i, f, g, o).
    ``forward(input, (h_0, c_0)=None) -> (output, (h_n, c_n))``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional)


class GRU(_RNNBase):
    """Gated recurrent unit (gates r, z, n; n = tanh(W_in x + b_in + r * (W_hn h + b_hn))).
    ``forward(input, h_0=None) -> (output, h_n)``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional)


# ---- cells ---------------------------------------------------------------------------------------
class _CellBase(Module):
    _gates = 1

    def __init__(self, input_size, hidden_size, bias=True):
        name = type(self).__name__
        self.input_size = _positive_int(name, "input_size", input_size)
        self.hidden_size = _positive_int(name, "hidden_size", hidden_size)
        self.bias = bool(bias)
        G, H = self._gates, self.hidden_size
        self.weight_ih = _param(G * H, self.input_size)
        self.weight_hh = _param(G * H, H)
        if self.bias:
            self.bias_ih = _param(G * H)
            self.bias_hh = _param(G * H)
        else:
            self.bias_ih = self.bias_hh = None
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _params(self):
        return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        return s


class RNNCell(_CellBase):
    """One Elman RNN step: ``forward(input, hx=None) -> h'``; input (N, I) or (I,)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias)

    def forward(self, input, hx=None):
        return F.rnn_cell(input, hx, *self._params(), nonlinearity=self.nonlinearity)


class LSTMCell(_CellBase):
    """One LSTM step: ``forward(input, (h, c)=None) -> (h', c')``; input (N, I) or (I,)."""

    _gates = 4

    def forward(self, input, hx=None):
        return F.lstm_cell(input, hx, *self._params())


class GRUCell(_CellBase):
    """One GRU step: ``forward(input, hx=None) -> h'``; input (N, I) or (I,)."""

    _gates = 3

    def forward(self, input, hx=None):
        return F.gru_cell(input, hx, *self._params())
