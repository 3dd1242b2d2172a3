"""One seeded generator for every random op (init, dropout, shuffling, augmentation), so that
``manual_seed(n)`` makes a run reproducible and a checkpoint can save and restore it.

Random numbers are drawn on the CPU with NumPy's PCG64 and moved to the target device, so a
seed gives the same numbers on every device.
"""
from __future__ import annotations

import numpy as np

from .backend import device as as_device, transfer

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    global _generator
    _generator = np.random.default_rng(int(seed))


def generator() -> np.random.Generator:
    return _generator


def get_state() -> dict:
    return _generator.bit_generator.state


def set_state(state: dict) -> None:
    _generator.bit_generator.state = state


def _make(draw, shape, dtype, device, requires_grad, size=None, op="rand"):
    from .tensor import Tensor, _shape_arg, as_dtype, float32

    shape = _shape_arg(op, shape, size)
    dtype = as_dtype(dtype) or float32
    dev = as_device(device)
    arr = draw(shape).astype(dtype, copy=False)
    return Tensor._make(transfer(arr, dev), dev, None).requires_grad_(requires_grad)


def rand(*shape, size=None, dtype=None, device=None, requires_grad=False):
    """Uniform on [0, 1)."""
    return _make(lambda s: _generator.random(s, dtype=np.float32), shape, dtype, device, requires_grad,
                 size, "rand")


def randn(*shape, size=None, dtype=None, device=None, requires_grad=False):
    """Standard normal."""
    return _make(lambda s: _generator.standard_normal(s, dtype=np.float32), shape, dtype, device,
                 requires_grad, size, "randn")


def randint(low, high=None, size=None, dtype=None, device=None):
    """Integers in [low, high) (or [0, low) without ``high``), as torch.randint."""
    from .tensor import int64

    if size is None:
        raise TypeError("randint: missing the size (a shape tuple)")
    if high is None:
        low, high = 0, low
    return _make(lambda s: _generator.integers(low, high, s), (size,), dtype or int64, device, False,
                 op="randint")


def normal(mean=0.0, std=1.0, size=None, dtype=None, device=None, requires_grad=False):
    """torch.normal: numbers ``mean`` and ``std`` with a ``size``, or tensors (broadcast
    together) giving each entry its own mean and standard deviation."""
    from .tensor import Tensor

    tensors = [t for t in (mean, std) if isinstance(t, Tensor)]
    if not tensors:
        if size is None:
            raise TypeError("normal: with a number mean and std, give the size= of the result")
        z = randn(size, dtype=dtype, device=device)
        z.array *= z.dtype.type(std)
        z.array += z.dtype.type(mean)
        return z.requires_grad_(requires_grad)
    ref = tensors[0]
    shape = np.broadcast_shapes(*(t.shape for t in tensors)) if size is None else tuple(size)
    z = randn(shape, dtype=dtype or ref.dtype, device=device or ref.device)
    return (z * std + mean).detach().requires_grad_(requires_grad)


def randperm(n, dtype=None, device=None):
    """A random permutation of 0 .. n-1."""
    from .tensor import int64

    return _make(lambda s: _generator.permutation(n), (n,), dtype or int64, device, False, op="randperm")


def rand_like(t, dtype=None, requires_grad=False):
    return rand(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def randn_like(t, dtype=None, requires_grad=False):
    return randn(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)
