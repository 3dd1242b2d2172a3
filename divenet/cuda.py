"""``torch.cuda``'s questions, answered for divenet's GPUs (D2L's ``try_gpu`` asks them)."""
from __future__ import annotations

from . import backend


def is_available() -> bool:
    return backend.gpu_available()


def device_count() -> int:
    """The number of GPUs CuPy sees (0 without CuPy or a GPU)."""
    if not backend.gpu_available():
        return 0
    return backend.gpu(0).xp.cuda.runtime.getDeviceCount()
