"""Batch norm's native kernels (``_native.bn_*``, taken for channel-major maps: what
convolutions return): equal to PyTorch over every tail of the vector loops, in training and
eval mode, with and without weight and bias; the same output bits as the NumPy blocks wherever
both start from the same statistics (graph mode rebuilds outputs with NumPy); the same bits
for any thread count; float32 sums that keep their precision over long channels."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import divenet as dn
import divenet.functional as F
from divenet import _native
from divenet.ops import norm as N
from tests.helpers import check_against_torch

pytestmark = pytest.mark.skipif(_native.library() is None or not _native.fast_here(),
                                reason="native kernels not built or not taken on this CPU")


def _batch_last(shape, seed=0, loc=0.5, scale=2.0):
    """An (N, C, H, W) array stored (C, H, W, N), as a convolution's output is."""
    rng = np.random.default_rng(seed)
    x = (loc + scale * rng.standard_normal(shape)).astype(np.float32)
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0))


def _spy(monkeypatch):
    calls = []
    for name in ("bn_forward", "bn_backward"):
        real = getattr(_native, name)
        monkeypatch.setattr(_native, name, lambda *a, real=real, name=name, **kw: calls.append(name) or real(*a, **kw))
    return calls


# L = H * W * N per channel: below one 8-float vector, around 32 (the unrolled loop), around
# BN_RUN = 1024 (the float runs summed in double) and several runs with a tail
@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (7, 2, 1, 1), (1, 4, 31, 1), (2, 3, 4, 4), (3, 2, 11, 1),
                                   (4, 3, 16, 16), (1, 2, 1025, 1), (5, 3, 21, 20)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_native_batch_norm_matches_torch(shape, training, affine, monkeypatch):
    calls = _spy(monkeypatch)
    c = shape[1]
    rng = np.random.default_rng(1)
    mean0, var0 = rng.standard_normal(c).astype(np.float32), (rng.random(c) + 0.5).astype(np.float32)
    rm, rv = dn.tensor(mean0.copy()), dn.tensor(var0.copy())
    trm, trv = torch.tensor(mean0), torch.tensor(var0)
    stored = _batch_last(shape)
    inputs = [stored] + ([rng.standard_normal(c).astype(np.float32) + 1, rng.standard_normal(c).astype(np.float32)]
                         if affine else [])
    check_against_torch(
        lambda t, *wb: F.batch_norm(t.permute(3, 0, 1, 2), rm, rv, *wb, training=training, momentum=0.3),
        lambda t, *wb: TF.batch_norm(t.permute(3, 0, 1, 2), trm, trv, *wb, training=training, momentum=0.3),
        inputs)
    np.testing.assert_allclose(rm.numpy(), trm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=1e-5, atol=1e-6)
    assert calls == ["bn_forward", "bn_backward"]


def _ctx(training):
    class Ctx:
        needs_input_grad = (True, True, True)

        def save_for_backward(self, *a):
            self.saved = a
    ctx = Ctx()
    ctx.training = training
    return ctx


@pytest.mark.parametrize("training", [True, False])
def test_the_output_bits_are_the_numpy_blocks_given_the_same_statistics(training):
    """Eval mode starts from the running statistics, training from the batch's; given the
    kernel's statistics, the NumPy blocks write the same bits (graph mode's rebuild relies on it)."""
    u = _batch_last((6, 5, 9, 7), seed=2).reshape(1, 5, -1)
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    mean = rng.standard_normal(5).astype(np.float32)
    invstd = (rng.random(5) + 0.5).astype(np.float32)
    var = np.empty(5, np.float32)
    y_native, y_numpy = np.empty_like(u), np.empty_like(u)
    m1, i1, v1 = mean.copy(), invstd.copy(), var.copy()
    N._native_forward(u[0], w, b, training, 1e-5, y_native[0], m1, v1, i1)
    if training:  # the NumPy blocks from the kernel's statistics: their elementwise part
        scale = i1 * w
        y_numpy[...] = ((u - m1[None, :, None]) * scale[None, :, None]) + b[None, :, None]
    else:
        N._blocked_forward(u, w, b, False, 1e-5, y_numpy, mean.copy(), None, invstd.copy())
    np.testing.assert_array_equal(y_native, y_numpy)


def test_the_gradients_bits_are_the_numpy_blocks_in_eval_mode(monkeypatch):
    u = _batch_last((4, 3, 8, 9), seed=4).reshape(1, 3, -1)
    g = _batch_last((4, 3, 8, 9), seed=5).reshape(1, 3, -1)
    rng = np.random.default_rng(6)
    mean, invstd, w = (rng.random(3).astype(np.float32) + 0.5 for _ in range(3))
    ctx = _ctx(False)
    ctx.saved, ctx.layout = (u, mean, invstd, w), (N.CHANNELS_FIRST, (3, 1, 8 * 9 * 4))
    native = N.batch_norm_backward(ctx, g.copy())
    monkeypatch.setattr(N, "_native_here", lambda *a: False)
    blocked = N.batch_norm_backward(ctx, g.copy())
    for a, b in zip(native, blocked):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(native[0], blocked[0])  # dx = g a: one rounding either way


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_any_thread_count_gives_the_same_bits(threads, monkeypatch):
    x = dn.tensor(_batch_last((5, 9, 13, 11), seed=7), requires_grad=True)
    w = dn.tensor(np.linspace(0.5, 2, 9).astype(np.float32), requires_grad=True)
    monkeypatch.setattr(_native, "SPLIT_MIN_VALUES", 0)  # a small map split all the same
    results = []
    for t in (1, threads):
        monkeypatch.setattr(_native, "threads", lambda t=t: t)
        x.grad = w.grad = None
        y = F.batch_norm(x.permute(3, 0, 1, 2), None, None, w, None, training=True)
        (y * y * y).sum().backward()
        results.append([y.numpy(), x.grad.numpy(), w.grad.numpy()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_long_channels_keep_their_precision():
    """401,408 values a channel (a 7x7 stem's output at 224x224, b32), |mean| / std = 100: the
    statistics within float32 rounding of float64's."""
    rng = np.random.default_rng(8)
    u = (100 + rng.standard_normal((2, 401_408))).astype(np.float32)
    mean, var, invstd = _native.bn_forward(u, None, None, np.float32(1e-5), np.empty_like(u))
    u64 = u.astype(np.float64)
    np.testing.assert_allclose(mean, u64.mean(axis=1), rtol=2e-7)
    np.testing.assert_allclose(var, u64.var(axis=1), rtol=1e-5)
    g = rng.standard_normal(u.shape).astype(np.float32)
    np.testing.assert_array_equal(invstd, 1 / np.sqrt(var + np.float32(1e-5)))  # NumPy's float32 formula
    sg, gxhat = _native.bn_backward(u, g, mean, invstd, None, True)
    np.testing.assert_allclose(sg, g.astype(np.float64).sum(axis=1), rtol=1e-5, atol=1e-2)
    want = invstd * (g.astype(np.float64) * (u64 - mean.astype(np.float64)[:, None])).sum(axis=1)
    np.testing.assert_allclose(gxhat, want, rtol=1e-5, atol=1e-2)


def test_other_layouts_and_dtypes_stay_on_numpy(monkeypatch):
    calls = _spy(monkeypatch)
    x = np.random.default_rng(9).standard_normal((4, 3, 5, 5)).astype(np.float32)
    F.batch_norm(dn.tensor(x), None, None, training=True)  # NCHW: (N, C, L) rows
    F.batch_norm(dn.tensor(x.astype(np.float64)).permute(0, 1, 2, 3), None, None, training=True)
    assert calls == []
