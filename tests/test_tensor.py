"""Tensor creation, properties, conversions, operators' dtypes, grad mode and the random ops."""
import numpy as np
import pytest
import torch

import divenet as dn
from tests.helpers import assert_raises_naming, check_against_torch


# ---- creation and dtype inference --------------------------------------------------------------
@pytest.mark.parametrize("data, expected", [
    (2.5, np.float32), ([1.0, 2.0], np.float32), ([[1, 2], [3, 4]], np.int64), (3, np.int64),
    ([1, 2.5], np.float32), ([True, False], np.bool_),
    (np.zeros(3, np.float64), np.float64), (np.zeros(3, np.float16), np.float16),
    (np.zeros(3, np.int32), np.int32),
])
def test_tensor_dtype_inference_matches_torch(device, data, expected):
    t = dn.tensor(data, device=device)
    assert t.dtype == expected
    assert str(torch.tensor(data).dtype) == "torch." + t.dtype.name  # PyTorch infers the same
    np.testing.assert_array_equal(t.numpy(), np.asarray(data))


@pytest.mark.parametrize("dtype", ["float64", "float16", dn.float64, np.float16, "int32"])
def test_tensor_explicit_dtype(device, dtype):
    t = dn.tensor([1.5, 2.0], dtype=dtype, device=device)
    assert t.dtype == np.dtype(dtype)
    assert t.numpy().dtype == np.dtype(dtype)


def test_tensor_unknown_dtype_string():
    assert_raises_naming(TypeError, lambda: dn.tensor([1.0], dtype="float8"), "float8")


@pytest.mark.parametrize("data", [[1, 2], [True]])
def test_requires_grad_on_non_float_raises(device, data):
    assert_raises_naming(TypeError, lambda: dn.tensor(data, device=device, requires_grad=True), "floating")
    t = dn.tensor(data, device=device)
    with pytest.raises(TypeError):
        t.requires_grad_()


def test_tensor_from_tensor_and_properties(device):
    a = dn.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], device=device, requires_grad=True)
    assert a.shape == (2, 3) and a.ndim == 2 and a.dim() == 2 and a.numel() == 6 and len(a) == 2
    assert a.device == dn.device(device) and str(a.device) == device
    assert a.requires_grad and a.is_leaf and a.grad is None
    b = dn.tensor(a)
    assert not b.requires_grad and b.dtype == np.float32
    np.testing.assert_array_equal(b.numpy(), a.numpy())
    assert dn.tensor(7.5).item() == 7.5 and isinstance(dn.tensor(7).item(), int)
    assert float(dn.tensor([2.0])) == 2.0 and int(dn.tensor(3)) == 3
    assert a.T.shape == (3, 2) and a.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert "requires_grad=True" in repr(a)


def test_item_on_many_elements_names_shape():
    assert_raises_naming(ValueError, lambda: dn.zeros(2, 3).item(), "(2, 3)")
    assert_raises_naming(ValueError, lambda: bool(dn.zeros(2, 3)), "(2, 3)")


@pytest.mark.parametrize("make, torch_make", [
    (lambda d: dn.zeros(2, 3, device=d), lambda: torch.zeros(2, 3)),
    (lambda d: dn.zeros((2, 3), device=d), lambda: torch.zeros((2, 3))),
    (lambda d: dn.ones([4], device=d), lambda: torch.ones([4])),
    (lambda d: dn.ones(2, 1, dtype="float64", device=d), lambda: torch.ones(2, 1, dtype=torch.float64)),
    (lambda d: dn.full((2, 2), 1.5, device=d), lambda: torch.full((2, 2), 1.5)),
    (lambda d: dn.full((3,), 7, device=d), lambda: torch.full((3,), 7)),
    (lambda d: dn.full((3,), True, device=d), lambda: torch.full((3,), True)),
    (lambda d: dn.full(2, 4.0, dtype="float16", device=d), lambda: torch.full((2,), 4.0, dtype=torch.float16)),
    (lambda d: dn.arange(5, device=d), lambda: torch.arange(5)),
    (lambda d: dn.arange(2, 11, 3, device=d), lambda: torch.arange(2, 11, 3)),
    (lambda d: dn.arange(0.0, 1.0, 0.25, device=d), lambda: torch.arange(0.0, 1.0, 0.25)),
    (lambda d: dn.arange(5, 0, -2, device=d), lambda: torch.arange(5, 0, -2)),
    (lambda d: dn.arange(4, dtype="float64", device=d), lambda: torch.arange(4, dtype=torch.float64)),
])
def test_creation_matches_torch(device, make, torch_make):
    t, ref = make(device), torch_make().numpy()
    assert t.device == dn.device(device)
    assert t.dtype == ref.dtype and t.shape == ref.shape
    np.testing.assert_array_equal(t.numpy(), ref)


