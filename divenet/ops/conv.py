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

col2im (the input gradient) runs the same two stages backwards with kh + kw strided adds
(never ``add.at``). The weight gradient is ``grad2d (O, N*OH*OW) @ cols.T``.

Padding is a pair (before, after) per axis, so the asymmetric 'same' padding of even kernels
is exact. Groups split C and O into G blocks and run one GEMM per group.
"""
from __future__ import annotations

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


def _geometry(x_shape, w_shape, stride, padding, dilation):
    """Per-axis plan shared by forward and backward."""
    _, _, H, W = x_shape
    _, _, kh, kw = w_shape
    (sh, sw), ((ph0, ph1), (pw0, pw1)), (dh, dw) = stride, padding, dilation
    OH = output_size(H, kh, sh, (ph0, ph1), dh)
    OW = output_size(W, kw, sw, (pw0, pw1), dw)
    # rows of the (virtually) padded input that any output reads: [0, Hu)
    Hu = dh * (kh - 1) + sh * (OH - 1) + 1
    r0 = min(ph0, Hu)  # tmp rows [r0, r1) hold real input rows [r0 - ph0, r1 - ph0)
    r1 = max(r0, min(ph0 + H, Hu))
    # per kernel column j: output columns [lo, hi) that read real input, and the first input
    # column they read
    spans = []
    for j in range(kw):
        off = j * dw - pw0  # input column read by output column 0
        lo = min(OW, (-off + sw - 1) // sw) if off < 0 else 0
        hi = min(OW, (W - 1 - off) // sw + 1) if off <= W - 1 else 0
        hi = max(hi, lo)
        spans.append((lo, hi, off + lo * sw))
    return OH, OW, Hu, r0, r1, spans


def _fast_1x1(w_shape, stride, padding, dilation):
    return (w_shape[2] == 1 and w_shape[3] == 1 and stride == (1, 1)
            and padding == ((0, 0), (0, 0)))


def im2col(xc, kh, kw, stride, geo):
    """``xc``: input as (C, N, H, W), any strides. Returns cols (C, kh, kw, N, OH, OW)."""
    xp = array_module(xc)
    C, N, H, W = xc.shape
    sh, sw = stride[0], stride[1]
    dh = geo["dilation"][0]
    OH, OW, Hu, r0, r1, spans = geo["plan"]
    ph0 = geo["ph0"]
    # stage 1: shift along the width, writing the zero padding
    tmp = xp.empty((C, kw, N, Hu, OW), dtype=xc.dtype)
    if r0 > 0:
        tmp[:, :, :, :r0] = 0
    if r1 < Hu:
        tmp[:, :, :, r1:] = 0
    rows = slice(r0 - ph0, r1 - ph0)
    for j, (lo, hi, c0) in enumerate(spans):
        if lo > 0:
            tmp[:, j, :, r0:r1, :lo] = 0
        if hi < OW:
            tmp[:, j, :, r0:r1, hi:] = 0
        if hi > lo and r1 > r0:
            tmp[:, j, :, r0:r1, lo:hi] = xc[:, :, rows, c0:c0 + (hi - lo - 1) * sw + 1:sw]
    # stage 2: shift along the height
    cols = xp.empty((C, kh, kw, N, OH, OW), dtype=xc.dtype)
    span = (OH - 1) * sh + 1
    for i in range(kh):
        cols[:, i] = tmp[:, :, :, i * dh:i * dh + span:sh]
    return cols


def col2im(dcols, x_shape_cnhw, stride, geo):
    """Adjoint of :func:`im2col`: dcols (C, kh, kw, N, OH, OW) -> dx (C, N, H, W)."""
    xp = array_module(dcols)
    C, kh, kw, N, OH, OW = dcols.shape
    _, _, H, W = x_shape_cnhw
    sh, sw = stride
    dh = geo["dilation"][0]
    _, _, Hu, r0, r1, spans = geo["plan"]
    ph0 = geo["ph0"]
    # stage 2 backwards: accumulate the kh row shifts
    span = (OH - 1) * sh + 1
    if sh == 1:
        # the first shift covers rows [0, OH); write it, zero the rest, add the others
        dtmp = xp.empty((C, kw, N, Hu, OW), dtype=dcols.dtype)
        dtmp[:, :, :, :OH] = dcols[:, 0]
        if OH < Hu:
            dtmp[:, :, :, OH:] = 0
        start = 1
    else:
        dtmp = xp.zeros((C, kw, N, Hu, OW), dtype=dcols.dtype)
        start = 0
    for i in range(start, kh):
        dtmp[:, :, :, i * dh:i * dh + span:sh] += dcols[:, i]
    # stage 1 backwards: accumulate the kw column shifts into the unpadded input
    dx = xp.zeros((C, N, H, W), dtype=dcols.dtype)
    if r1 > r0:
        rows = slice(r0 - ph0, r1 - ph0)
        for j, (lo, hi, c0) in enumerate(spans):
            if hi > lo:
                dx[:, :, rows, c0:c0 + (hi - lo - 1) * sw + 1:sw] += dtmp[:, j, :, r0:r1, lo:hi]
    return dx


def _forward(ctx, x, w, b, stride, padding, dilation, groups):
    """x (N, C, H, W), w (O, C/groups, kh, kw), b (O,) or None; stride, dilation pairs,
    padding ((top, bottom), (left, right)). Returns (N, O, OH, OW) laid out as (O, N, OH, OW)."""
    xp = array_module(x)
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    G = groups
    OH, OW, Hu, r0, r1, spans = plan = _geometry(x.shape, w.shape, stride, padding, dilation)
    geo = {"plan": plan, "dilation": dilation, "ph0": padding[0][0]}
    xc = x.transpose(1, 0, 2, 3)
    P = N * OH * OW
    fast = _fast_1x1(w.shape, stride, padding, dilation)
    if fast:
        cols = xc.reshape(C, P)  # a view when x is laid out as (C, N, H, W)
    else:
        cols = im2col(xc, kh, kw, stride, geo).reshape(C * kh * kw, P)
    K = Cg * kh * kw
    if G == 1:
        out = w.reshape(O, K) @ cols
    else:
        out = (w.reshape(G, O // G, K) @ cols.reshape(G, K, P)).reshape(O, P)
    if b is not None:
        out += b.reshape(O, 1)
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    ctx.save_for_backward(cols if need_w else None, w if need_x else None)
    ctx.geo = geo
    ctx.fast = fast
    ctx.args = (x.shape, w.shape, stride, G, b is not None)
    return out.reshape(O, N, OH, OW).transpose(1, 0, 2, 3)


def _backward(ctx, g):
    cols, w = ctx.saved
    x_shape, w_shape, stride, G, has_b = ctx.args
    N, C, H, W = x_shape
    O, Cg, kh, kw = w_shape
    OH, OW = g.shape[2], g.shape[3]
    P = N * OH * OW
    K = Cg * kh * kw
    need = ctx.needs_input_grad
    g2 = g.transpose(1, 0, 2, 3).reshape(O, P)  # a view when g is laid out as (O, N, OH, OW)
    gx = gw = gb = None
    if need[1]:
        if G == 1:
            gw = (g2 @ cols.T).reshape(w_shape)
        else:
            gw = (g2.reshape(G, O // G, P) @ cols.reshape(G, K, P).transpose(0, 2, 1)).reshape(w_shape)
    if has_b and need[2]:
        gb = g2.sum(axis=1)
    if need[0]:
        if G == 1:
            dcols = w.reshape(O, K).T @ g2
        else:
            dcols = w.reshape(G, O // G, K).transpose(0, 2, 1) @ g2.reshape(G, O // G, P)
        if ctx.fast:
            dxc = dcols.reshape(C, N, H, W)
        else:
            dxc = col2im(dcols.reshape(C, kh, kw, N, OH, OW), (C, N, H, W), stride, ctx.geo)
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
