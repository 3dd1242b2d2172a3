"""Convolution (cross-correlation) as one GEMM over a transposed im2col matrix.

Layout. The API shape of an activation is NCHW, but the memory this kernel writes is laid out
as (C, N, H, W): the output is computed as ``W2d (O, C*kh*kw) @ cols (C*kh*kw, N*OH*OW)``,
which lands as (O, N, OH, OW), and is returned as its ``transpose(1, 0, 2, 3)`` view (no copy).
The next convolution reads ``x.transpose(1, 0, 2, 3)``, which is then contiguous. Any other
input strides work too; they only cost the copies below a little more.

im2col. ``cols[c, i, j, n, oh, ow] = xpad[c, n, i*dh + oh*sh, j*dw + ow*sw]`` is built in two
copying stages so that the inner contiguous runs are long:

1. width:  ``tmp[c, j, n, r, ow] = xpad[c, n, r, j*dw + ow*sw]``  (kw strided copies; the zero
   padding is written here, so the padded input is never materialized);
2. height: ``cols[c, i, j, n, oh, :] = tmp[c, j, n, i*dh + oh*sh, :]``  (kh copies whose runs
   are whole OH*OW planes when sh == 1).

Both stages run per tile of channels (and images) whose width-shifted copy fits in L2
(measured: up to 2x faster than whole-array stages on ResNet-sized layers, where the
intermediate would otherwise stream through memory). A 1x1 kernel at stride 1 without padding needs no copy at all.

col2im (the input gradient) runs the same two stages backwards with kh + kw strided adds
(never ``add.at``). The weight gradient is ``grad2d (O, N*OH*OW) @ cols.T``, computed as
``(cols @ grad2d.T).T``; forward saves ``cols`` only when the weight needs a gradient, and the
weight only when the input does.

Small maps. When a map has fewer pixels than the kernel has taps (ResNet's late stages at
28x28: 2x2 and 1x1 maps under 3x3 kernels), most patch entries are zero padding. There the
convolution runs as one dense product ``x (N, C*H*W) @ D (C*H*W, O*OH*OW)``, where ``D``
holds each kernel tap at the (input pixel, output pixel) pairs it connects: 1/9 of the work on
a 1x1 map, 4/9 on a 2x2 map, and no patch matrix. Its output is laid out NCHW.

Padding is a pair (before, after) per axis, so the asymmetric 'same' padding of even kernels
is exact. Groups split C and O into G blocks and run one GEMM per group.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..backend import array_module


def output_size(n, k, s=1, p=0, d=1):
    """Output length of a convolution along one axis: floor((n + 2p - d(k-1) - 1) / s) + 1.
    ``p`` may be an int (both sides) or a pair (before, after)."""
    lo, hi = (p, p) if isinstance(p, int) else p
    return (n + lo + hi - d * (k - 1) - 1) // s + 1


def same_padding(k, d=1):
    """(before, after) padding that keeps the length at stride 1; the odd pixel goes after,
    as in PyTorch."""
    total = d * (k - 1)
    return total // 2, total - total // 2


_BLOCK_BYTES = 1 << 20  # im2col/col2im tiles: a tile's width-shifted copy fits in L2 (1 MiB here)


class _Plan:
    """Geometry shared by forward and backward (plain ints only)."""

    __slots__ = ("C", "N", "H", "W", "O", "G", "kh", "kw", "sh", "sw", "dh", "dw", "ph0", "pw0",
                 "OH", "OW", "Hu", "r0", "r1", "spans", "cb", "nb", "pointwise")

    def __init__(self, x_shape, w_shape, stride, padding, dilation, groups, itemsize, tile=True):
        self.N, self.C, self.H, self.W = x_shape
        self.O, _, self.kh, self.kw = w_shape
        self.G = groups
        (self.sh, self.sw), (self.dh, self.dw) = stride, dilation
        (ph0, ph1), (pw0, pw1) = padding
        self.ph0, self.pw0 = ph0, pw0
        self.OH = OH = output_size(self.H, self.kh, self.sh, (ph0, ph1), self.dh)
        self.OW = OW = output_size(self.W, self.kw, self.sw, (pw0, pw1), self.dw)
        # rows of the (virtually) padded input that any output reads: [0, Hu)
        self.Hu = Hu = self.dh * (self.kh - 1) + self.sh * (OH - 1) + 1
        # width-shifted rows [r0, r1) hold real input rows [r0 - ph0, r1 - ph0); others are 0
        self.r0 = r0 = min(ph0, Hu)
        self.r1 = max(r0, min(ph0 + self.H, Hu))
        # per kernel column j: output columns [lo, hi) that read real input, and the first
        # input column they read; the others read zero padding
        spans = []
        for j in range(self.kw):
            off = j * self.dw - pw0  # input column read by output column 0
            lo = min(OW, (-off + self.sw - 1) // self.sw) if off < 0 else 0
            hi = min(OW, (self.W - 1 - off) // self.sw + 1) if off <= self.W - 1 else 0
            hi = max(hi, lo)
            spans.append((lo, hi, off + lo * self.sw))
        self.spans = spans
        # tiles of cb channels x nb images whose width-shifted copy fits in _BLOCK_BYTES (on
        # the CPU; a GPU takes the whole array per copy: fewer, larger kernel launches)
        per_image = max(self.kw * Hu * OW * itemsize, 1)  # one channel of one image
        per_channel = per_image * self.N
        if not tile:
            self.cb, self.nb = self.C, self.N
        elif per_channel <= _BLOCK_BYTES:
            self.cb, self.nb = max(1, min(self.C, _BLOCK_BYTES // per_channel)), self.N
        else:
            self.cb, self.nb = 1, max(1, min(self.N, _BLOCK_BYTES // per_image))
        self.pointwise = (self.kh == 1 and self.kw == 1 and stride == (1, 1)
                          and padding == ((0, 0), (0, 0)))


_DENSE_MAX_BYTES = 1 << 26  # the dense small-map weight stays below 64 MiB


def _dense_pairs(p, itemsize):
    """The (input pixel, output pixel, tap row, tap column) index lists of every kernel tap
    that reads real input, when the dense small-map product is cheaper than im2col (fewer
    input pixels than taps, one group); else None."""
    if p.G != 1 or p.pointwise or p.H * p.W > p.kh * p.kw:
        return None
    if p.C * p.H * p.W * p.O * p.OH * p.OW * itemsize > _DENSE_MAX_BYTES:
        return None
    pin, pout, ti, tj = [], [], [], []
    for oh in range(p.OH):
        for i in range(p.kh):
            ih = oh * p.sh - p.ph0 + i * p.dh
            if not 0 <= ih < p.H:
                continue
            for ow in range(p.OW):
                for j in range(p.kw):
                    iw = ow * p.sw - p.pw0 + j * p.dw
                    if 0 <= iw < p.W:
                        pin.append(ih * p.W + iw)
                        pout.append(oh * p.OW + ow)
                        ti.append(i)
                        tj.append(j)
    return pin, pout, ti, tj


def _dense_weight(w, p, pairs):
    """D (C*H*W, O*OH*OW): ``D[c, pin, o, pout] = w[o, c, i, j]`` for each connecting tap."""
    xp = array_module(w)
    pin, pout, ti, tj = pairs
    d = xp.zeros((p.C, p.H * p.W, p.O, p.OH * p.OW), dtype=w.dtype)
    # advanced indices on axes 1 and 3 go first: the value is (pairs, C, O)
    d[:, pin, :, pout] = w[:, :, ti, tj].transpose(2, 1, 0)
    return d.reshape(p.C * p.H * p.W, p.O * p.OH * p.OW)


def _dense_forward(ctx, x, w, b, p, pairs):
    N = p.N
    x2 = x.reshape(N, p.C * p.H * p.W)  # NCHW order (a copy when x is laid out otherwise)
    d = _dense_weight(w, p, pairs)
    out = (x2 @ d).reshape(N, p.O, p.OH, p.OW)
    if b is not None:
        out += b.reshape(1, p.O, 1, 1)
    need = ctx.needs_input_grad
    ctx.save_for_backward(x2 if need[1] else None, d if need[0] else None)
    return out


def _dense_backward(ctx, g):
    x2, d = ctx.saved
    p, pairs = ctx.plan, ctx.pairs
    xp = array_module(g)
    need = ctx.needs_input_grad
    g2 = g.reshape(p.N, p.O * p.OH * p.OW)
    gx = gw = gb = None
    if need[1]:
        gd = (g2.T @ x2).reshape(p.O, p.OH * p.OW, p.C, p.H * p.W)
        pin, pout, ti, tj = pairs
        per_pair = gd[:, pout, :, pin]  # (pairs, O, C)
        taps = [i * p.kw + j for i, j in zip(ti, tj)]
        gw = xp.zeros((p.O, p.C, p.kh * p.kw), dtype=g.dtype)
        for t in sorted(set(taps)):
            gw[:, :, t] = per_pair[[k for k, u in enumerate(taps) if u == t]].sum(axis=0)
        gw = gw.reshape(p.O, p.C, p.kh, p.kw)
    if ctx.has_bias and need[2]:
        gb = g.sum(axis=(0, 2, 3))
    if need[0]:
        gx = (g2 @ d.T).reshape(p.N, p.C, p.H, p.W)
    return gx, gw, gb


def _tiles(p):
    for c0 in range(0, p.C, p.cb):
        for n0 in range(0, p.N, p.nb):
            yield slice(c0, min(p.C, c0 + p.cb)), slice(n0, min(p.N, n0 + p.nb))


def im2col(xc, plan):
    """``xc``: the input as (C, N, H, W), any strides. Returns cols (C, kh, kw, N, OH, OW):
    ``cols[c, i, j, n, oh, ow] = xpad[c, n, i*dh + oh*sh, j*dw + ow*sw]``.

    Two copying stages per tile of channels and images (so that the intermediate stays in
    cache): width shifts into ``tmp`` (C, kw, N, Hu, OW), which also holds the zero padding,
    then height shifts into ``cols``, whose runs are whole OH*OW planes when sh == 1."""
    xp = array_module(xc)
    p = plan
    kh, OH, OW, Hu, r0, r1 = p.kh, p.OH, p.OW, p.Hu, p.r0, p.r1
    cols = xp.empty((p.C, kh, p.kw, p.N, OH, OW), dtype=xc.dtype)
    tmp = xp.empty((p.cb, p.kw, p.nb, Hu, OW), dtype=xc.dtype)
    # zero padding: written once, never overwritten by the tiles below
    if r0 > 0:
        tmp[:, :, :, :r0] = 0
    if r1 < Hu:
        tmp[:, :, :, r1:] = 0
    for j, (lo, hi, _) in enumerate(p.spans):
        if lo > 0:
            tmp[:, j, :, r0:r1, :lo] = 0
        if hi < OW:
            tmp[:, j, :, r0:r1, hi:] = 0
    rows = slice(r0 - p.ph0, r1 - p.ph0)
    span = (OH - 1) * p.sh + 1
    for cs, ns in _tiles(p):
        t = tmp[:cs.stop - cs.start, :, :ns.stop - ns.start]
        if r1 > r0:
            xb = xc[cs, ns]
            for j, (lo, hi, s0) in enumerate(p.spans):
                if hi > lo:
                    t[:, j, :, r0:r1, lo:hi] = xb[:, :, rows, s0:s0 + (hi - lo - 1) * p.sw + 1:p.sw]
        dst = cols[cs, :, :, ns]
        for i in range(kh):
            dst[:, i] = t[:, :, :, i * p.dh:i * p.dh + span:p.sh]
    return cols


def col2im(dcols, plan):
    """Adjoint of :func:`im2col`: dcols (C, kh, kw, N, OH, OW) -> dx (C, N, H, W), with
    kh + kw strided adds per tile."""
    xp = array_module(dcols)
    p = plan
    kh, OH, Hu, r0, r1 = p.kh, p.OH, p.Hu, p.r0, p.r1
    dx = xp.zeros((p.C, p.N, p.H, p.W), dtype=dcols.dtype)
    if r1 <= r0:
        return dx
    dtmp = xp.empty((p.cb, p.kw, p.nb, Hu, p.OW), dtype=dcols.dtype)
    rows = slice(r0 - p.ph0, r1 - p.ph0)
    span = (OH - 1) * p.sh + 1
    for cs, ns in _tiles(p):
        t = dtmp[:cs.stop - cs.start, :, :ns.stop - ns.start]
        db = dcols[cs, :, :, ns]
        # height shifts: the first covers rows [0, OH) when sh == 1; write it, zero the rest
        if p.sh == 1:
            t[:, :, :, :OH] = db[:, 0]
            if OH < Hu:
                t[:, :, :, OH:] = 0
            first = 1
        else:
            t[...] = 0
            first = 0
        for i in range(first, kh):
            t[:, :, :, i * p.dh:i * p.dh + span:p.sh] += db[:, i]
        # width shifts into the unpadded input (padding positions are dropped)
        xb = dx[cs, ns]
        for j, (lo, hi, s0) in enumerate(p.spans):
            if hi > lo:
                xb[:, :, rows, s0:s0 + (hi - lo - 1) * p.sw + 1:p.sw] += t[:, j, :, r0:r1, lo:hi]
    return dx


def _forward(ctx, x, w, b, stride, padding, dilation, groups):
    """x (N, C, H, W), w (O, C/groups, kh, kw), b (O,) or None; stride, dilation pairs,
    padding ((top, bottom), (left, right)). Returns (N, O, OH, OW) laid out as (O, N, OH, OW)."""
    plan = _Plan(x.shape, w.shape, stride, padding, dilation, groups, x.itemsize,
                 tile=isinstance(x, np.ndarray))
    ctx.plan = plan
    ctx.has_bias = b is not None
    ctx.pairs = _dense_pairs(plan, x.itemsize)
    if ctx.pairs is not None:
        return _dense_forward(ctx, x, w, b, plan, ctx.pairs)
    C, N, O, G, OH, OW = plan.C, plan.N, plan.O, groups, plan.OH, plan.OW
    P = N * OH * OW
    K = w.shape[1] * plan.kh * plan.kw
    xc = x.transpose(1, 0, 2, 3)
    if plan.pointwise:
        cols = xc.reshape(C, P)  # a view when x is laid out as (C, N, H, W)
    else:
        cols = im2col(xc, plan).reshape(C * plan.kh * plan.kw, P)
    if G == 1:
        out = w.reshape(O, K) @ cols
    else:
        out = (w.reshape(G, O // G, K) @ cols.reshape(G, K, P)).reshape(O, P)
    if b is not None:
        out += b.reshape(O, 1)
    need = ctx.needs_input_grad
    ctx.save_for_backward(cols if need[1] else None, w if need[0] else None)
    return out.reshape(O, N, OH, OW).transpose(1, 0, 2, 3)


_WGRAD_CHUNK = 2048


def _weight_grad(cols, g2):
    """``g2 (O, P) @ cols.T (P, K)``. When O*K is tiny and P huge (LeNet's first layer: 6 x
    200704 x 25), OpenBLAS streams the long reduction at 20 GFLOP/s on one thread; summing
    products over P-chunks that stay in cache runs 2.4x faster (measured). Otherwise it is
    ``(cols @ g2.T).T``, which with OpenBLAS's SkylakeX kernels (divenet/_cpu.py) ran 1.3x (ResNet
    64->64 3x3) to 2x (LeNet 6->16 5x5) faster than ``g2 @ cols.T``."""
    (K, P), O = cols.shape, g2.shape[0]
    n = P // _WGRAD_CHUNK
    if O * K > 1024 or n < 16:
        return (cols @ g2.T).T
    main = n * _WGRAD_CHUNK
    parts = (g2[:, :main].reshape(O, n, _WGRAD_CHUNK).transpose(1, 0, 2)
             @ cols[:, :main].reshape(K, n, _WGRAD_CHUNK).transpose(1, 2, 0))
    gw = parts.sum(axis=0)
    if main < P:
        gw += g2[:, main:] @ cols[:, main:].T
    return gw


def _backward(ctx, g):
    if ctx.pairs is not None:
        return _dense_backward(ctx, g)
    cols, w = ctx.saved
    p = ctx.plan
    C, N, O, G, kh, kw, OH, OW = p.C, p.N, p.O, p.G, p.kh, p.kw, p.OH, p.OW
    P = N * OH * OW
    K = C // G * kh * kw
    need = ctx.needs_input_grad
    g2 = g.transpose(1, 0, 2, 3).reshape(O, P)  # a view when g is laid out as (O, N, OH, OW)
    gx = gw = gb = None
    if need[1]:
        if G == 1:
            gw = _weight_grad(cols, g2)
        else:
            gw = (cols.reshape(G, K, P) @ g2.reshape(G, O // G, P).transpose(0, 2, 1)).transpose(0, 2, 1)
        gw = gw.reshape(O, C // G, kh, kw)
    if ctx.has_bias and need[2]:
        gb = g2.sum(axis=1)
    if need[0]:
        if G == 1:
            dcols = w.reshape(O, K).T @ g2
        else:
            dcols = w.reshape(G, O // G, K).transpose(0, 2, 1) @ g2.reshape(G, O // G, P)
        if p.pointwise:
            dxc = dcols.reshape(C, N, p.H, p.W)
        else:
            dxc = col2im(dcols.reshape(C, kh, kw, N, OH, OW), p)
        gx = dxc.transpose(1, 0, 2, 3)
    return gx, gw, gb


class Conv2d(Function):
    """2-D cross-correlation. ``stride`` and ``dilation`` are pairs, ``padding`` is
    ((top, bottom), (left, right)); arguments are checked by ``functional.conv2d``."""

    @staticmethod
    def forward(ctx, x, w, b=None, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1):
        return _forward(ctx, x, w, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, g):
        return _backward(ctx, g)


class Conv1d(Function):
    """1-D cross-correlation: the 2-D kernel on a unit height. ``stride``, ``dilation`` are
    ints, ``padding`` is (left, right)."""

    @staticmethod
    def forward(ctx, x, w, b=None, stride=1, padding=(0, 0), dilation=1, groups=1):
        out = _forward(ctx, x[:, :, None, :], w[:, :, None, :], b, (1, stride),
                       ((0, 0), tuple(padding)), (1, dilation), groups)
        return out[:, :, 0, :]

    @staticmethod
    def backward(ctx, g):
        gx, gw, gb = _backward(ctx, g[:, :, None, :])
        return (gx[:, :, 0, :] if gx is not None else None,
                gw[:, :, 0, :] if gw is not None else None, gb)
