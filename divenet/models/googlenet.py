"""GoogLeNet (Inception v1) as D2L and the paper define it, and Inception-BN (v2, Ioffe and
Szegedy 2015: batch normalization after every convolution, 5x5 paths replaced by two 3x3
convolutions, stride-2 Inception blocks in place of two max pools)."""
from __future__ import annotations

from .. import nn
from ..tensor import cat
from .lenet import xavier_init
from .registry import Recipe, register


class Inception(nn.Module):
    """The slides' Inception block: four parallel paths concatenated along the channels.

    - path 1: a 1x1 convolution with ``c1`` channels;
    - path 2: a 1x1 convolution with ``c2[0]`` channels, then a 3x3 one with ``c2[1]``;
    - path 3: a 1x1 convolution with ``c3[0]`` channels, then a 5x5 one with ``c3[1]``;
    - path 4: a 3x3 max pool (stride 1), then a 1x1 convolution with ``c4`` channels.

    Every convolution is followed by ReLU; height and width are kept. Output channels:
    ``c1 + c2[1] + c3[1] + c4``. (D2L's arguments, with ``in_channels`` first; it may be None
    to infer it from the first input.)"""

    def __init__(self, in_channels, c1, c2, c3, c4):
        self.out_channels = c1 + c2[1] + c3[1] + c4
        self.p1 = nn.Sequential(nn.Conv2d(in_channels, c1, kernel_size=1), nn.ReLU())
        self.p2 = nn.Sequential(nn.Conv2d(in_channels, c2[0], kernel_size=1), nn.ReLU(),
                                nn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1), nn.ReLU())
        self.p3 = nn.Sequential(nn.Conv2d(in_channels, c3[0], kernel_size=1), nn.ReLU(),
                                nn.Conv2d(c3[0], c3[1], kernel_size=5, padding=2), nn.ReLU())
        self.p4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
                                nn.Conv2d(in_channels, c4, kernel_size=1), nn.ReLU())

    def forward(self, x):
        return cat([self.p1(x), self.p2(x), self.p3(x), self.p4(x)], dim=1)


# (c1, c2, c3, c4) of the nine Inception blocks (3a, 3b | 4a .. 4e | 5a, 5b), from the paper
INCEPTION_V1 = {
    "3a": (64, (96, 128), (16, 32), 32), "3b": (128, (128, 192), (32, 96), 64),
    "4a": (192, (96, 208), (16, 48), 64), "4b": (160, (112, 224), (24, 64), 64),
    "4c": (128, (128, 256), (24, 64), 64), "4d": (112, (144, 288), (32, 64), 64),
    "4e": (256, (160, 320), (32, 128), 128),
    "5a": (256, (160, 320), (32, 128), 128), "5b": (384, (192, 384), (48, 128), 128),
}


def _inceptions(names, in_channels):
    blocks = []
    for n in names:
        block = Inception(in_channels, *INCEPTION_V1[n])
        blocks.append(block)
        in_channels = block.out_channels
    return blocks, in_channels


