"""ops/fused.py: BatchNormReLU, relu(batch_norm(x) [+ skip]) in one node, against PyTorch, against
divenet's unfused ops (bit for bit), numerically, and what it keeps for backward."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import divenet as dn
import divenet.functional as F
from divenet.autograd import Context, _same_storage
from divenet.ops.fused import BatchNormReLU
from tests.helpers import check_against_torch, numerical_grad_check

PERMS = {"NCHW": (0, 1, 2, 3), "CHWN": (3, 0, 1, 2), "CNHW": (1, 0, 2, 3)}  # memory order -> (N, C, H, W)


def _rand(shape, seed=11, loc=0.0):
    return (loc + np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _stats(c, device, dtype="float32"):
    rng = np.random.default_rng(1)
    mean, var = rng.standard_normal(c), rng.random(c) + 0.5
    return ((dn.tensor(mean, dtype=dtype, device=device), dn.tensor(var, dtype=dtype, device=device)),
            (torch.tensor(mean.astype(dtype)), torch.tensor(var.astype(dtype))))


def _ours(rm, rv, training):
    def fn(x, w, b, skip=None):
        return BatchNormReLU.apply(x, w, b, skip, running_mean=rm.array, running_var=rv.array,
                                   training=training, momentum=0.1, eps=1e-5)
    return fn


def _torch(rm, rv, training):
    def fn(x, w, b, skip=None):
        z = TF.batch_norm(x, rm, rv, w, b, training=training, momentum=0.1, eps=1e-5)
        return torch.relu(z if skip is None else z + skip)
    return fn


def _order(layout):
    return tuple(int(a) for a in np.argsort(PERMS[layout]))


def _stored(x, layout):
    """x (N, C, H, W) stored in ``layout``'s memory order; ``_view`` gives back (N, C, H, W)."""
    return np.ascontiguousarray(x.transpose(_order(layout)))


def _view(t, layout):
    return t.permute(*PERMS[layout]) if layout != "NCHW" else t


