"""Reductions: sum, mean, max, min, var, argmax/argmin over dims (int, negative, tuple, None)."""
import numpy as np
import pytest
import torch

import divenet as dn
from tests.helpers import assert_raises_naming, check_against_torch, numerical_grad_check

SHAPE = (2, 3, 4)
DIMS = [None, 0, -1, 1, (0, 2), (-1, -3), (0, 1, 2)]


def _rand(shape=SHAPE, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _ties(shape=SHAPE, seed=0):
    return np.random.default_rng(seed).integers(-1, 2, shape).astype(np.float32)  # many ties


def _torch_dim(dim):
    return tuple(range(len(SHAPE))) if dim is None else dim


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("name", ["sum", "mean"])
def test_sum_mean_against_torch(device, name, dim, keepdim):
    a = _rand()
    check_against_torch(lambda x: getattr(x, name)(dim=dim, keepdim=keepdim),
                        lambda x: getattr(x, name)(dim=_torch_dim(dim), keepdim=keepdim), [a], device=device)


@pytest.mark.parametrize("name", ["sum", "mean"])
def test_sum_mean_default_and_numerical(device, name):
    a = _rand(seed=1)
    out = check_against_torch(lambda x: getattr(x, name)(), lambda x: getattr(x, name)(), [a], device=device)
    assert out[0].shape == () and out[0].dtype == np.float32
    numerical_grad_check(lambda x: getattr(x, name)(dim=(0, 2)), [a], device=device)
    numerical_grad_check(lambda x: getattr(x, name)(dim=1, keepdim=True), [a], device=device)


def test_mean_keeps_float32_and_float64(device):
    assert dn.ones(3, 5, device=device).mean(0).dtype == np.float32
    assert dn.ones(3, 5, dtype="float64", device=device).mean().dtype == np.float64
    assert dn.ones(3, 5, dtype="float16", device=device).mean().dtype == np.float16


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("name", ["amax", "amin"])
def test_amax_amin_against_torch(device, name, dim, keepdim):
    """Values, and the gradient split evenly among tied extremes (torch.amax / amin)."""
    tname = name
    for a in (_rand(seed=2), _ties(seed=3)):
        check_against_torch(lambda x: getattr(x, name)(dim=dim, keepdim=keepdim),
                            lambda x: getattr(torch, tname)(x, dim=_torch_dim(dim), keepdim=keepdim),
                            [a], device=device)


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_all_with_ties_like_torch_max(device, name):
    a = _ties(seed=4)
    check_against_torch(lambda x: getattr(x, name)(), lambda x: getattr(x, name)(), [a], device=device)
    numerical_grad_check(lambda x: getattr(x, name)(dim=-1).values, [_rand(seed=5)], device=device)


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_along_dim_return_values_and_indices_like_torch(device, name, dim, keepdim):
    """(values, indices); on ties the gradient goes to the first extreme only, as in PyTorch."""
    for a in (_rand(seed=7), _ties(seed=8)):
        ours = check_against_torch(lambda x: tuple(getattr(x, name)(dim, keepdim=keepdim)),
                                   lambda x: tuple(getattr(x, name)(dim, keepdim=keepdim)), [a], device=device)
        assert ours[1].dtype == np.int64
    pair = dn.tensor([[1.0, 3.0], [4.0, 2.0]], device=device).max(1)
    values, indices = pair
    assert pair.values is values and pair.indices is indices
    np.testing.assert_array_equal(indices.numpy(), [1, 0])


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("unbiased", [True, False])
def test_var_against_torch(device, dim, keepdim, unbiased):
    a = _rand(seed=6)
    check_against_torch(lambda x: x.var(dim=dim, keepdim=keepdim, unbiased=unbiased),
                        lambda x: torch.var(x, dim=_torch_dim(dim), keepdim=keepdim, correction=int(unbiased)),
                        [a], device=device)


def test_var_numerical(device):
    a = _rand(seed=7)
    numerical_grad_check(lambda x: x.var(dim=(0, 2)), [a], device=device)
    numerical_grad_check(lambda x: x.var(unbiased=False), [a], device=device)


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize("dim", [None, 0, 1, -1, -3])
@pytest.mark.parametrize("keepdim", [False, True])
def test_argmax_argmin_against_torch(device, name, dim, keepdim):
    for a in (_rand(seed=8), _ties(seed=9)):  # ties: the first index, as in PyTorch
        t = dn.tensor(a, device=device, requires_grad=True)
        out = getattr(t, name)(dim=dim, keepdim=keepdim)
        ref = getattr(torch.tensor(a), name)(dim=dim, keepdim=keepdim).numpy()
        assert out.dtype == np.int64 and not out.requires_grad
        assert out.shape == ref.shape
        np.testing.assert_array_equal(out.numpy(), ref)


def test_argmin_unsigned_and_int(device):
    a = np.array([[3, 0, 7], [200, 5, 1]], np.uint8)
    t = dn.tensor(a, device=device)
    np.testing.assert_array_equal(t.argmin(dim=1).numpy(), [1, 2])
    np.testing.assert_array_equal(t.argmax(dim=0).numpy(), [1, 1, 0])
    assert t.argmin().item() == 1


@pytest.mark.parametrize("name, dim", [(n, d) for n in ["sum", "mean", "amax", "amin", "max", "min", "var", "argmax",
                                                         "argmin"]
                                       for d in [3, -4, (0, 5)]
                                       if not (n in ("max", "min", "argmax", "argmin") and isinstance(d, tuple))])
def test_reduction_dim_out_of_range(device, name, dim):
    t = dn.zeros(*SHAPE, device=device)
    bad = dim[1] if isinstance(dim, tuple) else dim
    assert_raises_naming(ValueError, lambda: getattr(t, name)(dim=dim), f"dim {bad}", "(2, 3, 4)")
