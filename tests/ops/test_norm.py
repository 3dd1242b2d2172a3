"""Normalization: batch norm, layer norm, local response norm against PyTorch, numerically, errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import divenet as dn
import divenet.functional as F
from divenet.ops import norm as N
from tests.helpers import assert_raises_naming, check_against_torch, numerical_grad_check


def _rand(shape, seed=11, loc=0.0, scale=1.0):
    # seed 0 would equal check_against_torch's output weights: a degenerate (projected-out) gradient
    rng = np.random.default_rng(seed)
    return (loc + scale * rng.standard_normal(shape)).astype(np.float32)


def _cnhw(x):
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3))


# ---- batch norm --------------------------------------------------------------------------------
BN_SHAPES = [(8, 5), (4, 3, 6), (4, 3, 5, 6), (2, 4, 3, 3, 2)]


def _stats(c, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(c).astype(np.float32), (rng.random(c) + 0.5).astype(np.float32)


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch_and_updates_running_stats(device, shape, affine, training):
    c = shape[1]
    mean0, var0 = _stats(c)
    rm, rv = dn.tensor(mean0.copy(), device=device), dn.tensor(var0.copy(), device=device)
    trm, trv = torch.tensor(mean0), torch.tensor(var0)
    x = _rand(shape, loc=0.5, scale=2.0)
    inputs = [x] + ([_rand((c,), 2, loc=1.0), _rand((c,), 3)] if affine else [])
    check_against_torch(
        lambda t, *wb: F.batch_norm(t, rm, rv, *wb, training=training, momentum=0.3, eps=1e-4),
        lambda t, *wb: TF.batch_norm(t, trm, trv, *wb, training=training, momentum=0.3, eps=1e-4),
        inputs, device=device)
    np.testing.assert_allclose(rm.numpy(), trm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=1e-5, atol=1e-6)
    if training:  # the statistics really moved (and unbiased: checked against PyTorch above)
        assert not np.allclose(rm.numpy(), mean0) and not np.allclose(rv.numpy(), var0)
    else:
        np.testing.assert_array_equal(rm.numpy(), mean0)
        np.testing.assert_array_equal(rv.numpy(), var0)


def test_batch_norm_running_stats_match_after_several_steps(device):
    rm, rv = dn.zeros(3, device=device), dn.ones(3, device=device)
    trm, trv = torch.zeros(3), torch.ones(3)
    for step in range(3):
        x = _rand((6, 3, 4, 4), seed=step, loc=step)
        F.batch_norm(dn.tensor(x, device=device), rm, rv, training=True)
        TF.batch_norm(torch.tensor(x), trm, trv, training=True)
    np.testing.assert_allclose(rm.numpy(), trm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=1e-5, atol=1e-6)


def test_batch_norm_training_without_running_stats(device):
    x = _rand((5, 4, 3, 3))
    w, b = _rand((4,), 1), _rand((4,), 2)
    check_against_torch(lambda t, w_, b_: F.batch_norm(t, None, None, w_, b_, training=True),
                        lambda t, w_, b_: TF.batch_norm(t, None, None, w_, b_, training=True),
                        [x, w, b], device=device)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("perm", [(1, 0, 2, 3), (3, 0, 1, 2)], ids=["CNHW", "CHWN"])
def test_batch_norm_channel_major_view_keeps_its_layout(device, training, perm):
    """Inputs laid out (C, N, H, W) or (C, H, W, N) (what convolutions return) are read in place
    and the output keeps their layout."""
    mean0, var0 = _stats(3)
    rm, rv = dn.tensor(mean0.copy(), device=device), dn.tensor(var0.copy(), device=device)
    trm, trv = torch.tensor(mean0), torch.tensor(var0)
    stored = [int(a) for a in np.argsort(perm)]
    x = np.ascontiguousarray(_rand((4, 3, 5, 6), loc=-1.0).transpose(stored))
    ours = check_against_torch(
        lambda t, w, b: F.batch_norm(t.permute(*perm), rm, rv, w, b, training=training),
        lambda t, w, b: TF.batch_norm(t.permute(*perm), trm, trv, w, b, training=training),
        [x, _rand((3,), 1), _rand((3,), 2)], device=device)
    np.testing.assert_allclose(rm.numpy(), trm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=1e-5, atol=1e-6)
    y = ours[0].array
    assert not y.flags.c_contiguous and y.transpose(stored).flags.c_contiguous


def test_batch_norm_many_channel_blocks(device):
    # wide enough that the CPU kernel walks several cache-sized channel blocks
    x = _rand((4, 40, 40, 45), loc=3.0)
    w, b = _rand((40,), 1), _rand((40,), 2)
    rm, rv = dn.zeros(40, device=device), dn.ones(40, device=device)
    trm, trv = torch.zeros(40), torch.ones(40)
    check_against_torch(lambda t, w_, b_: F.batch_norm(t, rm, rv, w_, b_, training=True),
                        lambda t, w_, b_: TF.batch_norm(t, trm, trv, w_, b_, training=True),
                        [x, w, b], device=device)
    np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_large_mean_keeps_precision(device, training):
    # |mean| / std = 50: E[x^2] - E[x]^2 in float32 would lose about 3 digits here
    mean0 = np.full(3, 50.0, np.float32)
    var0 = np.ones(3, np.float32)
    rm, rv = dn.tensor(mean0.copy(), device=device), dn.tensor(var0.copy(), device=device)
    trm, trv = torch.tensor(mean0), torch.tensor(var0)
    x = _rand((8, 3, 10, 10), loc=50.0)
    check_against_torch(lambda t, w, b: F.batch_norm(t, rm, rv, w, b, training=training),
                        lambda t, w, b: TF.batch_norm(t, trm, trv, w, b, training=training),
                        [x, _rand((3,), 1), _rand((3,), 2)], device=device)
    np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=1e-5, atol=1e-6)


def test_batch_norm_backward_is_one_fused_node(device):
    x = dn.tensor(_rand((4, 3, 2, 2)), device=device, requires_grad=True)
    w = dn.ones(3, device=device, requires_grad=True)
    y = F.batch_norm(x, None, None, w, None, training=True)
    assert y._node.fn is N.BatchNorm and y._node.inputs[0] is x and y._node.inputs[1] is w


def test_batch_norm_float32_stays_float32(device):
    y = F.batch_norm(dn.tensor(_rand((4, 3)), device=device), dn.zeros(3, device=device),
                     dn.ones(3, device=device), training=True)
    assert y.dtype == np.float32


def test_batch_norm_refuses_running_stats_on_another_device():
    """They are updated in place, so they must live where the input does (the CPU path would
    otherwise write a sim batch's statistics into CPU arrays or fail inside the kernel)."""
    x = dn.tensor(_rand((4, 3)), device="sim")
    for training in (True, False):
        assert_raises_naming(ValueError, lambda: F.batch_norm(x, dn.zeros(3), dn.ones(3, device="sim"),
                                                              training=training),
                             "running_mean", "cpu", "sim")
        assert_raises_naming(ValueError, lambda: F.batch_norm(x, dn.zeros(3, device="sim"), dn.ones(3),
                                                              training=training),
                             "running_var", "cpu", "sim")


@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 3, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_numerical_gradient(device, shape, training):
    c = shape[1]
    mean0, var0 = _stats(c)
    rm, rv = dn.tensor(mean0, dtype="float64", device=device), dn.tensor(var0, dtype="float64", device=device)
    numerical_grad_check(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=training),
                         [_rand(shape, loc=1.0), _rand((c,), 1), _rand((c,), 2)], device=device)


