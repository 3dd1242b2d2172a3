"""Reductions over axes: sum, mean, max/min, var, prod, the 2-norm."""
from __future__ import annotations

from ..autograd import Function
from ..backend import array_module


def _expand(g, shape, axis, keepdims):
    """Reshape a reduced gradient so that it broadcasts against the input of ``shape``."""
    if axis is None:
        return g.reshape((1,) * len(shape))
    if not keepdims:
        axes = sorted(a % len(shape) for a in axis)
        for a in axes:
            g = array_module(g).expand_dims(g, a)
    return g


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        xp = array_module(g)
        g = _expand(g, ctx.shape, ctx.axis, ctx.keepdims)
        return xp.broadcast_to(g, ctx.shape)


class Mean(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        out = a.mean(axis=axis, keepdims=keepdims)
        ctx.count = a.size // max(out.size, 1) if a.size else 1
        return out.astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        xp = array_module(g)
        g = _expand(g, ctx.shape, ctx.axis, ctx.keepdims) / g.dtype.type(ctx.count)
        return xp.broadcast_to(g, ctx.shape)


class Max(Function):
    """max (or min with ``negate``); the gradient is split among tied maxima like PyTorch's
    amax."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False, smallest=False):
        out = a.min(axis=axis, keepdims=True) if smallest else a.max(axis=axis, keepdims=True)
        mask = (a == out)
        ctx.save_for_backward(mask)
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        if not keepdims:
            out = out.reshape(()) if axis is None else out.squeeze(axis=axis)
        return out

    @staticmethod
    def backward(ctx, g):
        mask = ctx.saved[0]
        g = _expand(g, ctx.shape, ctx.axis, ctx.keepdims)
        count = mask.sum(axis=ctx.axis, keepdims=True).astype(g.dtype)
        return mask * (g / count)


class Var(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False, correction=1):
        mean = a.mean(axis=axis, keepdims=True)
        centered = a - mean
        n = a.size // max(mean.size, 1)
        denom = a.dtype.type(max(n - correction, 0))
        out = (centered * centered).sum(axis=axis, keepdims=keepdims) / denom
        ctx.save_for_backward(centered)
        ctx.shape, ctx.axis, ctx.keepdims, ctx.denom = a.shape, axis, keepdims, denom
        return out.astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        centered = ctx.saved[0]
        g = _expand(g, ctx.shape, ctx.axis, ctx.keepdims)
        return (2 / ctx.denom) * g * centered


class Prod(Function):
    """Product over ``axis``. The gradient of each entry is the product of the others, from
    exclusive cumulative products (not ``out / a``, which fails where an entry is 0)."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.save_for_backward(a)
        ctx.axis, ctx.keepdims = axis, keepdims
        return a.prod(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        a = ctx.saved[0]
        xp = array_module(a)
        axes = list(range(a.ndim)) if ctx.axis is None else list(ctx.axis)
        order = [i for i in range(a.ndim) if i not in axes] + axes
        moved = a.transpose(order)
        flat = moved.reshape(moved.shape[:a.ndim - len(axes)] + (-1,))  # reduced axes last, as one
        ones = xp.ones(flat.shape[:-1] + (1,), dtype=a.dtype)
        before = xp.cumprod(xp.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
        after = xp.flip(xp.cumprod(xp.concatenate([ones, xp.flip(flat, -1)[..., :-1]], axis=-1), axis=-1), -1)
        others = (before * after).reshape(moved.shape).transpose(sorted(range(a.ndim), key=order.__getitem__))
        return _expand(g, a.shape, ctx.axis, ctx.keepdims) * others


class Norm(Function):
    """The 2-norm over ``axis``; its gradient is 0 where the norm is 0, as PyTorch's."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        xp = array_module(a)
        out = xp.sqrt((a * a).sum(axis=axis, keepdims=True))
        ctx.save_for_backward(a, out)
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        if not keepdims:
            return out.reshape(()) if axis is None else out.squeeze(axis=axis)
        return out

    @staticmethod
    def backward(ctx, g):
        a, out = ctx.saved
        xp = array_module(a)
        g = _expand(g, ctx.shape, ctx.axis, ctx.keepdims)
        return g * a / xp.where(out == 0, out.dtype.type(1), out)  # a is 0 where out is
