"""Reductions over axes: sum, mean, max/min, var."""
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
