"""Devices and array modules: NumPy on the CPU, CuPy on a GPU, and ``sim`` for tests.

Every kernel is written once against ``xp = array_module(array)``; this module is the only
place that knows which library backs which device. ``sim`` (divenet/sim.py) is a strict
simulated GPU that the test suite runs on, so that NumPy-only code in a GPU path fails on any
machine; it is not meant for users' work.
"""
from __future__ import annotations

import functools

import numpy as np


_cupy = None
_cupy_error: str | None = None


def _load_cupy():
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError("CuPy found no CUDA device")
            _cupy = cupy
        except Exception as exc:  # ImportError, CUDA driver errors
            _cupy_error = f"{type(exc).__name__}: {exc}"
    return _cupy


def gpu_available() -> bool:
    return _load_cupy() is not None


class Device:
    """A place where arrays live: ``cpu`` or ``gpu:i``."""

    __slots__ = ("kind", "index")

    def __init__(self, kind: str, index: int = 0):
        if kind not in ("cpu", "gpu", "sim"):
            raise ValueError(f"device: unknown kind {kind!r}; expected 'cpu' or 'gpu'")
        if kind == "gpu" and (not isinstance(index, int) or index < 0):
            raise ValueError(f"device: GPU index must be a non-negative int, got {index!r}")
        self.kind = kind
        self.index = index if kind == "gpu" else 0

    @property
    def xp(self):
        if self.kind == "cpu":
            return np
        if self.kind == "sim":
            from . import sim

            return sim.xp
        cp = _load_cupy()
        if cp is None:
            raise RuntimeError(
                f"device gpu:{self.index} is not available ({_cupy_error}); "
                "a GPU needs an NVIDIA driver and CuPy: pip install 'divenet[gpu]'"
            )
        if self.index >= cp.cuda.runtime.getDeviceCount():
            raise RuntimeError(
                f"device gpu:{self.index} does not exist; "
                f"this machine has {cp.cuda.runtime.getDeviceCount()} GPU(s)"
            )
        return cp

    def __eq__(self, other):
        return isinstance(other, Device) and (self.kind, self.index) == (other.kind, other.index)

    def __hash__(self):
        return hash((self.kind, self.index))

    def __repr__(self):
        return f"gpu:{self.index}" if self.kind == "gpu" else self.kind

    __str__ = __repr__


CPU = Device("cpu")
SIM = Device("sim")


def cpu() -> Device:
    return CPU


def gpu(index: int = 0) -> Device:
    dev = Device("gpu", index)
    dev.xp  # raises a clear error now rather than at the first op
    return dev


def device(spec) -> Device:
    """Parse ``'cpu'``, ``'gpu'``, ``'gpu:1'``, ``'cuda:0'`` or pass a Device through."""
    if spec is None:
        return CPU
    if isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"device: expected a Device or a string like 'gpu:0', got {type(spec).__name__}")
    name, _, idx = spec.strip().lower().partition(":")
    if name == "cuda":
        name = "gpu"
    if name == "cpu":
        return CPU
    if name == "sim" and not idx:
        return SIM
    if name == "gpu":
        try:
            return gpu(int(idx) if idx else 0)
        except ValueError:
            raise ValueError(f"device: bad GPU index in {spec!r}") from None
    raise ValueError(f"device: unknown device {spec!r}; expected 'cpu' or 'gpu:N'")


def _is_cupy(array) -> bool:
    # by the type's module, not isinstance: the array may come from a CuPy that divenet has not
    # loaded yet (``dn.tensor(cupy_array)`` before any ``dn.gpu()``)
    return type(array).__module__.split(".", 1)[0] == "cupy" and _load_cupy() is not None


def _is_sim(array) -> bool:
    return type(array).__name__ == "SimArray" and type(array).__module__ == "divenet.sim"


def is_device_array(value) -> bool:
    """Whether ``value`` is a CuPy or sim array (by its type: CuPy need not be loaded)."""
    return _is_sim(value) or type(value).__module__.split(".", 1)[0] == "cupy"


def device_of(array) -> Device:
    if isinstance(array, (np.ndarray, np.generic)) or np.isscalar(array):
        return CPU
    if _is_sim(array):
        return SIM
    if _is_cupy(array):
        return Device("gpu", array.device.id)
    raise TypeError(f"device: {type(array).__name__} is not an array divenet knows "
                    "(expected a NumPy or CuPy array)")


def array_module(array):
    """numpy for a NumPy array, cupy for a CuPy array, the sim namespace for a sim array."""
    if isinstance(array, np.ndarray):
        return np
    if _is_sim(array):
        from . import sim

        return sim.xp
    if _is_cupy(array):
        return _cupy
    return np


@functools.lru_cache(maxsize=1024)
def constant(dev: Device, build, *args):
    """``build(*args)``, a NumPy array of constants (pooling divisors, averaging matrices,
    index lists), on ``dev``: built and copied there once per (device, build, args), not once
    per call (a host-to-device upload per step is what a GPU path must avoid). Shared and
    read-only: ops must not write into it."""
    host = build(*args)
    host.flags.writeable = False
    return host if dev.kind == "cpu" else transfer(host, dev)


def transfer(array, dev: Device):
    """Copy ``array`` to ``dev`` (no copy when it already lives there)."""
    if dev.kind == "cpu":
        if isinstance(array, np.ndarray):
            return array
        if isinstance(array, np.generic):  # a NumPy scalar, e.g. a 0-d array + 1
            return np.asarray(array)
        return array.get()
    if dev.kind == "sim":
        from . import sim

        if _is_sim(array):
            return array
        return sim.upload(array if isinstance(array, (np.ndarray, np.generic)) else transfer(array, CPU))
    cp = dev.xp
    if _is_sim(array):
        array = array.get()
    with cp.cuda.Device(dev.index):
        if _is_cupy(array) and array.device.id != dev.index:
            return cp.array(array, copy=True)  # asarray would keep it on its own GPU
        return cp.asarray(array)
