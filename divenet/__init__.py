"""divenet: a compact deep learning framework for convolutional and recurrent networks, written
from first principles on NumPy (CPU) and CuPy (GPU)."""
from . import _cpu

_cpu.configure()  # before NumPy loads: see _cpu.py

from .autograd import enable_grad, is_grad_enabled, no_grad
from ._cpu import blas_threads, set_blas_threads
from .backend import Device, cpu, device, gpu, gpu_available
from .random import manual_seed, rand, rand_like, randint, randn, randn_like
from .tensor import (
    Tensor, abs, arange, cat, chunk, clamp, clip, concat, empty, exp, float16, float32, float64,
    full, full_like, int32, int64, log, matmul, maximum, minimum, ones, ones_like, pad, split,
    sqrt, stack, tensor, uint8, where, zeros, zeros_like,
)

from .summary import summary

__version__ = "0.1.0"
