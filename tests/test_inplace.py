"""In-place ops, ``.grad`` and version counters, each run under torch and divenet alike."""
import numpy as np
import pytest
import torch

import divenet as dn
from tests.helpers import assert_raises_naming

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4)).astype(np.float32)
B = RNG.uniform(0.5, 2.0, (3, 4)).astype(np.float32)  # away from 0: a divisor
ROW = RNG.standard_normal((4,)).astype(np.float32)
W = RNG.standard_normal((3, 4)).astype(np.float32)

# each op: (m, y, b, row) -> None, applied in place to the non-leaf y; b (3, 4) and row (4,)
# require grad too, so gradients flow to the old value and to the operand
OPS = {
    "add_": lambda m, y, b, r: y.add_(b),
    "add_alpha": lambda m, y, b, r: y.add_(r, alpha=-2.5),
    "sub_alpha": lambda m, y, b, r: y.sub_(b, alpha=0.5),
    "mul_": lambda m, y, b, r: y.mul_(b),
    "mul_scalar": lambda m, y, b, r: y.mul_(3.0),
    "div_": lambda m, y, b, r: y.div_(b),
    "div_broadcast": lambda m, y, b, r: y.div_(r * r + 1),
    "iadd": lambda m, y, b, r: y.__iadd__(r),
    "isub": lambda m, y, b, r: y.__isub__(b * 2),
    "imul": lambda m, y, b, r: y.__imul__(r),
    "idiv": lambda m, y, b, r: y.__itruediv__(b),
    "clamp_": lambda m, y, b, r: y.clamp_(-0.5, 0.7),
    "clamp_min": lambda m, y, b, r: y.clamp_(min=0.1),
    "setitem_slice": lambda m, y, b, r: y.__setitem__((slice(None), slice(1, 3)), b[:, :2] * 2),
    "setitem_row_broadcast": lambda m, y, b, r: y.__setitem__(1, r),
    "setitem_int_array": lambda m, y, b, r: y.__setitem__(m.tensor([2, 0]), b[:2]),
    "setitem_mask": lambda m, y, b, r: y.__setitem__(y > 0, 0.25),
    "setitem_scalar": lambda m, y, b, r: y.__setitem__((0, 2), 7.0),
    "setitem_0d_tensor": lambda m, y, b, r: y.__setitem__((2, 1), r[3]),
    "copy_": lambda m, y, b, r: y.copy_(b * 3),
    "copy_broadcast": lambda m, y, b, r: y.copy_(r),
    "fill_": lambda m, y, b, r: y.fill_(1.5),
    "zero_": lambda m, y, b, r: y.zero_(),
    "twice": lambda m, y, b, r: (y.mul_(b), y.add_(r)),
}


def _run(m, op):
    x = m.tensor(X, requires_grad=True)
    b = m.tensor(B, requires_grad=True)
    r = m.tensor(ROW, requires_grad=True)
    y = x * 2
    out = op(m, y, b, r)
    assert out is None or out is y or isinstance(out, tuple)
    (y * m.tensor(W)).sum().backward()
    grads = [None if t.grad is None else t.grad.numpy() for t in (x, b, r)]
    return y.detach().numpy(), grads


@pytest.mark.parametrize("name", OPS)
def test_inplace_op_values_and_gradients_match_torch(name):
    ours, ours_g = _run(dn, OPS[name])
    theirs, theirs_g = _run(torch, OPS[name])
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    for k, (g, h) in enumerate(zip(ours_g, theirs_g)):
        assert (g is None) == (h is None), f"input {k}: gradient presence differs"
        if g is not None:
            np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-6, err_msg=f"grad of input {k}")


@pytest.mark.parametrize("name", [n for n in OPS if n != "twice"])
def test_inplace_op_returns_self_and_bumps_version(name):
    y = dn.tensor(X.copy())
    before = y._version[0]
    array = y.array
    OPS[name](dn, y, dn.tensor(B), dn.tensor(ROW))
    assert y.array is array  # written into the storage, not replaced
    assert y._version[0] == before + 1


