"""PyTorch twins of the zoo models that the benchmarks time (same layers, same shapes)."""
from __future__ import annotations


def lenet(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
        nn.Linear(400, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10))


def d2l_resnet18(torch, in_channels=1, num_classes=10, small=False):
    """D2L's ResNet-18: ``resnet18-d2l`` (7x7 stride-2 stem and max pool) or, with ``small``,
    ``resnet18-small`` (3x3 stride-1 stem, no pool); divenet's state_dict keys."""
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
            self.conv3 = nn.Conv2d(cin, cout, 1, stride=stride) if stride != 1 or cin != cout else None
            self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (self.conv3(x) if self.conv3 is not None else x))

    def stage(cin, cout, first):
        return [Residual(cin, cout, 1 if first else 2), Residual(cout, cout, 1)]

    if small:
        stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
    else:
        stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64),
                             nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(
        stem, nn.Sequential(*stage(64, 64, True)), nn.Sequential(*stage(64, 128, False)),
        nn.Sequential(*stage(128, 256, False)), nn.Sequential(*stage(256, 512, False)),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))


def d2l_alexnet(torch, in_channels=1, num_classes=10):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(in_channels, 96, 11, stride=4, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d(5), nn.Flatten(), nn.Linear(256 * 5 * 5, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, num_classes))


# ---- twins of the zoo's ImageNet-layout models (benchmarks/zoo.py) -------------------------------
# Each mirrors its divenet model layer for layer under the same state_dict keys, so the weights
# copy across by name (tests/benchmarks checks keys, shapes and outputs). The channel tables
# are written out here rather than imported: the PyTorch memory benchmark's process must not
# load divenet.

def resnet(torch, depth="resnet18", num_classes=1000, in_channels=3, groups=1, width_per_group=64):
    """torchvision's ResNet layout (``resnet18``, ``resnet50``; ResNeXt-50 32x4d with
    ``groups=32, width_per_group=4``), as divenet/models/resnet.py builds it."""
    nn = torch.nn

    def conv(cin, cout, k, stride=1, g=1):
        return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=g, bias=False)

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, cin, planes, stride, downsample):
            super().__init__()
            self.conv1, self.bn1 = conv(cin, planes, 3, stride), nn.BatchNorm2d(planes)
            self.relu = nn.ReLU()
            self.conv2, self.bn2 = conv(planes, planes, 3), nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin, planes, stride, downsample):
            super().__init__()
            width = int(planes * (width_per_group / 64.0)) * groups
            self.conv1, self.bn1 = conv(cin, width, 1), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = conv(width, width, 3, stride, groups), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = conv(width, planes * 4, 1), nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU()
            self.downsample = downsample

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(out)))))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    block, layers = {"resnet18": (Basic, (2, 2, 2, 2)), "resnet50": (Bottleneck, (3, 4, 6, 3))}[depth]

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.bn1, self.relu, self.maxpool = nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._stage(64, layers[0], 1)
            self.layer2 = self._stage(128, layers[1], 2)
            self.layer3 = self._stage(256, layers[2], 2)
            self.layer4 = self._stage(512, layers[3], 2)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512 * block.expansion, num_classes)

        def _stage(self, planes, blocks, stride):
            out_channels = planes * block.expansion
            downsample = None
            if stride != 1 or self.inplanes != out_channels:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, out_channels, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(out_channels))
            out = [block(self.inplanes, planes, stride, downsample)]
            self.inplanes = out_channels
            out += [block(out_channels, planes, 1, None) for _ in range(1, blocks)]
            return nn.Sequential(*out)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()


def resnext50(torch, num_classes=1000, in_channels=3):
    return resnet(torch, "resnet50", num_classes, in_channels, groups=32, width_per_group=4)


