"""ONNX files written by PyTorch's own exporter (the TorchScript one, ``dynamo=False``, which
torch 2.13 still ships) run in ``dn.onnx.load`` with PyTorch's outputs at two batch sizes:
torchvision's ResNet-18 (written out here: torchvision's C extension does not load with this
torch), D2L's LeNet (benchmarks/torch_models.py), LSTM and GRU classifiers over image rows,
a stacked bidirectional LSTM, and a DenseNet-style block with concatenation and BatchNorm kept
as BatchNormalization (no constant folding)."""
from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch

import divenet as dn
from benchmarks.torch_models import lenet
from tests.onnx.helpers import BATCHES, assert_close, run_dn

nn = torch.nn


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock."""

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """torchvision's resnet18 layout (stem, four stages of two BasicBlocks, avgpool, fc)."""

    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, c = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(c, planes, stride), BasicBlock(planes, planes)))
            c = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class RowClassifier(nn.Module):
    """An image read row by row (as divenet's lstm/gru zoo models), last state -> Linear."""

    def __init__(self, cell="lstm", hidden=32, layers=1, bidirectional=False):
        super().__init__()
        self.cell = cell
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(28, hidden, num_layers=layers,
                                                            bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), 10)
        self.bidirectional = bidirectional

    def forward(self, x):
        seq = x.reshape(x.shape[0], 28, 28).permute(1, 0, 2)
        _, state = self.rnn(seq)
        h = state[0] if self.cell == "lstm" else state
        last = torch.cat([h[-2], h[-1]], dim=1) if self.bidirectional else h[-1]
        return self.fc(last)


class DenseBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.units = nn.ModuleList(nn.Sequential(nn.BatchNorm2d(4 + 3 * i), nn.ReLU(), nn.Conv2d(4 + 3 * i, 3, 3, padding=1))
                                   for i in range(2))
        self.head = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(10 * 4 * 4, 5), nn.Softmax(dim=1))

    def forward(self, x):
        for unit in self.units:
            x = torch.cat([x, unit(x)], dim=1)
        return self.head(x)


MODELS = {  # name: (builder, input shape without batch, export options)
    "resnet18": (ResNet18, (3, 32, 32), {}),
    "lenet": (lambda: lenet(torch), (1, 28, 28), {}),
    "lstm": (RowClassifier, (1, 28, 28), {}),
    "gru": (lambda: RowClassifier("gru"), (1, 28, 28), {}),
    "lstm-2-layers-bidirectional": (lambda: RowClassifier("lstm", 16, 2, True), (1, 28, 28), {}),
    "dense-block": (DenseBlock, (4, 8, 8), {"do_constant_folding": False}),
}
EXPECTED_OPS = {"resnet18": {"Conv", "Add", "GlobalAveragePool", "Gemm"}, "lenet": {"AveragePool", "Sigmoid"},
                "lstm": {"LSTM", "Shape", "Gather"}, "gru": {"GRU"}, "dense-block": {"BatchNormalization", "Concat"}}


def _randomize_batch_norm(model, rng):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.tensor(rng.standard_normal(c) * 0.2))
            m.running_var.copy_(torch.tensor(rng.uniform(0.5, 2.0, c)))
            m.weight.data.copy_(torch.tensor(rng.uniform(0.5, 1.5, c)))
            m.bias.data.copy_(torch.tensor(rng.standard_normal(c) * 0.1))


@pytest.mark.parametrize("name", MODELS)
def test_pytorch_export_runs_in_divenet(name):
    build, shape, options = MODELS[name]
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build().eval()
    _randomize_batch_norm(model, rng)
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, *shape),), buf, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, **options)
    proto = onnx.load_from_string(buf.getvalue())
    ops = {n.op_type for n in proto.graph.node}
    assert EXPECTED_OPS.get(name, set()) <= ops, f"{name}: {sorted(ops)}"
    ours = dn.onnx.load(proto)
    for batch in BATCHES:
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.tensor(x)).numpy()
        (out,) = run_dn(ours, x)
        assert_close(out, ref, f"{name} at batch {batch}")
