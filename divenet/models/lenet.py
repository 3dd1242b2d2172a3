"""LeNet-5 as D2L builds it (sigmoid, average pooling), and D2L's batch-normalized LeNet."""
from __future__ import annotations

from .. import nn
from .registry import Recipe, register


def xavier_init(model):
    """D2L's init for LeNet: Xavier-uniform weights for every convolution and dense layer."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight is not None:
            nn.init.xavier_uniform_(m.weight)
    return model


@register("lenet", Recipe(lr=0.9, epochs=10, batch_size=256))
def lenet(num_classes=10, in_channels=1):
    """D2L's LeNet-5: two 5x5 convolutions (6 and 16 channels) with sigmoid and 2x2 average
    pooling, then dense layers of 120, 84 and num_classes units."""
    model = nn.Sequential(
        nn.Conv2d(in_channels, 6, kernel_size=5, padding=2), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, num_classes),
    )
    return xavier_init(model)


@register("lenet-bn", Recipe(lr=1.0, epochs=10, batch_size=256))
def lenet_bn(num_classes=10, in_channels=1):
    """D2L's LeNet with batch normalization after every convolution and hidden dense layer."""
    model = nn.Sequential(
        nn.Conv2d(in_channels, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(),
        nn.Linear(84, num_classes),
    )
    return xavier_init(model)
