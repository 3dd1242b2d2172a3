"""Fused kernels that the graph compiler (divenet/compile, pass ``fuse_bn_relu``) puts in place
of chains of ops.

``BatchNormReLU``: ``y = relu(batch_norm(x) [+ skip])`` in one node (ResNet's
BN -> ReLU and BN -> residual add -> ReLU). Eager mode runs BatchNorm, Add and ReLU as three
nodes, and two arrays per chain stay alive for backward: batch norm's input ``x`` and ReLU's
output ``y``. This node keeps only what batch norm keeps (``x`` and the per-channel statistics)
and no ``y``: where ReLU needs its output in backward (``y > 0``), the output is rebuilt from
``x`` and the statistics by the same arithmetic as the forward (bitwise the same), or, with a
``skip`` input, a one-byte mask is kept instead.

Why not keep only ``y`` (in-place activated batch norm, Rota Bulo et al. 2018)? In training,
batch norm's input gradient at every position depends on that position's normalized input,
``dx = a (g - mean(g) - xhat mean(g xhat))``, also where ReLU cut ``y`` to 0 and ``g`` is 0;
ReLU is not invertible there, so ``xhat`` is lost (the paper uses leaky ReLU for that reason).
Keeping ``x`` keeps the gradients exact (bitwise those of the unfused ops).

The forward calls ops/norm.py's BatchNorm kernel (running statistics, layouts and blocking as
there) and adds and clips in place in its output; the backward calls BatchNorm's backward.
"""
from __future__ import annotations

from ..autograd import Function
from ..backend import array_module
from .norm import BatchNorm, _blocks, _col, channels_restore


class BatchNormReLU(Function):
    """Inputs: x (N, C, ...), weight (C,) or None, bias (C,) or None, skip (x's shape) or None.
    Options as BatchNorm's. Output ``relu(batch_norm(x) + skip)`` in x's memory layout."""

    @staticmethod
    def forward(ctx, x, weight, bias, skip=None, running_mean=None, running_var=None, training=False,
                momentum=0.1, eps=1e-5):
        y = BatchNorm.forward(ctx, x, weight, bias, running_mean=running_mean, running_var=running_var,
                              training=training, momentum=momentum, eps=eps)
        xp = array_module(y)
        if skip is not None:
            xp.add(y, skip, out=y)  # eager's Add(bn, skip), in the output's storage
        xp.maximum(y, y.dtype.type(0), out=y)  # eager's ReLU, in place
        # ReLU's backward needs y > 0: rebuilt from x without a skip; with one, a mask (1 byte)
        ctx.mask = (y > 0) if skip is not None else None
        ctx.bias, ctx.rebuilt = bias, None  # the bias (a parameter) for rebuild()
        return y

    @staticmethod
    def rebuild(ctx):
        """The forward's output again, from the saved input and statistics (no skip): the same
        arithmetic as BatchNorm's forward, so bitwise the same array, in the same layout."""
        u, mean, invstd, weight = ctx.saved
        bias = ctx.bias
        xp = array_module(u)
        scale = invstd if weight is None else invstd * weight
        shift = None
        if not ctx.training:
            shift = -mean * scale
            if bias is not None:
                shift += bias
        y = xp.empty_like(u)
        zero = y.dtype.type(0)
        # channel blocks that stay in the cache, as BatchNorm's (a 37 MB map: 77 -> 60 ms)
        for c0, c1 in _blocks(xp, u):
            ub, yb = u[:, c0:c1], y[:, c0:c1]
            if shift is None:
                xp.subtract(ub, _col(mean[c0:c1]), out=yb)
                yb *= _col(scale[c0:c1])
                if bias is not None:
                    yb += _col(bias[c0:c1])
            else:
                xp.multiply(ub, _col(scale[c0:c1]), out=yb)
                yb += _col(shift[c0:c1])
            xp.maximum(yb, zero, out=yb)
        return channels_restore(y, ctx.layout)

    @staticmethod
    def backward(ctx, g):
        mask = ctx.mask
        if mask is None:
            y = ctx.rebuilt if ctx.rebuilt is not None else BatchNormReLU.rebuild(ctx)
            ctx.rebuilt = None
            mask = y > 0
        gz = g * mask  # ReLU's backward: zero gradient at 0, as PyTorch
        gx, gw, gb = BatchNorm.backward(ctx, gz)
        return gx, gw, gb, (gz if ctx.needs_input_grad[3] else None)
