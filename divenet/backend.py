"""Devices and array modules: NumPy on the CPU, CuPy on a GPU.

Every kernel is written once against ``xp = array_module(array)``; this module is the only
place that knows which library backs which device.
"""
from __future__ import annotations

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
        if kind not in ("cpu", "gpu"):
            raise ValueError(f"device: unknown kind {kind!r}; expected 'cpu' or 'gpu'")
        if kind == "gpu" and (not isinstance(index, int) or index < 0):
            raise ValueError(f"device: GPU index must be a non-negative int, got {index!r}")
        self.kind = kind
        self.index = index if kind == "gpu" else 0

    @property
    def xp(self):
        if self.kind == "cpu":
            return np
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
        return "cpu" if self.kind == "cpu" else f"gpu:{self.index}"

    __str__ = __repr__


CPU = Device("cpu")


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
    if name == "gpu":
        try:
            return gpu(int(idx) if idx else 0)
        except ValueError:
            raise ValueError(f"device: bad GPU index in {spec!r}") from None
    raise ValueError(f"device: unknown device {spec!r}; expected 'cpu' or 'gpu:N'")


def device_of(array) -> Device:
    if isinstance(array, np.ndarray) or np.isscalar(array):
        return CPU
    dev = getattr(array, "device", None)
    return Device("gpu", getattr(dev, "id", 0))


def array_module(array):
    """numpy for a NumPy array, cupy for a CuPy array."""
    if isinstance(array, np.ndarray):
        return np
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy
    return np


def transfer(array, dev: Device):
    """Copy ``array`` to ``dev`` (no copy when it already lives there)."""
    if dev.kind == "cpu":
        if isinstance(array, np.ndarray):
            return array
        if isinstance(array, np.generic):  # a NumPy scalar, e.g. a 0-d array + 1
            return np.asarray(array)
        return array.get()
    cp = dev.xp
    with cp.cuda.Device(dev.index):
        return cp.asarray(array)
