"""Constructor checks: a bad size, kernel, stride, padding, dilation, groups, eps, momentum or
probability fails when the layer is made, with a ValueError naming the layer and the value
(before: ZeroDivisionError, NumPy's negative-dimensions message, NaN at forward, or a layer
that accepted it)."""
import numpy as np
import pytest
import torch

import divenet as dn
import divenet.functional as F
from divenet import nn
from tests.helpers import assert_raises_naming

BAD = [
    (lambda: nn.Conv2d(3, 6, 0), ["Conv2d", "kernel_size", "positive integers", "0"]),
    (lambda: nn.Conv2d(3, 6, (3, 0)), ["Conv2d", "kernel_size", "(3, 0)"]),
    (lambda: nn.Conv2d(3, 0, 3), ["Conv2d", "out_channels", "0"]),
    (lambda: nn.Conv2d(-3, 6, 3), ["Conv2d", "in_channels", "-3"]),
    (lambda: nn.Conv2d(3, 6, 3, stride=0), ["Conv2d", "stride", "0"]),
    (lambda: nn.Conv2d(3, 6, 3, padding=-1), ["Conv2d", "padding", "non-negative", "-1"]),
    (lambda: nn.Conv2d(3, 6, 3, padding="full"), ["Conv2d", "padding", "'full'"]),
    (lambda: nn.Conv2d(3, 6, 3, stride=2, padding="same"), ["Conv2d", "'same'", "strided"]),
    (lambda: nn.Conv2d(3, 6, 3, dilation=0), ["Conv2d", "dilation", "0"]),
    (lambda: nn.Conv2d(3, 6, 3, groups=2), ["Conv2d", "in_channels=3", "groups=2"]),
    (lambda: nn.Conv2d(4, 6, 3, groups=4), ["Conv2d", "out_channels=6", "groups=4"]),
    (lambda: nn.Conv2d(4, 8, 3, groups=0), ["Conv2d", "groups", "0"]),
    (lambda: nn.Conv2d(3, 6, 3, padding_mode="reflect"), ["Conv2d", "padding_mode", "'reflect'"]),
    (lambda: nn.Conv1d(3, 6, 2.5), ["Conv1d", "kernel_size", "2.5"]),
    (lambda: nn.LazyConv2d(6, 0), ["LazyConv2d", "kernel_size", "0"]),
    (lambda: nn.Linear(-1, 5), ["Linear", "in_features", "-1"]),
    (lambda: nn.Linear(4, 0), ["Linear", "out_features", "0"]),
    (lambda: nn.Linear(4.0, 2), ["Linear", "in_features", "4.0"]),
    (lambda: nn.LazyLinear(-2), ["Linear", "out_features", "-2"]),
    (lambda: nn.BatchNorm2d(0), ["BatchNorm2d", "num_features", "0"]),
    (lambda: nn.BatchNorm2d(3, eps=-1), ["BatchNorm2d", "eps", "-1"]),
    (lambda: nn.BatchNorm1d(3, eps=0), ["BatchNorm1d", "eps", "0"]),
    (lambda: nn.BatchNorm2d(3, momentum=2), ["BatchNorm2d", "momentum", "2"]),
    (lambda: nn.LazyBatchNorm2d(momentum=-0.1), ["LazyBatchNorm2d", "momentum", "-0.1"]),
    (lambda: nn.LayerNorm(4, eps=-1e-5), ["LayerNorm", "eps", "-1e-05"]),
    (lambda: nn.LayerNorm((4, 0)), ["LayerNorm", "normalized_shape", "(4, 0)"]),
    (lambda: nn.LocalResponseNorm(0), ["LocalResponseNorm", "size", "0"]),
    (lambda: nn.Dropout(1.5), ["Dropout", "p", "1.5"]),
    (lambda: nn.Dropout(-0.1), ["Dropout", "p", "-0.1"]),
    (lambda: nn.MaxPool2d(0), ["MaxPool2d", "kernel_size", "0"]),
    (lambda: nn.MaxPool2d(2, stride=0), ["MaxPool2d", "stride", "0"]),
    (lambda: nn.MaxPool2d(2, padding=-1), ["MaxPool2d", "padding", "-1"]),
    (lambda: nn.MaxPool1d(3, dilation=0), ["MaxPool1d", "dilation", "0"]),
    (lambda: nn.AvgPool2d(3, padding=2), ["AvgPool2d", "padding", "half", "2"]),
    (lambda: nn.AvgPool2d((2, -2)), ["AvgPool2d", "kernel_size", "(2, -2)"]),
    (lambda: nn.AdaptiveAvgPool2d(0), ["AdaptiveAvgPool2d", "output_size", "0"]),
    (lambda: nn.AdaptiveMaxPool2d((2, 3, 4)), ["AdaptiveMaxPool2d", "output_size", "(2, 3, 4)"]),
    (lambda: nn.LSTM(0, 3), ["LSTM", "input_size", "0"]),
    (lambda: nn.GRU(3, -4), ["GRU", "hidden_size", "-4"]),
    (lambda: nn.RNN(3, 4, num_layers=0), ["RNN", "num_layers", "0"]),
    (lambda: nn.LSTMCell(3, 0), ["LSTMCell", "hidden_size", "0"]),
    (lambda: nn.Embedding(0, 3), ["Embedding", "num_embeddings", "0"]),
    (lambda: nn.Embedding(3, -1), ["Embedding", "embedding_dim", "-1"]),
    (lambda: nn.Embedding(3, 2, padding_idx=5), ["Embedding", "padding_idx", "5"]),
    (lambda: nn.ChannelShuffle(0), ["ChannelShuffle", "groups", "0"]),
    (lambda: nn.GELU("fast"), ["GELU", "approximate", "'fast'"]),
    (lambda: nn.LeakyReLU("0.1"), ["LeakyReLU", "negative_slope", "'0.1'"]),
    (lambda: nn.Hardtanh(1.0, -1.0), ["Hardtanh", "min_val", "max_val"]),
    (lambda: nn.Flatten(1.5), ["Flatten", "start_dim", "1.5"]),
    (lambda: nn.Unflatten(1, (2, 0)), ["Unflatten", "unflattened_size", "(2, 0)"]),
]


