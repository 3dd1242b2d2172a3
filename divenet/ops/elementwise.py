"""Elementwise arithmetic and math with NumPy broadcasting; the in-place kernels (``*Inplace``,
run by ``autograd.apply_inplace``) write into their first argument."""
from __future__ import annotations

import numpy as np

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


class Clone(Function):
    """A copy in the same memory layout (PyTorch's clone, preserve_format)."""

    @staticmethod
    def forward(ctx, a):
        return a.copy(order="K")

    @staticmethod
    def backward(ctx, g):
        return g


class AddInplace(Function):
    """a += alpha * b (add_, sub_ with alpha=-alpha, +=, -=)."""

    @staticmethod
    def forward(ctx, a, b, alpha=1):
        ctx.shape, ctx.alpha = b.shape, alpha
        if alpha == 1:
            a += b
        elif alpha == -1:
            a -= b
        else:
            a += alpha * b
        return a

    @staticmethod
    def backward(ctx, g):
        n = ctx.needs_input_grad
        gb = None
        if n[1]:
            gb = unbroadcast(g if ctx.alpha == 1 else g * g.dtype.type(ctx.alpha), ctx.shape)
        return (g if n[0] else None, gb)


class MulInplace(Function):
    """a *= b; the gradient of b needs a's old value, so only then is it copied."""

    @staticmethod
    def forward(ctx, a, b):
        n = ctx.needs_input_grad
        ctx.save_for_backward(a.copy() if n[1] else None, b if n[0] else None)
        ctx.shape = b.shape
        a *= b
        return a

    @staticmethod
    def backward(ctx, g):
        old, b = ctx.saved
        n = ctx.needs_input_grad
        return (g * b if n[0] else None, unbroadcast(g * old, ctx.shape) if n[1] else None)


class DivInplace(Function):
    """a /= b; the gradient of b is -g * result / b, so the result (a itself) is saved."""

    @staticmethod
    def forward(ctx, a, b):
        a /= b
        ctx.save_for_backward(a if ctx.needs_input_grad[1] else None, b)
        ctx.shape = b.shape
        return a

    @staticmethod
    def backward(ctx, g):
        out, b = ctx.saved
        n = ctx.needs_input_grad
        return (g / b if n[0] else None, unbroadcast(-g * out / b, ctx.shape) if n[1] else None)


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
            if isinstance(a, np.generic):  # a constant base (2 ** x): its log on the host
                log_a = a.dtype.type(np.log(a) if a > 0 else 0)
            else:
                log_a = xp.log(xp.where(a > 0, a, a.dtype.type(1)))
            gb = unbroadcast(g * out * log_a, sb)
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
        ctx.save_for_backward(_clip_mask(a, lo, hi))
        return array_module(a).clip(a, lo, hi)

    @staticmethod
    def backward(ctx, g):
        mask = ctx.saved[0]
        return g if mask is None else g * mask


class ClipInplace(Function):
    """clamp_: the gradient passes where lo <= a <= hi, as Clip's."""

    @staticmethod
    def forward(ctx, a, lo=None, hi=None):
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(_clip_mask(a, lo, hi))
        array_module(a).clip(a, lo, hi, out=a)
        return a

    backward = staticmethod(Clip.backward)


def _clip_mask(a, lo, hi):
    mask = None
    if lo is not None:
        mask = a >= lo
    if hi is not None:
        mask = (a <= hi) if mask is None else mask & (a <= hi)
    return mask


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
        wa = (a == b).astype(g.dtype)
        wa *= g.dtype.type(0.5)  # ties split evenly; a typed half keeps float32 float32
        wa += (a < b) if ctx.smallest else (a > b)
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
