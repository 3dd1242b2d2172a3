"""The graph: accumulation, retain_graph, freeing, diamonds, multi-output ops, deep graphs, errors."""
import numpy as np
import pytest
import torch

import divenet as dn
from divenet.autograd import Function
from tests.helpers import assert_raises_naming


def test_grad_accumulates_across_backward_calls(device):
    x = dn.tensor([1.0, -2.0, 3.0], device=device, requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, -4.0, 6.0])
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, -1.0, 9.0])
    x.zero_grad()
    assert x.grad is None


def test_retain_graph_allows_second_backward(device):
    x = dn.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    g1 = x.grad.numpy().copy()  # backward accumulates into the same .grad in place
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * g1, rtol=1e-6)
    # ... and the default (retain_graph=False) freed it
    msg = assert_raises_naming(RuntimeError, y.backward, "retain_graph=True")
    assert "freed" in msg
    np.testing.assert_allclose(x.grad.numpy(), 2 * g1, rtol=1e-6)  # the failed call changed nothing
    assert y.grad is None


def test_freed_graph_shared_by_a_later_output_raises(device):
    x = dn.tensor([1.0, 2.0], device=device, requires_grad=True)
    h = x.exp()
    (h * 2).sum().backward()
    with pytest.raises(RuntimeError, match="freed"):
        (h * 3).sum().backward()


def test_tensor_used_twice_diamond(device):
    xn = np.array([0.5, -1.5, 2.0], np.float32)
    x = dn.tensor(xn, device=device, requires_grad=True)
    h = x * 2
    y = (h.exp() + h * h + h).sum()
    y.backward()
    xt = torch.tensor(xn, requires_grad=True)
    ht = xt * 2
    (ht.exp() + ht * ht + ht).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-5)
    # x appearing twice in one op
    x.zero_grad()
    (x * x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * xn ** 2, rtol=1e-6)


def test_multi_output_with_unused_output(device):
    x = dn.tensor(np.arange(6, dtype=np.float32), device=device, requires_grad=True)
    a, b, c = dn.split(x, 2)
    (b * b).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0, 0, 4, 6, 0, 0])
    x.zero_grad()
    a, b, c = x.chunk(3)
    (a.sum() + c.sum() * 2).backward()
    np.testing.assert_allclose(x.grad.numpy(), [1, 1, 0, 0, 2, 2])


def test_deep_chain_no_recursion_error():
    """5000 ops deep (deeper than a DenseNet-121 graph) and a dense-block-like fan-in."""
    x = dn.tensor(np.array([0.3, -0.2], np.float64), requires_grad=True)
    h = x
    for i in range(5000):
        h = h * 1.0001 if i % 2 else h + 0.001
    h.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(2, 1.0001 ** 2500), rtol=1e-12)
    # dense connectivity: every layer consumes the sum of all previous ones
    x.zero_grad()
    feats = [x]
    for _ in range(60):
        feats.append(dn.stack(feats).sum(0) * 0.5)
    feats[-1].sum().backward()
    xt = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    ft = [xt]
    for _ in range(60):
        ft.append(torch.stack(ft).sum(0) * 0.5)
    ft[-1].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-10)


def test_backward_non_scalar_needs_grad(device):
    x = dn.tensor([[1.0, 2.0]], device=device, requires_grad=True)
    y = x * 2
    assert_raises_naming(RuntimeError, y.backward, "(1, 2)", "grad")
    y.backward(dn.tensor([[1.0, 10.0]], device=device))
    np.testing.assert_allclose(x.grad.numpy(), [[2.0, 20.0]])


def test_backward_grad_of_wrong_shape(device):
    x = dn.tensor([[1.0, 2.0]], device=device, requires_grad=True)
    y = x * 2
    assert_raises_naming(ValueError, lambda: y.backward(dn.ones(2, 1, device=device)), "(2, 1)", "(1, 2)")


def test_backward_without_grad_raises(device):
    y = dn.tensor([1.0], device=device) * 2
    assert_raises_naming(RuntimeError, y.backward, "does not require")


