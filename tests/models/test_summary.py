"""dn.summary: the slides' parameter and FLOP tables, torchvision's published totals, and the
mechanics of the shape-only pass."""
from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

import divenet as dn
from divenet import nn
from divenet.models import get_model
from divenet.models.googlenet import Inception
from divenet.summary import parse_shape, skip_init, summary


@pytest.fixture
def no_random_init():
    """Counting does not read the weights: skip drawing random values, so that VGG-16's 138M
    parameters build in milliseconds (their arrays stay untouched np.empty memory)."""
    with skip_init():
        yield


_UNITS = {"": 1, "K": 1e3, "k": 1e3, "M": 1e6, "G": 1e9}


def shown_as(value, text):
    """True when ``value`` prints as the slides' ``text`` ('35K', '0.44 M', '1G'): rounded or
    truncated to the digits the slide shows."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KkMG]?)\s*", text)
    digits, unit = m.group(1), m.group(2)
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    x = value / _UNITS[unit]
    target = float(digits)
    return round(x, decimals) == target or math.floor(x * 10 ** decimals) / 10 ** decimals == target


def test_shown_as_can_fail():
    assert shown_as(34848, "35K") and shown_as(16_781_312, "16M") and shown_as(1_228_800, "1.22M")
    assert not shown_as(34848, "36K") and not shown_as(16_781_312, "17.0M") and not shown_as(1.3e6, "1.22M")


def weights(row):
    """The slides count weights only: a row's parameters less its bias (one per output channel)."""
    return row.params - row.output_shape[0]


# ---- the slides' AlexNet column (224x224, 3 channels; weights only, MACs) ------------------------
def test_alexnet_table(no_random_init):
    s = summary(get_model("alexnet", num_classes=1000, in_channels=3), (3, 224, 224))
    convs = [r for r in s.rows if r.kind == "Conv2d"]
    dense = [r for r in s.rows if r.kind == "Linear"]
    assert [r.output_shape for r in convs] == [(96, 54, 54), (256, 26, 26), (384, 12, 12),
                                               (384, 12, 12), (256, 12, 12)]
    # exact arithmetic: k*k*c_in*c_out weights, times the output pixels for the MACs
    assert weights(convs[0]) == 11 * 11 * 3 * 96 and convs[0].macs == 11 * 11 * 3 * 96 * 54 * 54
    assert weights(convs[1]) == 5 * 5 * 96 * 256 and convs[1].macs == 5 * 5 * 96 * 256 * 26 * 26
    assert weights(dense[0]) == 6400 * 4096 == dense[0].macs
    conv35_w = sum(weights(r) for r in convs[2:])
    conv35_m = sum(r.macs for r in convs[2:])
    table = [  # name, weights, MACs, the slides' figures
        ("conv1", weights(convs[0]), convs[0].macs, "35K", "101M"),
        ("conv2", weights(convs[1]), convs[1].macs, "614K", "415M"),
        ("conv3-5", conv35_w, conv35_m, "3M", "445M"),
        ("dense1", weights(dense[0]), dense[0].macs, "26M", "26M"),
        ("dense2", weights(dense[1]), dense[1].macs, "16M", "16M"),
    ]
    for name, w, macs, w_text, m_text in table:
        assert shown_as(w, w_text), f"{name}: {w} weights, the slides say {w_text}"
        assert shown_as(macs, m_text), f"{name}: {macs} MACs, the slides say {m_text}"
    # the totals row adds up the rows above it (the 1000-way output layer is not among them)
    total_w = sum(weights(r) for r in convs + dense[:2])
    total_m = sum(r.macs for r in convs + dense[:2])
    assert shown_as(total_w, "46M") and shown_as(total_m, "1G") and shown_as(s.total_macs, "1G")


def test_alexnet_lrn_adds_no_parameters(no_random_init):
    plain = summary(get_model("alexnet", num_classes=1000, in_channels=3), (3, 224, 224))
    lrn = summary(get_model("alexnet", num_classes=1000, in_channels=3, lrn=True), (3, 224, 224))
    assert [r.kind for r in lrn.rows].count("LocalResponseNorm") == 2
    assert (lrn.total_params, lrn.total_macs) == (plain.total_params, plain.total_macs)