@pytest.mark.parametrize("name", [n for n in OPS if n != "twice"])
def test_inplace_on_a_leaf_that_requires_grad(name):
    """PyTorch's rule: an error with grad mode on, a plain update under no_grad."""
    for m in (dn, torch):
        x = m.tensor(X.copy(), requires_grad=True)
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            OPS[name](m, x, m.tensor(B), m.tensor(ROW))
    ours = dn.tensor(X.copy(), requires_grad=True)
    theirs = torch.tensor(X.copy(), requires_grad=True)
    with dn.no_grad():
        OPS[name](dn, ours, dn.tensor(B), dn.tensor(ROW))
    with torch.no_grad():
        OPS[name](torch, theirs, torch.tensor(B), torch.tensor(ROW))
    assert ours.is_leaf and ours.requires_grad and ours.grad is None
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_leaf_update_under_no_grad_trains_and_leaves_no_graph():
    w = dn.tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    with dn.no_grad():
        w -= 0.5 * w.grad
    np.testing.assert_allclose(w.numpy(), [0.0, 0.0])
    assert w.is_leaf and w.requires_grad
    w.grad.zero_()
    (w * 3).sum().backward()
    np.testing.assert_allclose(w.grad, [3.0, 3.0])


# ---- version counters ----------------------------------------------------------------------------
SAVED_OUTPUT = [("exp", "Exp"), ("sqrt", "Sqrt"), ("sigmoid", "Sigmoid"), ("tanh", "Tanh")]


@pytest.mark.parametrize("fn, node", SAVED_OUTPUT)
def test_changing_a_saved_output_raises_at_backward(fn, node):
    for m in (dn, torch):
        x = m.tensor(np.abs(X) + 0.1, requires_grad=True)
        y = getattr(x, fn)()
        with m.no_grad():
            y += 1  # a gradient through fn would use the changed values
        with pytest.raises(RuntimeError, match="in-?place operation"):
            y.sum().backward()
    x = dn.tensor(np.abs(X) + 0.1, requires_grad=True)
    y = getattr(x, fn)()
    y.mul_(2)
    assert_raises_naming(RuntimeError, y.sum().backward, node, "version 1", "version 0")


def test_changing_a_saved_input_raises_and_an_unsaved_one_does_not():
    for m in (dn, torch):
        x = m.tensor(X, requires_grad=True)
        h = x * 1
        z = (h * h).sum()  # Mul saved h
        p = (h + 1).sum()  # Add saved nothing
        h.add_(1)
        with pytest.raises(RuntimeError, match="in-?place"):
            z.backward()
        p.backward()
        np.testing.assert_allclose(x.grad.numpy(), np.ones_like(X))


def test_saved_view_shares_the_counter():
    """A reshape or slice of a saved tensor is a view: changing it changes the saved storage."""
    for m in (dn, torch):
        x = m.tensor(X, requires_grad=True)
        y = x.exp()
        with m.no_grad():
            y.reshape(-1)[0] = 5.0
        with pytest.raises(RuntimeError, match="in-?place"):
            y.sum().backward()
        x = m.tensor(X, requires_grad=True)
        y = x.exp()
        y.detach().zero_()  # detach() shares the counter too
        with pytest.raises(RuntimeError, match="in-?place"):
            y.sum().backward()


def test_data_does_not_share_the_counter():
    """.data exists to change values behind autograd's back: no error, and the gradient uses
    the changed values, as in PyTorch."""
    grads = []
    for m in (dn, torch):
        x = m.tensor(X, requires_grad=True)
        y = x.exp()
        y.data.mul_(2)
        y.sum().backward()
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6)
    np.testing.assert_allclose(grads[0], 2 * np.exp(X), rtol=1e-6)


def test_consumers_before_an_inplace_op_keep_the_old_history():
    res = []
    for m in (dn, torch):
        x = m.tensor(X, requires_grad=True)
        y = x * 2
        z = y + 1  # consumed before the change: its gradient goes to x * 2
        y.mul_(3)
        (z.sum() + (y * y).sum()).backward()
        res.append(x.grad.numpy())
    np.testing.assert_allclose(res[0], res[1], rtol=1e-6)


