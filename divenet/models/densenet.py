"""DenseNets: D2L's DenseNet (four dense blocks of four convolutions, growth rate 32) and
torchvision's DenseNet-121 (module names and parameter count equal torchvision's)."""
from __future__ import annotations

from collections import OrderedDict

from .. import nn
from ..tensor import cat
from .lenet import xavier_init
from .registry import Recipe, register


# ---- D2L's DenseNet ------------------------------------------------------------------------------
def conv_block(in_channels, num_channels):
    """D2L's pre-activation unit: BatchNorm, ReLU, 3x3 convolution."""
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                         nn.Conv2d(in_channels, num_channels, kernel_size=3, padding=1))


class DenseBlock(nn.Module):
    """D2L's dense block: each unit sees the concatenation of the block's input and all earlier
    units' outputs and adds ``num_channels`` (the growth rate) channels to it."""

    def __init__(self, num_convs, in_channels, num_channels):
        self.net = nn.Sequential(*[conv_block(in_channels + i * num_channels, num_channels)
                                   for i in range(num_convs)])
        self.out_channels = in_channels + num_convs * num_channels

    def forward(self, x):
        for blk in self.net:
            x = cat([x, blk(x)], dim=1)
        return x


def transition_block(in_channels, num_channels):
    """BatchNorm, ReLU, a 1x1 convolution that cuts the channels, a 2x2 average pool that halves
    height and width."""
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                         nn.Conv2d(in_channels, num_channels, kernel_size=1),
                         nn.AvgPool2d(kernel_size=2, stride=2))


@register("densenet", Recipe(lr=0.1, epochs=10, batch_size=256, resize=96), input_size=32)
def densenet(num_classes=10, in_channels=1, growth_rate=32, arch=(4, 4, 4, 4), stem_channels=64):
    """D2L's DenseNet: GoogLeNet's stem (7x7 stride-2 convolution with 64 channels, batch norm,
    max pool), four dense blocks of ``arch`` units with ``growth_rate`` channels each, a
    transition halving the channels and the size between blocks, then batch norm, ReLU, global
    average pooling and a dense layer. Takes inputs of at least 29x29 (96x96 in D2L)."""
    layers = [nn.Conv2d(in_channels, stem_channels, kernel_size=7, stride=2, padding=3),
              nn.BatchNorm2d(stem_channels), nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2, padding=1)]
    c = stem_channels
    for i, num_convs in enumerate(arch):
        block = DenseBlock(num_convs, c, growth_rate)
        layers.append(block)
        c = block.out_channels
        if i != len(arch) - 1:
            layers.append(transition_block(c, c // 2))
            c //= 2
    layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(c, num_classes)]
    return xavier_init(nn.Sequential(*layers))


# ---- torchvision's DenseNet-121 ------------------------------------------------------------------
class _DenseLayer(nn.Module):
    """Bottleneck unit: BN, ReLU, 1x1 convolution to ``bn_size * growth_rate`` channels, BN, ReLU,
    3x3 convolution to ``growth_rate`` channels; no biases."""

    def __init__(self, in_channels, growth_rate, bn_size, drop_rate=0.0):
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop = nn.Dropout(drop_rate) if drop_rate else None

    def forward(self, x):
        y = self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))
        return self.drop(y) if self.drop is not None else y


class _DenseBlock(nn.Module):
    """``denselayer1`` .. ``denselayerN``; each sees all earlier outputs, concatenated."""

    def __init__(self, num_layers, in_channels, bn_size, growth_rate, drop_rate=0.0):
        self._names = []
        for i in range(num_layers):
            name = f"denselayer{i + 1}"
            setattr(self, name, _DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size, drop_rate))
            self._names.append(name)
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x):
        for name in self._names:
            x = cat([x, getattr(self, name)(x)], dim=1)
        return x


def _transition(in_channels, out_channels):
    return nn.Sequential(OrderedDict([
        ("norm", nn.BatchNorm2d(in_channels)), ("relu", nn.ReLU()),
        ("conv", nn.Conv2d(in_channels, out_channels, 1, bias=False)),
        ("pool", nn.AvgPool2d(kernel_size=2, stride=2)),
    ]))


class DenseNet(nn.Module):
    """torchvision's DenseNet (``features`` with conv0, norm0, relu0, pool0, denseblock1,
    transition1, ..., norm5; then ReLU, global average pooling and ``classifier``)."""

    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64,
                 bn_size=4, drop_rate=0.0, num_classes=10, in_channels=1):
        feats = OrderedDict([
            ("conv0", nn.Conv2d(in_channels, num_init_features, 7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)), ("relu0", nn.ReLU()),
            ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
        ])
        c = num_init_features
        for i, num_layers in enumerate(block_config):
            block = _DenseBlock(num_layers, c, bn_size, growth_rate, drop_rate)
            feats[f"denseblock{i + 1}"] = block
            c = block.out_channels
            if i != len(block_config) - 1:
                feats[f"transition{i + 1}"] = _transition(c, c // 2)
                c //= 2
        feats["norm5"] = nn.BatchNorm2d(c)
        self.features = nn.Sequential(feats)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.avgpool(self.relu(self.features(x)))
        return self.classifier(x.flatten(1))


@register("densenet121", Recipe(lr=0.1, epochs=10, batch_size=256, resize=96), input_size=32)
def densenet121(num_classes=10, in_channels=1, growth_rate=32, num_init_features=64, bn_size=4,
                drop_rate=0.0):
    """torchvision's DenseNet-121: dense blocks of 6, 12, 24 and 16 bottleneck units, growth rate
    32, bottleneck width 4 x 32. Takes inputs of at least 29x29."""
    return DenseNet(growth_rate, (6, 12, 24, 16), num_init_features, bn_size, drop_rate,
                    num_classes, in_channels)
