# ResNet (D2L 8.6): the residual block with lazy convolutions and batch norm, an optional
# 1x1 convolution on the shortcut, the book's shape checks, and ResNet-18's layer shapes.
import torch
from torch import nn
from torch.nn import functional as F

torch.manual_seed(0)


class Residual(nn.Module):
    """Two 3x3 convolutions with batch norm; the input is added back before the last ReLU."""
    def __init__(self, num_channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1)
        if use_1x1conv:  # match the shortcut's channels and size to the block's output
            self.conv3 = nn.LazyConv2d(num_channels, kernel_size=1, stride=strides)
        else:
            self.conv3 = None
        self.bn1 = nn.LazyBatchNorm2d()
        self.bn2 = nn.LazyBatchNorm2d()

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        Y += X
        return F.relu(Y)


X = torch.randn(4, 3, 6, 6)
blk = Residual(3)
same_shape = tuple(blk(X).shape)
blk = Residual(6, use_1x1conv=True, strides=2)
halved_shape = tuple(blk(X).shape)
conv1_weight_shape = tuple(blk.conv1.weight.shape)

# the in-place `Y += X` must keep the gradient that flows through the shortcut
X = torch.randn(4, 3, 6, 6, requires_grad=True)
blk(X).sum().backward()
grad_inplace = X.grad
X.grad = None
Y = blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(X)))))
F.relu(Y + blk.conv3(X)).sum().backward()
grad_out_of_place = X.grad


def resnet_block(num_channels, num_residuals, first_block=False):
    blks = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blks.append(Residual(num_channels, use_1x1conv=True, strides=2))
        else:
            blks.append(Residual(num_channels))
    return blks


b1 = nn.Sequential(nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3),
                   nn.BatchNorm2d(64), nn.ReLU(),
                   nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
b2 = nn.Sequential(*resnet_block(64, 2, first_block=True))
b3 = nn.Sequential(*resnet_block(128, 2))
b4 = nn.Sequential(*resnet_block(256, 2))
b5 = nn.Sequential(*resnet_block(512, 2))
net = nn.Sequential(b1, b2, b3, b4, b5, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.LazyLinear(10))

X = torch.rand(size=(1, 1, 96, 96))
layer_shapes = []
net.eval()
with torch.no_grad():
    for layer in net:
        X = layer(X)
        layer_shapes.append((layer.__class__.__name__, tuple(X.shape)))
        print(layer.__class__.__name__, 'output shape:\t', X.shape)
num_params = sum(p.numel() for p in net.parameters())

# in eval mode batch norm uses its running statistics: an example's output does not depend on
# the rest of its batch
with torch.no_grad():
    X = torch.rand(size=(2, 1, 96, 96))
    alone, in_batch = net(X[:1]), net(X)[:1]
eval_gap = float(torch.abs(alone - in_batch).max())

RESULT = {
    "same_shape": same_shape, "halved_shape": halved_shape, "conv1_weight_shape": conv1_weight_shape,
    "grad_inplace": grad_inplace, "grad_out_of_place": grad_out_of_place,
    "layer_shapes": layer_shapes, "num_params": num_params, "eval_gap": eval_gap,
}
