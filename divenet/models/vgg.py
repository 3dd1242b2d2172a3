"""VGG-11/13/16/19 in torchvision's layout (``features``, ``avgpool``, ``classifier``; parameter
counts equal torchvision's), and D2L's slimmed VGG-11 (every convolution's width divided by 4)."""
from __future__ import annotations

from .. import nn
from .lenet import xavier_init
from .registry import Recipe, register

# (number of 3x3 convolutions, output channels) per block; each block ends in a 2x2 max pool
ARCHS = {
    "vgg11": ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)),
    "vgg13": ((2, 64), (2, 128), (2, 256), (2, 512), (2, 512)),
    "vgg16": ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)),
    "vgg19": ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512)),
}


def vgg_block(num_convs, in_channels, out_channels, batch_norm=False):
    """The slides' VGG block: ``num_convs`` 3x3 convolutions (padding 1) with ReLU, then a
    2x2 max pool with stride 2 that halves the height and width."""
    layers = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU())
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return layers


class VGG(nn.Module):
    """Five VGG blocks, an adaptive average pool to 7x7 (a no-op at 224x224, where the blocks
    already end at 7x7; it lets inputs from 32x32 up work), and three dense layers."""

    def __init__(self, arch, num_classes=10, in_channels=1, ratio=1, hidden=4096, dropout=0.5,
                 batch_norm=False):
        layers, c = [], in_channels
        for num_convs, out in arch:
            out = max(1, out // ratio)
            layers += vgg_block(num_convs, c, out, batch_norm)
            c = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(c * 7 * 7, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))


def torchvision_init(model):
    """torchvision's VGG init: Kaiming-normal (fan_out) convolutions, N(0, 0.01) dense layers,
    zero biases, batch norm at scale 1 and shift 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return model


def _builder(name):
    def build(num_classes=10, in_channels=1, ratio=1, hidden=4096, dropout=0.5, batch_norm=False,
              init="torchvision"):
        model = VGG(ARCHS[name], num_classes, in_channels, ratio, hidden, dropout, batch_norm)
        if init not in ("torchvision", "xavier"):
            raise ValueError(f"{name}: init must be 'torchvision' or 'xavier', got {init!r}")
        return torchvision_init(model) if init == "torchvision" else xavier_init(model)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"{name.upper()}: torchvision's layout ({', '.join(str(n) for n, _ in ARCHS[name])} "
                     "convolutions per block). ``ratio`` divides every convolution's width (D2L "
                     "uses 4), ``hidden`` sets the dense layers' width, ``batch_norm`` adds "
                     "BatchNorm2d after each convolution (torchvision's *_bn variants).")
    return build


# D2L trains only the slimmed VGG-11 (below). The full-width nets take the VGG paper's SGD
# settings (lr 0.01, momentum 0.9, weight decay 5e-4) at D2L's batch 128 and 224x224 inputs.
_RECIPE = Recipe(lr=0.01, epochs=10, batch_size=128, resize=224, momentum=0.9, weight_decay=5e-4)
vgg11 = register("vgg11", _RECIPE, input_size=32)(_builder("vgg11"))
vgg13 = register("vgg13", _RECIPE, input_size=32)(_builder("vgg13"))
vgg16 = register("vgg16", _RECIPE, input_size=32)(_builder("vgg16"))
vgg19 = register("vgg19", _RECIPE, input_size=32)(_builder("vgg19"))


@register("vgg11-slim", Recipe(lr=0.05, epochs=10, batch_size=128, resize=224), input_size=32)
def vgg11_slim(num_classes=10, in_channels=1, ratio=4, hidden=4096, dropout=0.5, batch_norm=False):
    """D2L's VGG-11 for Fashion-MNIST: the convolutions 4 times narrower (16 ... 128 channels),
    Xavier init, dense layers of 4096 units."""
    return xavier_init(VGG(ARCHS["vgg11"], num_classes, in_channels, ratio, hidden, dropout,
                           batch_norm))
