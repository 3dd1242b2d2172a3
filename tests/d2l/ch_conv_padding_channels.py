# Padding and stride (D2L 6.3) and multiple channels (D2L 6.4): output shapes of nn.Conv2d,
# the slides' strided example, multi-input and multi-output channel cross-correlation by
# hand, and the 1x1 convolution as a matrix multiplication.
import torch
from torch import nn
from torch.nn import functional as F


def comp_conv2d(conv2d, X):
    """Apply conv2d to a matrix: add and then drop the batch and channel axes."""
    X = X.reshape((1, 1) + X.shape)
    Y = conv2d(X)
    return Y.reshape(Y.shape[2:])


X = torch.rand(size=(8, 8))
shapes = {
    "pad1": comp_conv2d(nn.Conv2d(1, 1, kernel_size=3, padding=1), X).shape,
    "pad21": comp_conv2d(nn.Conv2d(1, 1, kernel_size=(5, 3), padding=(2, 1)), X).shape,
    "stride2": comp_conv2d(nn.Conv2d(1, 1, kernel_size=3, padding=1, stride=2), X).shape,
    "stride34": comp_conv2d(nn.Conv2d(1, 1, kernel_size=(3, 5), padding=(0, 1), stride=(3, 4)), X).shape,
}

# the slides' figure: 3x3 input, padding 1, 2x2 kernel, strides 3 (height) and 2 (width)
conv2d = nn.Conv2d(1, 1, kernel_size=2, padding=1, stride=(3, 2), bias=False)
conv2d.weight.data[:] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
strided = comp_conv2d(conv2d, torch.arange(9, dtype=torch.float32).reshape(3, 3))
strided_F = F.conv2d(torch.arange(9.0).reshape(1, 1, 3, 3), conv2d.weight, padding=1, stride=(3, 2))


def corr2d(X, K):
    h, w = K.shape
    Y = torch.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i:i + h, j:j + w] * K).sum()
    return Y


def corr2d_multi_in(X, K):
    # walk the channels of X and K together and add the results up
    return sum(corr2d(x, k) for x, k in zip(X, K))


X = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
                  [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]])
K = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])
multi_in = corr2d_multi_in(X, K)


def corr2d_multi_in_out(X, K):
    # one multi-input cross-correlation per output channel, stacked
    return torch.stack([corr2d_multi_in(X, k) for k in K], 0)


K = torch.stack((K, K + 1, K + 2), 0)
K_shape = K.shape
multi_out = corr2d_multi_in_out(X, K)
multi_out_F = F.conv2d(X.unsqueeze(0), K)[0]


def corr2d_multi_in_out_1x1(X, K):
    c_i, h, w = X.shape
    c_o = K.shape[0]
    X = X.reshape((c_i, h * w))
    K = K.reshape((c_o, c_i))
    Y = torch.matmul(K, X)  # a matrix multiplication in the fully connected layer
    return Y.reshape((c_o, h, w))


X = torch.normal(0, 1, (3, 3, 3))
K = torch.normal(0, 1, (2, 3, 1, 1))
Y1 = corr2d_multi_in_out_1x1(X, K)
Y2 = corr2d_multi_in_out(X, K)

RESULT = {
    "shapes": {k: tuple(v) for k, v in shapes.items()}, "strided": strided, "strided_F": strided_F,
    "multi_in": multi_in, "K_shape": tuple(K_shape), "multi_out": multi_out, "multi_out_F": multi_out_F,
    "one_by_one": (tuple(Y1.shape), float(torch.abs(Y1 - Y2).max()), float(torch.abs(Y1).sum())),
}
