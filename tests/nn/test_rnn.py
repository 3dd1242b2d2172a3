"""Recurrent layers (divenet/nn/rnn.py) against torch.nn loaded with the same state dict:
outputs, final states, input/state gradients and every weight gradient."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import divenet as dn
from divenet import autograd
from divenet.nn import Sequential
from divenet.nn import rnn as R
from tests.helpers import assert_raises_naming

I, H = 4, 5


def _make(kind, input_size=I, hidden_size=H, **kw):
    """A divenet layer and a torch layer with the torch layer's weights."""
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(input_size, hidden_size, **kw)
    ours = getattr(R, kind)(input_size, hidden_size, **kw)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def _flat(result):
    out = []
    for r in result if isinstance(result, tuple) else (result,):
        out.extend(_flat(r) if isinstance(r, tuple) else [r])
    return out


def _close(name, ours, theirs):
    ours = ours.numpy() if isinstance(ours, dn.Tensor) else np.asarray(ours)
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} != PyTorch's {theirs.shape}"
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5, err_msg=name)


def _compare(ours, theirs, x_np, states_np=None, pair=False, seed=0, device="cpu"):
    """Run both layers on the same input (and initial states), ours on ``device``, compare every
    output, then the gradients of sum(output * w) for random w with respect to input, states
    and weights."""
    rng = np.random.default_rng(seed)
    ours.to(device)
    x = dn.tensor(x_np, device=device, requires_grad=True)
    tx = torch.tensor(x_np, requires_grad=True)
    hx = thx = None
    s_dn, s_th = [], []
    if states_np is not None:
        s_dn = [dn.tensor(s, device=device, requires_grad=True) for s in states_np]
        s_th = [torch.tensor(s, requires_grad=True) for s in states_np]
        hx, thx = (tuple(s_dn), tuple(s_th)) if pair else (s_dn[0], s_th[0])
    got = _flat(ours(x, hx))
    want = _flat(theirs(tx, thx))
    assert len(got) == len(want)
    loss = None
    tloss = 0
    for k, (g, w) in enumerate(zip(got, want)):
        _close(f"output {k}", g, w)
        weight = rng.standard_normal(tuple(w.shape)).astype(np.float32)
        term = (g * dn.tensor(weight, device=device)).sum()
        loss = term if loss is None else loss + term
        tloss = tloss + (w * torch.tensor(weight)).sum()
    loss.backward()
    tloss.backward()
    _close("grad of input", x.grad, tx.grad)
    for k, (s, t) in enumerate(zip(s_dn, s_th)):
        _close(f"grad of state {k}", s.grad, t.grad)
    theirs_params = dict(theirs.named_parameters())
    ours_params = dict(ours.named_parameters())
    assert list(ours_params) == list(theirs_params)
    for name, p in ours_params.items():
        assert p.grad is not None, f"{name}: no gradient"
        _close(f"grad of {name}", p.grad, theirs_params[name].grad)


KINDS = [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("GRU", {})]
KIND_IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def _inputs(kind, num_layers, bidirectional, batch_first, with_state, T=6, N=3, seed=1, batched=True):
    rng = np.random.default_rng(seed)
    shape = ((N, T, I) if batch_first else (T, N, I)) if batched else (T, I)
    x = rng.standard_normal(shape).astype(np.float32)
    states = None
    if with_state:
        D = 2 if bidirectional else 1
        sshape = (num_layers * D, N, H) if batched else (num_layers * D, H)
        count = 2 if kind == "LSTM" else 1
        states = [(0.5 * rng.standard_normal(sshape)).astype(np.float32) for _ in range(count)]
    return x, states