def vgg11(torch, num_classes=1000, in_channels=3):
    """torchvision's VGG-11 (``features``, ``avgpool`` to 7x7, ``classifier``)."""
    nn = torch.nn
    layers, c = [], in_channels
    for num_convs, out in ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)):
        for _ in range(num_convs):
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU()]
            c = out
        layers.append(nn.MaxPool2d(2, 2))

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(
                nn.Linear(c * 49, 4096), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return VGG()


def densenet121(torch, num_classes=1000, in_channels=3, growth_rate=32, bn_size=4):
    """torchvision's DenseNet-121 (blocks of 6, 12, 24, 16 bottleneck units)."""
    from collections import OrderedDict

    nn = torch.nn

    class DenseLayer(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
            self.conv1 = nn.Conv2d(cin, bn_size * growth_rate, 1, bias=False)
            self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth_rate), nn.ReLU()
            self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)

        def forward(self, x):
            return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))

    class DenseBlock(nn.Module):
        def __init__(self, num_layers, cin):
            super().__init__()
            for i in range(num_layers):
                self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth_rate))

        def forward(self, x):
            for layer in self.children():
                x = torch.cat([x, layer(x)], 1)
            return x

    feats = OrderedDict([("conv0", nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)),
                         ("norm0", nn.BatchNorm2d(64)), ("relu0", nn.ReLU()), ("pool0", nn.MaxPool2d(3, 2, 1))])
    c = 64
    for i, num_layers in enumerate((6, 12, 24, 16)):
        feats[f"denseblock{i + 1}"] = DenseBlock(num_layers, c)
        c += num_layers * growth_rate
        if i != 3:
            feats[f"transition{i + 1}"] = nn.Sequential(OrderedDict([
                ("norm", nn.BatchNorm2d(c)), ("relu", nn.ReLU()),
                ("conv", nn.Conv2d(c, c // 2, 1, bias=False)), ("pool", nn.AvgPool2d(2, 2))]))
            c //= 2
    feats["norm5"] = nn.BatchNorm2d(c)

    class DenseNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(feats)
            self.relu, self.avgpool = nn.ReLU(), nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(c, num_classes)

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.relu(self.features(x))), 1))

    return DenseNet()


# (c1, c2, c3, c4) of the nine Inception blocks (3a, 3b | 4a .. 4e | 5a, 5b)
_INCEPTION = ((64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64),
              (192, (96, 208), (16, 48), 64), (160, (112, 224), (24, 64), 64),
              (128, (128, 256), (24, 64), 64), (112, (144, 288), (32, 64), 64),
              (256, (160, 320), (32, 128), 128),
              (256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128))


def googlenet(torch, num_classes=1000, in_channels=3):
    """D2L's GoogLeNet (stages b1 .. b5, nine Inception blocks, no auxiliary classifiers)."""
    nn = torch.nn

    class Inception(nn.Module):
        def __init__(self, cin, c1, c2, c3, c4):
            super().__init__()
            self.p1 = nn.Sequential(nn.Conv2d(cin, c1, 1), nn.ReLU())
            self.p2 = nn.Sequential(nn.Conv2d(cin, c2[0], 1), nn.ReLU(),
                                    nn.Conv2d(c2[0], c2[1], 3, padding=1), nn.ReLU())
            self.p3 = nn.Sequential(nn.Conv2d(cin, c3[0], 1), nn.ReLU(),
                                    nn.Conv2d(c3[0], c3[1], 5, padding=2), nn.ReLU())
            self.p4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, c4, 1), nn.ReLU())
            self.out_channels = c1 + c2[1] + c3[1] + c4

        def forward(self, x):
            return torch.cat([self.p1(x), self.p2(x), self.p3(x), self.p4(x)], 1)

    def inceptions(cfgs, cin):
        blocks = []
        for cfg in cfgs:
            blocks.append(Inception(cin, *cfg))
            cin = blocks[-1].out_channels
        return blocks, cin

    pool = nn.MaxPool2d(3, 2, 1)
    b1 = nn.Sequential(nn.Conv2d(in_channels, 64, 7, stride=2, padding=3), nn.ReLU(), pool)
    b2 = nn.Sequential(nn.Conv2d(64, 64, 1), nn.ReLU(), nn.Conv2d(64, 192, 3, padding=1), nn.ReLU(), pool)
    blocks3, c = inceptions(_INCEPTION[:2], 192)
    blocks4, c = inceptions(_INCEPTION[2:7], c)
    blocks5, c = inceptions(_INCEPTION[7:], c)
    return nn.Sequential(b1, b2, nn.Sequential(*blocks3, pool), nn.Sequential(*blocks4, pool),
                         nn.Sequential(*blocks5, nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                         nn.Linear(c, num_classes))


# (output channels, stride) of MobileNet v1's 13 depthwise separable blocks
_MOBILENET = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
              (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def mobilenet(torch, num_classes=1000, in_channels=3):
    """MobileNet v1 at width 1 (divenet/models/mobilenet.py)."""
    nn = torch.nn
    layers = [nn.Conv2d(in_channels, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU()]
    c = 32
    for out, stride in _MOBILENET:
        layers.append(nn.Sequential(
            nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()))
        c = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def zoo_twin(torch, name, num_classes=1000, in_channels=3):
    """The twin of divenet's zoo model ``name`` (those benchmarks/zoo.py times)."""
    builders = {"resnet18": lambda *a: resnet(torch, "resnet18", *a),
                "resnet50": lambda *a: resnet(torch, "resnet50", *a),
                "resnext50": lambda *a: resnext50(torch, *a), "vgg11": lambda *a: vgg11(torch, *a),
                "densenet121": lambda *a: densenet121(torch, *a),
                "googlenet": lambda *a: googlenet(torch, *a), "mobilenet": lambda *a: mobilenet(torch, *a),
                "resnet18-small": lambda k, c: d2l_resnet18(torch, c, k, small=True)}
    if name not in builders:
        raise ValueError(f"zoo_twin: no PyTorch twin of {name!r}; have {', '.join(builders)}")
    return builders[name](num_classes, in_channels)
