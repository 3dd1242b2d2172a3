"""dn.compile equals eager mode for every zoo model: in training (the loss, every parameter's
gradient, the parameters after one SGD step, batch norm's running statistics, bit for bit: the
replay runs the same kernels in the same order), with the default passes, again without
``fuse_bn_relu`` (its fused batch norm + ReLU does the unfused ops' arithmetic, so both are bit
for bit) and with ``recompute="sqrt"``, and in eval mode (within 1e-5: batch norm is folded into the convolutions there)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import divenet as dn
import divenet.functional as F
from divenet.compile import PASSES
from divenet.models import get_model, get_spec, list_models
from divenet.optim import SGD
from tests.models.test_zoo import SMALL

# builder kwargs and input side: the zoo tests' small configurations, at the smallest side the
# design is meant for (its registered input size) where that is smaller, to keep this fast
SIDES = {"inception-bn": 32, "alexnet": 65, "nin": 67}


def _pair(name, device="cpu"):
    if name == "charlm":
        build = lambda: get_model("charlm", num_classes=12, hidden_size=16, embed_dim=8)  # noqa: E731
        rng = np.random.default_rng(0)
        x = dn.tensor(rng.integers(0, 12, (2, 5)), device=device)
        y = dn.tensor(rng.integers(0, 12, (2, 5)), device=device)
        return build, x, y, lambda out, y: F.cross_entropy(out.reshape(-1, 12), y.reshape(-1))
    kwargs, cin, side, classes, _ = SMALL[name]
    side = min(side, SIDES.get(name, get_spec(name).input_size if name not in ("lstm", "gru") else side))
    side = max(side, get_spec(name).input_size)
    rng = np.random.default_rng(0)
    x = dn.tensor(rng.standard_normal((2, cin, side, side)).astype(np.float32), device=device)
    y = dn.tensor(rng.integers(0, classes, 2), device=device)
    build = lambda: get_model(name, num_classes=classes, in_channels=cin, **kwargs)  # noqa: E731
    return build, x, y, F.cross_entropy


UNFUSED = tuple(p for p in PASSES if p != "fuse_bn_relu")


HOWS = ("", " (without fuse_bn_relu)", " (recompute='sqrt')")


def _models(build, device):
    """The eager model, a compiled twin with the default passes, one without fusion and one
    that recomputes."""
    out = []
    for passes, recompute in ((None, None), (None, None), (UNFUSED, None), (None, "sqrt")):
        dn.manual_seed(0)
        m = build().to(device)
        out.append(m if not out else dn.compile(m, passes=passes, recompute=recompute))
    return out


def _train_steps(model, x, y, loss_fn, steps):
    out = []
    for step in range(steps):
        dn.manual_seed(100 + step)  # the same dropout masks in both modes
        model.train()
        loss = loss_fn(model(x), y)
        for p in model.parameters():
            p.grad = None
        loss.backward()
        grads = [p.grad.numpy() for p in model.parameters()]
        SGD(model.parameters(), lr=0.01).step()
        out.append((loss.numpy(), grads))
    return out


def _perturb_stats(*models):
    """The same random running statistics in each model, so that folding batch norm into the
    convolutions is checked with stats that are not the initial (0, 1)."""
    rng = np.random.default_rng(1)
    for (name, t), *twins in zip(*(m.named_buffers() for m in models)):
        if name.endswith("running_mean") or name.endswith("running_var"):
            v = rng.uniform(0.5, 1.5, t.shape) if name.endswith("var") else rng.normal(0, 0.1, t.shape)
            for u in (t, *(b for _, b in twins)):
                u.array[...] = dn.tensor(v.astype(np.float32), device=u.device).array


def check_equal(name, device="cpu"):
    build, x, y, loss_fn = _pair(name, device)
    eager, *twins = _models(build, device)
    _perturb_stats(eager, *twins)
    compiled = twins[0]
    eager.eval()
    compiled.eval()
    with dn.no_grad():
        for _ in range(2):  # the trace, then a replay
            ea, eb = eager(x).numpy(), compiled(x).numpy()
            assert np.isfinite(ea).all(), f"{name}: eval output"
            scale = float(np.abs(ea).max())
            np.testing.assert_allclose(eb, ea, rtol=1e-5, atol=1e-5 * scale, err_msg=f"{name}: eval output")
    # training: step 0 traces (it runs eagerly), step 1 replays the graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dn.compile.RecompileWarning)  # train is a new signature
        a = _train_steps(eager, x, y, loss_fn, 2)
        bs = [_train_steps(c, x, y, loss_fn, 2) for c in twins]
    assert compiled.traces == 2
    assert all(np.isfinite(loss) for loss, _ in a), f"{name}: the losses {[loss for loss, _ in a]}"
    for twin, b, how in zip(twins, bs, HOWS):
        for step, ((la, ga), (lb, gb)) in enumerate(zip(a, b)):
            np.testing.assert_array_equal(la, lb, err_msg=f"{name}{how}: loss at step {step}")
            for (n, _), u, v in zip(eager.named_parameters(), ga, gb):
                np.testing.assert_array_equal(u, v, err_msg=f"{name}{how}: gradient of {n} at step {step}")
        for (n, p), (m, q) in zip(list(eager.named_parameters()) + list(eager.named_buffers()),
                                  list(twin.named_parameters()) + list(twin.named_buffers())):
            assert n == m
            np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=f"{name}{how}: {n} after the SGD steps")


ZOO = list_models()


@pytest.mark.parametrize("name", ZOO)
def test_compiled_equals_eager(name):
    check_equal(name)


@pytest.mark.parametrize("name", ["lenet-bn", "resnet18-small", "charlm"])
def test_compiled_equals_eager_on_device(name, device):
    check_equal(name, device)
