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

from ..autograd import Function, _same_storage
from ..backend import array_module
from .norm import BatchNorm, _blocks, _col, batch_norm_backward, channels_like, channels_restore


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
        u = ctx.saved[0]
        y = array_module(u).empty_like(u)
        # channel blocks that stay in the cache, as BatchNorm's (a 37 MB map: 77 -> 60 ms)
        for c0, c1, block in _rebuilt_blocks(ctx):
            block(y[:, c0:c1])
        return channels_restore(y, ctx.layout)

    @staticmethod
    def backward(ctx, g):
        xp = array_module(g)
        mask, y = ctx.mask, ctx.rebuilt
        ctx.rebuilt = None
        skip_grad = ctx.needs_input_grad[3]
        gu = channels_like(g, ctx.layout)
        if not _same_storage(gu, g):  # g in another layout than the input's: as the unfused ops
            if mask is None:
                mask = (y if y is not None else BatchNormReLU.rebuild(ctx)) > 0
            gz = g * mask  # ReLU's backward: zero gradient at 0, as PyTorch
            gzu = channels_like(gz, ctx.layout)
        else:
            # ReLU's backward (g * (y > 0), zero gradient at 0 as PyTorch) block by block: the
            # sign from the mask, the rebuilt y or, without either, y's block rebuilt in a
            # cache-sized buffer (no whole y or mask); into g where the graph executor handed
            # it over (ctx.overwrite_grad), and batch norm's input gradient into that
            gzu = gu if getattr(ctx, "overwrite_grad", False) else xp.empty_like(gu)
            held = mask if mask is not None else y
            sign = None if held is None else channels_like(held, ctx.layout)
            tmp = None
            for c0, c1, block in _rebuilt_blocks(ctx):
                if sign is not None:
                    m = sign[:, c0:c1]
                    m = m if mask is not None else m > 0
                else:
                    if tmp is None:
                        tmp = xp.empty_like(gu[:, c0:c1])
                    yb = tmp[:, :c1 - c0]
                    block(yb)
                    m = yb > 0
                xp.multiply(gu[:, c0:c1], m, out=gzu[:, c0:c1])
            gz = channels_restore(gzu, ctx.layout)
        gx, gw, gb = batch_norm_backward(ctx, gzu, None if skip_grad else gzu)
        return gx, gw, gb, (gz if skip_grad else None)


def _rebuilt_blocks(ctx):
    """(c0, c1, write) per cache-sized channel block: ``write(out)`` puts the fused output's
    channels c0:c1 (no skip), as (P, c1 - c0, L), into ``out`` by the forward's arithmetic."""
    u, mean, invstd, weight = ctx.saved
    bias = ctx.bias
    xp = array_module(u)
    scale = invstd if weight is None else invstd * weight
    shift = None
    if not ctx.training:
        shift = -mean * scale
        if bias is not None:
            shift += bias
    zero = u.dtype.type(0)
    for c0, c1 in _blocks(xp, u):
        ub = u[:, c0:c1]

        def write(out, c0=c0, c1=c1, ub=ub):
            if shift is None:
                xp.subtract(ub, _col(mean[c0:c1]), out=out)
                out *= _col(scale[c0:c1])
                if bias is not None:
                    out += _col(bias[c0:c1])
            else:
                xp.multiply(ub, _col(scale[c0:c1]), out=out)
                out += _col(shift[c0:c1])
            xp.maximum(out, zero, out=out)
        yield c0, c1, write