@pytest.mark.parametrize("make,fragments", BAD, ids=[f[0] + ":" + f[1] for _, f in BAD])
def test_bad_constructor_arguments_name_the_layer_and_value(make, fragments):
    assert_raises_naming(ValueError, make, *fragments)


# where PyTorch itself raises at construction, so does divenet (same arguments)
TORCH_RAISES = [
    ("Conv2d", (3, 6, 3), {"groups": 2}), ("Conv2d", (3, 6, 3), {"padding": "full"}),
    ("Conv2d", (3, 6, 3), {"stride": 2, "padding": "same"}), ("Linear", (-1, 5), {}),
    ("Dropout", (1.5,), {}), ("LSTM", (0, 3), {}), ("GRU", (3, 0), {}), ("Embedding", (3, -1), {}),
]


@pytest.mark.parametrize("name,args,kw", TORCH_RAISES)
def test_raises_where_torch_raises(name, args, kw):
    with pytest.raises(Exception):
        getattr(torch.nn, name)(*args, **kw)
    with pytest.raises(ValueError, match=name):
        getattr(nn, name)(*args, **kw)


def test_good_arguments_still_build():
    nn.Conv2d(4, 8, (3, 1), stride=(2, 1), padding=(1, 0), dilation=(1, 1), groups=4)
    nn.Conv2d(4, 8, 3, padding="same", dilation=2)
    nn.Conv1d(np.int64(3), 6, 3)  # NumPy integers are integers
    nn.BatchNorm2d(3, momentum=None)
    nn.MaxPool2d((2, 3), stride=None, padding=(1, 1))
    nn.AdaptiveAvgPool2d((None, 3))
    nn.Embedding(10, 4, padding_idx=-1)
    nn.Dropout(0.0), nn.Dropout(1.0)


def test_batch_norm_momentum_none_is_a_cumulative_average_like_torch():
    ours, theirs = nn.BatchNorm1d(3, momentum=None), torch.nn.BatchNorm1d(3, momentum=None)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((5, 3)).astype(np.float32)
        ours(dn.tensor(x))
        theirs(torch.tensor(x))
    for k, v in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("training,eps", [(True, 0.0), (True, -2.0), (False, -2.0)])
def test_functional_batch_norm_refuses_bad_eps_like_torch(training, eps):
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    mean, var = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="eps"):
        torch.nn.functional.batch_norm(torch.tensor(x), torch.tensor(mean), torch.tensor(var),
                                       training=training, eps=eps)
    assert_raises_naming(ValueError, lambda: F.batch_norm(dn.tensor(x), dn.tensor(mean), dn.tensor(var),
                                                          training=training, eps=eps),
                         "batch_norm", "eps", str(eps))