def test_backward_on_leaf_and_through_constants(device):
    x = dn.tensor([1.0, 2.0], device=device, requires_grad=True)
    x.backward(dn.tensor([3.0, 4.0], device=device))
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 4.0])
    c = dn.tensor([5.0, 6.0], device=device)
    x.zero_grad()
    (x * c + c).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 6.0])
    assert c.grad is None


def test_leaf_grads_never_alias(device):
    a = dn.tensor([1.0, 2.0], device=device, requires_grad=True)
    b = dn.tensor([3.0, 4.0], device=device, requires_grad=True)
    c = dn.tensor([5.0, 6.0], device=device)
    ((a + b) * c).sum().backward()  # Add hands one gradient array to both inputs
    a.grad *= 0
    np.testing.assert_allclose(b.grad.numpy(), [5.0, 6.0])
    g = np.array([1.0, 1.0], np.float32)
    x = dn.tensor([1.0, 2.0], requires_grad=True)
    x.backward(g)
    g[0] = 100
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])


def test_scalar_leaf_grad_is_a_0d_array(device):
    a = dn.tensor(2.0, device=device, requires_grad=True)
    b = dn.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    for k in range(2):  # first store and accumulation
        (a * b).sum().backward()
        assert a.grad.shape == () and hasattr(a.grad, "ndim") and not np.isscalar(a.grad)
        np.testing.assert_allclose(float(a.grad), 6.0 * (k + 1))
    np.testing.assert_allclose(b.grad.numpy(), [4.0, 4.0, 4.0])


def test_gradient_dtype_follows_the_input(device):
    x = dn.tensor([1.0, 2.0], dtype="float64", device=device, requires_grad=True)
    (x.to(dtype="float32") * 2).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_needs_input_grad_and_custom_function(device):
    seen = {}

    class Scale(Function):
        @staticmethod
        def forward(ctx, a, b):
            seen["needs"] = ctx.needs_input_grad
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, g):
            a, b = ctx.saved
            n = ctx.needs_input_grad
            return (g * b if n[0] else None, g * a if n[1] else None)

    a = dn.tensor([2.0], device=device, requires_grad=True)
    b = dn.tensor([3.0], device=device)
    y = Scale.apply(a, b)
    assert seen["needs"] == (True, False) and y.requires_grad and not y.is_leaf
    y.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [3.0])

    class Bad(Function):
        @staticmethod
        def forward(ctx, a):
            return a * 1

        @staticmethod
        def backward(ctx, g):
            return g[:1]

    z = Bad.apply(dn.tensor([1.0, 2.0], device=device, requires_grad=True))
    assert_raises_naming(RuntimeError, z.sum().backward, "Bad", "(1,)", "(2,)")


def test_needs_input_grad_under_no_grad_is_pytorchs_and_nothing_is_recorded(device):
    """PyTorch's ctx.needs_input_grad follows requires_grad also under no_grad; ``recording``
    and ``grads_wanted()`` tell divenet's forwards that no backward can follow."""
    import torch

    seen = {}

    def forward(ctx, a, b):
        seen.setdefault("needs", []).append(ctx.needs_input_grad)
        seen.setdefault("wanted", []).append(getattr(ctx, "grads_wanted", lambda: None)())
        return a * b

    Ours = type("Ours", (Function,), {"forward": staticmethod(forward), "backward": staticmethod(lambda ctx, g: (g, g))})
    Theirs = type("Theirs", (torch.autograd.Function,),
                  {"forward": staticmethod(forward), "backward": staticmethod(lambda ctx, g: (g, g))})
    a, b = dn.tensor([2.0], device=device, requires_grad=True), dn.tensor([3.0], device=device)
    ta, tb = torch.tensor([2.0], requires_grad=True), torch.tensor([3.0])
    Ours.apply(a, b)
    Theirs.apply(ta, tb)
    with dn.no_grad():
        Ours.apply(a, b)
    with torch.no_grad():
        Theirs.apply(ta, tb)
    ours_needs, theirs_needs = seen["needs"][0::2], seen["needs"][1::2]
    assert ours_needs == [tuple(n) for n in theirs_needs] == [(True, False), (True, False)]
    assert seen["wanted"][0::2] == [(True, False), (False, False)]


