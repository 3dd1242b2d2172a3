# DenseNet (D2L 8.7): the BN-ReLU-conv block, the dense block that concatenates each
# block's output with its input along the channels, the transition block, the book's shapes.
import torch
from torch import nn

torch.manual_seed(0)


def conv_block(num_channels):
    return nn.Sequential(
        nn.LazyBatchNorm2d(), nn.ReLU(),
        nn.LazyConv2d(num_channels, kernel_size=3, padding=1))


class DenseBlock(nn.Module):
    def __init__(self, num_convs, num_channels):
        super().__init__()
        layer = []
        for i in range(num_convs):
            layer.append(conv_block(num_channels))
        self.net = nn.Sequential(*layer)

    def forward(self, X):
        for blk in self.net:
            Y = blk(X)
            X = torch.cat((X, Y), dim=1)  # each block's input and output, along the channels
        return X


blk = DenseBlock(2, 10)
X = torch.randn(4, 3, 8, 8)
Y = blk(X)
dense_shape = tuple(Y.shape)


def transition_block(num_channels):
    # 1x1 convolution to cut the channels, average pooling to halve height and width
    return nn.Sequential(
        nn.LazyBatchNorm2d(), nn.ReLU(),
        nn.LazyConv2d(num_channels, kernel_size=1),
        nn.AvgPool2d(kernel_size=2, stride=2))


transition_shape = tuple(transition_block(10)(Y).shape)

# the gradient reaches the first block through both concatenations
X = torch.randn(4, 3, 8, 8, requires_grad=True)
blk(X).sum().backward()
first_conv_grad = float(blk.net[0][2].weight.grad.abs().sum())
input_grad_shape = tuple(X.grad.shape)

# DenseNet: four dense blocks of four convolutions, growth rate 32, transitions halving the channels
b1 = nn.Sequential(
    nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3),
    nn.LazyBatchNorm2d(), nn.ReLU(),
    nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
num_channels, growth_rate = 64, 32
num_convs_in_dense_blocks = [4, 4, 4, 4]
blks = []
for i, num_convs in enumerate(num_convs_in_dense_blocks):
    blks.append(DenseBlock(num_convs, growth_rate))
    num_channels += num_convs * growth_rate  # this block's output channels
    if i != len(num_convs_in_dense_blocks) - 1:
        num_channels = num_channels // 2
        blks.append(transition_block(num_channels))
net = nn.Sequential(
    b1, *blks, nn.LazyBatchNorm2d(), nn.ReLU(),
    nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.LazyLinear(10))

X = torch.rand(size=(2, 1, 96, 96))
layer_shapes = []
for layer in net:
    X = layer(X)
    layer_shapes.append((layer.__class__.__name__, tuple(X.shape)))

RESULT = {
    "dense_shape": dense_shape, "transition_shape": transition_shape,
    "first_conv_grad": first_conv_grad, "input_grad_shape": input_grad_shape,
    "final_channels": num_channels, "layer_shapes": layer_shapes,
}
