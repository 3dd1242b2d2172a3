"""AlexNet as D2L and the slides build it for 224x224 inputs (an 11x11 stride-4 convolution with
padding 1, so the first feature map is 54x54), optionally with the paper's local response
normalization."""
from __future__ import annotations

from .. import nn
from .lenet import xavier_init
from .registry import Recipe, register


@register("alexnet", Recipe(lr=0.01, epochs=10, batch_size=128, resize=224), input_size=65)
def alexnet(num_classes=10, in_channels=1, lrn=False, width=1.0, hidden=4096, dropout=0.5):
    """D2L's AlexNet: five convolutions (96, 256, 384, 384, 256 channels, times ``width``), three
    3x3 stride-2 max pools, two dense layers of ``hidden`` units with dropout, and the output
    layer. ``lrn=True`` adds the paper's LocalResponseNorm(5, 1e-4, 0.75, 2) after the first two
    convolutions. At 224x224 the last feature map is 5x5; an adaptive average pool to 5x5 (a
    no-op there) lets the same network take any input of at least 65x65."""
    c = [max(1, round(v * width)) for v in (96, 256, 384, 384, 256)]

    def norm():
        return [nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)] if lrn else []

    model = nn.Sequential(
        nn.Conv2d(in_channels, c[0], kernel_size=11, stride=4, padding=1), nn.ReLU(), *norm(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c[0], c[1], kernel_size=5, padding=2), nn.ReLU(), *norm(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c[1], c[2], kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(c[2], c[3], kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(c[3], c[4], kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.AdaptiveAvgPool2d(5),
        nn.Flatten(),
        nn.Linear(c[4] * 5 * 5, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )
    return xavier_init(model)
