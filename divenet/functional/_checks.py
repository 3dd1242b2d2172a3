"""Argument checks shared by the functional submodules."""
from __future__ import annotations

import numbers

from ..tensor import Tensor


def require_tensor(op, name, x):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")


def require_ndim(op, name, x, *ndims):
    require_tensor(op, name, x)
    if x.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{op}: {name} must be {want}, got shape {tuple(x.shape)}")


def require_float(op, name, x):
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be floating point, got {x.dtype} with shape {tuple(x.shape)}")


def pair(op, name, value, n=2):
    """An int or a sequence of ``n`` ints, as a tuple of ``n`` ints."""
    if isinstance(value, numbers.Integral):
        return (int(value),) * n
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int or {n} ints, got {value!r}") from None
    if len(out) != n:
        raise ValueError(f"{op}: {name} must be an int or {n} ints, got {value!r}")
    return out
