"""The recurrent image classifiers of the zoo (``lstm``, ``gru``): an image read as a sequence of
its rows (many-to-one). Output shapes, PyTorch's result for the same weights, one SGD step
lowering the loss, errors, the registered recipe, and (``-m slow``) the 5-epoch Fashion-MNIST
run reaching 0.85."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import divenet as dn
import divenet.functional as F
from divenet.models import get_model, get_spec
from divenet.optim import SGD

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _images(n, c=1, side=28, seed=0, device="cpu"):
    rng = np.random.default_rng(seed)
    x = rng.random((n, c, side, side), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    return x, y, dn.tensor(x, device=device), dn.tensor(y, device=device)


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True, "hidden_size": 16}])
def test_output_shape_and_parameter_names(name, kwargs):
    dn.manual_seed(0)
    model = get_model(name, num_classes=7, **kwargs)
    x = dn.randn(3, 1, 28, 28)
    out = model(x)
    assert tuple(out.shape) == (3, 7) and out.dtype == np.float32
    names = set(model.state_dict())
    assert {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "fc.weight", "fc.bias"} <= names
    if kwargs:
        assert {"rnn.weight_hh_l1_reverse"} <= names
        assert tuple(model.fc.weight.shape) == (7, 32)  # both directions' final states


def _torch_twin(model, cell, hidden, layers, bidirectional):
    rnn = getattr(torch.nn, cell.upper())(model.rnn.input_size, hidden, num_layers=layers,
                                          bidirectional=bidirectional)
    fc = torch.nn.Linear(model.fc.weight.shape[1], model.fc.weight.shape[0])
    with torch.no_grad():
        for n, p in rnn.named_parameters():
            p.copy_(torch.from_numpy(getattr(model.rnn, n).numpy()))
        fc.weight.copy_(torch.from_numpy(model.fc.weight.numpy()))
        fc.bias.copy_(torch.from_numpy(model.fc.bias.numpy()))
    return rnn, fc


@pytest.mark.parametrize("name,layers,bidirectional,channels", [
    ("lstm", 1, False, 1), ("gru", 1, False, 1), ("lstm", 2, True, 1), ("gru", 1, False, 3)])
def test_logits_and_gradients_match_pytorch_reading_rows(name, layers, bidirectional, channels):
    """Row t of the image (all channels side by side) is step t; the last step's state (and the
    backward direction's state after reading row 0) feeds the dense layer."""
    dn.manual_seed(0)
    hidden = 12
    model = get_model(name, in_channels=channels, hidden_size=hidden, num_layers=layers,
                      bidirectional=bidirectional)
    x, y, xt, yt = _images(4, channels)
    xt.requires_grad_(True)
    loss = F.cross_entropy(model(xt), yt)
    loss.backward()

    rnn, fc = _torch_twin(model, name, hidden, layers, bidirectional)
    tx = torch.tensor(x, requires_grad=True)
    seq = tx.permute(2, 0, 1, 3).reshape(28, 4, channels * 28)
    _, state = rnn(seq)
    h_n = state[0] if name == "lstm" else state
    last = torch.cat([h_n[-2], h_n[-1]], dim=1) if bidirectional else h_n[-1]
    ref = torch.nn.functional.cross_entropy(fc(last), torch.from_numpy(y))
    ref.backward()
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-5)
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.rnn.weight_hh_l0.grad.numpy(), rnn.weight_hh_l0.grad.numpy(),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_one_sgd_step_lowers_the_loss(name, device):
    dn.manual_seed(0)
    model = get_model(name, hidden_size=32).to(device)
    _, _, x, y = _images(8, device=device)
    loss = F.cross_entropy(model(x), y)
    opt = SGD(model.parameters(), lr=0.5)
    opt.zero_grad()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    opt.step()
    with dn.no_grad():
        after = F.cross_entropy(model(x), y).item()
    assert after < loss.item(), f"{name}: {loss.item():.6f} -> {after:.6f}"


def test_errors_name_the_expected_and_actual_shapes():
    model = get_model("lstm", hidden_size=8)
    with pytest.raises(ValueError,
                       match=r"RowRNNClassifier: expected images \(N, 1, H, 28\).*\(2, 1, 32, 32\)"):
        model(dn.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(2, 28, 28\)"):
        model(dn.zeros(2, 28, 28))
    with pytest.raises(ValueError, match="cell must be one of"):
        from divenet.models.rnn import RowRNNClassifier

        RowRNNClassifier("transformer")


def test_recipes_and_kind():
    for name in ("lstm", "gru"):
        spec = get_spec(name)
        r = spec.recipe
        assert (spec.kind, r.optimizer, r.lr, r.epochs, r.batch_size) == ("image", "adam", 2e-3, 5, 128)
        assert spec.input_size == 28


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.exists(), reason="apt-get install dataset-fashion-mnist")
def test_lstm_reaches_085_on_fashion_mnist_in_5_epochs(tmp_path):
    from divenet.cli import main

    assert main(["train", "lstm", "--epochs", "5", "--quiet", "--out", str(tmp_path / "run")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[-1]["test_acc"] >= 0.85, rows[-1]
