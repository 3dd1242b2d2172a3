"""Elementwise ops: arithmetic with broadcasting, unary math, clip, maximum/minimum, where."""
import operator

import numpy as np
import pytest
import torch

import divenet as dn
from divenet.ops.elementwise import unbroadcast
from tests.helpers import assert_raises_naming, check_against_torch, numerical_grad_check


def _rand(shape, seed=0, low=None):
    a = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    if low is not None:  # keep away from singular points (log, sqrt, division, pow of negatives)
        a = np.abs(a) + np.float32(low)
    return np.asarray(a, dtype=np.float32)


BINARY = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
    "pow": operator.pow,
}
SHAPE_PAIRS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((), (2, 3)),
               ((2, 3, 1), (1, 3, 4))]


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("sa, sb", SHAPE_PAIRS)
def test_binary_broadcast_against_torch(device, op, sa, sb):
    fn = BINARY[op]
    a = _rand(sa, 1, low=0.5 if op == "pow" else None)
    b = _rand(sb, 2, low=0.5) if op in ("div", "pow") else _rand(sb, 2)
    check_against_torch(fn, fn, [a, b], device=device)


@pytest.mark.parametrize("op", list(BINARY))
def test_binary_numerical(device, op):
    fn = BINARY[op]
    a = _rand((2, 3), 3, low=0.5)
    b = _rand((3,), 4, low=0.5)
    numerical_grad_check(fn, [a, b], device=device)


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("scalar", [2, 2.5, -1.5])
def test_python_scalar_both_sides(device, op, scalar):
    fn = BINARY[op]
    a = _rand((2, 3), 5, low=0.5)
    if op == "pow" and scalar < 0:
        a = a + 1  # a ** -1.5 is fine for positive a; scalar ** a needs a positive scalar
    out = check_against_torch(lambda x: fn(x, scalar), lambda x: fn(x, scalar), [a], device=device)
    assert out[0].dtype == np.float32
    if not (op == "pow" and scalar < 0):
        out = check_against_torch(lambda x: fn(scalar, x), lambda x: fn(scalar, x), [a], device=device)
        assert out[0].dtype == np.float32


def test_neg(device):
    check_against_torch(lambda x: -x, lambda x: -x, [_rand((2, 3))], device=device)
    numerical_grad_check(lambda x: -x, [_rand((2, 3))], device=device)


def test_pow_integer_exponent_of_negative_base(device):
    a = _rand((3, 4), 6)  # negative values: a ** 2 and a ** 3 are defined
    for p in (2, 3):
        check_against_torch(lambda x: x ** p, lambda x: x ** p, [a], device=device)


def test_pow_tensor_exponent(device):
    a, b = _rand((2, 3), 7, low=0.5), _rand((2, 3), 8)
    check_against_torch(lambda x, y: x ** y, lambda x, y: x ** y, [a, b], device=device)
    numerical_grad_check(lambda x, y: x ** y, [a, b], device=device)


UNARY = {
    "exp": (dn.exp, torch.exp, None), "log": (dn.log, torch.log, 0.1), "sqrt": (dn.sqrt, torch.sqrt, 0.1),
    "abs": (dn.abs, torch.abs, None),
}


@pytest.mark.parametrize("name", list(UNARY))
@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), ()])
def test_unary_against_torch(device, name, shape):
    fn, tfn, low = UNARY[name]
    a = _rand(shape, 9, low=low)
    check_against_torch(fn, tfn, [a], device=device)
    method = getattr(dn.Tensor, name)
    check_against_torch(method, tfn, [a], device=device)


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_numerical(device, name):
    fn, _, low = UNARY[name]
    numerical_grad_check(fn, [_rand((3, 4), 10, low=low if low is not None else (0.1 if name == "abs" else None))],
                         device=device)


def test_abs_gradient_at_zero_is_zero(device):
    check_against_torch(dn.abs, torch.abs, [np.array([-1.0, 0.0, 2.0], np.float32)], device=device)


