"""divenet: a compact deep learning framework for convolutional and recurrent networks, written
from first principles on NumPy (CPU) and CuPy (GPU).

``import divenet`` loads the tensor core only; the subpackages (``dn.nn``, ``dn.optim``,
``dn.functional``, ``dn.utils.data``, ...) are imported on first use, so the import stays fast.
"""
from . import _cpu

_cpu.configure()  # before NumPy loads: see _cpu.py

import importlib as _importlib
import sys as _sys
import types as _types

from .autograd import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from ._cpu import blas_threads, set_blas_threads
from .backend import Device, cpu, device, gpu, gpu_available
from .random import manual_seed, normal, rand, rand_like, randint, randn, randn_like, randperm
from .tensor import (
    Tensor, abs, amax, amin, arange, argmax, argmin, as_tensor, cat, chunk, clamp, clip, clone, concat,
    double, empty, exp, eye, flatten, float16, float32, float64, from_numpy, full, full_like, half, int8,
    int16, int32, int64, linspace, log, log_softmax, long, matmul, max, maximum, mean, min, minimum, mm,
    norm, numel, ones, ones_like, pad, permute, pow, prod, relu, reshape, sigmoid, softmax, split,
    sqrt, squeeze, stack, std, sum, tanh, tensor, transpose, uint8, unsqueeze, var, where, zeros,
    zeros_like,
)
from .tensor import bool_ as bool, float32 as float, int32 as int  # noqa: A001 (torch.float, ...)

__version__ = "0.1.0"

# subpackages and heavy modules, imported on first use (module __getattr__, PEP 562)
_LAZY_MODULES = {"nn", "optim", "functional", "utils", "data", "io", "models", "train", "ops",
                 "cli", "onnx", "compile", "serve", "distributed", "sim", "cuda"}
_LAZY_NAMES = {"save": "io.serialize", "load": "io.serialize", "checkpoint": "utils.checkpoint"}


def __getattr__(name):
    if name in _LAZY_NAMES:
        value = getattr(_importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    elif name in _LAZY_MODULES:
        value = _importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'divenet' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | _LAZY_MODULES | set(_LAZY_NAMES))


def summary(*args, **kwargs):
    """Per-layer output shapes, parameters and multiply-accumulates: divenet.summary.summary."""
    from .summary import summary as table

    return table(*args, **kwargs)


class _Package(_types.ModuleType):
    # importing the submodule divenet.summary sets the package's attribute 'summary' to it;
    # the function above keeps the name, as when it was imported eagerly
    def __setattr__(self, name, value):
        if not (name == "summary" and isinstance(value, _types.ModuleType)):
            super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
