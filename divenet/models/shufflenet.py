"""ShuffleNet (v1, Zhang et al. 2018): grouped 1x1 convolutions made to talk to each other by a
channel shuffle, with depthwise 3x3 convolutions in residual bottleneck units."""
from __future__ import annotations

from .. import nn
from ..tensor import cat
from .registry import Recipe, register

# output channels of stages 2, 3, 4 for each number of groups (the paper's table 1, scale 1x)
STAGE_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960),
                  4: (272, 544, 1088), 8: (384, 768, 1536)}
STAGE_REPEATS = (4, 8, 4)


class ShuffleUnit(nn.Module):
    """A ShuffleNet unit: 1x1 group convolution to ``out_channels / 4`` channels, BN, ReLU,
    channel shuffle, 3x3 depthwise convolution (with the stride), BN, 1x1 group convolution, BN.
    With stride 1 the input is added (ReLU after); with stride 2 a 3x3 average pool of the input
    is concatenated, so the unit's own branch makes ``out_channels - in_channels`` channels.
    ``first_groups`` is the first convolution's groups (1 where the input has too few channels,
    as in the paper's first unit of stage 2)."""

    def __init__(self, in_channels, out_channels, groups, stride, first_groups=None):
        first_groups = groups if first_groups is None else first_groups
        mid = out_channels // 4
        branch = out_channels - in_channels if stride == 2 else out_channels
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f"ShuffleUnit: stride 1 needs in_channels == out_channels, got "
                             f"{in_channels} and {out_channels}")
        self.stride = stride
        self.gconv1 = nn.Conv2d(in_channels, mid, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu = nn.ReLU()
        self.shuffle = nn.ChannelShuffle(groups)
        self.dwconv = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.gconv2 = nn.Conv2d(mid, branch, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else None

    def forward(self, x):
        y = self.shuffle(self.relu(self.bn1(self.gconv1(x))))
        y = self.bn3(self.gconv2(self.bn2(self.dwconv(y))))
        if self.shortcut is not None:
            return self.relu(cat([self.shortcut(x), y], dim=1))
        return self.relu(x + y)


@register("shufflenet", Recipe(lr=0.05, epochs=10, batch_size=256, resize=96), input_size=32)
def shufflenet(num_classes=10, in_channels=1, groups=3, width=1.0):
    """ShuffleNet 1x (g = ``groups``, one of 1, 2, 3, 4, 8): a 3x3 stride-2 convolution with 24
    channels and a 3x3 stride-2 max pool, stages of 4, 8 and 4 ShuffleUnits (each stage starts
    with a stride-2 unit), global average pooling and a dense layer. ``width`` is the paper's
    scale factor s (channels rounded to a multiple of 4 x groups). Stride 32 overall (224x224
    in the paper: 140M multiply-adds for 1x, g=3)."""
    if groups not in STAGE_CHANNELS:
        raise ValueError(f"shufflenet: groups must be one of {sorted(STAGE_CHANNELS)}, got {groups}")
    quantum = 4 * groups
    stage_channels = [max(quantum, int(round(c * width / quantum)) * quantum)
                      for c in STAGE_CHANNELS[groups]]
    stem = 24
    layers = [nn.Conv2d(in_channels, stem, 3, stride=2, padding=1, bias=False),
              nn.BatchNorm2d(stem), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1)]
    c = stem
    for s, (out, repeats) in enumerate(zip(stage_channels, STAGE_REPEATS)):
        if out <= c:
            raise ValueError(f"shufflenet: width={width} gives stage {s + 2} only {out} channels "
                             f"for a {c}-channel input; use a larger width")
        units = [ShuffleUnit(c, out, groups, 2, first_groups=1 if s == 0 else groups)]
        units += [ShuffleUnit(out, out, groups, 1) for _ in range(repeats - 1)]
        layers.append(nn.Sequential(*units))
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