@pytest.mark.parametrize("kind,extra", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("num_layers,batch_first,bidirectional,with_state", [
    (1, False, False, False),
    (1, True, False, True),
    (2, True, False, True),
    (1, False, True, True),
    (2, True, True, False),
    (2, False, True, True),
])
def test_layer_matches_torch(kind, extra, num_layers, batch_first, bidirectional, with_state, device):
    kw = dict(extra, num_layers=num_layers, batch_first=batch_first, bidirectional=bidirectional)
    ours, theirs = _make(kind, **kw)
    x, states = _inputs(kind, num_layers, bidirectional, batch_first, with_state)
    _compare(ours, theirs, x, states, pair=kind == "LSTM", device=device)


@pytest.mark.parametrize("kind,extra", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("with_state", [False, True])
def test_layer_unbatched_input_matches_torch(kind, extra, with_state, device):
    ours, theirs = _make(kind, num_layers=2, bidirectional=True, **extra)
    x, states = _inputs(kind, 2, True, False, with_state, batched=False)
    _compare(ours, theirs, x, states, pair=kind == "LSTM", device=device)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_layer_without_bias_matches_torch(kind):
    ours, theirs = _make(kind, num_layers=2, bias=False)
    assert not any("bias" in n for n, _ in ours.named_parameters())
    x, states = _inputs(kind, 2, False, False, True)
    _compare(ours, theirs, x, states, pair=kind == "LSTM")


def test_dropout_between_layers():
    ours, theirs = _make("LSTM", num_layers=3, dropout=0.5)
    x, _ = _inputs("LSTM", 3, False, False, False)
    # evaluation: no dropout, same as torch
    ours.eval()
    theirs.eval()
    _compare(ours, theirs, x)
    ref = ours(dn.tensor(x))[0].numpy()
    # training: a seeded mask changes the output, reproducibly
    ours.train()
    dn.manual_seed(7)
    a = ours(dn.tensor(x))[0].numpy()
    dn.manual_seed(7)
    b = ours(dn.tensor(x))[0].numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, ref, atol=1e-3)
    # the first layer's input is never dropped: a 1-layer model is deterministic in training
    with pytest.warns(UserWarning, match="num_layers=1"):
        one = R.LSTM(I, H, dropout=0.9)
    one.train()
    np.testing.assert_array_equal(one(dn.tensor(x))[0].numpy(), one(dn.tensor(x))[0].numpy())


def test_state_dict_names_and_shapes_match_torch():
    for kind, kw in [("LSTM", dict(num_layers=2, bidirectional=True)), ("GRU", dict(num_layers=3)),
                     ("RNN", dict(bidirectional=True, bias=False))]:
        ours, theirs = _make(kind, **kw)
        want = [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
        got = [(k, tuple(v.shape)) for k, v in ours.state_dict().items()]
        assert got == want


def test_default_init_is_uniform_and_seeded():
    dn.manual_seed(3)
    a = R.GRU(I, 16, num_layers=2)
    dn.manual_seed(3)
    b = R.GRU(I, 16, num_layers=2)
    bound = 1 / math.sqrt(16)
    values = []
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
        assert p.dtype == np.float32 and p.requires_grad
        assert np.abs(p.numpy()).max() <= bound, name
        values.append(p.numpy().ravel())
    v = np.concatenate(values)
    assert v.std() > 0.8 * bound / math.sqrt(3)  # spread over the interval, not clustered
    assert not np.array_equal(a.weight_ih_l0.numpy()[:3], a.weight_ih_l1.numpy()[:3, :I])


def test_layer_graph_has_no_per_step_nodes():
    """A 2-layer bidirectional LSTM over 50 steps records a few nodes per layer, not per step."""
    lstm = R.LSTM(I, H, num_layers=2, bidirectional=True)
    x = dn.randn(50, 2, I, requires_grad=True)
    out, (h, c) = lstm(x)
    loss = out.sum() + h.sum() + c.sum()
    nodes = autograd._topological_order(loss._node)
    assert len(nodes) < 20, len(nodes)


# ---- cells ---------------------------------------------------------------------------------------
CELLS = [("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}), ("LSTMCell", {}), ("GRUCell", {})]
CELL_IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


@pytest.mark.parametrize("kind,extra", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("batched,with_state,bias", [
    (True, True, True), (True, False, True), (False, True, True), (True, True, False),
])
def test_cell_matches_torch(kind, extra, batched, with_state, bias, device):
    ours, theirs = _make(kind, bias=bias, **extra)
    rng = np.random.default_rng(2)
    shape = (3,) if batched else ()
    x = rng.standard_normal(shape + (I,)).astype(np.float32)
    states = None
    if with_state:
        count = 2 if kind == "LSTMCell" else 1
        states = [rng.standard_normal(shape + (H,)).astype(np.float32) for _ in range(count)]
    _compare(ours, theirs, x, states, pair=kind == "LSTMCell", device=device)


def test_cell_parameter_names():
    ours, theirs = _make("LSTMCell")
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours, theirs = _make("GRUCell", bias=False)
    assert list(ours.state_dict()) == list(theirs.state_dict())


# ---- errors --------------------------------------------------------------------------------------
def test_error_input_size_and_rank():
    lstm = R.LSTM(I, H, batch_first=True)
    assert_raises_naming(ValueError, lambda: lstm(dn.zeros(2, 3, 7)), "LSTM", "(2, 3, 7)",
                         "input_size=4")
    assert_raises_naming(ValueError, lambda: lstm(dn.zeros(2, 3, 1, 4)), "LSTM", "(2, 3, 1, 4)",
                         "(N, L, input_size)")
    # a layer inside a model names its path
    model = Sequential(R.GRU(I, H))
    assert_raises_naming(ValueError, lambda: model(dn.zeros(6, 2, 3)), "0 (GRU)", "(6, 2, 3)")
    cell = R.GRUCell(I, H)
    assert_raises_naming(ValueError, lambda: cell(dn.zeros(3, 6)), "gru_cell", "(3, 6)", "input_size 4")


def test_error_hidden_state():
    lstm = R.LSTM(I, H, num_layers=2)
    x = dn.zeros(6, 3, I)
    assert_raises_naming(ValueError, lambda: lstm(x, (dn.zeros(1, 3, H), dn.zeros(2, 3, H))),
                         "LSTM", "h_0", "(2, 3, 5)", "(1, 3, 5)")
    assert_raises_naming(ValueError, lambda: lstm(x, (dn.zeros(2, 3, H), dn.zeros(2, 4, H))),
                         "LSTM", "c_0", "(2, 3, 5)", "(2, 4, 5)")
    assert_raises_naming(TypeError, lambda: lstm(x, dn.zeros(2, 3, H)), "LSTM", "pair (h_0, c_0)")
    gru = R.GRU(I, H, bidirectional=True)
    assert_raises_naming(ValueError, lambda: gru(x, dn.zeros(1, 3, H)), "GRU", "(2, 3, 5)", "(1, 3, 5)")
    assert_raises_naming(TypeError, lambda: gru(x, (dn.zeros(2, 3, H),)), "GRU", "hx", "Tensor")
    cell = R.LSTMCell(I, H)
    assert_raises_naming(ValueError, lambda: cell(dn.zeros(3, I), (dn.zeros(3, 4), dn.zeros(3, H))),
                         "lstm_cell", "(3, 4)", "(3, 5)")


def test_error_constructor_arguments():
    assert_raises_naming(ValueError, lambda: R.RNN(I, H, nonlinearity="sigmoid"), "RNN", "sigmoid")
    assert_raises_naming(ValueError, lambda: R.RNNCell(I, H, nonlinearity="gelu"), "RNNCell", "gelu")
    assert_raises_naming(ValueError, lambda: R.LSTM(I, H, num_layers=2, dropout=1.5), "LSTM", "dropout", "1.5")
    assert_raises_naming(ValueError, lambda: R.GRU(I, 0), "GRU", "hidden_size", "0")
    assert_raises_naming(ValueError, lambda: R.LSTMCell(0, H), "LSTMCell", "input_size", "0")
    with pytest.warns(UserWarning, match="num_layers=1"):
        R.GRU(I, H, dropout=0.2)


def test_repr():
    assert repr(R.LSTM(28, 128, num_layers=2, batch_first=True)) == \
        "LSTM(28, 128, num_layers=2, batch_first=True)"
    assert repr(R.GRUCell(3, 4, bias=False)) == "GRUCell(3, 4, bias=False)"
