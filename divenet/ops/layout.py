"""The memory layout of an activation: one named concept that ops ask for, instead of each
inspecting strides (DESIGN.md, "Layout and kernels"; PyTorch calls it ``memory_format``).

An activation's shape is always PyTorch's ``(N, C, *spatial)``; its memory is one of

- ``NCHW``: C order, what every array not made by the ops below is;
- ``BATCH_LAST``: a C-ordered ``(C, *spatial, N)`` buffer, batch innermost. Convolutions
  return it (their GEMM writes it without a copy; im2col then moves runs of a whole output
  row times the batch, see ops/conv.py), and batch norm, the activations and pooling keep it;
- ``CHANNELS_FIRST``: a C-ordered ``(C, N, *spatial)`` buffer: pooling's planes at small
  batches (ops/pool.py), which batch norm also reads in place.

:func:`layout_of` names an array's layout, :func:`buffer` is the buffer a view is stored in,
:func:`stored` gives the buffer in a layout's
memory order (a view when the array is stored that way, else one copy) and :func:`restore`
the ``(N, C, ...)`` view of such a buffer. Ops that do not care (elementwise ufuncs keep any
layout) never hear of it.
"""
from __future__ import annotations

from ..backend import array_module

NCHW = "nchw"
BATCH_LAST = "batch_last"
CHANNELS_FIRST = "channels_first"


def order(layout, ndim):
    """The axis order of ``(N, C, *spatial)`` in which ``layout``'s buffer is C-contiguous."""
    if layout == BATCH_LAST:
        return (1, *range(2, ndim), 0)
    if layout == CHANNELS_FIRST:
        return (1, 0, *range(2, ndim))
    return tuple(range(ndim))


def permuted(x, layout):
    """``x`` (N, C, ...) with its axes in ``layout``'s memory order: a view, whatever the
    strides (for kernels that take any strides)."""
    return x.transpose(order(layout, x.ndim))


def buffer(x, layout):
    """The C-ordered buffer of ``layout`` that ``x`` (N, C, ...) is a view of, or None when
    ``x`` is C-ordered itself or stored otherwise."""
    if x.ndim < 3 or x.flags.c_contiguous:
        return None
    t = permuted(x, layout)
    return t if t.flags.c_contiguous else None


def layout_of(x):
    """``NCHW`` for a C-ordered array (or fewer than 3 axes), ``CHANNELS_FIRST`` or
    ``BATCH_LAST`` for a view of such a buffer, None for any other strides."""
    if x.ndim < 3 or x.flags.c_contiguous:
        return NCHW
    for layout in (CHANNELS_FIRST, BATCH_LAST):
        if buffer(x, layout) is not None:
            return layout
    return None


def stored(x, layout):
    """``x`` (N, C, ...) as the C-ordered buffer of ``layout`` (e.g. (C, H, W, N)): a view
    when that is how ``x`` is stored, else one copy."""
    t = permuted(x, layout)
    return t if t.flags.c_contiguous else array_module(x).ascontiguousarray(t)


def restore(buf, layout):
    """The (N, C, ...) view of a buffer laid out as ``layout`` (the inverse of :func:`stored`)."""
    o = order(layout, buf.ndim)
    return buf.transpose(tuple(o.index(a) for a in range(buf.ndim)))