@register("googlenet", Recipe(lr=0.1, epochs=10, batch_size=128, resize=96), input_size=32)
def googlenet(num_classes=10, in_channels=1, lrn=False, dropout=0.0):
    """D2L's GoogLeNet: five stages (b1 .. b5) with nine Inception blocks, global average
    pooling and one dense layer. ``lrn=True`` and ``dropout=0.4`` add what the paper has on top
    (local response normalization in the stem, 40% dropout before the dense layer; its
    auxiliary classifiers are left out, as in D2L). Stride 32 overall; 96x96 in D2L, 224x224 in
    the paper, any size works."""
    def norm():
        return [nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)] if lrn else []

    b1 = nn.Sequential(nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3), nn.ReLU(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1), *norm())
    b2 = nn.Sequential(nn.Conv2d(64, 64, kernel_size=1), nn.ReLU(),
                       nn.Conv2d(64, 192, kernel_size=3, padding=1), nn.ReLU(), *norm(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    blocks3, c = _inceptions(("3a", "3b"), 192)
    b3 = nn.Sequential(*blocks3, nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    blocks4, c = _inceptions(("4a", "4b", "4c", "4d", "4e"), c)
    b4 = nn.Sequential(*blocks4, nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    blocks5, c = _inceptions(("5a", "5b"), c)
    b5 = nn.Sequential(*blocks5, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = [nn.Dropout(dropout)] if dropout else []
    model = nn.Sequential(b1, b2, b3, b4, b5, *head, nn.Linear(c, num_classes))
    return xavier_init(model)


# ---- Inception-BN --------------------------------------------------------------------------------
def conv_bn(in_channels, out_channels, kernel_size, stride=1, padding=0):
    """Convolution (no bias: batch norm's shift replaces it), BatchNorm2d, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU())


class InceptionBN(nn.Module):
    """A BN-Inception block (Ioffe and Szegedy 2015, figure 5): a 1x1 path (``c1`` channels, may
    be 0), a 3x3 path (1x1 ``c3r`` then 3x3 ``c3``), a double-3x3 path (1x1 ``d3r``, 3x3 ``d3``,
    3x3 ``d3``) and a pooling path (``pool`` = 'avg' or 'max', 3x3, then a 1x1 projection to
    ``proj`` channels, or the pooled input passed through when ``proj`` is 0). With
    ``stride=2`` the last convolution of each path and the pool have stride 2."""

    def __init__(self, in_channels, c1, c3r, c3, d3r, d3, pool, proj, stride=1):
        if pool not in ("avg", "max"):
            raise ValueError(f"InceptionBN: pool must be 'avg' or 'max', got {pool!r}")
        self.p1 = conv_bn(in_channels, c1, 1) if c1 else None
        self.p2 = nn.Sequential(conv_bn(in_channels, c3r, 1), conv_bn(c3r, c3, 3, stride, 1))
        self.p3 = nn.Sequential(conv_bn(in_channels, d3r, 1), conv_bn(d3r, d3, 3, 1, 1),
                                conv_bn(d3, d3, 3, stride, 1))
        pooling = (nn.AvgPool2d if pool == "avg" else nn.MaxPool2d)(3, stride=stride, padding=1)
        self.p4 = nn.Sequential(pooling, conv_bn(in_channels, proj, 1)) if proj else pooling
        self.out_channels = c1 + c3 + d3 + (proj or in_channels)

    def forward(self, x):
        paths = [self.p1] if self.p1 is not None else []
        return cat([p(x) for p in paths + [self.p2, self.p3, self.p4]], dim=1)


# (c1, 3x3 reduce, 3x3, double 3x3 reduce, double 3x3, pool, pool proj, stride): the paper's table
INCEPTION_BN = {
    "3a": (64, 64, 64, 64, 96, "avg", 32, 1), "3b": (64, 64, 96, 64, 96, "avg", 64, 1),
    "3c": (0, 128, 160, 64, 96, "max", 0, 2),
    "4a": (224, 64, 96, 96, 128, "avg", 128, 1), "4b": (192, 96, 128, 96, 128, "avg", 128, 1),
    "4c": (160, 128, 160, 128, 160, "avg", 128, 1), "4d": (96, 128, 192, 160, 192, "avg", 128, 1),
    "4e": (0, 128, 192, 192, 256, "max", 0, 2),
    "5a": (352, 192, 320, 160, 224, "avg", 128, 1), "5b": (352, 192, 320, 192, 224, "max", 128, 1),
}


@register("inception-bn", Recipe(lr=0.1, epochs=10, batch_size=128, resize=96), input_size=32)
def inception_bn(num_classes=10, in_channels=1):
    """Inception-BN (BN-Inception) after the paper's table: a 7x7 stride-2 stem, a 1x1 + 3x3
    stage, ten Inception-BN blocks (3a-3c, 4a-4e, 5a-5b; 3c and 4e halve the size) with batch
    norm after every convolution, global average pooling and a dense layer. (The table's
    channel counts are used as printed; 4c and 4d then output 608 channels, as in MXNet's
    implementation.)"""
    layers = [conv_bn(in_channels, 64, 7, 2, 3), nn.MaxPool2d(3, stride=2, padding=1),
              conv_bn(64, 64, 1), conv_bn(64, 192, 3, 1, 1), nn.MaxPool2d(3, stride=2, padding=1)]
    c = 192
    for name, cfg in INCEPTION_BN.items():
        block = InceptionBN(c, *cfg)
        layers.append(block)
        c = block.out_channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return xavier_init(nn.Sequential(*layers))