# ---- Inception vs a 3x3 and a 5x5 convolution at 192 -> 256 channels, 28x28 ----------------------
@pytest.mark.parametrize("what, make, w_text, m_text", [
    ("inception", lambda: Inception(192, 64, (96, 128), (16, 32), 32), "0.16M", "128M"),
    ("3x3", lambda: nn.Conv2d(192, 256, 3, padding=1), "0.44M", "346M"),
    ("5x5", lambda: nn.Conv2d(192, 256, 5, padding=2), "1.22M", "963M"),
])
def test_inception_table(what, make, w_text, m_text):
    s = summary(make(), (192, 28, 28))
    assert s.output_shape == (256, 28, 28)
    convs = [r for r in s.rows if r.kind == "Conv2d"]
    w = sum(weights(r) for r in convs)
    assert shown_as(w, w_text), f"{what}: {w} weights, the slides say {w_text}"
    assert shown_as(s.total_macs, m_text), f"{what}: {s.total_macs} MACs, the slides say {m_text}"
    if what == "inception":
        assert w == 192 * 64 + 192 * 96 + 9 * 96 * 128 + 192 * 16 + 25 * 16 * 32 + 192 * 32
        assert s.total_macs == w * 28 * 28  # every path keeps 28x28; the pool adds no MACs


# ---- LeNet: the slides' 16x5x5x120 = 48k, and the right LeNet column -----------------------------
def test_lenet_counts():
    s = summary(get_model("lenet"), (1, 28, 28))
    convs = [r for r in s.rows if r.kind == "Conv2d"]
    dense = [r for r in s.rows if r.kind == "Linear"]
    assert dense[0].output_shape == (120,)
    assert weights(dense[0]) == 16 * 5 * 5 * 120 == 48_000 == dense[0].macs
    assert shown_as(weights(dense[0]), "48k")
    got = [(weights(r), r.macs) for r in convs + dense]
    assert got == [(150, 150 * 28 * 28), (2400, 2400 * 10 * 10), (48_000, 48_000),
                   (10_080, 10_080), (840, 840)]
    assert s.total_params == 61_706 and s.total_macs == 416_520
    # The slides' LeNet column shows 150 and 2.4K weights for the convolutions (right) but
    # 1.2M, 2.4M, 0.48M, 0.1M FLOP and 0.48M, 0.1M dense weights: ten times the arithmetic.
    slides_flop = ["1.2M", "2.4M", "0.48M", "0.1M"]
    for (w, macs), text in zip(got, slides_flop):
        assert shown_as(10 * macs, text) and not shown_as(macs, text)
    assert shown_as(10 * weights(dense[0]), "0.48M") and shown_as(10 * weights(dense[1]), "0.1M")
    assert shown_as(10 * s.total_macs, "4M") and shown_as(s.total_macs, "0.4M")


def test_vgg_last_layer(no_random_init):
    s = summary(get_model("vgg16", num_classes=1000, in_channels=3), (3, 224, 224))
    r = s["classifier.0"]
    assert r.kind == "Linear" and r.output_shape == (4096,)
    assert weights(r) == 512 * 7 * 7 * 4096 == r.macs
    assert shown_as(weights(r), "102M")
    assert s["avgpool"].output_shape == (512, 7, 7)


# ---- torchvision's published parameter counts and GFLOPS (which are GMACs) -----------------------
@pytest.mark.parametrize("name, params, gmacs", [
    ("resnet18", 11_689_512, 1.814), ("resnet50", 25_557_032, 4.089),
    ("vgg16", 138_357_544, 15.47), ("densenet121", 7_978_856, 2.834),
    ("resnet34", 21_797_672, 3.664), ("resnet101", 44_549_160, 7.801),
    ("resnet152", 60_192_808, 11.514), ("resnext50", 25_028_904, 4.23),
    ("vgg11", 132_863_336, 7.609), ("vgg19", 143_667_240, 19.632),
])
def test_torchvision_totals(no_random_init, name, params, gmacs):
    model = get_model(name, num_classes=1000, in_channels=3)
    s = summary(model, (3, 224, 224))
    assert s.total_params == params
    assert abs(s.total_macs / 1e9 - gmacs) / gmacs < 0.03
    # in fact torchvision's GFLOPS are these MACs, to the digits it publishes
    decimals = len(str(gmacs).split(".")[1])
    assert round(s.total_macs / 1e9, decimals) == gmacs
    assert s.output_shape == (1000,)


