"""Network in Network as D2L builds it: NiN blocks (a convolution followed by two 1x1
convolutions, each with ReLU), max pools, dropout, and global average pooling in place of
dense layers."""
from __future__ import annotations

from .. import nn
from .lenet import xavier_init
from .registry import Recipe, register


def nin_block(in_channels, out_channels, kernel_size, stride, padding):
    """The slides' NiN block: a k x k convolution, then two 1x1 convolutions (per-pixel dense
    layers), each followed by ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
    )


@register("nin", Recipe(lr=0.1, epochs=10, batch_size=128, resize=224), input_size=67)
def nin(num_classes=10, in_channels=1, width=1.0, dropout=0.5):
    """D2L's NiN: blocks of 96 (11x11, stride 4), 256 (5x5) and 384 (3x3) channels (times
    ``width``) with 3x3 stride-2 max pools, dropout, a last block with ``num_classes`` channels
    and a global average pool. Takes inputs of at least 67x67 (224x224 in D2L)."""
    c = [max(1, round(v * width)) for v in (96, 256, 384)]
    model = nn.Sequential(
        nin_block(in_channels, c[0], kernel_size=11, stride=4, padding=0),
        nn.MaxPool2d(3, stride=2),
        nin_block(c[0], c[1], kernel_size=5, stride=1, padding=2),
        nn.MaxPool2d(3, stride=2),
        nin_block(c[1], c[2], kernel_size=3, stride=1, padding=1),
        nn.MaxPool2d(3, stride=2),
        nn.Dropout(dropout),
        nin_block(c[2], num_classes, kernel_size=3, stride=1, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return xavier_init(model)
