"""Shape ops: reshape, permute, indexing, concatenation, splitting, padding, broadcasting."""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..backend import array_module
from .layout import BATCH_LAST, permuted, restore


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape)


class Permute(Function):
    """A strided view: no copy. Later kernels pick the layout they need."""

    @staticmethod
    def forward(ctx, a, axes):
        ctx.axes = axes
        return a.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        inverse = [0] * len(ctx.axes)
        for i, a in enumerate(ctx.axes):
            inverse[a] = i
        return g.transpose(inverse)


class BroadcastTo(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return array_module(a).broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, g):
        from .elementwise import unbroadcast

        return unbroadcast(g, ctx.shape)


class GetItem(Function):
    """Basic and integer-array indexing. Repeated integer indices accumulate their gradients."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.index, ctx.dtype = a.shape, index, a.dtype
        return a[index]

    @staticmethod
    def backward(ctx, g):
        xp = array_module(g)
        out = xp.zeros(ctx.shape, dtype=ctx.dtype)
        if _is_basic(ctx.index):
            out[ctx.index] = g
        else:
            xp.add.at(out, ctx.index, g)  # advanced indices may repeat
        return out


class TakeAlongAxis(Function):
    """``take_along_axis(a, index, axis)`` for an index with ONE entry per slice along ``axis``
    (max/min's argmax, kept as a size-1 dim): the gradient goes to those entries only, through
    a one-hot mask built on the device (no scatter, no host index arrays)."""

    @staticmethod
    def forward(ctx, a, index, axis):
        xp = array_module(a)
        ctx.save_for_backward(index)
        ctx.shape, ctx.axis = a.shape, axis
        return xp.take_along_axis(a, index, axis=axis)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved
        xp = array_module(g)
        n, axis = ctx.shape[ctx.axis], ctx.axis
        positions = xp.arange(n, dtype=index.dtype).reshape((n,) + (1,) * (len(ctx.shape) - 1 - axis))
        return xp.multiply(positions == index, g, dtype=g.dtype), None


class SetItem(Function):
    """a[index] = v, written into a (``__setitem__``, ``copy_``, ``fill_``; run by
    ``autograd.apply_inplace``). The gradient reaches a's old value outside ``index`` and v
    through ``index``, as PyTorch's index_put_ / copy_."""

    @staticmethod
    def forward(ctx, a, v, index):
        a[index] = v
        ctx.index, ctx.shape = index, getattr(v, "shape", ())
        return a

    @staticmethod
    def backward(ctx, g):
        n = ctx.needs_input_grad
        ga = gv = None
        if n[0]:
            ga = g.copy()
            ga[ctx.index] = 0
        if n[1]:
            from .elementwise import unbroadcast

            gv = g[ctx.index]
            extra = gv.ndim - len(ctx.shape)  # v may have fewer dims (broadcast) or extra 1s
            gv = unbroadcast(gv, ctx.shape[-extra:] if extra < 0 else ctx.shape).reshape(ctx.shape)
        return ga, gv


def _is_basic(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice)) or i is None or i is Ellipsis for i in items)


class Concat(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        xp = array_module(arrays[0])
        parts = _batch_last_parts(arrays) if axis == 1 else None
        if parts is not None:
            # channel concatenation of convolution outputs (GoogLeNet, DenseNet): keep their
            # (C, H, W, N) layout, so that the next convolution reads the result in place
            return restore(xp.concatenate(parts), BATCH_LAST)
        return xp.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        grads = []
        start = 0
        index = [slice(None)] * g.ndim
        for size, needed in zip(ctx.sizes, ctx.needs_input_grad):
            index[ctx.axis] = slice(start, start + size)
            grads.append(g[tuple(index)] if needed else None)
            start += size
        return tuple(grads)


def _batch_last_parts(arrays):
    """The (C, H, W, N) buffers of 4-D arrays stored batch-last (convolution outputs), or None."""
    parts = [permuted(a, BATCH_LAST) for a in arrays if a.ndim == 4]
    return parts if len(parts) == len(arrays) and all(t.flags.c_contiguous for t in parts) else None


class ConcatGrow(Concat):
    """A channel Concat(prev, *new) of graph mode's ``share_concat`` pass, for chains where each
    concatenation extends the last (a DenseNet block). In the (C, H, W, N) layout the leading
    channels of a buffer are a contiguous array, so all the chain's results can be leading
    parts of one buffer of the chain's ``total`` channels: a link whose ``prev`` is such a part
    writes only ``new``, behind it; the ``first`` link makes the buffer. The values and the
    memory layout are Concat's; the memory is one buffer, not one per link (quadratic), and
    ``prev`` is not copied again. Any other input is concatenated as Concat does."""

    @staticmethod
    def forward(ctx, *arrays, axis=1, total, first):
        numpy = all(isinstance(a, np.ndarray) for a in arrays)
        parts = _batch_last_parts(arrays) if axis == 1 and numpy else None
        if parts is None:
            return Concat.forward(ctx, *arrays, axis=axis)
        ctx.axis = axis
        ctx.sizes = [a.shape[1] for a in arrays]
        prev = parts[0]
        buf = prev.base
        dtype = np.result_type(*arrays)
        fresh = first or buf is None or buf.shape != (total,) + prev.shape[1:] or buf.dtype != dtype \
            or not buf.flags.c_contiguous or _address(buf) != _address(prev) \
            or any(np.may_share_memory(p, buf) for p in parts[1:])
        start = prev.shape[0]
        if fresh:
            buf = np.empty((total,) + prev.shape[1:], dtype=dtype)
            buf[:start] = prev
        for p in parts[1:]:
            buf[start:start + p.shape[0]] = p
            start += p.shape[0]
        return restore(buf[:start], BATCH_LAST)


def _address(a):
    return a.__array_interface__["data"][0]


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        return array_module(arrays[0]).stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        xp = array_module(g)
        return tuple(xp.take(g, i, axis=ctx.axis) if needed else None
                     for i, needed in enumerate(ctx.needs_input_grad))


class Split(Function):
    """Split along ``axis`` at ``bounds`` (section starts); one output per section."""

    @staticmethod
    def forward(ctx, a, bounds, axis=0):
        ctx.axis, ctx.shape, ctx.dtype = axis, a.shape, a.dtype
        return tuple(array_module(a).split(a, bounds, axis=axis))

    @staticmethod
    def backward(ctx, *grads):
        return array_module(grads[0]).concatenate(grads, axis=ctx.axis)


class Pad(Function):
    """Constant padding; ``widths`` is a tuple of (before, after) per axis."""

    @staticmethod
    def forward(ctx, a, widths, value=0.0):
        ctx.widths = widths
        return array_module(a).pad(a, widths, mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx, g):
        index = tuple(slice(lo, g.shape[i] - hi) for i, (lo, hi) in enumerate(ctx.widths))
        return g[index]
