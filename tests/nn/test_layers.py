"""Every layer of divenet.nn against its torch.nn twin: same state dict (PyTorch's key names),
same output, same input and parameter gradients."""
import numpy as np
import pytest
import torch

import divenet as dn
from divenet import nn

CASES = [
    # (divenet layer, torch layer, input shape)
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), lambda: torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 9, 9)),
    (lambda: nn.Conv2d(4, 4, 3, padding="same", dilation=2, groups=2, bias=False),
     lambda: torch.nn.Conv2d(4, 4, 3, padding="same", dilation=2, groups=2, bias=False), (2, 4, 7, 7)),
    (lambda: nn.Conv1d(3, 5, 3, stride=2, padding=1), lambda: torch.nn.Conv1d(3, 5, 3, stride=2, padding=1), (2, 3, 11)),
    (lambda: nn.Linear(6, 3), lambda: torch.nn.Linear(6, 3), (4, 6)),
    (lambda: nn.Linear(6, 3, bias=False), lambda: torch.nn.Linear(6, 3, bias=False), (2, 5, 6)),
    (lambda: nn.MaxPool2d(3, 2, 1), lambda: torch.nn.MaxPool2d(3, 2, 1), (2, 3, 9, 9)),
    (lambda: nn.MaxPool2d(2, ceil_mode=True), lambda: torch.nn.MaxPool2d(2, ceil_mode=True), (2, 3, 7, 7)),
    (lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False), lambda: torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 8, 8)),
    (lambda: nn.AdaptiveAvgPool2d((3, 2)), lambda: torch.nn.AdaptiveAvgPool2d((3, 2)), (2, 3, 7, 5)),
    (lambda: nn.AdaptiveMaxPool2d(3), lambda: torch.nn.AdaptiveMaxPool2d(3), (2, 3, 7, 7)),
    (lambda: nn.BatchNorm2d(3), lambda: torch.nn.BatchNorm2d(3), (4, 3, 5, 5)),
    (lambda: nn.BatchNorm1d(5), lambda: torch.nn.BatchNorm1d(5), (6, 5)),
    (lambda: nn.BatchNorm1d(5, affine=False), lambda: torch.nn.BatchNorm1d(5, affine=False), (6, 5, 3)),
    (lambda: nn.LayerNorm((4, 5)), lambda: torch.nn.LayerNorm((4, 5)), (3, 4, 5)),
    (lambda: nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), lambda: torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), (2, 7, 4, 4)),
    (lambda: nn.ReLU(), lambda: torch.nn.ReLU(), (3, 7)),
    (lambda: nn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2), (3, 7)),
    (lambda: nn.Sigmoid(), lambda: torch.nn.Sigmoid(), (3, 7)),
    (lambda: nn.Tanh(), lambda: torch.nn.Tanh(), (3, 7)),
    (lambda: nn.GELU(), lambda: torch.nn.GELU(), (3, 7)),
    (lambda: nn.GELU("tanh"), lambda: torch.nn.GELU("tanh"), (3, 7)),
    (lambda: nn.Softmax(1), lambda: torch.nn.Softmax(1), (3, 7)),
    (lambda: nn.Flatten(), lambda: torch.nn.Flatten(), (2, 3, 4, 5)),
    (lambda: nn.Flatten(2, 3), lambda: torch.nn.Flatten(2, 3), (2, 3, 4, 5)),
    (lambda: nn.Identity(), lambda: torch.nn.Identity(), (2, 3)),
    (lambda: nn.ChannelShuffle(2), lambda: torch.nn.ChannelShuffle(2), (2, 6, 3, 3)),
    (lambda: nn.Dropout(0.0), lambda: torch.nn.Dropout(0.0), (3, 4)),
]


@pytest.mark.parametrize("make,make_torch,shape", CASES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layer_matches_torch(make, make_torch, shape, mode, device):
    rng = np.random.default_rng(0)
    ours, theirs = make(), make_torch()
    state = {k: v.detach().numpy() + rng.standard_normal(v.shape).astype(np.float32) * 0.1
             if v.dtype.is_floating_point else v.numpy() for k, v in theirs.state_dict().items()}
    theirs.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    ours.load_state_dict(state)  # PyTorch's key names and layouts
    ours.to(device)
    getattr(ours, mode)()
    getattr(theirs, mode)()
    x = rng.standard_normal(shape).astype(np.float32)
    xo, xt = dn.tensor(x, device=device, requires_grad=True), torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    np.testing.assert_allclose(yo.numpy(), yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    w = rng.standard_normal(yt.shape).astype(np.float32)
    (yo * dn.tensor(w, device=device)).sum().backward()
    (yt * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    grads = {n: p.grad for n, p in theirs.named_parameters()}
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), grads[name].numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    # running statistics move the same way in training
    for name, b in ours.named_buffers():
        np.testing.assert_allclose(b.numpy(), theirs.state_dict()[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_embedding_matches_torch(device):
    ours, theirs = nn.Embedding(10, 4, padding_idx=0), torch.nn.Embedding(10, 4, padding_idx=0)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    ours.to(device)
    idx = np.array([[1, 0, 3], [3, 9, 1]])
    yo, yt = ours(dn.tensor(idx, device=device)), theirs(torch.tensor(idx))
    np.testing.assert_allclose(yo.numpy(), yt.detach().numpy())
    yo.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy())


def test_dropout_layer_drops_in_train_and_not_in_eval():
    layer = nn.Dropout(0.5)
    x = dn.ones(1000)
    dn.manual_seed(0)
    y = layer(x).numpy()
    assert 400 < (y == 0).sum() < 600 and set(np.unique(y)) == {0.0, 2.0}
    np.testing.assert_array_equal(layer.eval()(x).numpy(), x.numpy())


@pytest.mark.parametrize("init,std", [
    (lambda t: nn.init.xavier_uniform_(t), np.sqrt(2 / (200 + 300))),
    (lambda t: nn.init.xavier_normal_(t), np.sqrt(2 / (200 + 300))),
    (lambda t: nn.init.kaiming_uniform_(t, nonlinearity="relu"), np.sqrt(2 / 300)),
    (lambda t: nn.init.kaiming_normal_(t, nonlinearity="relu"), np.sqrt(2 / 300)),
    (lambda t: nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"), np.sqrt(2 / 200)),
    (lambda t: nn.init.normal_(t, 0.0, 0.02), 0.02),
])
def test_initializers_have_pytorchs_spread(init, std):
    dn.manual_seed(0)
    t = nn.Parameter(np.zeros((200, 300), np.float32))
    init(t)
    assert t.dtype == np.float32
    assert abs(float(t.array.std()) - std) < 0.03 * std
    assert abs(float(t.array.mean())) < 0.05 * std


def test_constant_initializers():
    t = nn.Parameter(np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(nn.init.ones_(t).array, 1)
    np.testing.assert_array_equal(nn.init.zeros_(t).array, 0)
    np.testing.assert_array_equal(nn.init.constant_(t, 0.5).array, 0.5)
