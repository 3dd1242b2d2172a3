"""Recurrent functions: single steps (``rnn_cell``, ``lstm_cell``, ``gru_cell``, as
``torch.rnn_tanh_cell``/``torch.lstm_cell``/``torch.gru_cell``) and one layer in one direction
over a whole time-major sequence (``rnn``, ``lstm``, ``gru``), each one graph node.

Weights follow PyTorch's layout: ``w_ih`` (G*H, input_size), ``w_hh`` (G*H, H), biases (G*H,),
with the gates stacked in PyTorch's order (LSTM: i, f, g, o; GRU: r, z, n). A hidden state of
``None`` means zeros.
"""
from __future__ import annotations

from ..ops import rnn as R
from ..tensor import Tensor
from ._checks import require_float, require_ndim, require_tensor

__all__ = ["rnn_cell", "lstm_cell", "gru_cell", "rnn", "lstm", "gru"]


def _shape(t):
    return tuple(t.shape)


def _check_params(op, gates, input, w_ih, w_hh, b_ih, b_hh):
    """Check the weights against each other and against the input's feature size; return H."""
    require_float(op, "input", input)
    require_ndim(op, "w_ih", w_ih, 2)
    require_ndim(op, "w_hh", w_hh, 2)
    H = w_hh.shape[1]
    rows = gates * H
    what = f"{gates} gates x hidden size {H}" if gates > 1 else f"hidden size {H}"
    if w_hh.shape[0] != rows:
        raise ValueError(f"{op}: w_hh has shape {_shape(w_hh)} but {what} needs ({rows}, {H})")
    if w_ih.shape[0] != rows:
        raise ValueError(f"{op}: w_ih has shape {_shape(w_ih)} but w_hh {_shape(w_hh)} needs "
                         f"{rows} rows ({what})")
    features = input.shape[-1]
    if features != w_ih.shape[1]:
        raise ValueError(f"{op}: input has {features} features (shape {_shape(input)}) but w_ih "
                         f"{_shape(w_ih)} expects input_size {w_ih.shape[1]}")
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is None:
            continue
        require_tensor(op, name, b)
        if _shape(b) != (rows,):
            raise ValueError(f"{op}: {name} has shape {_shape(b)} but w_hh {_shape(w_hh)} needs "
                             f"({rows},)")
    for name, t in (("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih), ("b_hh", b_hh)):
        if t is not None and t.dtype != input.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but input has {input.dtype}; "
                            "convert one of them")
    return H


def _check_state(op, name, h, want, input, w_hh):
    if h is None:
        return
    require_tensor(op, name, h)
    if _shape(h) != want:
        raise ValueError(f"{op}: hidden state {name} has shape {_shape(h)} but input "
                         f"{_shape(input)} and w_hh {_shape(w_hh)} need {want}")
    if h.dtype != input.dtype:
        raise TypeError(f"{op}: hidden state {name} has dtype {h.dtype} but input has {input.dtype}")


def _check_nonlinearity(op, nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"{op}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def _cell_input(op, input):
    require_ndim(op, "input", input, 1, 2)
    return input.ndim == 1


def _batch(t):
    return None if t is None else t.reshape(1, t.shape[0])


def _unbatch(t):
    return t.reshape(t.shape[1])


# ---- cells ---------------------------------------------------------------------------------------
def rnn_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """h' = act(input @ w_ih.T + b_ih + hx @ w_hh.T + b_hh), act = tanh or relu.
    input (N, I) or (I,); hx (N, H) / (H,) or None."""
    op = "rnn_cell"
    _check_nonlinearity(op, nonlinearity)
    single = _cell_input(op, input)
    H = _check_params(op, 1, input, w_ih, w_hh, b_ih, b_hh)
    _check_state(op, "hx", hx, (H,) if single else (input.shape[0], H), input, w_hh)
    if single:
        input, hx = _batch(input), _batch(hx)
    h = R.RNNCell.apply(input, hx, w_ih, w_hh, b_ih, b_hh, nonlinearity=nonlinearity)
    return _unbatch(h) if single else h


def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step (gates i, f, g, o stacked in w_ih/w_hh): returns (h', c').
    input (N, I) or (I,); hx a pair (h, c) of (N, H) / (H,) or None."""
    op = "lstm_cell"
    single = _cell_input(op, input)
    H = _check_params(op, 4, input, w_ih, w_hh, b_ih, b_hh)
    h, c = _split_lstm_state(op, hx)
    want = (H,) if single else (input.shape[0], H)
    _check_state(op, "h", h, want, input, w_hh)
    _check_state(op, "c", c, want, input, w_hh)
    if single:
        input, h, c = _batch(input), _batch(h), _batch(c)
    h2, c2 = R.LSTMCell.apply(input, h, c, w_ih, w_hh, b_ih, b_hh)
    return (_unbatch(h2), _unbatch(c2)) if single else (h2, c2)


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step as PyTorch computes it (gates r, z, n):
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h.
    input (N, I) or (I,); hx (N, H) / (H,) or None."""
    op = "gru_cell"
    single = _cell_input(op, input)
    H = _check_params(op, 3, input, w_ih, w_hh, b_ih, b_hh)
    _check_state(op, "hx", hx, (H,) if single else (input.shape[0], H), input, w_hh)
    if single:
        input, hx = _batch(input), _batch(hx)
    h = R.GRUCell.apply(input, hx, w_ih, w_hh, b_ih, b_hh)
    return _unbatch(h) if single else h


def _split_lstm_state(op, hx):
    if hx is None:
        return None, None
    if isinstance(hx, Tensor) or not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"{op}: hx must be a pair (h, c) of Tensors or None, got {type(hx).__name__}")
    return hx[0], hx[1]


# ---- whole sequences -----------------------------------------------------------------------------
def _check_sequence(op, gates, input, states, w_ih, w_hh, b_ih, b_hh):
    require_ndim(op, "input", input, 3)
    if input.shape[0] == 0:
        raise ValueError(f"{op}: input has 0 time steps (shape {_shape(input)}); expected (T, N, "
                         "input_size) with T >= 1")
    H = _check_params(op, gates, input, w_ih, w_hh, b_ih, b_hh)
    for name, s in states:
        _check_state(op, name, s, (input.shape[1], H), input, w_hh)
    return H


def rnn(input, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh", reverse=False):
    """One Elman RNN layer in one direction over input (T, N, I), time-major.
    Returns (output (T, N, H), h_n (N, H)). ``reverse=True`` reads the sequence from its end."""
    op = "rnn"
    _check_nonlinearity(op, nonlinearity)
    _check_sequence(op, 1, input, (("h0", h0),), w_ih, w_hh, b_ih, b_hh)
    return R.RNNSequence.apply(input, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity=nonlinearity,
                               reverse=bool(reverse))


def lstm(input, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False):
    """One LSTM layer in one direction over input (T, N, I), time-major.
    Returns (output (T, N, H), h_n (N, H), c_n (N, H))."""
    op = "lstm"
    _check_sequence(op, 4, input, (("h0", h0), ("c0", c0)), w_ih, w_hh, b_ih, b_hh)
    return R.LSTMSequence.apply(input, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse=bool(reverse))


def gru(input, h0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False):
    """One GRU layer in one direction over input (T, N, I), time-major.
    Returns (output (T, N, H), h_n (N, H))."""
    op = "gru"
    _check_sequence(op, 3, input, (("h0", h0),), w_ih, w_hh, b_ih, b_hh)
    return R.GRUSequence.apply(input, h0, w_ih, w_hh, b_ih, b_hh, reverse=bool(reverse))
