"""One seeded generator for every random op (init, dropout, shuffling, augmentation), so that
``manual_seed(n)`` makes a run reproducible and a checkpoint can save and restore it.

On the CPU, numbers come from NumPy's PCG64 (``generator()``). For a tensor on another device
they are drawn there, into device memory, by that device's own generator
(``generator(device)``): ``sim``'s is a NumPy generator behind the device's rules, a GPU's a
``cupy.random.RandomState`` (cuRAND). A device's generator is seeded, at its first use after
``manual_seed`` or ``set_state``, from the CPU generator's state then (without drawing from
it, so CPU streams do not change), so a seed still makes a run on a device reproducible; the
same seed no longer gives the same numbers on the CPU and on a device. ``get_state`` is the
CPU generator's state: a checkpoint restores the CPU stream exactly, and a device's stream
restarts from a seed derived from that state.
"""
from __future__ import annotations

import numpy as np

from .backend import device as as_device, transfer

_generator = np.random.default_rng(0)
_streams: dict = {}  # Device -> its generator, made at its first use since the last (re)seeding


def manual_seed(seed: int) -> None:
    global _generator
    _generator = np.random.default_rng(int(seed))
    _streams.clear()


def generator(device=None):
    """The CPU generator (a ``numpy.random.Generator``), or for a non-CPU ``device`` that
    device's generator: it has the same method names (``random``, ``standard_normal``,
    ``uniform``, ``integers``, ``permutation``) and returns device arrays."""
    if device is None:
        return _generator
    dev = as_device(device)
    if dev.kind == "cpu":
        return _generator
    g = _streams.get(dev)
    if g is None:
        g = _streams[dev] = _device_generator(dev)
    return g


def _device_generator(dev):
    state = _generator.bit_generator.state["state"]
    seq = np.random.SeedSequence([state["state"], state["inc"]],
                                 spawn_key=(0 if dev.kind == "sim" else 1 + dev.index,))
    if dev.kind == "sim":
        return dev.xp.random.default_rng(seq)
    return _CupyGenerator(dev.xp, dev.index, int(seq.generate_state(1, np.uint64)[0]))


class _CupyGenerator:
    """``cupy.random.RandomState`` (cuRAND, on GPU ``index``) behind the names of
    ``numpy.random.Generator`` that divenet draws with."""

    def __init__(self, cp, index, seed):
        self._device = cp.cuda.Device(index)
        with self._device:
            self._rs = cp.random.RandomState(seed)

    def random(self, size=None, dtype=np.float64):
        with self._device:
            return self._rs.random_sample(size, dtype=dtype)

    def standard_normal(self, size=None, dtype=np.float64):
        with self._device:
            return self._rs.standard_normal(size, dtype=dtype)

    def uniform(self, low=0.0, high=1.0, size=None):
        with self._device:
            return self._rs.uniform(low, high, size)

    def integers(self, low, high=None, size=None):
        with self._device:
            return self._rs.randint(low, high, size, dtype=np.int64)

    def permutation(self, n):
        with self._device:
            return self._rs.permutation(n)


def get_state() -> dict:
    return _generator.bit_generator.state


def set_state(state: dict) -> None:
    _generator.bit_generator.state = state
    _streams.clear()


def _make(draw, shape, dtype, device, requires_grad, size=None, op="rand"):
    from .tensor import Tensor, _shape_arg, as_dtype, float32

    shape = _shape_arg(op, shape, size)
    dtype = as_dtype(dtype) or float32
    dev = as_device(device)
    arr = draw(generator(dev), shape).astype(dtype, copy=False)
    return Tensor._make(transfer(arr, dev), dev, None).requires_grad_(requires_grad)


def rand(*shape, size=None, dtype=None, device=None, requires_grad=False):
    """Uniform on [0, 1)."""
    return _make(lambda g, s: g.random(s, dtype=np.float32), shape, dtype, device, requires_grad,
                 size, "rand")


def randn(*shape, size=None, dtype=None, device=None, requires_grad=False):
    """Standard normal."""
    return _make(lambda g, s: g.standard_normal(s, dtype=np.float32), shape, dtype, device,
                 requires_grad, size, "randn")


def randint(low, high=None, size=None, dtype=None, device=None):
    """Integers in [low, high) (or [0, low) without ``high``), as torch.randint."""
    from .tensor import int64

    if size is None:
        raise TypeError("randint: missing the size (a shape tuple)")
    if high is None:
        low, high = 0, low
    return _make(lambda g, s: g.integers(low, high, s), (size,), dtype or int64, device, False,
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

    return _make(lambda g, s: g.permutation(n), (n,), dtype or int64, device, False, op="randperm")


def rand_like(t, dtype=None, requires_grad=False):
    return rand(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def randn_like(t, dtype=None, requires_grad=False):
    return randn(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)
