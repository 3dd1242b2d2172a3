"""Elementwise arithmetic and math with NumPy broadcasting."""
from __future__ import annotations

from ..autograd import Function
from ..backend import array_module


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the adjoint of broadcasting."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        n = ctx.needs_input_grad
        return (unbroadcast(g, sa) if n[0] else None, unbroadcast(g, sb) if n[1] else None)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        n = ctx.needs_input_grad
        return (unbroadcast(g, sa) if n[0] else None, unbroadcast(-g, sb) if n[1] else None)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a if ctx.needs_input_grad[1] else None,
                              b if ctx.needs_input_grad[0] else None)
        ctx.shapes = (a.shape, b.shape)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        sa, sb = ctx.shapes
        n = ctx.needs_input_grad
        return (unbroadcast(g * b, sa) if n[0] else None, unbroadcast(g * a, sb) if n[1] else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        ctx.shapes = (a.shape, b.shape)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        sa, sb = ctx.shapes
        n = ctx.needs_input_grad
        ga = unbroadcast(g / b, sa) if n[0] else None
        gb = unbroadcast(-g * a / (b * b), sb) if n[1] else None
        return ga, gb


class Pow(Function):
    """a ** b with both a and b differentiable (b usually a constant)."""

    @staticmethod
    def forward(ctx, a, b):
        out = a ** b
        ctx.save_for_backward(a, b, out)
        ctx.shapes = (a.shape, b.shape)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved
        xp = array_module(a)
        sa, sb = ctx.shapes
        n = ctx.needs_input_grad
        ga = unbroadcast(g * b * a ** (b - 1), sa) if n[0] else None
        gb = None
        if n[1]:
            safe = xp.where(a > 0, a, xp.ones_like(a))
            gb = unbroadcast(g * out * xp.log(safe), sb)
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = array_module(a).exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved[0]


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return array_module(a).log(a)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.saved[0]


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        out = array_module(a).sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g / (2 * ctx.saved[0])


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return array_module(a).abs(a)

    @staticmethod
    def backward(ctx, g):
        return g * array_module(g).sign(ctx.saved[0])


class Clip(Function):
    """Gradient passes where lo <= a <= hi (PyTorch's clamp convention)."""

    @staticmethod
    def forward(ctx, a, lo=None, hi=None):
        xp = array_module(a)
        mask = None
        if lo is not None:
            mask = a >= lo
        if hi is not None:
            mask = (a <= hi) if mask is None else mask & (a <= hi)
        ctx.save_for_backward(mask)
        return xp.clip(a, lo, hi)

    @staticmethod
    def backward(ctx, g):
        mask = ctx.saved[0]
        return g if mask is None else g * mask


class Maximum(Function):
    """Elementwise max (or min with ``smallest``); ties split the gradient evenly, as PyTorch
    does."""

    @staticmethod
    def forward(ctx, a, b, smallest=False):
        ctx.save_for_backward(a, b)
        ctx.shapes, ctx.smallest = (a.shape, b.shape), smallest
        xp = array_module(a)
        return xp.minimum(a, b) if smallest else xp.maximum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        sa, sb = ctx.shapes
        wins = (a < b) if ctx.smallest else (a > b)
        wa = (wins + 0.5 * (a == b)).astype(g.dtype)
        n = ctx.needs_input_grad
        return (unbroadcast(g * wa, sa) if n[0] else None,
                unbroadcast(g * (1 - wa), sb) if n[1] else None)


class Where(Function):
    """where(cond, a, b); cond is a boolean array without gradient."""

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        ctx.shapes = (a.shape, b.shape)
        return array_module(a).where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        cond = ctx.saved[0]
        sa, sb = ctx.shapes
        n = ctx.needs_input_grad
        zero = g.dtype.type(0)
        return (None,
                unbroadcast(array_module(g).where(cond, g, zero), sa) if n[1] else None,
                unbroadcast(array_module(g).where(cond, zero, g), sb) if n[2] else None)
