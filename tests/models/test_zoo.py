"""Every zoo model: a forward at a small size gives (N, num_classes), every leaf layer's real
output shape equals the summary's, one SGD step lowers the loss on a fixed batch, and the
summary's parameter total equals what the model holds."""
from __future__ import annotations

import numpy as np
import pytest

import divenet as dn
import divenet.functional as F
from divenet.models import get_model, get_spec, list_models
from divenet.models.googlenet import Inception
from divenet.optim import SGD
from divenet.summary import skip_init, summary

# name -> (builder kwargs that keep it small, in_channels, input side, num_classes, SGD lr)
SMALL = {
    "lenet": ({}, 1, 28, 10, 0.1),
    "lenet-bn": ({}, 1, 28, 10, 0.1),
    "alexnet": ({"width": 0.125, "hidden": 64}, 1, 65, 10, 0.01),
    "vgg11": ({"ratio": 16, "hidden": 32}, 3, 32, 7, 0.01),
    "vgg13": ({"ratio": 16, "hidden": 32, "batch_norm": True}, 1, 32, 10, 0.01),
    "vgg16": ({"ratio": 16, "hidden": 32}, 1, 32, 10, 0.01),
    "vgg19": ({"ratio": 16, "hidden": 32}, 1, 32, 10, 0.01),
    "vgg11-slim": ({"ratio": 16, "hidden": 32}, 1, 32, 10, 0.01),
    "nin": ({"width": 0.125}, 1, 67, 10, 0.01),
    "googlenet": ({}, 3, 32, 10, 0.01),
    "inception-bn": ({}, 1, 128, 10, 0.01),
    "lstm": ({"hidden_size": 16}, 1, 28, 10, 0.1),
    "gru": ({"hidden_size": 16}, 1, 28, 10, 0.1),  # at batch 2, BN over 2x2 maps is too stiff for one step
    "resnet18": ({"widths": (8, 16, 32, 64)}, 3, 64, 10, 0.01),
    "resnet34": ({"widths": (8, 16, 32, 64)}, 1, 64, 10, 0.01),
    "resnet50": ({"widths": (8, 16, 32, 64)}, 1, 64, 10, 0.01),
    "resnet101": ({"widths": (4, 8, 16, 32)}, 1, 64, 10, 0.01),
    "resnet152": ({"widths": (4, 8, 16, 32)}, 1, 64, 10, 0.01),
    "resnext50": ({"widths": (16, 32, 64, 128)}, 1, 64, 10, 0.01),
    "se-resnet18": ({"widths": (16, 16, 32, 64)}, 1, 64, 10, 0.01),
    "se-resnet50": ({"widths": (8, 16, 32, 64)}, 1, 64, 10, 0.01),
    "resnet18-d2l": ({"widths": (8, 16, 32, 64)}, 1, 64, 10, 0.01),
    "resnet18-small": ({"widths": (8, 16, 32, 64)}, 1, 28, 10, 0.01),
    "densenet": ({"growth_rate": 8, "stem_channels": 16}, 1, 64, 10, 0.01),
    "densenet121": ({"growth_rate": 8, "num_init_features": 16, "bn_size": 2}, 3, 64, 10, 0.01),
    "mobilenet": ({"width": 0.25}, 1, 64, 10, 0.01),
    "shufflenet": ({"width": 0.25}, 1, 64, 10, 0.01),
}
BATCH = 2
# Nets with batch norm get inputs whose last feature maps are at least 2x2: batch norm over the
# 2 values of a 1x1 map at batch 2 makes every output +-1 and the loss too stiff for a fixed lr.
ZOO = [n for n in list_models() if get_spec(n).kind == "image"]


def test_every_image_model_has_a_small_configuration():
    missing = sorted(set(ZOO) - set(SMALL))
    assert not missing, f"add a small test configuration for {missing}"
    required = {"lenet", "lenet-bn", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "nin", "googlenet",
                "inception-bn", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                "resnext50", "densenet", "densenet121", "se-resnet18", "se-resnet50", "mobilenet",
                "shufflenet"}
    assert required <= set(ZOO), f"missing from the zoo: {sorted(required - set(ZOO))}"


