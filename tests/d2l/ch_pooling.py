# Pooling (D2L 6.5): max and average pooling by hand with item assignment, the slides'
# example, nn.MaxPool2d with padding and stride, and pooling each channel on its own.
import torch
from torch import nn


def pool2d(X, pool_size, mode='max'):
    p_h, p_w = pool_size
    Y = torch.zeros((X.shape[0] - p_h + 1, X.shape[1] - p_w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            window = X[i:i + p_h, j:j + p_w]
            if mode == 'max':
                Y[i, j] = window.max()
            elif mode == 'avg':
                Y[i, j] = window.mean()
    return Y


X = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
by_hand_max = pool2d(X, (2, 2))
by_hand_avg = pool2d(X, (2, 2), 'avg')

X = torch.arange(16, dtype=torch.float32).reshape((1, 1, 4, 4))
window3 = nn.MaxPool2d(3)(X)  # the stride defaults to the window: one output
padded = nn.MaxPool2d(3, padding=1, stride=2)(X)
rect = nn.MaxPool2d((2, 3), stride=(2, 3), padding=(0, 1))(X)

X2 = torch.cat((X, X + 1), 1)  # two channels
two_channels = nn.MaxPool2d(3, padding=1, stride=2)(X2)
avg = nn.AvgPool2d(2)(X2)

RESULT = {
    "max": by_hand_max, "avg": by_hand_avg, "input": X, "window3": window3, "padded": padded,
    "rect": rect, "X2_shape": tuple(X2.shape), "two_channels": two_channels, "avg_pool": avg,
}