@pytest.mark.parametrize("lo, hi", [(-0.5, None), (None, 0.3), (-0.5, 0.3), (0.0, 0.0)])
def test_clip_against_torch(device, lo, hi):
    a = _rand((4, 5), 11)
    a[0, :3] = [-0.5, 0.3, 0.0]  # values exactly on the bounds pass the gradient (PyTorch)
    check_against_torch(lambda x: dn.clip(x, lo, hi), lambda x: torch.clamp(x, lo, hi), [a], device=device)
    check_against_torch(lambda x: x.clamp(min=lo, max=hi), lambda x: x.clamp(min=lo, max=hi), [a],
                        device=device)
    check_against_torch(lambda x: dn.clamp(x, min=lo, max=hi), lambda x: torch.clamp(x, min=lo, max=hi),
                        [a], device=device)


def test_clip_numerical(device):
    a = _rand((3, 4), 12)
    a[np.abs(a - 0.2) < 0.05] = 1.0
    a[np.abs(a + 0.3) < 0.05] = 1.0  # central differences need some distance from the kinks
    numerical_grad_check(lambda x: x.clip(-0.3, 0.2), [a], device=device)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@pytest.mark.parametrize("sa, sb", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1), (1, 3))])
def test_maximum_minimum_with_ties(device, name, sa, sb):
    rng = np.random.default_rng(13)
    a = rng.integers(-1, 2, sa).astype(np.float32)  # values in {-1, 0, 1}: many exact ties
    b = rng.integers(-1, 2, sb).astype(np.float32)
    assert np.any(np.broadcast_to(a, np.broadcast_shapes(sa, sb)) == np.broadcast_to(b, np.broadcast_shapes(sa, sb)))
    check_against_torch(getattr(dn, name), getattr(torch, name), [a, b], device=device)
    check_against_torch(lambda x, y: getattr(x, name)(y), getattr(torch, name), [a, b], device=device)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_numerical_and_scalar(device, name):
    a, b = _rand((3, 4), 15), _rand((3, 4), 16)
    numerical_grad_check(getattr(dn, name), [a, b], device=device)
    out = check_against_torch(lambda x: getattr(x, name)(0.25), lambda x: getattr(torch, name)(x, torch.tensor(0.25)),
                              [a], device=device)
    assert out[0].dtype == np.float32


@pytest.mark.parametrize("sc, sa, sb", [((3, 4), (3, 4), (3, 4)), ((3, 4), (4,), (3, 1)), ((2, 1, 4), (3, 4), ())])
def test_where_against_torch(device, sc, sa, sb):
    cond = np.random.default_rng(17).random(sc) > 0.5
    a, b = _rand(sa, 18), _rand(sb, 19)
    check_against_torch(lambda x, y: dn.where(dn.tensor(cond, device=device), x, y),
                        lambda x, y: torch.where(torch.tensor(cond), x, y), [a, b], device=device)
    numerical_grad_check(lambda x, y: dn.where(dn.tensor(cond, device=device), x, y), [a, b], device=device)


def test_where_with_scalars(device):
    a = _rand((3, 4), 20)
    out = check_against_torch(lambda x: dn.where(x > 0, x, 0.0), lambda x: torch.where(x > 0, x, 0.0), [a],
                              device=device)
    assert out[0].dtype == np.float32
    check_against_torch(lambda x: dn.where(x > 0, -1.0, x), lambda x: torch.where(x > 0, -1.0, x), [a],
                        device=device)


def test_unbroadcast_kernel():
    g = np.ones((2, 3, 4), np.float32)
    assert unbroadcast(g, (2, 3, 4)) is g
    np.testing.assert_array_equal(unbroadcast(g, (4,)), np.full((4,), 6.0))
    np.testing.assert_array_equal(unbroadcast(g, (3, 1)), np.full((3, 1), 8.0))
    np.testing.assert_array_equal(unbroadcast(g, ()), np.float32(24.0))


@pytest.mark.parametrize("op", ["add", "mul", "maximum"])
def test_broadcast_mismatch_names_shapes(device, op):
    a, b = dn.zeros(2, 3, device=device), dn.zeros(4, device=device)
    fn = getattr(dn, op) if op == "maximum" else BINARY[op]
    assert_raises_naming(ValueError, lambda: fn(a, b), "(2,3)", "(4,)")
