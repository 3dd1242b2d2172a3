"""dn.checkpoint / checkpoint_sequential: gradients equal the plain run and PyTorch's
torch.utils.checkpoint on the same code; the intermediate arrays are not kept (tracemalloc);
dropout recomputes the same mask; nesting, keyword and non-tensor arguments, tuple outputs."""
import gc
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
import torch.utils.checkpoint as tcp

import divenet as dn
import divenet.functional as F
import divenet.nn as nn
from divenet.utils.checkpoint import checkpoint, checkpoint_sequential
from tests.helpers import assert_raises_naming


def _mlp(width=12, depth=3, dropout=0.0):
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Tanh()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def _grads(model, x, run, seed=3):
    """Loss and the gradients of x and every parameter after ``run(model, x)``."""
    for p in model.parameters():
        p.grad = None
    x.grad = None
    dn.manual_seed(seed)
    y = run(model, x)
    loss = (y * y).sum()
    loss.backward()
    return [loss.item(), x.grad.numpy()] + [p.grad.numpy() for p in model.parameters()]


def _assert_same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)


def test_gradients_equal_the_plain_run(device):
    model = _mlp().to(device)
    x = dn.randn(4, 12, device=device, requires_grad=True)
    plain = _grads(model, x, lambda m, x: m(x))
    ckpt = _grads(model, x, lambda m, x: checkpoint(m, x))
    seq = _grads(model, x, lambda m, x: checkpoint_sequential(m, 2, x))
    _assert_same(plain, ckpt)
    _assert_same(plain, seq)


def _torch_twin(model):
    """A torch Sequential with the same Linear/Tanh layers and weights."""
    layers = []
    for m in model:
        if isinstance(m, nn.Linear):
            t = torch.nn.Linear(m.in_features, m.out_features)
            with torch.no_grad():
                t.weight.copy_(torch.from_numpy(m.weight.numpy()))
                t.bias.copy_(torch.from_numpy(m.bias.numpy()))
            layers.append(t)
        else:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("how", ["checkpoint", "sequential"])
def test_gradients_equal_torch_checkpoint(how):
    model = _mlp(depth=4)
    twin = _torch_twin(model)
    xn = np.random.default_rng(0).standard_normal((5, 12)).astype(np.float32)

    def run(lib, m, x):
        ck = (dn.utils.checkpoint if lib is dn else tcp)
        if how == "checkpoint":  # a function with a captured tensor and a scale
            return ck.checkpoint(lambda h, s: m(h) * s, x, 0.5, use_reentrant=False)
        return ck.checkpoint_sequential(m, 3, x, use_reentrant=False)

    x = dn.tensor(xn, requires_grad=True)
    ours = _grads(model, x, lambda m, x: run(dn, m, x))
    xt = torch.tensor(xn, requires_grad=True)
    yt = run(torch, twin, xt)
    (yt * yt).sum().backward()
    theirs = [float((yt * yt).sum().detach()), xt.grad.numpy()] + [p.grad.numpy() for p in twin.parameters()]
    for u, v in zip(ours, theirs):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def _peak_bytes(step):
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        step()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_peak_memory_lower_for_a_deep_chain():
    # 32 layers of 128x128 on a batch of 512: each activation 256 KB; plain keeps one per
    # layer (8 MB), checkpointing the 4 segment inputs and, while backward recomputes it, the
    # activations of one segment (about 3 MB in all)
    width, depth = 128, 32
    model = _mlp(width, depth)
    x = dn.randn(512, width, requires_grad=True)

    def step(run):
        def go():
            run(x).sum().backward()
        go()  # the gradients exist from here on (2 MB), in the base of the measurement
        return go

    plain = _peak_bytes(step(model))
    ckpt = _peak_bytes(step(lambda x: checkpoint_sequential(model, 4, x)))
    assert ckpt < 0.5 * plain, (ckpt, plain)


def test_dropout_recomputes_the_same_mask(device):
    model = _mlp(dropout=0.5).to(device)
    x = dn.randn(6, 12, device=device, requires_grad=True)
    plain = _grads(model, x, lambda m, x: m(x))
    ckpt = _grads(model, x, lambda m, x: checkpoint(m, x))
    _assert_same(plain, ckpt)
    # without the saved state the recomputation draws another mask: other gradients
    other = _grads(model, x, lambda m, x: checkpoint(m, x, preserve_rng_state=False))
    assert other[0] == plain[0]  # the forward itself is the same draw
    assert not all(np.allclose(u, v) for u, v in zip(plain[1:], other[1:]))


def test_outer_random_stream_unchanged_by_the_recomputation():
    model = _mlp(dropout=0.5)
    x = dn.randn(6, 12, requires_grad=True)
    draws = []
    for run in (lambda x: model(x), lambda x: checkpoint(model, x)):
        dn.manual_seed(7)
        run(x).sum().backward()
        draws.append(dn.rand(4).numpy())
    np.testing.assert_array_equal(draws[0], draws[1])


