"""Recurrent kernels (divenet/ops/rnn.py) through divenet.functional: cells and whole-sequence
layers against PyTorch, float64 numerical gradients, and argument errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import divenet as dn
import divenet.functional as F
from tests.helpers import assert_raises_naming, check_against_torch, numerical_grad_check

GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def _arr(rng, *shape, scale=0.5):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _params(rng, kind, I, H, bias=True):
    G = GATES[kind]
    w_ih, w_hh = _arr(rng, G * H, I), _arr(rng, G * H, H)
    if not bias:
        return [w_ih, w_hh, None, None]
    return [w_ih, w_hh, _arr(rng, G * H), _arr(rng, G * H)]


# ---- cells ---------------------------------------------------------------------------------------
def _torch_cell(kind):

    def run(x, h, c, w_ih, w_hh, b_ih, b_hh):
        if x.ndim == 1:  # torch's cell ops take batches only; so does the reference
            out = run(x[None], None if h is None else h[None], None if c is None else c[None],
                      w_ih, w_hh, b_ih, b_hh)
            return tuple(o[0] for o in out) if isinstance(out, tuple) else out[0]
        if kind == "lstm":
            if h is None:
                h = torch.zeros(x.shape[:-1] + (w_hh.shape[1],), dtype=x.dtype)
                c = torch.zeros_like(h)
            return torch.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
        if h is None:
            h = torch.zeros(x.shape[:-1] + (w_hh.shape[1],), dtype=x.dtype)
        fn = {"gru": torch.gru_cell, "rnn_tanh": torch.rnn_tanh_cell, "rnn_relu": torch.rnn_relu_cell}[kind]
        return fn(x, h, w_ih, w_hh, b_ih, b_hh)

    return run


def _dn_cell(kind):
    def run(x, h, c, w_ih, w_hh, b_ih, b_hh):
        if kind == "lstm":
            return F.lstm_cell(x, None if h is None else (h, c), w_ih, w_hh, b_ih, b_hh)
        if kind == "gru":
            return F.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
        return F.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity=kind[4:])

    return run


def _cell_inputs(kind, N, I, H, with_state=True, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    batch = (N,) if N else ()
    x = _arr(rng, *batch, I, scale=1.0)
    h = _arr(rng, *batch, H) if with_state else None
    c = _arr(rng, *batch, H) if with_state and kind == "lstm" else None
    return [x, h, c] + _params(rng, kind, I, H, bias)


@pytest.mark.parametrize("kind", list(GATES))
@pytest.mark.parametrize("N,I,H,with_state,bias", [
    (3, 4, 5, True, True),
    (2, 6, 3, True, False),
    (4, 3, 7, False, True),
    (0, 4, 5, True, True),  # unbatched: input (I,), state (H,)
])
def test_cell_matches_torch(device, kind, N, I, H, with_state, bias):
    inputs = _cell_inputs(kind, N, I, H, with_state, bias)
    check_against_torch(_dn_cell(kind), _torch_cell(kind), inputs, device=device)


@pytest.mark.parametrize("kind", list(GATES))
def test_cell_gradients_of_some_inputs(device, kind):
    """Only the weights (then only the input) require a gradient: the skipped branches must
    not disturb the others."""
    inputs = _cell_inputs(kind, 3, 4, 5)
    check_against_torch(_dn_cell(kind), _torch_cell(kind), inputs, grad_inputs=[3, 4, 5, 6],
                        device=device)
    check_against_torch(_dn_cell(kind), _torch_cell(kind), inputs, grad_inputs=[0], device=device)


@pytest.mark.parametrize("kind", list(GATES))
@pytest.mark.parametrize("with_state", [True, False])
def test_cell_numerical_gradients(device, kind, with_state):
    inputs = _cell_inputs(kind, 3, 4, 5, with_state, seed=1)
    if kind == "rnn_relu":  # keep pre-activations away from the kink at 0
        inputs[5] = inputs[5] + np.float32(3.0)
    numerical_grad_check(_dn_cell(kind), inputs, device=device)


def test_cell_is_one_graph_node():
    inputs = [dn.tensor(a, requires_grad=True) for a in _cell_inputs("lstm", 3, 4, 5)]
    x, h, c = inputs[:3]
    h2, c2 = F.lstm_cell(x, (h, c), *inputs[3:])
    assert h2._node is c2._node
    assert all(t is u for t, u in zip(h2._node.inputs, inputs))


def test_gru_cell_uses_reset_gate_on_the_hidden_projection():
    """PyTorch's GRU puts r inside: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)). With the
    input weights zero, b_hn != 0 and r = sigmoid(0) = 1/2, n = tanh(b_hn / 2) exactly."""
    H = 2
    x = dn.zeros(1, 3)
    h = dn.zeros(1, H)
    w_ih = dn.zeros(3 * H, 3)
    w_hh = dn.zeros(3 * H, H)
    b_hh = dn.tensor(np.array([0, 0, -50, -50, 1.0, -2.0], dtype=np.float32))  # z -> 0
    out = F.gru_cell(x, h, w_ih, w_hh, None, b_hh).numpy()
    np.testing.assert_allclose(out, np.tanh([[0.5, -1.0]]), rtol=1e-6)


# ---- whole sequences -----------------------------------------------------------------------------
def _torch_sequence(kind, reverse, bias):
    """One-layer torch.nn module run through functional_call with the given weights."""
    from torch.func import functional_call

    def run(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        T, N, I = x.shape
        H = w_hh.shape[1]
        if kind == "lstm":
            mod = torch.nn.LSTM(I, H, bias=bias)
        elif kind == "gru":
            mod = torch.nn.GRU(I, H, bias=bias)
        else:
            mod = torch.nn.RNN(I, H, nonlinearity=kind[4:], bias=bias)
        params = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh}
        if bias:
            params.update(bias_ih_l0=b_ih, bias_hh_l0=b_hh)
        if h0 is None:
            h0 = torch.zeros(N, H, dtype=x.dtype)
            c0 = torch.zeros(N, H, dtype=x.dtype)
        state = (h0[None], c0[None]) if kind == "lstm" else h0[None]
        seq = x.flip(0) if reverse else x
        out, hn = functional_call(mod, params, (seq, state))
        if reverse:
            out = out.flip(0)
        if kind == "lstm":
            return out, hn[0][0], hn[1][0]
        return out, hn[0]

    return run


def _dn_sequence(kind, reverse):
    def run(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        if kind == "lstm":
            return F.lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse=reverse)
        if kind == "gru":
            return F.gru(x, h0, w_ih, w_hh, b_ih, b_hh, reverse=reverse)
        return F.rnn(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity=kind[4:], reverse=reverse)

    return run


def _seq_inputs(kind, T, N, I, H, with_state=True, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    x = _arr(rng, T, N, I, scale=1.0)
    h0 = _arr(rng, N, H) if with_state else None
    c0 = _arr(rng, N, H) if with_state and kind == "lstm" else None
    return [x, h0, c0] + _params(rng, kind, I, H, bias)


@pytest.mark.parametrize("kind", list(GATES))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("T,N,I,H,with_state,bias", [
    (5, 3, 4, 6, True, True),
    (4, 2, 3, 5, False, True),
    (3, 4, 5, 3, True, False),
    (1, 2, 3, 4, True, True),
])
def test_sequence_matches_torch(device, kind, reverse, T, N, I, H, with_state, bias):
    inputs = _seq_inputs(kind, T, N, I, H, with_state, bias)
    check_against_torch(_dn_sequence(kind, reverse), _torch_sequence(kind, reverse, bias), inputs,
                        device=device)


@pytest.mark.parametrize("kind", list(GATES))
@pytest.mark.parametrize("grad_inputs", [[0], [1], [3, 4, 5, 6]])
def test_sequence_gradients_of_some_inputs(device, kind, grad_inputs):
    inputs = _seq_inputs(kind, 4, 3, 4, 5, seed=2)
    check_against_torch(_dn_sequence(kind, False), _torch_sequence(kind, False, True), inputs,
                        grad_inputs=grad_inputs, device=device)


@pytest.mark.parametrize("kind", list(GATES))
@pytest.mark.parametrize("reverse", [False, True])
def test_sequence_numerical_gradients(device, kind, reverse):
    inputs = _seq_inputs(kind, 4, 2, 3, 4, seed=3)
    if kind == "rnn_relu":  # keep pre-activations away from the kink at 0
        inputs[5] = inputs[5] + np.float32(3.0)
    numerical_grad_check(_dn_sequence(kind, reverse), inputs, device=device)


def test_sequence_numerical_gradients_without_state_or_bias(device):
    inputs = _seq_inputs("lstm", 3, 2, 3, 4, with_state=False, bias=False, seed=4)
    numerical_grad_check(_dn_sequence("lstm", False), inputs, device=device)
    inputs = _seq_inputs("gru", 3, 2, 3, 4, with_state=False, bias=False, seed=4)
    numerical_grad_check(_dn_sequence("gru", True), inputs, device=device)


def test_sequence_is_one_graph_node():
    inputs = [dn.tensor(a, requires_grad=True) for a in _seq_inputs("lstm", 6, 2, 3, 4)]
    out, hn, cn = F.lstm(*inputs)
    assert out._node is hn._node is cn._node
    assert all(t is u for t, u in zip(out._node.inputs, inputs))
    out2, hn2 = F.gru(inputs[0], inputs[1], *[dn.tensor(a, requires_grad=True)
                                               for a in _params(np.random.default_rng(0), "gru", 3, 4)])
    assert out2._node is hn2._node and out2._node.inputs[0] is inputs[0]


@pytest.mark.parametrize("kind", list(GATES))
def test_sequence_backward_twice_with_retain_graph(kind):
    """Backward must not overwrite what forward saved: a second pass gives the same gradients."""
    arrays = _seq_inputs(kind, 4, 2, 3, 4, seed=6)
    ts = [None if a is None else dn.tensor(a, requires_grad=True) for a in arrays]
    outs = _dn_sequence(kind, False)(*ts)
    loss = sum((o * o).sum() for o in outs)
    loss.backward(retain_graph=True)
    first = [None if t is None else t.grad.numpy().copy() for t in ts]
    loss.backward()
    for t, g in zip(ts, first):
        if t is not None:
            np.testing.assert_allclose(t.grad.numpy(), 2 * g, rtol=1e-6, atol=1e-7)


def test_sequence_output_ends_in_final_state():
    x, h0, c0, *w = [dn.tensor(a) for a in _seq_inputs("lstm", 5, 2, 3, 4)]
    out, hn, _ = F.lstm(x, h0, c0, *w)
    np.testing.assert_array_equal(out.numpy()[-1], hn.numpy())
    out, hn, _ = F.lstm(x, h0, c0, *w, reverse=True)
    np.testing.assert_array_equal(out.numpy()[0], hn.numpy())


def test_sequence_keeps_float32_and_float64():
    for dtype in ("float32", "float64"):
        x, h0, _, *w = [None if a is None else dn.tensor(a, dtype=dtype)
                        for a in _seq_inputs("gru", 3, 2, 3, 4)]
        out, hn = F.gru(x, h0, *w)
        assert out.dtype == hn.dtype == np.dtype(dtype)


def test_sequence_takes_a_strided_input(device):
    """A batch-first input permuted to time-major is a strided view, not a copy."""
    rng = np.random.default_rng(5)
    x_bf = _arr(rng, 2, 5, 3, scale=1.0)
    params = _params(rng, "lstm", 3, 4)

    def ours(x, w_ih, w_hh, b_ih, b_hh):
        return F.lstm(x.permute(1, 0, 2), None, None, w_ih, w_hh, b_ih, b_hh)[0]

    def theirs(x, w_ih, w_hh, b_ih, b_hh):
        return _torch_sequence("lstm", False, True)(x.permute(1, 0, 2), None, None,
                                                    w_ih, w_hh, b_ih, b_hh)[0]

    check_against_torch(ours, theirs, [x_bf] + params, device=device)


# ---- errors --------------------------------------------------------------------------------------
def _t(*shape, dtype="float32"):
    return dn.zeros(*shape, dtype=dtype)


def test_error_input_size_mismatch():
    assert_raises_naming(ValueError, lambda: F.lstm_cell(_t(3, 5), None, _t(16, 4), _t(16, 4)),
                         "lstm_cell", "(3, 5)", "(16, 4)", "input_size 4")
    assert_raises_naming(ValueError, lambda: F.lstm(_t(2, 3, 5), None, None, _t(16, 4), _t(16, 4)),
                         "lstm", "(2, 3, 5)", "(16, 4)", "input_size 4")
    assert_raises_naming(ValueError, lambda: F.gru(_t(2, 3, 5), None, _t(12, 4), _t(12, 4)),
                         "gru", "(2, 3, 5)", "(12, 4)")


def test_error_weight_shapes():
    assert_raises_naming(ValueError, lambda: F.lstm_cell(_t(3, 4), None, _t(16, 4), _t(15, 4)),
                         "lstm_cell", "w_hh", "(15, 4)", "(16, 4)")
    assert_raises_naming(ValueError, lambda: F.gru_cell(_t(3, 4), None, _t(9, 4), _t(12, 4)),
                         "gru_cell", "w_ih", "(9, 4)", "(12, 4)", "12 rows")
    assert_raises_naming(ValueError, lambda: F.rnn(_t(2, 3, 4), None, _t(5, 4), _t(5, 5), _t(4)),
                         "rnn", "b_ih", "(4,)", "(5,)")
    assert_raises_naming(ValueError, lambda: F.rnn_cell(_t(3, 4), None, _t(5, 4, 1), _t(5, 5)),
                         "rnn_cell", "w_ih", "2-D", "(5, 4, 1)")


def test_error_hidden_state_shape():
    assert_raises_naming(ValueError, lambda: F.lstm(_t(2, 3, 4), _t(3, 5), _t(3, 6), _t(24, 4), _t(24, 6)),
                         "lstm", "h0", "(3, 5)", "(3, 6)")
    assert_raises_naming(ValueError, lambda: F.lstm(_t(2, 3, 4), _t(3, 6), _t(2, 6), _t(24, 4), _t(24, 6)),
                         "lstm", "c0", "(2, 6)", "(3, 6)")
    assert_raises_naming(ValueError, lambda: F.gru_cell(_t(3, 4), _t(2, 5), _t(15, 4), _t(15, 5)),
                         "gru_cell", "hx", "(2, 5)", "(3, 5)")
    assert_raises_naming(ValueError, lambda: F.rnn_cell(_t(4), _t(1, 5), _t(5, 4), _t(5, 5)),
                         "rnn_cell", "hx", "(1, 5)", "(5,)")
    assert_raises_naming(TypeError, lambda: F.lstm_cell(_t(3, 4), _t(3, 5), _t(20, 4), _t(20, 5)),
                         "lstm_cell", "pair (h, c)")


def test_error_input_rank_and_length():
    assert_raises_naming(ValueError, lambda: F.gru(_t(3, 4), None, _t(15, 4), _t(15, 5)),
                         "gru", "3-D", "(3, 4)")
    assert_raises_naming(ValueError, lambda: F.rnn(_t(0, 3, 4), None, _t(5, 4), _t(5, 5)),
                         "rnn", "0 time steps", "(0, 3, 4)")
    assert_raises_naming(ValueError, lambda: F.lstm_cell(_t(2, 3, 4), None, _t(20, 4), _t(20, 5)),
                         "lstm_cell", "(2, 3, 4)")


def test_error_types_and_nonlinearity():
    assert_raises_naming(ValueError, lambda: F.rnn_cell(_t(3, 4), None, _t(5, 4), _t(5, 5),
                                                        nonlinearity="sigmoid"),
                         "rnn_cell", "'tanh' or 'relu'", "sigmoid")
    assert_raises_naming(ValueError, lambda: F.rnn(_t(2, 3, 4), None, _t(5, 4), _t(5, 5),
                                                   nonlinearity="gelu"), "rnn", "gelu")
    assert_raises_naming(TypeError, lambda: F.lstm_cell(_t(3, 4), None, _t(20, 4, dtype="float64"),
                                                        _t(20, 5)),
                         "lstm_cell", "w_ih", "float64", "float32")
    assert_raises_naming(TypeError, lambda: F.gru(np.zeros((2, 3, 4), np.float32), None, _t(15, 4),
                                                  _t(15, 5)), "gru", "input", "Tensor")
    assert_raises_naming(TypeError, lambda: F.rnn_cell(_t(3, 4, dtype="int64"), None, _t(5, 4),
                                                       _t(5, 5)), "rnn_cell", "floating point")
