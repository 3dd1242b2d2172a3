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


def _make(draw, shape, dtype, device, requires_grad):
    from .tensor import Tensor, as_dtype, float32

    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)
    dtype = as_dtype(dtype) or float32
    dev = as_device(device)
    arr = draw(shape).astype(dtype, copy=False)
    return Tensor._make(transfer(arr, dev), dev, None).requires_grad_(requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Uniform on [0, 1)."""
    return _make(lambda s: _generator.random(s, dtype=np.float32), shape, dtype, device, requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Standard normal."""
    return _make(lambda s: _generator.standard_normal(s, dtype=np.float32), shape, dtype, device,
                 requires_grad)


def randint(low, high, shape, device=None):
    from .tensor import int64

    return _make(lambda s: _generator.integers(low, high, s), (shape,), int64, device, False)


def rand_like(t, dtype=None, requires_grad=False):
    return rand(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def randn_like(t, dtype=None, requires_grad=False):
    return randn(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)
