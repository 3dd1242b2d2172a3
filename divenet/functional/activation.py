"""Activations with PyTorch's names and signatures.

``inplace=True`` is accepted for compatibility with PyTorch code (``nn.ReLU(inplace=True)``)
but the result is always a new tensor: overwriting an input that the graph may still need
would break the backward pass, and the values are the same either way.
"""
from __future__ import annotations

import numbers

from ..ops import activation as A
from ._checks import require_float, require_tensor

__all__ = [
    "relu", "relu6", "leaky_relu", "hardtanh", "sigmoid", "tanh", "silu", "gelu",
    "softmax", "log_softmax",
]


def _check_float(op, x):
    require_tensor(op, "input", x)
    require_float(op, "input", x)


def _check_number(op, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")


def relu(input, inplace=False):
    """max(x, 0); the gradient at 0 is 0 (as in PyTorch)."""
    require_tensor("relu", "input", input)
    return A.ReLU.apply(input)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """x for x > 0, negative_slope * x otherwise."""
    _check_float("leaky_relu", input)
    _check_number("leaky_relu", "negative_slope", negative_slope)
    return A.LeakyReLU.apply(input, negative_slope=float(negative_slope))


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """clip(x, min_val, max_val); gradient 1 strictly between the bounds, 0 elsewhere."""
    _check_float("hardtanh", input)
    _check_number("hardtanh", "min_val", min_val)
    _check_number("hardtanh", "max_val", max_val)
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val {min_val} must not exceed max_val {max_val}")
    return A.Hardtanh.apply(input, min_val=float(min_val), max_val=float(max_val))


def relu6(input, inplace=False):
    """min(max(x, 0), 6)."""
    _check_float("relu6", input)
    return A.Hardtanh.apply(input, min_val=0.0, max_val=6.0)


def sigmoid(input):
    """1 / (1 + exp(-x)), computed as (1 + tanh(x / 2)) / 2."""
    _check_float("sigmoid", input)
    return A.Sigmoid.apply(input)


def tanh(input):
    _check_float("tanh", input)
    return A.Tanh.apply(input)


def silu(input, inplace=False):
    """x * sigmoid(x) (also called swish)."""
    _check_float("silu", input)
    return A.SiLU.apply(input)


def gelu(input, approximate="none"):
    """x * Phi(x) with the exact normal CDF (``approximate='none'``) or PyTorch's tanh
    approximation (``approximate='tanh'``)."""
    _check_float("gelu", input)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return A.GELU.apply(input, approximate=approximate)


def _softmax_args(op, input, dim, dtype):
    require_tensor(op, "input", input)
    if dim is None:
        raise TypeError(f"{op}: dim must be given (the axis to normalize over) for input of shape "
                        f"{tuple(input.shape)}")
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    nd = max(input.ndim, 1)
    if not -nd <= dim < nd:
        raise ValueError(f"{op}: dim {dim} is out of range for input of shape {tuple(input.shape)} "
                         f"(expected {-nd} <= dim < {nd})")
    if dtype is not None:
        input = input.astype(dtype)
    require_float(op, "input", input)
    return input, int(dim) % nd


def softmax(input, dim=None, dtype=None):
    """exp(x) / sum(exp(x)) along ``dim`` (numerically stable; one fused node). ``dtype``
    casts the input first, as in PyTorch."""
    input, axis = _softmax_args("softmax", input, dim, dtype)
    if input.ndim == 0:
        return A.Softmax.apply(input.reshape(1), axis=0).reshape(())
    return A.Softmax.apply(input, axis=axis)


def log_softmax(input, dim=None, dtype=None):
    """log(softmax(x)) along ``dim``, computed as x - max - log(sum(exp(x - max)))."""
    input, axis = _softmax_args("log_softmax", input, dim, dtype)
    if input.ndim == 0:
        return A.LogSoftmax.apply(input.reshape(1), axis=0).reshape(())
    return A.LogSoftmax.apply(input, axis=axis)
