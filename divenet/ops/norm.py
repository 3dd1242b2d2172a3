"""Normalization kernels: batch norm, layer norm, local response norm.

Batch norm views its input as ``(P, C, L)`` with statistics over P and L: ``(1, C, N*H*W)`` when
the input's memory is channel-major (ops/layout.py: batch-last, what convolution returns, or
channels-first; no copy, and the output keeps that layout), ``(N, C, H*W)`` otherwise. On the CPU the channels go in blocks of about the L2
cache's size, so each block is read from memory once: its sum (an einsum reduction, float32
kept), then, in the cache, the centred values are written into the output block, their sum of
squares taken (einsum, the square never materialized) and the block scaled and shifted in place.
(Taking E[x^2] - E[x]^2 from the same read would save one in-cache pass but loses about
log10((mean/std)^2) digits: 7e-3 error at mean/std = 100 against PyTorch's 7e-6.) The backward
is the closed form ``dx = A g + B (x - mean) + C`` with per-channel A, B, C from sum(g) and
sum(g (x - mean)), not a chain of graph nodes.
"""
from __future__ import annotations

import numpy as np

from .. import _native
from ..autograd import Function, _same_storage
from ..backend import array_module
from .layout import BATCH_LAST, CHANNELS_FIRST, NCHW, layout_of, restore, stored

_BLOCK_BYTES = 1 << 20


# ---- batch norm --------------------------------------------------------------------------------
def channels_view(x):
    """``x`` (N, C, ...) as (P, C, L) plus the way back: a channel-major input (batch-last or
    channels-first, ops/layout.py) is read in place as (1, C, L), anything else as a contiguous
    (N, C, L)."""
    c = x.shape[1]
    layout = layout_of(x)
    if layout in (BATCH_LAST, CHANNELS_FIRST):
        buf = stored(x, layout)  # a view
        return buf.reshape(1, c, -1), (layout, buf.shape)
    return array_module(x).ascontiguousarray(x).reshape(x.shape[0], c, -1), (NCHW, x.shape)


def channels_like(g, layout):
    """A gradient of the input's shape in the same (P, C, L) layout as the input."""
    name, _ = layout
    rows = 1 if name != NCHW else g.shape[0]
    return stored(g, name).reshape(rows, g.shape[1], -1)


def channels_restore(y, layout):
    name, shape = layout
    return restore(y.reshape(shape), name)


def _sum_c(u):
    """Per-channel sum of (P, C, L). (einsum: SIMD accumulators; faster here than ``sum``, and
    far faster than a BLAS matrix-vector product on a few rows.)"""
    return array_module(u).einsum("pcl->c", u)


def _dot_c(u, v):
    """Per-channel sum of u * v for (P, C, L) arrays, without materializing the product."""
    return array_module(u).einsum("pcl,pcl->c", u, v)