@pytest.mark.parametrize("name, params, mmacs", [
    ("mobilenet", 4.2e6, 569), ("shufflenet", None, 140), ("se-resnet50", 28.09e6, None),
])
def test_paper_totals(no_random_init, name, params, mmacs):
    """The papers' figures: MobileNet 4.2M parameters and 569M mult-adds; ShuffleNet 1x (g=3)
    140M FLOPs (mult-adds); SE-ResNet-50 28.09M parameters."""
    s = summary(get_model(name, num_classes=1000, in_channels=3), (3, 224, 224))
    if params:
        assert abs(s.total_params - params) / params < 0.01
    if mmacs:
        assert abs(s.total_macs / 1e6 - mmacs) / mmacs < 0.03


# ---- the mechanics of the shape-only pass --------------------------------------------------------
def test_summary_runs_no_convolution_or_dense_kernel(monkeypatch, no_random_init):
    """The pass never calls the compute kernels, so a 20-GMAC VGG-19 costs milliseconds."""
    import divenet.functional as F

    def refuse(*a, **k):
        raise AssertionError("summary ran a full computation")
    for fn in ("conv2d", "linear", "max_pool2d", "batch_norm", "relu", "adaptive_avg_pool2d"):
        monkeypatch.setattr(F, fn, refuse)
    s = summary(get_model("vgg19", num_classes=1000, in_channels=3), "3x224x224")
    assert round(s.total_macs / 1e9, 2) == 19.63
    s = summary(get_model("resnet50", num_classes=1000, in_channels=3), (3, 224, 224))
    assert s.total_params == 25_557_032


def test_rows_columns_and_table():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8 * 4 * 4, 5))
    s = summary(model, (3, 8, 8))
    assert [(r.name, r.kind, r.output_shape, r.params, r.macs) for r in s.rows] == [
        ("0", "Conv2d", (8, 8, 8), 3 * 8 * 9 + 8, 8 * 8 * 8 * 3 * 9),
        ("1", "BatchNorm2d", (8, 8, 8), 16, 0),
        ("2", "ReLU", (8, 8, 8), 0, 0),
        ("3", "MaxPool2d", (8, 4, 4), 0, 0),
        ("4", "Flatten", (128,), 0, 0),
        ("5", "Dropout", (128,), 0, 0),
        ("6", "Linear", (5,), 128 * 5 + 5, 128 * 5),
    ]
    assert s.total_params == 224 + 16 + 645 == model.num_parameters()
    assert s.total_macs == 13824 + 640
    text = str(s)
    for piece in ("Layer", "Kind", "Output shape", "Params", "MACs", "Conv2d", "(8, 4, 4)",
                  "13,824", "Total params: 885", "Total MACs:   14,464"):
        assert piece in text, piece
    assert len([line for line in text.splitlines() if line.startswith(("0 ", "6 "))]) == 2


def test_shapes_match_the_kernels_for_awkward_geometry():
    """Ceil-mode and padded pooling, dilation, 'same' padding, groups, strides and adaptive
    pooling: the summary's shapes equal those of a real forward."""
    layers = [nn.Conv2d(4, 8, 3, stride=2, padding=1, dilation=2), nn.MaxPool2d(3, 2, ceil_mode=True),
              nn.Conv2d(8, 8, 3, padding="same", groups=4), nn.AvgPool2d(3, 2, padding=1, ceil_mode=True),
              nn.Conv2d(8, 6, (1, 3), stride=(1, 2)), nn.AdaptiveAvgPool2d((3, None)),
              nn.MaxPool2d(2, padding=1, dilation=1), nn.AdaptiveMaxPool2d(2)]
    x = dn.randn(1, 4, 23, 19)
    for i in range(1, len(layers) + 1):
        model = nn.Sequential(*layers[:i])
        assert summary(model, (4, 23, 19)).output_shape == tuple(model(x).shape[1:]), layers[i - 1]
    s = summary(nn.Sequential(*layers), (4, 23, 19))
    grouped = s.rows[2]
    assert grouped.macs == math.prod(grouped.output_shape) * (8 // 4) * 9


def test_depthwise_and_sequence_dense_macs():
    s = summary(nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), (32, 8, 8))
    assert (s.total_params, s.total_macs) == (32 * 9, 32 * 8 * 8 * 9)
    s = summary(nn.Linear(16, 4), (7, 16))  # (T, features): one dense product per step
    assert s.output_shape == (7, 4) and s.total_macs == 7 * 16 * 4