def test_batch_norm_numerical_gradient_cnhw_view(device):
    numerical_grad_check(lambda x: F.batch_norm(x.permute(1, 0, 2, 3), None, None, training=True),
                         [_cnhw(_rand((3, 2, 3, 4), loc=1.0))], device=device)


def test_batch_norm_errors_name_shapes(device):
    x = dn.zeros(4, 3, 2, 2, device=device)
    good = dn.zeros(3, device=device)
    assert_raises_naming(ValueError, lambda: F.batch_norm(x, dn.zeros(4), good), "batch_norm", "running_mean",
                         "(4,)", "(4, 3, 2, 2)", "3 channels")
    assert_raises_naming(ValueError, lambda: F.batch_norm(x, good, dn.zeros(2, 3)), "batch_norm", "running_var",
                         "(2, 3)", "(4, 3, 2, 2)")
    assert_raises_naming(ValueError, lambda: F.batch_norm(x, good, good, weight=dn.ones(5)), "batch_norm",
                         "weight", "(5,)", "(3,)")
    assert_raises_naming(ValueError, lambda: F.batch_norm(x, good, good, bias=dn.ones(1, 3)), "batch_norm",
                         "bias", "(1, 3)")
    assert_raises_naming(ValueError, lambda: F.batch_norm(dn.zeros(5, device=device), None, None, training=True),
                         "batch_norm", "(5,)")
    assert_raises_naming(ValueError, lambda: F.batch_norm(dn.zeros(1, 3, device=device), None, None, training=True),
                         "batch_norm", "more than 1 value per channel", "(1, 3)")
    assert_raises_naming(ValueError, lambda: F.batch_norm(x, None, None, training=False), "batch_norm",
                         "running_mean", "(4, 3, 2, 2)")
    assert_raises_naming(TypeError, lambda: F.batch_norm(x, good.numpy(), good), "batch_norm", "running_mean",
                         "Tensor")