def _blocks(xp, u):
    """Channel blocks of (P, C, L) sized for the cache (one block on a GPU)."""
    p, c, l = u.shape
    if xp is not np:
        return [(0, c)]
    step = max(1, min(c, _BLOCK_BYTES // max(p * l * u.itemsize, 1)))
    return [(c0, min(c, c0 + step)) for c0 in range(0, c, step)]


def _col(v):
    return v[None, :, None]


def update_running_stats(running_mean, running_var, mean_step, var_step, momentum):
    """PyTorch's running statistics, in place: r = (1 - momentum) r + step, where the caller's
    step is momentum times the batch mean (unbiased variance); either buffer may be None."""
    if running_mean is not None:
        running_mean *= running_mean.dtype.type(1 - momentum)
        running_mean += mean_step.astype(running_mean.dtype)
    if running_var is not None:
        running_var *= running_var.dtype.type(1 - momentum)
        running_var += var_step.astype(running_var.dtype)


class BatchNorm(Function):
    """Inputs: x (N, C, ...), weight (C,) or None, bias (C,) or None. Options: running_mean,
    running_var (arrays updated in place when training; used when not), training, momentum, eps."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean=None, running_var=None, training=False,
                momentum=0.1, eps=1e-5):
        xp = array_module(x)
        dt = x.dtype.type
        u, layout = channels_view(x)
        p, c, l = u.shape
        m = p * l
        y = xp.empty_like(u)
        mean = xp.empty(c, dtype=x.dtype)
        invstd = xp.empty(c, dtype=x.dtype)
        var = xp.empty(c, dtype=x.dtype) if training else None
        if not training:
            mean[...] = running_mean
            invstd[...] = 1 / xp.sqrt(running_var.astype(x.dtype) + dt(eps))
        if _native_here(u, weight, bias):
            _native_forward(u[0], weight, bias, training, eps, y[0], mean, var, invstd)
        else:
            _blocked_forward(u, weight, bias, training, eps, y, mean, var, invstd)
        if training:
            mom = dt(momentum)
            update_running_stats(running_mean, running_var, mom * mean, mom * (var * dt(m / (m - 1))), momentum)
        ctx.save_for_backward(u, mean, invstd, weight)
        ctx.layout, ctx.training = layout, training
        return channels_restore(y, layout)

    @staticmethod
    def backward(ctx, g):
        gu = channels_like(g, ctx.layout)
        # the input gradient overwrites the incoming one where no one else holds it: a copy
        # made here, or what the graph executor says it handed over (ctx.overwrite_grad)
        mine = getattr(ctx, "overwrite_grad", False) or not _same_storage(gu, g)
        return batch_norm_backward(ctx, gu, gu if mine else None)


def _blocked_forward(u, weight, bias, training, eps, y, mean, var, invstd):
    """BatchNorm's forward over u (P, C, L) in cache-sized channel blocks (NumPy or CuPy), into y,
    and mean, var, invstd (training; else mean and invstd are given)."""
    xp = array_module(u)
    dt = u.dtype.type
    m = u.shape[0] * u.shape[2]
    for c0, c1 in _blocks(xp, u):
        ub, yb = u[:, c0:c1], y[:, c0:c1]
        if training:
            # the block is read from memory once; the centring pass runs in the cache and
            # keeps the variance exact when |mean| >> std (E[x^2] - E[x]^2 would cancel)
            mu = _sum_c(ub) / dt(m)
            xp.subtract(ub, _col(mu), out=yb)
            v = _dot_c(yb, yb) / dt(m)
            mean[c0:c1], var[c0:c1] = mu, v
            invstd[c0:c1] = 1 / xp.sqrt(v + dt(eps))
            scale = invstd[c0:c1] if weight is None else invstd[c0:c1] * weight[c0:c1]
            yb *= _col(scale)
            if bias is not None:
                yb += _col(bias[c0:c1])
            continue
        scale = invstd[c0:c1] if weight is None else invstd[c0:c1] * weight[c0:c1]
        shift = -mean[c0:c1] * scale
        if bias is not None:
            shift += bias[c0:c1]
        xp.multiply(ub, _col(scale), out=yb)
        yb += _col(shift)


def _native_here(u, *operands):
    """Whether the native kernels take batch norm over u (P, C, L): one row of channels (a
    channel-major map), contiguous, float32 NumPy arrays (the weight and bias too, if any)."""
    return (u.shape[0] == 1 and u.flags.c_contiguous
            and _native.usable(u, *(a for a in operands if a is not None)))


def _native_forward(u, weight, bias, training, eps, y, mean, var, invstd):
    """BatchNorm's forward over u (C, L) by the native kernel, into y and, in training, mean,
    var and invstd: the NumPy blocks' formulas (``_blocked_forward``), each channel read from
    memory once."""
    if training:
        mean[...], var[...], invstd[...] = _native.bn_forward(u, weight, bias, u.dtype.type(eps), y)
    else:
        _native.bn_forward(u, weight, bias, u.dtype.type(eps), y, mean, invstd)


def batch_norm_backward(ctx, gu, into=None):
    """BatchNorm's gradients from ``gu``, the output gradient as (P, C, L) in the input's
    layout; the input gradient is written into ``into`` (``gu`` itself allowed: each channel
    block is read before it is written) or a new array. Returns (gx, gw, gb)."""
    u, mean, invstd, weight = ctx.saved
    xp = array_module(gu)
    dt = u.dtype.type
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    p, c, l = u.shape
    m = p * l
    dx = (xp.empty_like(u) if into is None else into) if need_x else None
    dw = xp.empty(c, dtype=u.dtype) if need_w else None
    db = xp.empty(c, dtype=u.dtype) if need_b else None
    need_xhat = need_w or (need_x and ctx.training)
    if _native_here(u, weight) and _native_here(gu):
        _native_backward(ctx, u[0], gu[0], None if dx is None else dx[0], dw, db, need_xhat)
        gx = channels_restore(dx, ctx.layout) if need_x else None
        return gx, dw, db
    tmp = None
    for c0, c1 in _blocks(xp, u):
        gb, ub = gu[:, c0:c1], u[:, c0:c1]
        mu, inv = mean[c0:c1], invstd[c0:c1]
        sg = _sum_c(gb)
        if need_b:
            db[c0:c1] = sg
        if need_xhat:
            # centred in the cached block: sum(g x) - mean sum(g) would cancel badly when
            # |mean| >> std
            if tmp is None:
                tmp = xp.empty_like(ub)
            xc = tmp[:, :c1 - c0]
            xp.subtract(ub, _col(mu), out=xc)
            gxhat = inv * _dot_c(gb, xc)  # sum(g * xhat)
            if need_w:
                dw[c0:c1] = gxhat
        if not need_x:
            continue
        a = inv if weight is None else inv * weight[c0:c1].astype(u.dtype)
        out = dx[:, c0:c1]
        xp.multiply(gb, _col(a), out=out)
        if ctx.training:
            # dx = a (g - mean(g) - xhat mean(g xhat)) = a g + b (x - mean) + k
            b = -a * inv * gxhat / dt(m)
            k = -a * sg / dt(m)
            xc *= _col(b)
            out += xc
            out += _col(k)
    gx = channels_restore(dx, ctx.layout) if need_x else None
    return gx, dw, db


def _native_backward(ctx, u, g, dx, dw, db, need_xhat):
    """batch_norm_backward over u, g (C, L) by the native kernel: the same formulas."""
    _, mean, inv, weight = ctx.saved
    sums = _native.bn_backward(u, g, mean, inv, weight, ctx.training, dx, sums=db is not None or need_xhat)
    if db is not None:
        db[...] = sums[0]
    if dw is not None:
        dw[...] = sums[1]


# ---- layer norm --------------------------------------------------------------------------------
class LayerNorm(Function):
    """Normalizes over the last ``ndim`` axes; weight and bias (optional) have those axes' shape."""

    @staticmethod
    def forward(ctx, x, weight, bias, ndim=1, eps=1e-5):
        xp = array_module(x)
        dt = x.dtype.type
        d = int(np.prod(x.shape[x.ndim - ndim:]))
        a = xp.ascontiguousarray(x).reshape(-1, d)
        mean = a.sum(axis=1, keepdims=True) / dt(d)
        xhat = a - mean
        var = xp.einsum("rd,rd->r", xhat, xhat)[:, None] / dt(d)
        invstd = 1 / xp.sqrt(var + dt(eps))
        xhat *= invstd
        if weight is not None:
            y = xhat * weight.reshape(-1)
            if bias is not None:
                y += bias.reshape(-1)
        elif bias is not None:
            y = xhat + bias.reshape(-1)
        else:
            y = xhat.copy()  # xhat is kept for backward; the output is the caller's
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.shape, ctx.norm_shape = x.shape, x.shape[x.ndim - ndim:]
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        xhat, invstd, weight = ctx.saved
        xp = array_module(g)
        dt = xhat.dtype.type
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        d = xhat.shape[1]
        g2 = xp.ascontiguousarray(g).reshape(-1, d)
        dw = xp.einsum("rd,rd->d", g2, xhat).reshape(ctx.norm_shape) if need_w else None
        db = g2.sum(axis=0).reshape(ctx.norm_shape) if need_b else None
        dx = None
        if need_x:
            gh = g2 if weight is None else g2 * weight.reshape(-1)
            m1 = gh.sum(axis=1, keepdims=True) / dt(d)
            m2 = xp.einsum("rd,rd->r", gh, xhat)[:, None] / dt(d)
            dx = gh - m1
            dx -= xhat * m2
            dx *= invstd
            dx = dx.reshape(ctx.shape)
        return dx, dw, db


# ---- local response norm -----------------------------------------------------------------------
def _channel_window_sum(v, before, after):
    """s[:, c] = sum of v[:, c - before : c + after + 1] along axis 1, zeros outside."""
    xp = array_module(v)
    c = v.shape[1]
    s = xp.empty_like(v)
    s[...] = v
    for o in range(-before, after + 1):
        if o == 0:
            continue
        lo, hi = max(0, -o), min(c, c - o)
        if lo < hi:
            s[:, lo:hi] += v[:, lo + o:hi + o]
    return s


class LocalResponseNorm(Function):
    """PyTorch's local_response_norm: x / (k + alpha/size * sum of x^2 over a window of ``size``
    channels, zero-padded size//2 before and (size-1)//2 after) ** beta."""

    @staticmethod
    def forward(ctx, x, size, alpha=1e-4, beta=0.75, k=1.0):
        xp = array_module(x)
        dt = x.dtype.type
        sq = x * x
        d = _channel_window_sum(sq, size // 2, (size - 1) // 2)
        d *= dt(alpha / size)
        d += dt(k)
        p = xp.power(d, dt(-beta))
        y = x * p
        ctx.save_for_backward(x, p, d)
        ctx.size, ctx.alpha, ctx.beta = size, alpha, beta
        return y

    @staticmethod
    def backward(ctx, g):
        x, p, d = ctx.saved
        dt = x.dtype.type
        size = ctx.size
        # y = x p with p = d^-beta; dL/dx_i = g_i p_i
        #   - (2 alpha beta / size) x_i sum over the channels c whose window holds i of g_c x_c p_c / d_c
        t = g * x
        t *= p
        t /= d
        s = _channel_window_sum(t, (size - 1) // 2, size // 2)
        s *= x
        s *= dt(-2.0 * ctx.alpha * ctx.beta / size)
        s += g * p
        return s