def _batch(in_channels, side, num_classes, seed=0, device="cpu"):
    rng = np.random.default_rng(seed)
    x = dn.tensor(rng.standard_normal((BATCH, in_channels, side, side)).astype(np.float32), device=device)
    y = dn.tensor(rng.integers(0, num_classes, BATCH).astype(np.int64), device=device)
    return x, y


def _real_leaf_shapes(model, x):
    """Run the real forward, recording (module path, output shape without batch) per leaf call."""
    paths = {id(m): p for p, m in model.named_modules()}
    seen, patched = [], []
    for m in model.modules():
        if any(True for _ in m.named_children()):
            continue
        original = m.forward

        def forward(*args, _m=m, _f=original, **kw):
            out = _f(*args, **kw)
            shown = out
            if isinstance(out, tuple):  # recurrent layers: (output, state); the summary shows
                shown = out[0]           # the output sequence without its batch axis
                if getattr(_m, "batch_first", True) is False and shown.ndim == 3:
                    shown = shown.permute(1, 0, 2)  # time-major (T, N, F) -> (N, T, F)
            if hasattr(shown, "shape"):
                seen.append((paths[id(_m)], tuple(shown.shape[1:])))
            return out
        m.forward = forward
        patched.append(m)
    try:
        out = model(x)
    finally:
        for m in patched:
            del m.__dict__["forward"]
    return out, seen


@pytest.mark.parametrize("name", ZOO)
def test_forward_summary_and_one_sgd_step(name, device):
    kwargs, cin, side, classes, lr = SMALL[name]
    dn.manual_seed(0)
    model = get_model(name, num_classes=classes, in_channels=cin, **kwargs).to(device)
    x, y = _batch(cin, side, classes, device=device)

    # the summary's totals are what the model holds, and its shapes are what the kernels produce
    s = summary(model, (cin, side, side))
    held = sum(int(p.array.size) for p in model.parameters())
    assert s.total_params == held
    assert s.output_shape == (classes,)

    model.train()
    dn.manual_seed(1)  # the same dropout masks for both losses
    out, seen = _real_leaf_shapes(model, x)
    assert tuple(out.shape) == (BATCH, classes)
    assert out.dtype == np.float32
    assert [(r.name, r.output_shape) for r in s.rows if r.output_shape is not None] == seen

    loss = F.cross_entropy(out, y)
    assert np.isfinite(loss.item())
    opt = SGD(model.parameters(), lr=lr)
    opt.zero_grad()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    opt.step()
    dn.manual_seed(1)
    with dn.no_grad():
        after = F.cross_entropy(model(x), y).item()
    assert after < loss.item(), f"{name}: loss {loss.item():.6f} -> {after:.6f}"


def test_builders_take_in_channels_and_num_classes_at_the_recipe_size():
    """The D2L recipe size (96x96 here) with 3 input channels and 1000 classes, via the summary."""
    for name in ("googlenet", "resnet18-d2l", "densenet"):
        spec = get_spec(name)
        assert spec.recipe.resize == 96
        model = get_model(name, num_classes=1000, in_channels=3)
        assert summary(model, (3, 96, 96)).output_shape == (1000,)


def test_d2l_recipes():
    expect = {"alexnet": (0.01, 224), "vgg11-slim": (0.05, 224), "nin": (0.1, 224),
              "googlenet": (0.1, 96), "resnet18-d2l": (0.05, 96), "densenet": (0.1, 96),
              "lenet": (0.9, None), "lenet-bn": (1.0, None)}
    for name, (lr, resize) in expect.items():
        r = get_spec(name).recipe
        assert (r.lr, r.resize, r.epochs) == (lr, resize, 10), name