def test_empty_and_like(device):
    base = dn.tensor(np.arange(6, dtype=np.float64).reshape(2, 3), device=device)
    e = dn.empty(2, 3, device=device)
    assert e.shape == (2, 3) and e.dtype == np.float32
    for fn, value in [(dn.zeros_like, 0.0), (dn.ones_like, 1.0)]:
        t = fn(base)
        assert t.shape == (2, 3) and t.dtype == np.float64 and t.device == base.device
        np.testing.assert_array_equal(t.numpy(), np.full((2, 3), value))
    t = dn.full_like(base, 2.5, dtype="float32")
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.numpy(), np.full((2, 3), 2.5, np.float32))
    t = dn.zeros_like(base, dtype="float32", requires_grad=True)
    assert t.requires_grad and t.dtype == np.float32


def test_like_keeps_the_memory_layout(device):
    """As PyTorch's preserve_format: a batch-last convolution output gives batch-last ones."""
    base = dn.tensor(np.zeros((3, 4, 5, 2), np.float32), device=device).permute(3, 0, 1, 2)
    for t in (dn.ones_like(base), dn.zeros_like(base), dn.full_like(base, 7, dtype="float64")):
        assert t.shape == (2, 3, 4, 5) and not t.array.flags.c_contiguous
        assert t.array.transpose(1, 2, 3, 0).flags.c_contiguous
    np.testing.assert_array_equal(dn.full_like(base, 7).numpy(), np.full((2, 3, 4, 5), 7, np.float32))
    assert not dn.ones_like(base).requires_grad and dn.ones_like(base, requires_grad=True).requires_grad


def test_to_detach_numpy(device):
    a = dn.tensor([1.0, 2.0], device=device, requires_grad=True)
    assert a.to(device) is a and a.to(dn.device(device)) is a
    for target in ("float64", dn.float64, np.float64):
        b = a.to(target)
        assert b.dtype == np.float64 and b.device == a.device
    b = a.to(dtype="float64")
    assert b.dtype == np.float64 and b.requires_grad
    (b * b).sum().backward()
    assert a.grad.dtype == np.float32
    np.testing.assert_allclose(a.grad.numpy(), [2.0, 4.0])
    c = (a * 3).detach()
    assert not c.requires_grad and c.is_leaf
    np.testing.assert_array_equal(c.numpy(), [3.0, 6.0])
    n = a.numpy()
    assert isinstance(n, np.ndarray) and n.dtype == np.float32
    # casting to an integer dtype ends the gradient, as in PyTorch
    assert not a.long().requires_grad and a.long().dtype == np.int64
    assert a.cpu().device == dn.cpu()


# ---- operators and dtypes ----------------------------------------------------------------------
def test_python_scalars_keep_float32(device):
    x = dn.tensor([1.0, 2.0, 4.0], device=device)
    for y in (x * 2.5, 2.5 * x, x + 1, 1 - x, x / 3.0, 3.0 / x, x ** 2, 2.0 ** x, -x, x - 0.5,
              np.float64(2.0) * x, x * np.float64(2.0), x @ x, dn.where(x > 1, x, 0.0), x.clip(0.5, 1.5)):
        assert y.dtype == np.float32, y
        assert y.device == x.device
    h = dn.tensor([1.0, 2.0], dtype="float16", device=device)
    assert (h * 2.5).dtype == np.float16
    d = dn.tensor([1.0, 2.0], dtype="float64", device=device)
    assert (d * 2.5).dtype == np.float64 and (2 * d).dtype == np.float64
    i = dn.arange(3, device=device)
    assert (i * 2).dtype == np.int64 and (i + 1).dtype == np.int64


def test_counting_with_bool_tensors(device):
    x = dn.tensor([[1.0, -2.0], [3.0, 0.5]], device=device, requires_grad=True)
    hits = (x > 0.7).sum()
    assert hits.item() == 2 and hits.dtype == np.int64 and not hits.requires_grad
    acc = (x.argmax(dim=1) == dn.tensor([0, 1], device=device)).float().mean()
    assert acc.dtype == np.float32 and acc.item() == 0.5 and not acc.requires_grad


@pytest.mark.parametrize("op", ["eq", "ne", "lt", "le", "gt", "ge"])
def test_comparisons_are_bool_without_grad(device, op):
    a_np = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], np.float32)
    b_np = np.array([2.0, 2.0, 2.0], np.float32)
    a = dn.tensor(a_np, device=device, requires_grad=True)
    b = dn.tensor(b_np, device=device)
    fn = getattr(__import__("operator"), op)
    for other, t_other in ((b, torch.tensor(b_np)), (2.0, 2.0)):
        out = fn(a, other)
        ref = fn(torch.tensor(a_np), t_other).numpy()
        assert out.dtype == np.bool_ and not out.requires_grad
        np.testing.assert_array_equal(out.numpy(), ref)


