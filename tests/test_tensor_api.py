"""PyTorch's Tensor and top-level names, each run under torch and divenet alike."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import divenet as dn
from tests.helpers import assert_raises_naming, check_against_torch

RNG = np.random.default_rng(0)
A = RNG.standard_normal((3, 4, 5)).astype(np.float32)
M = RNG.standard_normal((4, 3)).astype(np.float32)
W52 = RNG.standard_normal((5, 2)).astype(np.float32)


def _same(ours, theirs, rtol=1e-5, atol=1e-6):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    assert str(ours.dtype) == str(theirs.dtype), (ours.dtype, theirs.dtype)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=rtol, atol=atol)


def test_size_is_pytorchs_and_numel_counts():
    for m in (dn, torch):
        t = m.zeros(2, 3, 4)
        assert tuple(t.size()) == (2, 3, 4) and t.size(1) == 3 and t.size(-1) == 4
        assert t.numel() == 24 and len(t) == 2 and t.dim() == 3
    assert_raises_naming(ValueError, lambda: dn.zeros(2, 3).size(2), "dim 2", "(2, 3)")


REDUCTIONS = [
    ("sum", dict()), ("sum", dict(dim=1)), ("sum", dict(dim=(0, 2), keepdim=True)),
    ("mean", dict(dim=-1)), ("mean", dict(dim=0, keepdim=True)), ("prod", dict(dim=2)), ("prod", dict()),
    ("amax", dict(dim=(1, 2))), ("amin", dict(dim=0)), ("std", dict(dim=1)), ("std", dict()),
    ("var", dict(dim=2, keepdim=True)), ("var", dict(dim=0, unbiased=False)), ("std", dict(dim=0, correction=0)),
    ("norm", dict()), ("norm", dict(dim=1)), ("norm", dict(p=1, dim=2)), ("norm", dict(p=3, dim=0, keepdim=True)),
    ("norm", dict(p=float("inf"), dim=1)),
]


@pytest.mark.parametrize("name, kw", REDUCTIONS)
def test_reductions_match_torch(name, kw):
    check_against_torch(lambda x: getattr(x, name)(**kw), lambda x: getattr(x, name)(**kw), [A])


@pytest.mark.parametrize("name", ["sum", "mean", "prod", "amax", "amin", "std", "var", "any", "all", "argmax", "argmin"])
def test_numpy_axis_and_keepdims_are_taken(name):
    x = dn.tensor(A > 0) if name in ("any", "all") else dn.tensor(A)
    ref, a = getattr(np, name), x.numpy()
    if name in ("argmax", "argmin"):
        expected = np.expand_dims(ref(a, axis=1), 1)
    elif name in ("std", "var"):
        expected = ref(a, axis=1, keepdims=True, ddof=1)  # PyTorch's default correction
    else:
        expected = ref(a, axis=1, keepdims=True)
    np.testing.assert_allclose(getattr(x, name)(axis=1, keepdims=True).numpy(), expected, rtol=1e-5)
    assert_raises_naming(TypeError, lambda: getattr(x, name)(dim=0, axis=1), "dim", "axis")


def test_prod_gradient_with_zeros_matches_torch():
    a = np.array([[2.0, 0.0, 3.0], [0.0, 0.0, 4.0], [1.0, 5.0, -2.0]], np.float32)
    for kw in (dict(), dict(dim=0), dict(dim=1, keepdim=True)):
        check_against_torch(lambda x: x.prod(**kw), lambda x: x.prod(**kw), [a])


def test_norm_of_zero_has_zero_gradient_like_torch():
    check_against_torch(lambda x: x.norm(dim=1), lambda x: x.norm(dim=1), [np.zeros((2, 3), np.float32)])


def test_max_min_argmax_any_all_match_torch():
    a = np.array([[1.0, 5.0, 5.0], [7.0, -1.0, 2.0]], np.float32)
    for m in (dn, torch):
        t = m.tensor(a)
        v, i = t.max(dim=1)
        np.testing.assert_array_equal(v.numpy(), [5.0, 7.0])
        np.testing.assert_array_equal(i.numpy(), [1, 0])
        np.testing.assert_array_equal(t.max(m.tensor(3.0)).numpy(), np.maximum(a, 3))
        np.testing.assert_array_equal(t.min(dim=0, keepdim=True).values.numpy(), [[1.0, -1.0, 2.0]])
        np.testing.assert_array_equal(m.argmax(t, dim=1).numpy(), [1, 0])
        assert m.max(t).item() == 7.0 and m.argmax(t).item() == 3
        assert bool((t > 6).any()) and not bool((t > 6).all())
        np.testing.assert_array_equal((t > 0).all(dim=1).numpy(), [True, False])
    np.testing.assert_array_equal(dn.tensor(a).argmax(axis=0).numpy(), [1, 0, 0])


METHODS = [
    ("clone", lambda x: x.clone() * 2), ("pow", lambda x: x.pow(3)), ("pow_tensor", lambda x: x.abs().pow(x)),
    ("repeat", lambda x: x.repeat(2, 1, 3)), ("repeat_more_dims", lambda x: x.repeat(2, 1, 1, 2)),
    ("t", lambda x: x[0].t()), ("view", lambda x: x.view(4, -1)), ("view_tuple", lambda x: x.view((5, 12))),
    ("reshape", lambda x: x.reshape(-1, 5)), ("unsqueeze", lambda x: x.unsqueeze(1)),
    ("squeeze", lambda x: x[:, :1].squeeze(1)), ("flatten", lambda x: x.flatten(1)),
    ("flatten_range", lambda x: x.flatten(0, 1)), ("exp", lambda x: x.exp()), ("log", lambda x: x.abs().log()),
    ("abs", lambda x: abs(x)), ("sqrt", lambda x: x.abs().sqrt()), ("tanh", lambda x: x.tanh()),
    ("sigmoid", lambda x: x.sigmoid()), ("relu", lambda x: x.relu()), ("neg", lambda x: x.neg()),
    ("square", lambda x: x.square()), ("expand_as", lambda x: x[:1].expand_as(x)),
]


@pytest.mark.parametrize("name, fn", METHODS, ids=[m[0] for m in METHODS])
def test_methods_match_torch(name, fn):
    check_against_torch(fn, fn, [A])


TOP_LEVEL = [
    ("mm", lambda m, x, w: m.mm(x[0], w)), ("matmul", lambda m, x, w: m.matmul(x, w)),
    ("sum", lambda m, x, w: m.sum(x, 1)), ("mean", lambda m, x, w: m.mean(x, dim=(0, 2))),
    ("tanh", lambda m, x, w: m.tanh(x)), ("sigmoid", lambda m, x, w: m.sigmoid(x)), ("relu", lambda m, x, w: m.relu(x)),
    ("exp", lambda m, x, w: m.exp(x)), ("log", lambda m, x, w: m.log(m.abs(x))), ("max", lambda m, x, w: m.max(x)),
    ("std", lambda m, x, w: m.std(x, 2)), ("prod", lambda m, x, w: m.prod(x, 0)),
    ("clone", lambda m, x, w: m.clone(x)), ("flatten", lambda m, x, w: m.flatten(x, 1)),
    ("pow", lambda m, x, w: m.pow(x, 2)), ("norm", lambda m, x, w: m.norm(x)),
]


@pytest.mark.parametrize("name, fn", TOP_LEVEL, ids=[t[0] for t in TOP_LEVEL])
def test_top_level_functions_match_torch(name, fn):
    uses_w = name in ("mm", "matmul")
    check_against_torch(lambda x, w: fn(dn, x, w), lambda x, w: fn(torch, x, w), [A, W52],
                        grad_inputs=[0, 1] if uses_w else [0])


def test_mm_needs_matrices():
    assert_raises_naming(ValueError, lambda: dn.mm(dn.zeros(2, 3, 4), dn.zeros(4, 2)), "(2, 3, 4)")


@pytest.mark.parametrize("make", [
    lambda m: m.linspace(0, 1, 5), lambda m: m.linspace(-2.0, 3.0, steps=11), lambda m: m.eye(3),
    lambda m: m.eye(2, 4), lambda m: m.zeros(size=(2, 3)), lambda m: m.ones(size=(4,)),
    lambda m: m.arange(6).reshape(2, 3), lambda m: m.empty(size=(2, 2)).fill_(3.0),
])
def test_creation_matches_torch(make):
    _same(make(dn), make(torch))


def test_random_creation_is_seeded_and_shaped():
    dn.manual_seed(11)
    first = [dn.randn(size=(2, 3)), dn.rand(size=(4,)), dn.normal(1.0, 2.0, size=(500,)), dn.randperm(10),
             dn.randint(0, 5, (3,)), dn.randint(7, size=(2, 2))]
    dn.manual_seed(11)
    again = [dn.randn(size=(2, 3)), dn.rand(size=(4,)), dn.normal(1.0, 2.0, size=(500,)), dn.randperm(10),
             dn.randint(0, 5, (3,)), dn.randint(7, size=(2, 2))]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert first[0].shape == (2, 3) and first[1].shape == (4,) and first[2].dtype == np.float32
    assert abs(first[2].numpy().mean() - 1.0) < 0.3 and abs(first[2].numpy().std() - 2.0) < 0.3
    assert sorted(first[3].tolist()) == list(range(10)) and first[3].dtype == np.int64
    assert first[5].numpy().max() < 7
    means = dn.arange(4.0)
    z = dn.normal(means, dn.tensor(0.01))  # tensors: one mean per entry
    assert z.shape == (4,) and np.abs(z.numpy() - means.numpy()).max() < 0.1
    assert_raises_naming(TypeError, lambda: dn.normal(0.0, 1.0), "size")
    assert_raises_naming(TypeError, lambda: dn.zeros(2, size=(2,)), "size")


def test_type_and_casts_match_torch():
    for m, prefix in ((dn, "divenet"), (torch, "torch")):
        t = m.tensor([[1.5, -2.0], [0.0, 3.7]])
        assert t.type() == f"{prefix}.FloatTensor" and t.long().type() == f"{prefix}.LongTensor"
        assert str(t.int().dtype).endswith("int32") and str(t.half().dtype).endswith("float16")
        assert str(t.bool().dtype).endswith("bool") and str(t.type(m.float64).dtype).endswith("float64")
        assert str(t.type(f"{prefix}.LongTensor").dtype).endswith("int64")
        np.testing.assert_array_equal(t.int().numpy(), [[1, -2], [0, 3]])
        np.testing.assert_array_equal(t.bool().numpy(), [[True, True], [False, True]])
    assert dn.float is dn.float32 and dn.long is dn.int64 and dn.half is dn.float16 and dn.double is dn.float64


def test_format_len_iter_contains_and_array():
    for m in (dn, torch):
        loss = m.tensor(0.123456)
        assert f"{loss:.3f}" == "0.123" and f"{m.tensor(3):>4}" == "   3"
        with pytest.raises(TypeError):
            f"{m.tensor([1.0, 2.0]):.2f}"
        t = m.tensor([[1.0, 2.0], [3.0, 4.0]])
        rows = list(t)
        assert len(rows) == 2 and rows[1].tolist() == [3.0, 4.0]
        assert 3.0 in t and 5.0 not in t
        with pytest.raises(TypeError):
            len(m.tensor(1.0))
        with pytest.raises(TypeError):
            iter(m.tensor(1.0))
    t = dn.tensor([1.0, 2.0])
    assert np.asarray(t) is t.array  # no copy for NumPy
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    assert np.array(t, copy=True) is not t.array


def test_iteration_keeps_the_graph():
    x = dn.tensor(M, requires_grad=True)
    sum(row.sum() * i for i, row in enumerate(x)).backward()
    np.testing.assert_array_equal(x.grad, np.repeat(np.arange(4.0)[:, None], 3, 1))


def test_comparisons_and_bitwise_match_torch():
    a, b = np.array([1.0, -2.0, 3.0, 0.0], np.float32), np.array([1.0, 2.0, -3.0, 0.5], np.float32)
    for op in (lambda x, y: (x > 0) & (y > 0), lambda x, y: (x > 0) | (y > 0), lambda x, y: (x > 0) ^ (y < 1),
               lambda x, y: ~(x == y), lambda x, y: x != y, lambda x, y: x <= 1):
        _same(op(dn.tensor(a), dn.tensor(b)), op(torch.tensor(a), torch.tensor(b)))
    i, j = np.array([7, -7, 9]), np.array([2, 3, 4])
    for op in (lambda x, y: x // y, lambda x, y: x % y):
        _same(op(dn.tensor(i), dn.tensor(j)), op(torch.tensor(i), torch.tensor(j)))


def test_tensor_copies_and_from_numpy_shares():
    a = np.arange(3.0)
    t, s, u = dn.tensor(a), dn.from_numpy(a), dn.as_tensor(a)
    a[0] = 100.0
    assert t[0].item() == 0.0 and s[0].item() == 100.0 and u[0].item() == 100.0  # as torch
    assert s.dtype == np.float64  # from_numpy keeps float64, as torch
    assert dn.as_tensor(t) is t and dn.as_tensor(t, dtype="float32").dtype == np.float32
    assert_raises_naming(TypeError, lambda: dn.from_numpy([1, 2]), "numpy.ndarray")


@pytest.mark.parametrize("data", [["a", "b"], [object()], np.array(["x"])])
def test_strings_and_objects_are_refused(data):
    assert_raises_naming(TypeError, lambda: dn.tensor(data), "strings or objects")


def test_grad_mode_switches():
    x = dn.tensor([1.0], requires_grad=True)
    assert dn.is_grad_enabled()
    with dn.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert dn.is_grad_enabled()
    dn.set_grad_enabled(False)
    try:
        assert not dn.is_grad_enabled()
    finally:
        dn.set_grad_enabled(True)
    with dn.inference_mode():
        assert not (x * 2).requires_grad
    with dn.inference_mode(False):
        assert (x * 2).requires_grad

    @dn.inference_mode()
    def f(t):
        return t * 2

    @dn.inference_mode
    def g(t):
        return t * 2

    assert not f(x).requires_grad and not g(x).requires_grad and dn.is_grad_enabled()


def test_subpackages_import_lazily():
    code = ("import sys, divenet as dn; assert 'divenet.nn' not in sys.modules and 'divenet.optim' not in sys.modules;"
            "assert dn.optim.SGD and dn.nn.Linear and dn.functional.relu;"
            "from divenet.summary import skip_init; assert callable(dn.summary)")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dn.nope