def test_inception_block_channels_and_shapes():
    block = Inception(192, 64, (96, 128), (16, 32), 32)
    x = dn.randn(2, 192, 6, 6)
    out = block(x)
    assert tuple(out.shape) == (2, 256, 6, 6)
    assert block.out_channels == 256
    # each path's channels sit where D2L's concatenation puts them
    np.testing.assert_allclose(out.numpy()[:, :64], block.p1(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(out.numpy()[:, 224:], block.p4(x).numpy(), rtol=1e-6)


def test_googlenet_stage_shapes_at_96():
    """D2L's shape walk: 96x96 -> b1 (64, 24, 24) -> b2 (192, 12, 12) -> b3 (480, 6, 6) ->
    b4 (832, 3, 3) -> b5 (1024,)."""
    s = summary(get_model("googlenet"), (1, 96, 96))
    last = {}
    for r in s.rows:
        last[r.name.split(".")[0]] = r.output_shape
    assert last["0"] == (64, 24, 24)
    assert last["1"] == (192, 12, 12)
    assert last["2"] == (480, 6, 6)
    assert last["3"] == (832, 3, 3)
    assert last["4"] == (1024,)
    assert s.output_shape == (10,)


def test_torchvision_state_dict_names():
    """Key names follow torchvision's, so its weights load by name."""
    keys = set(get_model("resnet18", num_classes=1000, in_channels=3, widths=(8, 16, 32, 64)).state_dict())
    for k in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
              "layer2.0.downsample.1.num_batches_tracked", "fc.weight", "fc.bias"):
        assert k in keys, k
    keys = set(get_model("densenet121", growth_rate=4, num_init_features=8, bn_size=1).state_dict())
    for k in ("features.conv0.weight", "features.denseblock1.denselayer1.norm1.weight",
              "features.denseblock4.denselayer16.conv2.weight", "features.transition3.conv.weight",
              "features.norm5.bias", "classifier.weight"):
        assert k in keys, k
    keys = set(get_model("vgg16", ratio=32, hidden=8).state_dict())
    assert {"features.0.weight", "features.28.weight", "classifier.0.weight", "classifier.6.bias"} <= keys


def test_errors_name_the_layer_and_shapes():
    model = get_model("alexnet", width=0.125, hidden=16)
    with pytest.raises(ValueError, match=r"^5 \(MaxPool2d\).*input \(1, 32, 2, 2\)"):
        summary(model, (1, 28, 28))
    with pytest.raises(ValueError, match="groups must be one of"):
        get_model("shufflenet", groups=5)
    with pytest.raises(ValueError, match="unknown model 'resnet19'"):
        get_model("resnet19")
    model = get_model("resnet18", widths=(8, 16, 32, 64))
    with pytest.raises(ValueError, match=r"conv1 \(Conv2d\).*3 channels"):
        summary(model, (3, 32, 32))


def test_squeeze_excite_scales_channels():
    from divenet.models.resnet import SqueezeExcite

    se = SqueezeExcite(32, reduction=16)
    x = dn.randn(2, 32, 4, 4)
    out = se(x).numpy()
    gate = out / x.numpy()
    # one gate per (example, channel), the same at every pixel, inside (0, 1)
    np.testing.assert_allclose(gate, gate[:, :, :1, :1] * np.ones((1, 1, 4, 4)), rtol=1e-4)
    assert (gate > 0).all() and (gate < 1).all()
    assert sum(p.array.size for p in se.parameters()) == 32 * 2 + 2 + 32 * 2 + 32


@pytest.mark.parametrize("name", ZOO)
def test_summary_at_the_registered_input_size(name):
    """``ModelSpec.input_size`` is the smallest side the design is meant for: the size its total
    stride brings down to a 1x1 map (32 for the stride-32 nets, 8 for resnet18-small), or the
    smallest the unpadded pools allow (AlexNet 65, NiN 67); LeNet needs exactly 28. The shape
    pass goes through at that size with the full-width model."""
    side = get_spec(name).input_size
    with skip_init():
        model = get_model(name, num_classes=10, in_channels=1)
    s = summary(model, (1, side, side))
    assert s.output_shape == (10,)
    assert s.total_params == model.num_parameters()
