"""ResNets: torchvision's layouts (resnet18/34/50/101/152, resnext50 (32x4d); module names and
parameter counts equal torchvision's), squeeze-excite ResNets (se-resnet18, se-resnet50), and
D2L's ResNet-18 (its chapter's 96x96 version, and the 3x3-stem version for 28x28 inputs)."""
from __future__ import annotations

from .. import nn
from .lenet import xavier_init
from .registry import Recipe, register


def conv3x3(in_channels, out_channels, stride=1, groups=1):
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_channels, out_channels, stride=1):
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): global average pool ("squeeze"), a bottleneck of
    two 1x1 convolutions (dense layers on the pooled vector, ``channels // reduction`` hidden
    units, ReLU, then sigmoid) giving one gate in (0, 1) per channel ("excite"); the input is
    scaled channel-wise by its gates."""

    def __init__(self, channels, reduction=16):
        hidden = max(1, channels // reduction)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = self.gate(self.fc2(self.relu(self.fc1(self.avgpool(x)))))
        return x * s


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, plus the input (through a 1x1 convolution and batch
    norm, ``downsample``, where the stride or the width changes): ReLU(F(x) + x)."""

    expansion = 1

    def __init__(self, in_channels, planes, stride=1, downsample=None, groups=1, base_width=64,
                 se_reduction=None):
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock: groups and base_width other than 1 and 64 need Bottleneck "
                             f"blocks, got groups={groups}, base_width={base_width}")
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SqueezeExcite(planes, se_reduction) if se_reduction else None
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 convolution down to ``width`` channels, a 3x3 one (with the stride, and ``groups``
    for ResNeXt), a 1x1 one up to ``4 * planes``; batch norm after each; plus the input."""

    expansion = 4

    def __init__(self, in_channels, planes, stride=1, downsample=None, groups=1, base_width=64,
                 se_reduction=None):
        width = int(planes * (base_width / 64.0)) * groups
        if width < 1:
            raise ValueError(f"Bottleneck: planes={planes} with base_width={base_width} leaves no "
                             "channels; use larger planes or base_width")
        self.conv1 = conv1x1(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.se = SqueezeExcite(planes * self.expansion, se_reduction) if se_reduction else None
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet: a 7x7 stride-2 stem with a 3x3 stride-2 max pool, four stages
    (``layer1`` .. ``layer4``; the last three halve the size), global average pooling and ``fc``.
    ``widths`` sets the stages' base widths (torchvision: 64, 128, 256, 512)."""

    def __init__(self, block, layers, num_classes=10, in_channels=1, widths=(64, 128, 256, 512),
                 groups=1, width_per_group=64, se_reduction=None):
        self.groups, self.base_width, self.se_reduction = groups, width_per_group, se_reduction
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(block, widths[0], layers[0])
        self.layer2 = self._stage(block, widths[1], layers[1], stride=2)
        self.layer3 = self._stage(block, widths[2], layers[2], stride=2)
        self.layer4 = self._stage(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:  # the squeeze-excite 1x1 convolutions
                    nn.init.zeros_(m.bias)

    def _stage(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        kw = dict(groups=self.groups, base_width=self.base_width, se_reduction=self.se_reduction)
        out = [block(self.inplanes, planes, stride, downsample, **kw)]
        self.inplanes = planes * block.expansion
        out += [block(self.inplanes, planes, **kw) for _ in range(1, blocks)]
        return nn.Sequential(*out)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


# D2L has no recipe for the ImageNet layouts; on Fashion-MNIST they take D2L's ResNet recipe.
_RECIPE = Recipe(lr=0.05, epochs=10, batch_size=256, resize=96)
_DEPTHS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6, 3)),
           "resnet50": (Bottleneck, (3, 4, 6, 3)), "resnet101": (Bottleneck, (3, 4, 23, 3)),
           "resnet152": (Bottleneck, (3, 8, 36, 3))}


