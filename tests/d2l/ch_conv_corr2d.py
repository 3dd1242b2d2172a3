# Convolutions for images (D2L 6.2): cross-correlation by hand with item assignment, the
# slides' worked example, a from-scratch Conv2D module, the vertical-edge detector, and
# learning the edge kernel with nn.Conv2d.
import torch
from torch import nn


def corr2d(X, K):
    """2-D cross-correlation of a matrix X with a kernel K."""
    h, w = K.shape
    Y = torch.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i:i + h, j:j + w] * K).sum()
    return Y


X = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
K = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
worked = corr2d(X, K)
worked_arange = corr2d(torch.arange(9, dtype=torch.float32).reshape(3, 3), K)


class Conv2D(nn.Module):
    def __init__(self, kernel_size):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(kernel_size))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return corr2d(x, self.weight) + self.bias


scratch = Conv2D((1, 2))
scratch_params = [tuple(p.shape) for p in scratch.parameters()]
scratch_out = scratch(torch.ones((6, 8)))
scratch_out.sum().backward()
scratch_grad = scratch.weight.grad

# a white-black-white striped image and the [1, -1] edge kernel
X = torch.ones((6, 8))
X[:, 2:6] = 0
K = torch.tensor([[1.0, -1.0]])
Y = corr2d(X, K)
Y_transposed = corr2d(X.t(), K)  # horizontal edges are invisible to this kernel

# learn K back from X and Y
conv2d = nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False)
X = X.reshape((1, 1, 6, 8))  # (batch, channel, height, width)
Y = Y.reshape((1, 1, 6, 7))
lr = 3e-2
losses, log = [], []
for i in range(10):
    Y_hat = conv2d(X)
    l = (Y_hat - Y) ** 2
    conv2d.zero_grad()
    l.sum().backward()
    conv2d.weight.data[:] -= lr * conv2d.weight.grad  # the update, in place
    losses.append(float(l.sum()))
    if (i + 1) % 2 == 0:
        log.append(f'epoch {i + 1}, loss {l.sum():.3f}')
        print(log[-1])

conv2d.zero_grad()
grad_cleared = conv2d.weight.grad is None or float(conv2d.weight.grad.abs().sum()) == 0

RESULT = {
    "worked": worked, "worked_arange": worked_arange, "scratch_params": scratch_params,
    "scratch_out_shape": tuple(scratch_out.shape), "scratch_grad": scratch_grad,
    "image": X.reshape((6, 8)), "edges": Y.reshape((6, 7)), "edges_transposed": Y_transposed,
    "losses": losses, "log": log, "kernel": conv2d.weight.data.reshape((1, 2)),
    "grad_cleared": grad_cleared,
}