def test_constant_becomes_part_of_the_graph_by_setitem():
    res = []
    for m in (dn, torch):
        x = m.tensor(X, requires_grad=True)
        c = m.zeros(5, 4)
        assert not c.requires_grad
        c[1:4] = x * x
        c[0] = x[0]
        assert c.requires_grad and not c.is_leaf
        (c * m.arange(20.0).reshape(5, 4)).sum().backward()
        res.append(x.grad.numpy())
    np.testing.assert_allclose(res[0], res[1], rtol=1e-6)


def test_repeated_advanced_indices_and_int_tensors_match_torch():
    for value in (5, dn.tensor([7, 8, 9])):
        ours, theirs = dn.arange(12).reshape(4, 3), torch.arange(12).reshape(4, 3)
        ours[dn.tensor([0, 2])] = value
        theirs[torch.tensor([0, 2])] = value if isinstance(value, int) else torch.tensor([7, 8, 9])
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    ours, theirs = dn.zeros(3, dtype="int64"), torch.zeros(3, dtype=torch.int64)
    ours[1], theirs[1] = 2.7, 2.7  # cast, as PyTorch's index_put_
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_view_taken_before_a_recorded_inplace_op_is_refused():
    """PyTorch regenerates such a view's history; divenet refuses it rather than give a wrong
    gradient."""
    x = dn.tensor(X, requires_grad=True)
    y = x * 2
    v = y[:2]
    y.mul_(3)
    assert_raises_naming(RuntimeError, lambda: v.sum(), "view", "take the view again")
    np.testing.assert_allclose(v.numpy(), 6 * X[:2])  # reading it is fine
    w = y[:2]  # taken again: fine
    w.sum().backward()
    np.testing.assert_allclose(x.grad, np.r_[np.full((2, 4), 6.0), np.zeros((1, 4))])


VIEW_OPS = {
    "aug_assign": lambda m, y, b: y.__setitem__(0, y[0].__imul__(b[0])),  # what y[0] *= b[0] runs
    "method_on_view": lambda m, y, b: y[1:].add_(b[1:], alpha=2),
    "setitem_on_view": lambda m, y, b: y[:, 1].__setitem__(m.tensor([0, 2]), b[0, :2]),
    "view_then_base_read": lambda m, y, b: (y[2].mul_(b[2]), y.mul_(2)),
}


@pytest.mark.parametrize("name", VIEW_OPS)
def test_differentiable_inplace_on_an_index_view_matches_torch(name):
    """``y[0] *= b`` (a view's in-place op, then a setitem) and ``y[1:].add_(...)`` write into
    the base and its graph, as PyTorch's CopySlices."""
    res = []
    for m in (dn, torch):
        x = m.tensor(X, requires_grad=True)
        b = m.tensor(B, requires_grad=True)
        y = x * 2
        VIEW_OPS[name](m, y, b)
        (y * m.tensor(W)).sum().backward()
        res.append([y.detach().numpy(), x.grad.numpy(), b.grad.numpy()])
    for ours, theirs in zip(*res):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_differentiable_inplace_on_a_reshape_view_is_refused_not_wrong():
    x = dn.tensor(X, requires_grad=True)
    y = x * 2
    assert_raises_naming(RuntimeError, lambda: y.reshape(-1).mul_(3), "view", "clone()")
    with dn.no_grad():  # untracked: allowed, and the saved-version rule still holds
        y.reshape(-1).mul_(3)
    np.testing.assert_allclose(y.numpy(), 6 * X)