def _builder(name, **fixed):
    block, layers = _DEPTHS[name.replace("se-", "").replace("resnext50", "resnet50")]

    def build(num_classes=10, in_channels=1, widths=(64, 128, 256, 512), **kw):
        return ResNet(block, layers, num_classes, in_channels, widths, **{**fixed, **kw})

    build.__name__ = build.__qualname__ = name.replace("-", "_")
    build.__doc__ = (f"{name}: torchvision's layout ({block.__name__} blocks {layers}). "
                     "``widths`` scales the four stages (64, 128, 256, 512).")
    return build


resnet18 = register("resnet18", _RECIPE, input_size=32)(_builder("resnet18"))
resnet34 = register("resnet34", _RECIPE, input_size=32)(_builder("resnet34"))
resnet50 = register("resnet50", _RECIPE, input_size=32)(_builder("resnet50"))
resnet101 = register("resnet101", _RECIPE, input_size=32)(_builder("resnet101"))
resnet152 = register("resnet152", _RECIPE, input_size=32)(_builder("resnet152"))
# ResNeXt-50 (32x4d): 32 groups of 4 channels in the first stage's 3x3 convolutions
resnext50 = register("resnext50", _RECIPE, input_size=32)(
    _builder("resnext50", groups=32, width_per_group=4))
# Squeeze-excite ResNets (Hu et al.): an SE gate (reduction 16) on every residual branch
se_resnet18 = register("se-resnet18", _RECIPE, input_size=32)(_builder("se-resnet18", se_reduction=16))
se_resnet50 = register("se-resnet50", _RECIPE, input_size=32)(_builder("se-resnet50", se_reduction=16))


# ---- D2L's ResNet-18 -----------------------------------------------------------------------------
class Residual(nn.Module):
    """D2L's residual block: two 3x3 convolutions (with bias) and batch norms; where
    ``use_1x1conv``, the input goes through a 1x1 convolution with the same stride."""

    def __init__(self, in_channels, num_channels, use_1x1conv=False, strides=1):
        self.conv1 = nn.Conv2d(in_channels, num_channels, 3, stride=strides, padding=1)
        self.conv2 = nn.Conv2d(num_channels, num_channels, 3, padding=1)
        self.conv3 = nn.Conv2d(in_channels, num_channels, 1, stride=strides) if use_1x1conv else None
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return self.relu(y + x)


def resnet_block(in_channels, num_channels, num_residuals, first_block=False):
    """D2L's stage: the first residual block halves the size and changes the width (except in
    the first stage, which follows the max pool)."""
    blocks = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blocks.append(Residual(in_channels, num_channels, use_1x1conv=True, strides=2))
        else:
            blocks.append(Residual(num_channels, num_channels))
    return nn.Sequential(*blocks)


def _d2l_resnet18(stem, num_classes, widths):
    c = widths
    model = nn.Sequential(
        stem,
        resnet_block(c[0], c[0], 2, first_block=True),
        resnet_block(c[0], c[1], 2),
        resnet_block(c[1], c[2], 2),
        resnet_block(c[2], c[3], 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c[3], num_classes),
    )
    return xavier_init(model)


@register("resnet18-d2l", Recipe(lr=0.05, epochs=10, batch_size=256, resize=96), input_size=32)
def resnet18_d2l(num_classes=10, in_channels=1, widths=(64, 128, 256, 512)):
    """D2L's ResNet-18 (its ResNet chapter, trained at 96x96): GoogLeNet's stem (7x7 stride-2
    convolution, batch norm, 3x3 stride-2 max pool), four stages of two residual blocks."""
    stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3),
                         nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
    return _d2l_resnet18(stem, num_classes, widths)


@register("resnet18-small", Recipe(lr=0.1, epochs=10, batch_size=256), input_size=8)
def resnet18_small(num_classes=10, in_channels=1, widths=(64, 128, 256, 512)):
    """D2L's ResNet-18 for small images (its multi-GPU chapter, trained at 28x28): a 3x3
    stride-1 stem without max pool, then the same four stages (stride 8 overall)."""
    stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1),
                         nn.BatchNorm2d(widths[0]), nn.ReLU())
    return _d2l_resnet18(stem, num_classes, widths)
