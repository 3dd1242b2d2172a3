"""matmul with NumPy/PyTorch rules: 1-D operands, batches, broadcast batch dims."""
import numpy as np
import pytest
import torch

import divenet as dn
from tests.helpers import assert_raises_naming, check_against_torch, numerical_grad_check

SHAPES = [
    ((4,), (4,)),  # 1-D @ 1-D -> scalar
    ((4,), (4, 3)),  # 1-D @ 2-D
    ((2, 4), (4,)),  # 2-D @ 1-D
    ((2, 4), (4, 3)),  # 2-D @ 2-D
    ((5, 2, 4), (5, 4, 3)),  # batched
    ((5, 2, 4), (4, 3)),  # batch broadcast, right operand shared
    ((2, 4), (5, 4, 3)),  # batch broadcast, left operand shared
    ((2, 1, 3, 4), (5, 4, 2)),  # broadcast batch dims on both sides
    ((4,), (2, 4, 3)),  # 1-D @ batched
    ((2, 3, 4), (4,)),  # batched @ 1-D
    ((1, 4), (4, 1)),
]


def _rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("sa, sb", SHAPES)
def test_matmul_against_torch(device, sa, sb):
    a, b = _rand(sa, 0), _rand(sb, 1)
    out = check_against_torch(lambda x, y: x @ y, lambda x, y: x @ y, [a, b], device=device)
    assert out[0].dtype == np.float32
    check_against_torch(dn.matmul, torch.matmul, [a, b], device=device)
    # one side constant: the other gradient alone
    check_against_torch(dn.matmul, torch.matmul, [a, b], grad_inputs=[0], device=device)
    check_against_torch(dn.matmul, torch.matmul, [a, b], grad_inputs=[1], device=device)


@pytest.mark.parametrize("sa, sb", SHAPES)
def test_matmul_numerical(device, sa, sb):
    numerical_grad_check(dn.matmul, [_rand(sa, 2), _rand(sb, 3)], device=device)


def test_rmatmul_with_array(device):
    b = dn.tensor(_rand((4, 3), 4), device=device, requires_grad=True)
    a = _rand((2, 4), 5)
    for left in (a.tolist(), a):  # a NumPy array on the left defers to Tensor.__rmatmul__
        b.grad = None
        out = left @ b
        assert isinstance(out, dn.Tensor) and out.device == b.device
        np.testing.assert_allclose(out.numpy(), a @ b.numpy(), rtol=1e-5)
        out.sum().backward()
        np.testing.assert_allclose(b.grad.numpy(), a.T @ np.ones((2, 3), np.float32), rtol=1e-5)


def test_matmul_float64_stays_float64(device):
    a = dn.tensor(_rand((2, 3), 6).astype(np.float64), device=device)
    assert (a @ a.T).dtype == np.float64


@pytest.mark.parametrize("sa, sb", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)), ((5, 2, 3), (4, 2)),
                                    ((5,), (3, 4, 2))])
def test_matmul_inner_mismatch_names_both_shapes(device, sa, sb):
    a, b = dn.zeros(*sa, device=device), dn.zeros(*sb, device=device)
    assert_raises_naming(ValueError, lambda: a @ b, "matmul", str(sa), str(sb))


def test_matmul_batch_mismatch_and_scalars(device):
    a, b = dn.zeros(2, 3, 4, device=device), dn.zeros(5, 4, 2, device=device)
    assert_raises_naming(ValueError, lambda: dn.matmul(a, b), "matmul", "(2, 3, 4)", "(5, 4, 2)")
    s = dn.tensor(2.0, device=device)
    assert_raises_naming(ValueError, lambda: s @ a, "matmul", "()", "(2, 3, 4)")