def test_nested_checkpoints(device):
    inner = _mlp(depth=2).to(device)
    outer = nn.Linear(12, 12).to(device)
    x = dn.randn(3, 12, device=device, requires_grad=True)
    params = list(inner.parameters()) + list(outer.parameters())

    def run(nest):
        for p in params:
            p.grad = None
        x.grad = None
        if nest:
            y = checkpoint(lambda h: checkpoint(inner, F.relu(outer(h))) * 2, x)
        else:
            y = inner(F.relu(outer(x))) * 2
        (y * y).sum().backward()
        return [x.grad.numpy()] + [p.grad.numpy() for p in params]

    _assert_same(run(False), run(True))


def test_keyword_and_non_tensor_arguments():
    lin = nn.Linear(4, 4)
    x = dn.randn(2, 4, requires_grad=True)
    bias = dn.randn(4, requires_grad=True)

    def fn(h, power, *, shift=None, label="unused"):
        assert isinstance(power, int) and label == "tag"
        return lin(h) ** power + shift

    grads = []
    for wrap in (False, True):
        x.grad = bias.grad = lin.weight.grad = None
        y = checkpoint(fn, x, 2, shift=bias, label="tag") if wrap else fn(x, 2, shift=bias, label="tag")
        y.sum().backward()
        grads.append([x.grad.numpy(), bias.grad.numpy(), lin.weight.grad.numpy()])
    _assert_same(*grads)


def test_tuple_output_with_an_unused_tensor_and_a_value():
    lin = nn.Linear(4, 3)
    x = dn.randn(5, 4, requires_grad=True)

    def fn(h):
        y = lin(h)
        return F.relu(y), dn.tanh(y), "note"

    grads = []
    for wrap in (False, True):
        x.grad = lin.weight.grad = None
        a, b, note = checkpoint(fn, x) if wrap else fn(x)
        assert note == "note"
        (a * 3).sum().backward()  # b gets no gradient: a zero one reaches the checkpoint
        grads.append([x.grad.numpy(), lin.weight.grad.numpy()])
    _assert_same(*grads)


def test_captured_tensor_from_the_outer_graph():
    x = dn.randn(3, 4, requires_grad=True)
    w = dn.randn(4, 4, requires_grad=True)
    grads = []
    for wrap in (False, True):
        x.grad = w.grad = None
        scale = (w * 2).sum()  # made outside the checkpoint, read inside

        def fn(h):
            return (h @ w) * scale

        y = checkpoint(fn, x) if wrap else fn(x)
        y.sum().backward()
        grads.append([x.grad.numpy(), w.grad.numpy()])
    _assert_same(*grads)


def test_without_grad_mode_it_is_the_plain_call():
    lin = nn.Linear(4, 2)
    x = dn.randn(3, 4)
    with dn.no_grad():
        y = checkpoint(lin, x)
    assert not y.requires_grad
    np.testing.assert_array_equal(y.numpy(), lin(x).numpy())


def test_parameters_get_gradients_when_no_input_requires_one():
    # use_reentrant=False (the default) differentiates the captured parameters, as PyTorch's
    lin = nn.Linear(4, 2)
    x = dn.randn(3, 4)
    checkpoint(lin, x).sum().backward()
    expect = lin.weight.grad.numpy().copy()
    lin.weight.grad = None
    lin(x).sum().backward()
    np.testing.assert_allclose(expect, lin.weight.grad.numpy(), rtol=1e-6)


def test_reentrant_warns_when_no_input_requires_grad_as_torch():
    x = dn.randn(3, 4)
    for lib, t in ((dn.utils.checkpoint, x), (tcp, torch.randn(3, 4))):
        with pytest.warns(UserWarning, match="None of the inputs have requires_grad=True"):
            lib.checkpoint(lambda h: h * 2, t, use_reentrant=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checkpoint(lambda h: h * 2, x)  # the non-reentrant variant, like PyTorch's, says nothing


def test_in_place_change_of_an_input_before_backward_raises():
    lin = nn.Linear(4, 2)
    x = dn.randn(3, 4, requires_grad=True)
    h = x * 1
    y = checkpoint(lin, h)
    with dn.no_grad():
        h += 1
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()


def test_bad_arguments():
    x = dn.randn(2, 3, requires_grad=True)
    assert_raises_naming(TypeError, lambda: checkpoint(3, x), "checkpoint", "callable", "int")
    assert_raises_naming(TypeError, lambda: checkpoint(lambda h: 5, x), "checkpoint", "return", "int")
    assert_raises_naming(ValueError, lambda: checkpoint(lambda h, k: h, x, k=1, use_reentrant=True),
                         "checkpoint", "keyword", "k")
    assert_raises_naming(TypeError, lambda: checkpoint(lambda h: h, x, use_reentrant="no"), "use_reentrant")
    seq = _mlp(depth=2)
    assert_raises_naming(ValueError, lambda: checkpoint_sequential(seq, 0, x), "segments", "4", "0")
    assert_raises_naming(ValueError, lambda: checkpoint_sequential(seq, 5, x), "segments", "5")
    assert_raises_naming(TypeError, lambda: checkpoint_sequential(seq.parameters, 1, x), "Sequential")
    assert_raises_naming(TypeError, lambda: checkpoint_sequential([seq, 3], 1, x), "functions[1]", "int")
    assert_raises_naming(ValueError, lambda: checkpoint_sequential(seq, 2, x, typo=1), "typo")


def test_public_names():
    assert dn.checkpoint is checkpoint
    assert dn.utils.checkpoint.checkpoint_sequential is checkpoint_sequential