def test_inplace_errors_name_dtypes_and_shapes():
    i = dn.arange(3)
    assert_raises_naming(TypeError, lambda: i.add_(1.5), "float32", "int64")
    assert_raises_naming(TypeError, lambda: i.div_(2), "int64")
    with pytest.raises(RuntimeError):  # PyTorch refuses both too
        torch.arange(3).add_(1.5)
    x = dn.zeros(3)
    assert_raises_naming(ValueError, lambda: x.add_(dn.ones(2, 3)), "(2, 3)", "(3,)")
    assert_raises_naming(ValueError, lambda: x.__setitem__(slice(0, 2), dn.ones(3)), "(3,)")
    assert_raises_naming(ValueError, lambda: x.clamp_(), "min")
    x += 1  # Python ints into a float tensor are fine
    np.testing.assert_array_equal(x.numpy(), [1.0, 1.0, 1.0])


def test_normal_and_uniform_fill_reproducibly():
    t = dn.empty(2000)
    dn.manual_seed(3)
    t.normal_(2.0, 0.5)
    first = t.numpy().copy()
    assert abs(first.mean() - 2.0) < 0.05 and abs(first.std() - 0.5) < 0.05
    dn.manual_seed(3)
    np.testing.assert_array_equal(dn.empty(2000).normal_(2.0, 0.5).numpy(), first)
    u = dn.empty(2000).uniform_(-1.0, 3.0).numpy()
    assert u.min() >= -1.0 and u.max() < 3.0 and abs(u.mean() - 1.0) < 0.1
    x = dn.tensor(X, requires_grad=True)
    y = x * 1
    y.normal_()  # overwritten: no gradient reaches x
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.zeros_like(X))


def test_requires_grad_and_detach_in_place():
    for m in (dn, torch):
        x = m.tensor(X, requires_grad=True)
        y = x * 2
        with pytest.raises(RuntimeError):
            y.requires_grad_(False)  # only leaves
        assert y.detach_() is y and not y.requires_grad and y.is_leaf
        with pytest.raises(RuntimeError):
            (x * 2)[0].detach_()  # a view
        c = m.tensor(X)
        assert c.requires_grad_() is c and c.requires_grad


# ---- .grad -----------------------------------------------------------------------------------------
def test_grad_is_a_graph_free_tensor_accumulated_in_place():
    for m in (dn, torch):
        x = m.tensor(X, requires_grad=True)
        (x * x).sum().backward()
        g = x.grad
        assert isinstance(g, m.Tensor) and not g.requires_grad and g.grad_fn is None
        (x * 3).sum().backward()
        assert x.grad is g  # accumulated into the same tensor
        np.testing.assert_allclose(g.numpy(), 2 * X + 3, rtol=1e-6)
        w = g.data
        assert isinstance(w, m.Tensor)
        np.testing.assert_allclose(float(g.norm()), np.linalg.norm(2 * X + 3), rtol=1e-5)
        x.grad.zero_()
        (x * 5).sum().backward()
        assert x.grad is g
        np.testing.assert_array_equal(x.grad.numpy(), np.full_like(X, 5.0))


def test_grad_setter_checks_like_torch():
    for m in (dn, torch):
        x = m.zeros(2, 3, requires_grad=True)
        x.grad = m.ones(2, 3)
        np.testing.assert_array_equal(x.grad.numpy(), np.ones((2, 3)))
        with pytest.raises(TypeError):
            x.grad = np.ones((2, 3), np.float32)
        with pytest.raises((ValueError, RuntimeError)):
            x.grad = m.ones(3, 2)
        x.grad = None
        assert x.grad is None
    x = dn.zeros(2, 3, requires_grad=True)
    assert_raises_naming(ValueError, lambda: setattr(x, "grad", dn.ones(3, 2)), "(3, 2)", "(2, 3)")
    assert_raises_naming(TypeError, lambda: setattr(x, "grad", dn.ones(2, 3, dtype="float64")), "float64")


def test_backward_gradient_keyword_and_retain_graph():
    for m in (dn, torch):
        x = m.tensor(X, requires_grad=True)
        y = x * x
        y.backward(gradient=m.tensor(W), retain_graph=True)
        y.backward(m.tensor(W))
        np.testing.assert_allclose(x.grad.numpy(), 4 * X * W, rtol=1e-6)