# ---- grad mode ---------------------------------------------------------------------------------
def test_no_grad_context(device):
    x = dn.tensor([1.0, 2.0], device=device, requires_grad=True)
    with dn.no_grad():
        assert not dn.is_grad_enabled()
        y = (x * 2).exp().sum()
        assert not y.requires_grad and y.is_leaf
        with dn.enable_grad():
            assert dn.is_grad_enabled()
            z = x * 2
            assert z.requires_grad
        assert not dn.is_grad_enabled()
    assert dn.is_grad_enabled()
    with pytest.raises(RuntimeError):
        y.backward()


def test_no_grad_restores_after_exception():
    with pytest.raises(KeyError):
        with dn.no_grad():
            raise KeyError("x")
    assert dn.is_grad_enabled()


def test_no_grad_decorators():
    x = dn.tensor([1.0], requires_grad=True)

    @dn.no_grad()
    def f(t):
        """doc"""
        return t * 2, dn.is_grad_enabled()

    @dn.no_grad
    def g(t):
        return t * 2

    @dn.enable_grad()
    def h(t):
        return t * 2

    y, enabled = f(x)
    assert not enabled and not y.requires_grad and f.__name__ == "f" and f.__doc__ == "doc"
    assert not g(x).requires_grad
    assert dn.is_grad_enabled()
    with dn.no_grad():
        assert h(x).requires_grad
        assert not dn.is_grad_enabled()


# ---- random ------------------------------------------------------------------------------------
def test_random_reproducible_with_seed(device):
    dn.manual_seed(123)
    a = [dn.rand(2, 3, device=device), dn.randn((4,), device=device), dn.randint(0, 10, (3, 2), device=device)]
    dn.manual_seed(123)
    b = [dn.rand(2, 3, device=device), dn.randn((4,), device=device), dn.randint(0, 10, (3, 2), device=device)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert a[0].dtype == np.float32 and a[1].dtype == np.float32 and a[2].dtype == np.int64
    assert a[0].shape == (2, 3) and a[1].shape == (4,) and a[2].shape == (3, 2)
    assert ((a[0].numpy() >= 0) & (a[0].numpy() < 1)).all()
    assert ((a[2].numpy() >= 0) & (a[2].numpy() < 10)).all()
    assert dn.randint(0, 5, 4, device=device).shape == (4,)
    dn.manual_seed(124)
    assert not np.array_equal(dn.rand(2, 3).numpy(), a[0].numpy())


def test_random_state_round_trip():
    dn.manual_seed(5)
    dn.randn(3)
    state = dn.random.get_state()
    first = dn.randn(4, 2).numpy()
    dn.rand(10)
    dn.random.set_state(state)
    np.testing.assert_array_equal(dn.randn(4, 2).numpy(), first)


def test_random_options_and_like(device):
    dn.manual_seed(0)
    t = dn.randn(3, 2, dtype="float64", device=device, requires_grad=True)
    assert t.dtype == np.float64 and t.requires_grad and t.is_leaf
    assert dn.rand_like(t).shape == (3, 2) and dn.rand_like(t).dtype == np.float64
    assert dn.randn_like(t, dtype="float32").dtype == np.float32
    big = dn.randn(20000).numpy()
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1) < 0.05


def test_tensor_ops_forward_and_grad_against_torch(device):
    # an end-to-end expression mixing methods and module functions
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    w = np.random.default_rng(2).standard_normal((4, 2)).astype(np.float32)
    check_against_torch(
        lambda a, b: (dn.exp(a * 0.5) @ b).abs().sqrt().sum(dim=0) / 2,
        lambda a, b: (torch.exp(a * 0.5) @ b).abs().sqrt().sum(dim=0) / 2,
        [x, w], device=device)


@pytest.mark.parametrize("expr", [
    lambda m: m.arange(3) * 2.5, lambda m: 2.5 * m.arange(3), lambda m: m.arange(1, 4) / m.arange(1, 4),
    lambda m: 1 / m.arange(1, 3), lambda m: m.arange(3) + m.ones(3), lambda m: m.ones(3) - m.arange(3),
    lambda m: m.arange(3) * 2, lambda m: m.arange(3) ** 2, lambda m: m.ones(3, dtype=m.float64) * m.arange(3),
])
def test_integer_float_promotion_follows_pytorch_not_numpy(expr):
    """NumPy turns int64 * float32 into float64; divenet, like PyTorch, stays in float32."""
    ours, theirs = expr(dn), expr(torch)
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_float_gradient_flows_through_a_mixed_int_op():
    x = dn.tensor([1.0, 2.0], requires_grad=True)
    (x * dn.arange(1, 3)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0])
    assert x.grad.dtype == np.float32
