"""MobileNet (v1, Howard et al. 2017): depthwise separable convolutions, a 3x3 depthwise
convolution (one filter per channel, ``groups = channels``) followed by a 1x1 pointwise one,
each with batch norm and ReLU."""
from __future__ import annotations

from .. import nn
from .registry import Recipe, register

# (output channels, stride) of the 13 depthwise separable blocks
CFG = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def depthwise_separable(in_channels, out_channels, stride=1):
    """3x3 depthwise convolution (stride ``stride``), BN, ReLU, then 1x1 pointwise convolution,
    BN, ReLU: 9*C + C*C' weights instead of a full 3x3 convolution's 9*C*C'."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels), nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(),
    )


@register("mobilenet", Recipe(lr=0.05, epochs=10, batch_size=256, resize=96), input_size=32)
def mobilenet(num_classes=10, in_channels=1, width=1.0, dropout=0.0):
    """MobileNet v1: a 3x3 stride-2 convolution with 32 channels, 13 depthwise separable blocks
    (64 .. 1024 channels, five of them with stride 2), global average pooling and a dense
    layer. ``width`` is the paper's width multiplier alpha. Stride 32 overall (224x224 in the
    paper: 4.2M parameters and 569M multiply-adds with 1000 classes)."""
    def ch(c):
        return max(1, int(c * width))

    layers = [nn.Conv2d(in_channels, ch(32), 3, stride=2, padding=1, bias=False),
              nn.BatchNorm2d(ch(32)), nn.ReLU()]
    c = ch(32)
    for out, stride in CFG:
        layers.append(depthwise_separable(c, ch(out), stride))
        c = ch(out)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(c, num_classes))
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