# ---- layer norm --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,norm", [((4, 6), (6,)), ((2, 3, 5), 5), ((2, 3, 4, 5), (4, 5)),
                                        ((3, 4, 5), (3, 4, 5))])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_layer_norm_matches_torch(device, shape, norm, affine):
    ns = (norm,) if isinstance(norm, int) else norm
    params = {"weight": _rand(ns, 1, loc=1.0), "bias": _rand(ns, 2)}
    use = {"both": ["weight", "bias"], "weight": ["weight"], "bias": ["bias"], "none": []}[affine]
    inputs = [_rand(shape, loc=2.0, scale=3.0)] + [params[k] for k in use]

    def call(fn, shape_arg, t, *rest):
        kw = dict(zip(use, rest))
        return fn(t, shape_arg, kw.get("weight"), kw.get("bias"), eps=1e-5)

    # ours also takes a bare int, as nn.LayerNorm does; torch's functional form wants a tuple
    check_against_torch(lambda *a: call(F.layer_norm, norm, *a), lambda *a: call(TF.layer_norm, ns, *a),
                        inputs, device=device)


@pytest.mark.parametrize("shape,norm", [((3, 5), (5,)), ((2, 3, 4), (3, 4))])
def test_layer_norm_numerical_gradient(device, shape, norm):
    numerical_grad_check(lambda x, w, b: F.layer_norm(x, norm, w, b),
                         [_rand(shape, loc=1.0), _rand(norm, 1), _rand(norm, 2)], device=device)
    numerical_grad_check(lambda x: F.layer_norm(x, norm), [_rand(shape, 3)], device=device)


def test_layer_norm_errors_name_shapes(device):
    x = dn.zeros(2, 3, 5, device=device)
    assert_raises_naming(ValueError, lambda: F.layer_norm(x, (4, 5)), "layer_norm", "(4, 5)", "(2, 3, 5)")
    assert_raises_naming(ValueError, lambda: F.layer_norm(x, 3), "layer_norm", "(3,)", "(2, 3, 5)")
    assert_raises_naming(ValueError, lambda: F.layer_norm(x, (1, 2, 3, 5)), "layer_norm", "(1, 2, 3, 5)")
    assert_raises_naming(ValueError, lambda: F.layer_norm(x, 5, weight=dn.ones(3)), "layer_norm", "weight",
                         "(3,)", "(5,)")
    assert_raises_naming(ValueError, lambda: F.layer_norm(x, (3, 5), bias=dn.ones(5)), "layer_norm", "bias",
                         "(5,)", "(3, 5)")


# ---- local response norm -----------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("shape", [(2, 7, 3, 4), (2, 6, 5)])
def test_local_response_norm_matches_torch(device, size, shape):
    x = _rand(shape, scale=3.0)
    check_against_torch(lambda t: F.local_response_norm(t, size, alpha=1e-2, beta=0.75, k=2.0),
                        lambda t: TF.local_response_norm(t, size, alpha=1e-2, beta=0.75, k=2.0), [x], device=device)


def test_local_response_norm_defaults_and_5d(device):
    check_against_torch(lambda t: F.local_response_norm(t, 3), lambda t: TF.local_response_norm(t, 3),
                        [_rand((2, 5, 2, 3, 2), scale=10.0)], device=device)


def test_local_response_norm_cnhw_view_keeps_its_layout(device):
    ours = check_against_torch(lambda t: F.local_response_norm(t.permute(1, 0, 2, 3), 5, 1e-1, 0.75, 1.0),
                               lambda t: TF.local_response_norm(t.permute(1, 0, 2, 3), 5, 1e-1, 0.75, 1.0),
                               [_cnhw(_rand((3, 6, 4, 4)))], device=device)
    assert ours[0].array.transpose(1, 0, 2, 3).flags.c_contiguous


@pytest.mark.parametrize("size", [2, 3, 5])
def test_local_response_norm_numerical_gradient(device, size):
    numerical_grad_check(lambda x: F.local_response_norm(x, size, alpha=0.5, beta=0.75, k=1.5),
                         [_rand((2, 6, 2, 3))], device=device)


def test_local_response_norm_errors(device):
    assert_raises_naming(ValueError, lambda: F.local_response_norm(dn.zeros(4, 5, device=device), 3),
                         "local_response_norm", "(4, 5)", "3-D")
    assert_raises_naming(ValueError, lambda: F.local_response_norm(dn.zeros(2, 4, 5, device=device), 0),
                         "local_response_norm", "size")
