"""Constructor argument checks shared by the layers: each error names the layer and the value
(``Conv2d: kernel_size must be positive integers, got 0``)."""
from __future__ import annotations

import numbers


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def positive_int(owner, name, value):
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return int(value)


def int_tuple(owner, name, value, n, low=1):
    """An int or ``n`` ints, each >= ``low`` (1: positive, 0: non-negative), as a tuple."""
    what = "positive integers" if low == 1 else "non-negative integers"
    vals = (value,) * n if _is_int(value) else value
    try:
        vals = tuple(vals)
    except TypeError:
        raise ValueError(f"{owner}: {name} must be {what} (an int or {n} of them), "
                         f"got {value!r}") from None
    if len(vals) != n or not all(_is_int(v) and v >= low for v in vals):
        raise ValueError(f"{owner}: {name} must be {what} (an int or {n} of them), got {value!r}")
    return tuple(int(v) for v in vals)


def eps_value(owner, eps):
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"{owner}: eps must be a positive number, got {eps!r}")
    return eps


def probability(owner, name, p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"{owner}: {name} must be a number in [0, 1], got {p!r}")
    return p


def momentum_value(owner, momentum):
    if momentum is None:
        return None
    return probability(owner, "momentum (or None for a cumulative average)", momentum)


def real(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{owner}: {name} must be a real number, got {value!r}")
    return value