def test_no_graph_recorded_under_no_grad(device):
    x = dn.tensor([1.0, 2.0], device=device, requires_grad=True)
    with dn.no_grad():
        y = x * 2
    assert y._node is None and not y.requires_grad
    z = y * x  # y is a constant now
    z.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])


class _Scale(Function):
    """x * factor for a raw-array option ``factor``."""

    @staticmethod
    def forward(ctx, x, factor):
        return x * factor

    @staticmethod
    def backward(ctx, g):
        return g


def test_ops_refuse_raw_arrays_from_another_device():
    """Arrays handed to an op outside Tensors (options, raw inputs) bypass the Tensor device
    check; apply checks them too, instead of NumPy mixing them in or CuPy failing inside."""
    on_sim = dn.ones(3, device="sim")
    host = np.full(3, 2.0, np.float32)
    assert_raises_naming(ValueError, lambda: _Scale.apply(on_sim, factor=host), "_scale", "factor",
                         "NumPy array", "sim")
    device_array = dn.tensor(host, device="sim").array
    assert_raises_naming(ValueError, lambda: _Scale.apply(dn.ones(3), factor=device_array), "factor",
                         "device array", "cpu")
    np.testing.assert_array_equal(_Scale.apply(dn.ones(3), factor=host).numpy(), host)  # same device
    assert_raises_naming(ValueError, lambda: dn.ones(3, device="sim") == dn.ones(3), "sim", "cpu")
    assert_raises_naming(ValueError, lambda: dn.ones(3)[dn.tensor([0], device="sim")], "sim", "cpu")


def test_host_data_next_to_a_device_tensor_moves_over(device):
    x = dn.tensor([1.0, -2.0, 3.0], device=device, requires_grad=True)
    y = dn.where(np.array([True, False, True]), x, 0.0) + (x > np.zeros(3, np.float32))
    y.sum().backward()
    np.testing.assert_array_equal(y.numpy(), [2.0, 0.0, 4.0])
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 0.0, 1.0])


def test_backward_refuses_a_gradient_on_another_device():
    y = dn.ones(2, device="sim", requires_grad=True) * 2
    assert_raises_naming(ValueError, lambda: y.backward(dn.ones(2)), "gradient", "cpu", "sim")


def test_op_hooks_see_this_threads_ops_forward_and_backward_and_nest():
    import threading

    from divenet import autograd

    seen, grads = [], []

    class Watch(autograd.OpHooks):
        def apply(self, cls, inputs, kwargs):
            seen.append(cls.__name__)
            return super().apply(cls, inputs, kwargs)

        def backward(self, node, g):
            grads.append(node.fn.__name__)
            return super().backward(node, g)

    x = dn.tensor([1.0, -2.0, 3.0], requires_grad=True)
    other = []
    with Watch() as outer:
        t = threading.Thread(target=lambda: other.append(dn.relu(x)))  # another thread: untouched
        t.start()
        t.join()
        y = (dn.relu(x) * 2).sum()
        with autograd.OpHooks():  # nested: the inner (plain) hooks see the ops, then outer again
            dn.tanh(x)
        assert autograd.current_hooks() is outer
        y.backward()
    assert autograd.current_hooks() is None
    assert len(seen) == 3 and "Tanh" not in seen and seen.count(seen[0]) == 1
    assert len(grads) == 3 and other and x.grad.tolist() == [2.0, 0.0, 2.0]


def test_fan_out_gradients_sum_without_touching_shared_arrays():
    import torch

    def run(lib, w):
        h = w * 1.5  # a non-leaf read by four consumers: its gradient is summed three times
        k = h * 2
        s = (h + k) + (h * h) + h  # Add hands one gradient array to both of its inputs
        return (s * s).sum(), h, k

    wd = dn.tensor([0.5, -1.0, 2.0], requires_grad=True)
    wt = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    for lib, w in ((dn, wd), (torch, wt)):
        loss, h, k = run(lib, w)
        loss.backward()
    np.testing.assert_allclose(wd.grad.numpy(), wt.grad.numpy(), rtol=1e-6)
