"""Shared test checks: compare an op with PyTorch, and check gradients numerically."""
from __future__ import annotations

import numpy as np

import divenet as dn

# Device-parametrized tests (those taking a ``device`` argument) run on each of these by
# default: the CPU, the strict simulated GPU "sim" (divenet/sim.py) and a real GPU where CuPy
# finds one. ``--device NAME`` or DIVENET_TEST_DEVICES=cpu,sim chooses (tests/conftest.py).
ALL_DEVICES = ["cpu", "sim"] + (["gpu:0"] if dn.gpu_available() else [])


def _as_tuple(x):
    return x if isinstance(x, (tuple, list)) else (x,)


def _close(name, ours, theirs, rtol, atol):
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} != PyTorch's {theirs.shape}"
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, err_msg=name)


def check_against_torch(dn_fn, torch_fn, inputs, grad_inputs=None, device="cpu",
                        rtol=1e-4, atol=1e-5, seed=0, torch_in_float64=False):
    """Run ``dn_fn`` on divenet tensors and ``torch_fn`` on torch tensors made from the same
    NumPy ``inputs``; assert equal outputs (shape, dtype kind, values) and equal gradients of
    ``sum(output * w)`` for a random ``w`` with respect to every input in ``grad_inputs``
    (indices; default all floating inputs). ``torch_in_float64``: PyTorch computes from the
    inputs cast to float64 and its results are compared after rounding back to float32, for
    long float32 reductions where PyTorch's own float32 result strays further from the truth
    than the tolerance."""
    import torch

    rng = np.random.default_rng(seed)
    if grad_inputs is None:
        grad_inputs = [i for i, a in enumerate(inputs) if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
    dn_in = [dn.tensor(a, device=device, requires_grad=i in grad_inputs) if isinstance(a, np.ndarray) else a
             for i, a in enumerate(inputs)]
    th_in = [torch.tensor(a.astype(np.float64) if torch_in_float64 and a.dtype.kind == "f" else a,
                          requires_grad=i in grad_inputs) if isinstance(a, np.ndarray) else a
             for i, a in enumerate(inputs)]
    ours = _as_tuple(dn_fn(*dn_in))
    theirs = _as_tuple(torch_fn(*th_in))
    assert len(ours) == len(theirs)
    weights = []
    for k, (o, t) in enumerate(zip(ours, theirs)):
        t_np = t.detach().numpy()
        o_np = o.numpy()
        if torch_in_float64 and t_np.dtype == np.float64:
            t_np = t_np.astype(o_np.dtype)
        assert o_np.dtype == t_np.dtype, f"output {k}: dtype {o_np.dtype} != PyTorch's {t_np.dtype}"
        _close(f"output {k}", o_np, t_np, rtol, atol)
        weights.append(rng.standard_normal(t_np.shape).astype(t_np.dtype) if t_np.dtype.kind == "f" else None)
    if not grad_inputs:
        return ours
    dn_loss = None
    th_loss = 0
    for o, t, w in zip(ours, theirs, weights):
        if w is None or not o.requires_grad:
            continue
        term = (o * dn.tensor(w, device=device)).sum()
        dn_loss = term if dn_loss is None else dn_loss + term
        th_loss = th_loss + (t * torch.tensor(w)).sum()
    dn_loss.backward()
    th_loss.backward()
    for i in grad_inputs:
        assert dn_in[i].grad is not None, f"input {i}: no gradient"
        _close(f"grad of input {i}", dn_in[i].grad.numpy(), th_in[i].grad.numpy(), rtol, atol)
    return ours


def numerical_grad_check(fn, inputs, grad_inputs=None, eps=1e-6, directions=3, rtol=1e-5, atol=1e-7,
                         seed=0, device="cpu"):
    """Central differences in float64 along random directions: for a random output weight
    ``w`` and random input direction ``v``, d/dt sum(w * f(x + t v)) must equal <grad, v>."""
    rng = np.random.default_rng(seed)
    inputs = [a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in inputs]
    if grad_inputs is None:
        grad_inputs = [i for i, a in enumerate(inputs) if isinstance(a, np.ndarray) and a.dtype.kind == "f"]

    def run(arrays, track):
        ts = [dn.tensor(a, device=device, requires_grad=track and i in grad_inputs)
              if isinstance(a, np.ndarray) else a for i, a in enumerate(arrays)]
        return ts, _as_tuple(fn(*ts))

    ts, outs = run(inputs, True)
    weights = [rng.standard_normal(o.shape) for o in outs]
    loss = None
    for o, w in zip(outs, weights):
        if o.dtype.kind != "f":
            continue
        term = (o * dn.tensor(w, dtype="float64", device=device)).sum()
        loss = term if loss is None else loss + term
    loss.backward()
    analytic = {i: ts[i].grad for i in grad_inputs}

    def value(arrays):
        with dn.no_grad():
            _, o = run(arrays, False)
        return sum(float((x.numpy() * w).sum()) for x, w in zip(o, weights) if x.dtype.kind == "f")

    for _ in range(directions):
        dirs = {i: rng.standard_normal(inputs[i].shape) for i in grad_inputs}
        plus = list(inputs)
        minus = list(inputs)
        for i, v in dirs.items():
            plus[i] = inputs[i] + eps * v
            minus[i] = inputs[i] - eps * v
        numeric = (value(plus) - value(minus)) / (2 * eps)
        exact = sum(float((analytic[i].numpy() * v).sum())
                    for i, v in dirs.items())
        assert abs(numeric - exact) <= atol + rtol * max(abs(numeric), abs(exact)) * 10, \
            f"numerical {numeric} != analytic {exact}"


def assert_raises_naming(exc_type, fn, *fragments):
    """``fn()`` raises ``exc_type`` and the message names every fragment (op name, shapes)."""
    import pytest

    with pytest.raises(exc_type) as info:
        fn()
    msg = str(info.value)
    for frag in fragments:
        assert str(frag) in msg, f"message {msg!r} does not mention {frag!r}"
    return msg