def test_lazy_layers_are_materialized():
    model = nn.Sequential(nn.Conv2d(None, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(None, 10))
    s = summary(model, (3, 10, 10))
    assert s.total_params == (3 * 9 * 8 + 8) + (8 * 8 * 8 * 10 + 10) == model.num_parameters()
    assert not model.uninitialized()


def test_model_state_and_mode_are_left_alone():
    model = get_model("lenet-bn")
    model.train()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    summary(model, (1, 28, 28))
    assert all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert "forward" not in vars(model[0])
    model.eval()
    summary(model, (1, 28, 28))
    assert not any(m.training for m in model.modules())


class _Scale(nn.Module):
    """A composite with a parameter of its own, a submodule called twice and one never called."""

    def __init__(self):
        self.alpha = nn.Parameter(np.ones(1, dtype=np.float32))
        self.conv = nn.Conv2d(4, 4, 1)
        self.spare = nn.Linear(3, 3)

    def forward(self, x):
        return self.conv(self.conv(x)) * self.alpha


class _Odd(nn.Module):
    """A leaf layer the summary has no rule for: it runs for real at batch 1."""

    def __init__(self):
        self.w = nn.Parameter(np.ones(4, dtype=np.float32))

    def forward(self, x):
        return x[:, :, ::2, ::2] * self.w.reshape(1, 4, 1, 1)


def test_shared_composite_and_unknown_layers():
    model = nn.Sequential(_Scale(), _Odd(), nn.Conv2d(4, 2, 1))
    s = summary(model, (4, 6, 6))
    names = [(r.name, r.kind, r.output_shape, r.params) for r in s.rows]
    assert names[:2] == [("0.conv", "Conv2d", (4, 6, 6), 20), ("0.conv", "Conv2d", (4, 6, 6), 0)]
    assert ("1", "_Odd", (4, 3, 3), 4) in names
    assert ("0", "_Scale", None, 1) in names and ("0.spare", "Linear", None, 12) in names
    assert s.total_params == model.num_parameters() == 20 + 1 + 4 + 10 + 12
    assert s.total_macs == 2 * 4 * 36 * 4 + 2 * 9 * 4
    assert s.output_shape == (2, 3, 3)


def test_parse_shape_and_errors():
    assert parse_shape("3x224x224") == (3, 224, 224) == parse_shape("3,224,224")
    with pytest.raises(ValueError, match="3x224x224"):
        parse_shape("3xabc")
    with pytest.raises(ValueError, match="without the batch axis"):
        summary(nn.ReLU(), (0, 4))
    with pytest.raises(ValueError, match=r"Linear: input \(1, 12\) has 12 features but the layer expects 10"):
        summary(nn.Linear(10, 2), (12,))


def test_skip_init_restores_the_initializers():
    original = nn.init.uniform_
    with skip_init():
        assert nn.init.uniform_ is not original
        lazy = nn.Linear(4, 3)
    assert nn.init.uniform_ is original
    dn.manual_seed(0)
    a = nn.Linear(4, 3).weight.numpy()
    dn.manual_seed(0)
    b = nn.Linear(4, 3).weight.numpy()
    assert np.array_equal(a, b) and np.abs(a).max() <= 0.5 and np.unique(a).size == 12
    assert summary(lazy, (4,)).total_params == 15


# ---- recurrent layers and embeddings: formulas, not a forward on garbage weights -----------------
def _shapes(obj):
    """The nested structure of a layer's result, with each Tensor replaced by its shape."""
    if isinstance(obj, (tuple, list)):
        return tuple(_shapes(o) for o in obj)
    return tuple(obj.shape)


class _Probe(nn.Module):
    """Feeds ``layer`` the summary's (1, prod(shape)) input reshaped to ``shape`` (so the batch,
    time and feature axes are the test's choice), with an initial state of ``state`` shapes if
    given; keeps the layer's whole result and returns its first Tensor."""

    def __init__(self, layer, shape, state=None):
        self.layer, self.shape, self.state = layer, shape, state

    def forward(self, x):
        hx = None
        if self.state is not None:
            hx = tuple(dn.zeros(*s) for s in self.state) if isinstance(self.state[0], tuple) \
                else dn.zeros(*self.state)
        self.result = self.layer(x.reshape(*self.shape), hx) if hx is not None \
            else self.layer(x.reshape(*self.shape))
        first = self.result
        while isinstance(first, tuple):
            first = first[0]
        return first


def _summary_and_real(layer, shape, state=None):
    probe = _Probe(layer, shape, state)
    s = summary(probe, (math.prod(shape),))
    seen = _shapes(probe.result)
    probe.result = None
    probe(dn.randn(1, math.prod(shape)))
    return s, seen, _shapes(probe.result)


def _recurrent_macs(gates, I, H, layers, D, T, N):
    return sum(gates * H * ((I if k == 0 else D * H) + H) for k in range(layers)) * D * T * N


_RECURRENT = {"RNN": (nn.RNN, 1), "LSTM": (nn.LSTM, 4), "GRU": (nn.GRU, 3)}


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("num_layers, bidirectional, batch_first", [
    (1, False, False), (2, False, False), (1, True, False), (2, True, True), (1, False, True),
    (2, True, False),
])
def test_recurrent_shapes_and_macs(kind, num_layers, bidirectional, batch_first):
    cls, gates = _RECURRENT[kind]
    T, N, I, H = 5, 3, 4, 6
    D = 2 if bidirectional else 1
    dn.manual_seed(0)
    layer = cls(I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    shape = (N, T, I) if batch_first else (T, N, I)
    s, ours, real = _summary_and_real(layer, shape)
    assert ours == real
    out = (N, T, D * H) if batch_first else (T, N, D * H)
    state = (num_layers * D, N, H)
    assert real == ((out, (state, state)) if kind == "LSTM" else (out, state))
    row = s["layer"]
    assert row.kind == kind and row.output_shape == (T, D * H)
    assert row.macs == _recurrent_macs(gates, I, H, num_layers, D, T, N)
    assert row.params == layer.num_parameters() == s.total_params
    assert all(r.output_shape is not None for r in s.rows)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("unbatched", [False, True])
def test_recurrent_with_initial_state_and_unbatched(kind, unbatched):
    cls, gates = _RECURRENT[kind]
    T, N, I, H, L = 4, 2, 3, 5, 2
    layer = cls(I, H, num_layers=L, bidirectional=True)
    shape = (T, I) if unbatched else (T, N, I)
    st = (2 * L, H) if unbatched else (2 * L, N, H)
    state = (st, st) if kind == "LSTM" else st
    s, ours, real = _summary_and_real(layer, shape, state)
    assert ours == real
    assert real[0] == ((T, 2 * H) if unbatched else (T, N, 2 * H))
    assert s["layer"].output_shape == (T, 2 * H)
    assert s["layer"].macs == _recurrent_macs(gates, I, H, L, 2, T, 1 if unbatched else N)


@pytest.mark.parametrize("cls, gates", [(nn.RNNCell, 1), (nn.LSTMCell, 4), (nn.GRUCell, 3)])
@pytest.mark.parametrize("shape", [(3, 4), (4,)])
@pytest.mark.parametrize("with_state", [False, True])
def test_cells(cls, gates, shape, with_state):
    I, H = 4, 7
    layer = cls(I, H)
    st = None
    if with_state:
        st = shape[:-1] + (H,)
        st = (st, st) if cls is nn.LSTMCell else st
    s, ours, real = _summary_and_real(layer, shape, st)
    assert ours == real
    assert s["layer"].output_shape == (H,)
    assert s["layer"].macs == gates * H * (I + H) * (shape[0] if len(shape) == 2 else 1)


def test_recurrent_errors_name_the_layer_and_shapes():
    with pytest.raises(ValueError, match=r"LSTM: input has 5 features \(shape \(1, 3, 5\)\) but input_size=4"):
        summary(nn.LSTM(4, 6), (3, 5))
    with pytest.raises(ValueError, match=r"GRU: expected hidden state h_0 of shape \(2, 1, 6\).*got \(1, 1, 6\)"):
        summary(_Probe(nn.GRU(4, 6, num_layers=2), (3, 1, 4), (1, 1, 6)), (12,))
    with pytest.raises(ValueError, match=r"GRUCell: input \(1, 5\) has 5 features but input_size=4"):
        summary(nn.GRUCell(4, 6), (5,))
    with pytest.raises(ValueError, match=r"LSTMCell: expected c of shape \(2, 6\) for input \(2, 4\), got \(2, 5\)"):
        summary(_Probe(nn.LSTMCell(4, 6), (2, 4), ((2, 6), (2, 5))), (8,))


def test_recurrent_summary_runs_no_recurrent_kernel(monkeypatch):
    import divenet.functional as F

    def refuse(*a, **k):
        raise AssertionError("summary ran a recurrent kernel")
    for fn in ("rnn", "lstm", "gru", "rnn_cell", "lstm_cell", "gru_cell", "embedding"):
        monkeypatch.setattr(F, fn, refuse)
    for name, gates in (("lstm", 4), ("gru", 3)):
        s = summary(get_model(name), (1, 28, 28))
        assert s.total_macs == gates * 128 * (28 + 128) * 28 + 128 * 10
    s = summary(get_model("charlm", num_classes=30, embed_dim=8, hidden_size=16), (12,), dtype=np.int64)
    assert s.output_shape == (12, 30)


@pytest.mark.parametrize("name, shape, dtype", [
    ("lstm", (1, 28, 28), np.float32), ("gru", (1, 28, 28), np.float32),
    ("charlm", (64,), np.int64),
])
def test_recurrent_zoo_summaries_are_complete_and_quiet(no_random_init, name, shape, dtype):
    """Every row has an output shape (no layer falls back to a real forward on the never
    initialized weights, which used to overflow in the kernels), no warning is raised, and the
    totals are what the model holds."""
    model = get_model(name, num_classes=10 if name != "charlm" else 65, in_channels=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summary(model, shape, dtype=dtype)
    assert [r.name for r in s.rows if r.output_shape is None] == []
    assert s.total_params == model.num_parameters() == sum(int(p.array.size) for p in model.parameters())
    H = 128 if name != "charlm" else 256
    T = shape[-1] if name != "charlm" else shape[0]
    I = 28 if name != "charlm" else 64
    gates = 3 if name == "gru" else 4
    rnn_row = s.rows[1] if name == "charlm" else s.rows[0]
    assert rnn_row.kind == ("GRU" if name == "gru" else "LSTM")
    assert rnn_row.output_shape == (T, H) and rnn_row.macs == gates * H * (I + H) * T
    if name == "charlm":
        assert (s.rows[0].kind, s.rows[0].macs, s.rows[0].params) == ("Embedding", 0, 65 * 64)
        assert s.output_shape == (T, 65)
    else:
        assert s.output_shape == (10,)


def test_embedding_rule():
    s = summary(nn.Embedding(20, 5), (3, 4), dtype=np.int64)
    real = nn.Embedding(20, 5)(dn.tensor(np.zeros((1, 3, 4), dtype=np.int64)))
    assert s.output_shape == tuple(real.shape[1:]) == (3, 4, 5)
    assert (s.total_macs, s.total_params) == (0, 100)
    # the lookup gives floats (the table's dtype), so the layer after it sees float32
    probe = _Probe(nn.Embedding(20, 5), (1, 3))
    s = summary(nn.Sequential(probe, nn.Linear(5, 2)), (3,), dtype=np.int64)
    assert s.output_shape == (3, 2) and s.total_macs == 3 * 5 * 2
    assert probe.result.dtype == np.float32 == probe(dn.tensor(np.zeros((1, 3), np.int64))).dtype