@pytest.mark.parametrize("shape", [(3, 5, 7, 3), (1, 4, 3, 5), (6, 3)], ids=["odd", "batch1", "2d"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("skip", [False, True])
def test_matches_torch_with_running_stats(device, shape, training, skip):
    c = shape[1]
    (rm, rv), (trm, trv) = _stats(c, device)
    inputs = [_rand(shape, loc=0.3), _rand((c,), 1), _rand((c,), 2)] + ([_rand(shape, 3)] if skip else [])
    check_against_torch(_ours(rm, rv, training), _torch(trm, trv, training), inputs, device=device)
    np.testing.assert_allclose(rm.numpy(), trm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["CHWN", "CNHW"])
@pytest.mark.parametrize("training", [True, False])
def test_channel_major_layouts_match_torch_and_are_kept(device, layout, training):
    """Batch-last (what convolutions return) and channels-first inputs; the skip in NCHW."""
    (rm, rv), (trm, trv) = _stats(4, device)
    x = _stored(_rand((5, 4, 3, 6), loc=-0.2), layout)
    ours = check_against_torch(
        lambda t, w, b, s: _ours(rm, rv, training)(_view(t, layout), w, b, s),
        lambda t, w, b, s: _torch(trm, trv, training)(_view(t, layout), w, b, s),
        [x, _rand((4,), 1), _rand((4,), 2), _rand((5, 4, 3, 6), 3)], device=device)
    np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=1e-5, atol=1e-6)
    y = ours[0].array
    assert y.transpose(_order(layout)).flags.c_contiguous  # the input's layout


@pytest.mark.parametrize("training", [True, False])
def test_negative_and_zero_weights_and_relu_at_zero(device, training):
    """A zero weight with a zero bias makes the pre-activation exactly 0: ReLU's gradient there is
    0, as PyTorch's; a zero weight with a positive bias still needs the normalized input for
    the weight's gradient (kept: the input is saved)."""
    (rm, rv), (trm, trv) = _stats(4, device)
    w = np.array([-1.5, 0.0, 0.0, 0.7], np.float32)
    b = np.array([0.2, 0.0, 0.5, -0.1], np.float32)
    ours = check_against_torch(_ours(rm, rv, training), _torch(trm, trv, training),
                               [_rand((4, 4, 3, 3)), w, b, _rand((4, 4, 3, 3), 3) * 0], device=device)
    assert (ours[0].numpy()[:, 1] == 0).all()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layout", ["NCHW", "CHWN"])
@pytest.mark.parametrize("skip", [False, True])
def test_bitwise_equal_to_the_unfused_ops(device, training, layout, skip):
    """The same arithmetic as BatchNorm, Add and ReLU run one by one: output, every gradient
    and the running statistics bit for bit (so dn.compile's fused graphs equal eager mode)."""
    results = []
    for fused in (True, False):
        (rm, rv), _ = _stats(6, device)
        x = dn.tensor(_stored(_rand((4, 6, 5, 3), loc=0.1), layout), device=device, requires_grad=True)
        w = dn.tensor(_rand((6,), 1), device=device, requires_grad=True)
        b = dn.tensor(_rand((6,), 2), device=device, requires_grad=True)
        s = dn.tensor(_rand((4, 6, 5, 3), 3), device=device, requires_grad=True) if skip else None
        xv = _view(x, layout)
        if fused:
            y = _ours(rm, rv, training)(xv, w, b, s)
        else:
            z = F.batch_norm(xv, rm, rv, w, b, training=training)
            y = F.relu(z if s is None else z + s)
        (y * dn.tensor(_rand(y.shape, 4), device=device)).sum().backward()
        results.append([y.numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy(), rm.numpy(), rv.numpy()]
                       + ([s.grad.numpy()] if skip else []))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layout", ["NCHW", "CHWN", "CNHW"])
def test_keeps_the_input_not_the_output_and_rebuilds_it_bitwise(device, training, layout):
    (rm, rv), _ = _stats(3, device)
    x = _view(dn.tensor(_stored(_rand((2, 3, 4, 5)), layout), device=device), layout)
    w = dn.tensor(np.array([1.2, -0.8, 0.0], np.float32), device=device)
    b = dn.tensor(np.array([0.1, 0.3, 0.0], np.float32), device=device)
    ctx = Context((True, True, True, False))
    y = BatchNormReLU.forward(ctx, x.array, w.array, b.array, None, running_mean=rm.array,
                              running_var=rv.array, training=training)
    assert not any(_same_storage(s, y) for s in ctx.saved if s is not None and hasattr(s, "shape"))
    assert any(_same_storage(s, x.array) for s in ctx.saved if s is not None)  # batch norm's input
    assert ctx.mask is None
    again = BatchNormReLU.rebuild(ctx)
    np.testing.assert_array_equal(dn.tensor(again).numpy(), dn.tensor(y).numpy())
    assert again.strides == y.strides and again.shape == y.shape
    ctx = Context((True, True, True, True))
    BatchNormReLU.forward(ctx, x.array, w.array, b.array, x.array, running_mean=rm.array,
                          running_var=rv.array, training=training)
    assert ctx.mask is not None and np.dtype(ctx.mask.dtype) == np.bool_  # 1 byte an element


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("skip", [False, True])
def test_numerical_gradient(device, training, skip):
    (rm, rv), _ = _stats(3, device, "float64")
    shape = (3, 3, 2, 4)
    inputs = [_rand(shape, loc=0.2), _rand((3,), 1), _rand((3,), 2)] + ([_rand(shape, 3)] if skip else [])
    numerical_grad_check(_ours(rm, rv, training), inputs, device=device)


@pytest.mark.parametrize("training", [True, False])
def test_rebuild_over_several_channel_blocks_is_bitwise(device, training):
    (rm, rv), _ = _stats(40, device)
    x = dn.tensor(_rand((4, 40, 40, 45), loc=0.5), device=device)  # wider than one cache block
    w, b = dn.tensor(_rand((40,), 1), device=device), dn.tensor(_rand((40,), 2), device=device)
    ctx = Context((True, True, True, False))
    y = BatchNormReLU.forward(ctx, x.array, w.array, b.array, None, running_mean=rm.array,
                              running_var=rv.array, training=training)
    np.testing.assert_array_equal(dn.tensor(BatchNormReLU.rebuild(ctx)).numpy(), dn.tensor(y).numpy())


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("layout", ["NCHW", "CHWN"])
def test_backward_overwrites_a_handed_over_gradient_bitwise(device, training, skip, layout):
    """With ctx.overwrite_grad (dn.compile's executor: no one else holds g) the backward runs in
    g's memory, block by block over channels wider than one cache block, and its results are
    bit for bit those of the backward that leaves g alone; without it, g is untouched."""
    (rm, rv), _ = _stats(40, device)
    x = _view(dn.tensor(_stored(_rand((4, 40, 30, 45), loc=0.2), layout), device=device), layout).array
    w, b = dn.tensor(_rand((40,), 1), device=device).array, dn.tensor(_rand((40,), 2), device=device).array
    s = dn.tensor(_rand((4, 40, 30, 45), 3), device=device).array if skip else None
    g0 = _view(dn.tensor(_stored(_rand((4, 40, 30, 45), 4), layout), device=device), layout).array
    results = []
    for overwrite in (False, True):
        ctx = Context((True, True, True, skip))
        BatchNormReLU.forward(ctx, x, w, b, s, running_mean=rm.array, running_var=rv.array, training=training)
        g = g0.copy() if layout == "NCHW" else _view(dn.tensor(_stored(dn.tensor(g0).numpy(), layout),
                                                               device=device), layout).array
        ctx.overwrite_grad = overwrite
        out = BatchNormReLU.backward(ctx, g)
        shared = _same_storage(out[3] if skip else out[0], g)
        assert shared == overwrite, (overwrite, shared)
        if not overwrite:
            np.testing.assert_array_equal(dn.tensor(g).numpy(), dn.tensor(g0).numpy())
        results.append([dn.tensor(a).numpy() for a in out if a is not None])
    for u, v in zip(*results):
        np.testing.assert_array_equal(u, v)
