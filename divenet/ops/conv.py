"""Convolution (cross-correlation) as one GEMM over an im2col matrix, batch innermost.

Layout. The API shape of an activation is NCHW, but the memory this kernel writes is laid out
batch-last (ops/layout.py), (C, H, W, N): the output is computed as
``W2d (O, C*kh*kw) @ cols (C*kh*kw, OH*OW*N)``, which lands as (O, OH, OW, N), and is returned
as its NCHW view (no copy). The next convolution reads that buffer in place; any other input
is copied into that layout once (for a network's input: one small transposition). Which
implementation runs is decided in one place, ``_choose``.

im2col. ``cols[c, i, j, oh, ow, n] = xpad[c, i*dh + oh*sh, j*dw + ow*sw, n]`` is one copy per
kernel tap (i, j) of the input rectangle it reads, plus zeros where it reads padding. With the
batch innermost every copy moves runs of (output width x batch) contiguous values at stride 1,
or of a whole batch otherwise. Measured against the earlier (C, N, H, W) layout, whose runs
were single image rows: im2col 2.5-3x and col2im 1.7-4.8x faster on ResNet's 7x7 and 4x4 maps
and LeNet's layers.

col2im (the input gradient) adds each tap's rectangle back (kh*kw strided adds, never
``add.at``). The weight gradient is ``grad2d (O, OH*OW*N) @ cols.T`` (see ``_weight_grad``);
forward saves ``cols`` only when the weight needs a gradient, and the weight only when the
input does.

Small maps. When a map has fewer pixels than the kernel has taps (ResNet's late stages at
28x28: 2x2 and 1x1 maps under 3x3 kernels), most patch entries are zero padding. There the
convolution runs as one dense product ``D (O*OH*OW, C*H*W) @ x (C*H*W, N)``, where ``D``
holds each kernel tap at the (output pixel, input pixel) pairs it connects: 1/9 of the work on
a 1x1 map, 4/9 on a 2x2 map, and no patch matrix; from ``_DENSE_MIN_BATCH`` images, since D
is rebuilt every call.

Direct kernels. Where the optional native kernels are built (divenet/_native.py) and a
float32 CPU convolution is small (C*kh*kw and O within ``_DIRECT_MAX_TAPS`` and
``_DIRECT_MAX_OUT``, as in LeNet), forward, input gradient and weight gradient are computed
directly from their definitions in the same layout, vectorized over the batch, with no patch
matrix; forward then saves the input instead of ``cols``.

Winograd. 3x3 stride-1 layers of 96 channels and more run Winograd F(2x2, 3x3) (section
below): the native kernels transform 4x4 input tiles and 2x2 output tiles, and OpenBLAS runs
the 16 GEMMs over channels between them, 2.25 times fewer multiply-adds than im2col's.

Padding is a pair (before, after) per axis, so the asymmetric 'same' padding of even kernels
is exact. Groups split C and O into G blocks and run one GEMM per group.
"""
from __future__ import annotations

import copy
import threading
import weakref

import numpy as np

from .. import _cpu, _native
from ..autograd import Function
from ..backend import array_module, constant, device_of
from .layout import BATCH_LAST, permuted, restore, stored


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


def spans(n_in, n_out, k, s, p0, d):
    """Per kernel offset along one axis: the outputs [lo, hi) that read real input (the others
    read padding) and the first input index they read."""
    result = []
    for i in range(k):
        off = i * d - p0  # input index read by output 0
        lo = min(n_out, (-off + s - 1) // s) if off < 0 else 0
        hi = min(n_out, (n_in - 1 - off) // s + 1) if off <= n_in - 1 else 0
        hi = max(hi, lo)
        result.append((lo, hi, off + lo * s))
    return result


class _Plan:
    """Geometry shared by forward and backward (plain ints only)."""

    __slots__ = ("C", "N", "H", "W", "O", "G", "kh", "kw", "sh", "sw", "dh", "dw", "ph0", "pw0",
                 "OH", "OW", "hspans", "wspans", "pointwise")

    def __init__(self, x_shape, w_shape, stride, padding, dilation, groups):
        self.N, self.C, self.H, self.W = x_shape
        self.O, _, self.kh, self.kw = w_shape
        self.G = groups
        (self.sh, self.sw), (self.dh, self.dw) = stride, dilation
        (ph0, ph1), (pw0, pw1) = padding
        self.ph0, self.pw0 = ph0, pw0
        self.OH = output_size(self.H, self.kh, self.sh, (ph0, ph1), self.dh)
        self.OW = output_size(self.W, self.kw, self.sw, (pw0, pw1), self.dw)
        self.hspans = spans(self.H, self.OH, self.kh, self.sh, ph0, self.dh)
        self.wspans = spans(self.W, self.OW, self.kw, self.sw, pw0, self.dw)
        self.pointwise = (self.kh == 1 and self.kw == 1 and stride == (1, 1)
                          and padding == ((0, 0), (0, 0)))

    def taps(self):
        return window_taps(self.hspans, self.wspans, self.sh, self.sw)


def window_taps(hspans, wspans, sh, sw):
    """Per kernel tap, row-major: (i, j, output rectangle, input rectangle) as pairs of slices,
    or the rectangles None where the tap reads only padding. Shared with pooling."""
    for i, (hlo, hhi, hs) in enumerate(hspans):
        for j, (wlo, whi, ws) in enumerate(wspans):
            if hhi > hlo and whi > wlo:
                out = (slice(hlo, hhi), slice(wlo, whi))
                src = (slice(hs, hs + (hhi - hlo - 1) * sh + 1, sh),
                       slice(ws, ws + (whi - wlo - 1) * sw + 1, sw))
                yield i, j, out, src
            else:
                yield i, j, None, None


_DENSE_MAX_BYTES = 1 << 26  # the dense small-map weight stays below 64 MiB
# The dense weight is rebuilt every call, so it pays only over enough images: Zen 4, forward +
# backward, dense / the other kernels: b64 0.53-0.87x and b256 0.31-0.54x (256 and 512
# channels at 2x2 and 1x1, the 2x2 -> 1x1 stride-2 layer), but b8 1.83x (512 at 1x1) and b32
# 2.58x (512 at 2x2). A map of as many pixels as taps (3x3 under a 3x3 kernel) costs the dense
# product as many multiply-adds as im2col's plus the build: 1.01x at b256, 4.0x at b32
# (GoogLeNet's last stage at 96x96).
_DENSE_MIN_BATCH = 64


def _dense_pairs(p, x):
    """The (4, pairs) index array (output pixel, input pixel, tap row, tap column) of every
    kernel tap that reads real input, on x's device, when the dense small-map product is
    cheaper than im2col (fewer input pixels than taps, one group, a batch of _DENSE_MIN_BATCH
    images or more); else None."""
    if p.G != 1 or p.pointwise or p.H * p.W >= p.kh * p.kw or p.N < _DENSE_MIN_BATCH:
        return None
    if p.C * p.H * p.W * p.O * p.OH * p.OW * x.itemsize > _DENSE_MAX_BYTES:
        return None
    return constant(device_of(x), _dense_index, _geometry(p))


def _geometry(p):
    """What the dense tables depend on, hashable (a cache key)."""
    return (p.H, p.W, p.OH, p.OW, p.kh, p.kw, p.sh, p.sw, p.dh, p.dw, p.ph0, p.pw0)


def _dense_index(geometry):
    H, W, OH, OW, kh, kw, sh, sw, dh, dw, ph0, pw0 = geometry
    taps = window_taps(spans(H, OH, kh, sh, ph0, dh), spans(W, OW, kw, sw, pw0, dw), sh, sw)
    rows = [(oh * OW + ow, ih * W + iw, i, j)
            for i, j, out, src in taps if out is not None
            for oh, ih in zip(range(OH)[out[0]], range(H)[src[0]])
            for ow, iw in zip(range(OW)[out[1]], range(W)[src[1]])]
    return np.array(rows, dtype=np.int64).reshape(-1, 4).T.copy()


def _dense_tap_sum(geometry, dtype):
    """(kh*kw, pairs): row t sums the pairs of kernel tap t (the weight gradient's scatter as
    one product)."""
    kw = geometry[5]
    ti, tj = _dense_index(geometry)[2:]
    return (np.arange(geometry[4] * kw)[:, None] == (ti * kw + tj)[None, :]).astype(dtype)


def _dense_weight(w, p, pairs):
    """D (O*OH*OW, C*H*W): ``D[o, pout, c, pin] = w[o, c, i, j]`` for each connecting tap."""
    xp = array_module(w)
    pout, pin, ti, tj = pairs[0], pairs[1], pairs[2], pairs[3]
    d = xp.zeros((p.O, p.OH * p.OW, p.C, p.H * p.W), dtype=w.dtype)
    # advanced indices on axes 1 and 3 go first: the value is (pairs, O, C)
    d[:, pout, :, pin] = w[:, :, ti, tj].transpose(2, 0, 1)
    return d.reshape(p.O * p.OH * p.OW, p.C * p.H * p.W)


def _dense_forward(ctx, xh, w, b, p, pairs):
    x2 = xh.reshape(p.C * p.H * p.W, p.N)
    d = _dense_weight(w, p, pairs)
    out = (d @ x2).reshape(p.O, p.OH, p.OW, p.N)
    if b is not None:
        out += b.reshape(p.O, 1, 1, 1)
    need = ctx.grads_wanted()
    # under rebuilt_patches the dense weight (up to 64 MiB) is rebuilt from w in backward
    ctx.rebuild_dense = need[0] and getattr(_patches, "always", False)
    ctx.save_for_backward(x2 if need[1] else None, (w if ctx.rebuild_dense else d) if need[0] else None)
    return out


def _dense_backward(ctx, g):
    x2, d = ctx.saved
    p, pairs = ctx.plan, ctx.pairs
    xp = array_module(g)
    need = ctx.needs_input_grad
    g2 = permuted(g, BATCH_LAST).reshape(p.O * p.OH * p.OW, p.N)
    gx = gw = gb = None
    if need[1]:
        gd = (g2 @ x2.T).reshape(p.O, p.OH * p.OW, p.C, p.H * p.W)
        per_pair = gd[:, pairs[0], :, pairs[1]]  # (pairs, O, C)
        tap_sum = constant(device_of(g), _dense_tap_sum, _geometry(p), g.dtype)
        gw = (tap_sum @ per_pair.reshape(-1, p.O * p.C)).reshape(p.kh * p.kw, p.O, p.C)
        gw = xp.ascontiguousarray(gw.transpose(1, 2, 0)).reshape(p.O, p.C, p.kh, p.kw)
        gd = per_pair = None  # (as large as the dense weight: gone before it is rebuilt)
    if ctx.has_bias and need[2]:
        gb = xp.einsum("on->o", g2.reshape(p.O, -1))
    if need[0]:
        if getattr(ctx, "rebuild_dense", False):
            d = _dense_weight(d, p, pairs)  # d was w: the same product of the same weights
        gx = restore((d.T @ g2).reshape(p.C, p.H, p.W, p.N), BATCH_LAST)
    return gx, gw, gb


_scratch = threading.local()


def workspace(slot, shape, like):
    """A per-thread CPU buffer for a temporary of ``shape`` and ``like``'s dtype, kept across
    calls and steps (a fresh array on a GPU, whose allocator pools). Arrays above 32 MiB,
    glibc's largest heap allocation, are mapped fresh and page-faulted in on every call
    otherwise: 8 ms for one of resnet18's 58 MB patch matrices at 224x224, b8 (Zen 3), about
    as long as filling it. The caller must be done with it before the next call for ``slot``
    on its thread, and never hand it out."""
    xp = array_module(like)
    n = int(np.prod(shape))
    if xp is not np:
        return xp.empty(shape, dtype=like.dtype)
    key = (slot, like.dtype.str)
    buf = getattr(_scratch, "bufs", None)
    if buf is None:
        buf = _scratch.bufs = {}
    b = buf.get(key)
    if b is None or b.size < n:
        b = buf[key] = np.empty(n, dtype=like.dtype)
    return b[:n].reshape(shape)


_PHASE_IM2COL_MAX_BATCH = 64


def _phase_split(p, adjoint):
    """Whether im2col (or col2im, ``adjoint``) goes through the input's stride phases: for a
    strided kernel with several taps, phase (a, b) holds rows a, a + sh, ... and columns b,
    b + sw, ..., and each tap reads (adds into) one stride-1 rectangle of one phase, whose runs
    are an output row times the batch instead of one batch. Measured on Zen 3, one thread:
    col2im 1.1-3x faster at every batch (ResNet's 7x7 stride-2 stem at 224x224, b8, 56 -> 19
    ms; 3x3 stride-2 layers at 28x28 b256 1.1-1.3x); im2col at b8 1.2-2.1x faster (stem 23 ->
    11 ms), but at b256 the runs of a whole batch are long already and the phase copy costs
    more (0.86-1.05x), hence ``_PHASE_IM2COL_MAX_BATCH``."""
    if not ((p.sh > 1 or p.sw > 1) and p.kh * p.kw > 1):
        return False
    return adjoint or p.N < _PHASE_IM2COL_MAX_BATCH


def _in_phase(src, p):
    """A tap's input rectangle (strided slices) as (phase, stride-1 slices into it)."""
    rs, cs = src
    a, b = rs.start % p.sh, cs.start % p.sw
    r0, c0 = rs.start // p.sh, cs.start // p.sw
    return (a, b), (slice(r0, r0 + len(range(rs.start, rs.stop, rs.step))),
                    slice(c0, c0 + len(range(cs.start, cs.stop, cs.step))))


def _phase(x, key, p):
    return x[:, key[0]::p.sh, key[1]::p.sw]


def im2col(xh, plan, into=None):
    """``xh``: the input as (C, H, W, N), contiguous. Returns cols (C, kh, kw, OH, OW, N):
    ``cols[c, i, j, oh, ow, n] = xpad[c, i*dh + oh*sh, j*dw + ow*sw, n]``, written into
    ``into`` when given (C-contiguous, that many elements)."""
    xp = array_module(xh)
    p = plan
    shape = (p.C, p.kh, p.kw, p.OH, p.OW, p.N)
    cols = xp.empty(shape, dtype=xh.dtype) if into is None else into.reshape(shape)
    phases = {} if _phase_split(p, False) else None
    for i, j, out, src in p.taps():
        dst = cols[:, i, j]
        if out is None:
            dst[...] = 0
            continue
        (hlo, hhi), (wlo, whi) = (out[0].start, out[0].stop), (out[1].start, out[1].stop)
        if phases is None:
            dst[:, hlo:hhi, wlo:whi] = xh[:, src[0], src[1]]
        else:
            key, rect = _in_phase(src, p)
            if key not in phases:
                phases[key] = xp.ascontiguousarray(_phase(xh, key, p))
            dst[:, hlo:hhi, wlo:whi] = phases[key][:, rect[0], rect[1]]
        # the padding this tap reads
        if hlo > 0:
            dst[:, :hlo] = 0
        if hhi < p.OH:
            dst[:, hhi:] = 0
        if wlo > 0:
            dst[:, hlo:hhi, :wlo] = 0
        if whi < p.OW:
            dst[:, hlo:hhi, whi:] = 0
    return cols


def col2im(dcols, plan):
    """Adjoint of :func:`im2col`: dcols (C, kh, kw, OH, OW, N) -> dx (C, H, W, N), one add per
    kernel tap (into the stride phases, then written out, where ``_phase_split``)."""
    xp = array_module(dcols)
    p = plan
    dx = xp.zeros((p.C, p.H, p.W, p.N), dtype=dcols.dtype)
    phases = {} if _phase_split(p, True) else None
    for i, j, out, src in p.taps():
        if out is None:
            continue
        if phases is None:
            dx[:, src[0], src[1]] += dcols[:, i, j, out[0], out[1]]
            continue
        key, rect = _in_phase(src, p)
        if key not in phases:
            phases[key] = xp.zeros(_phase(dx, key, p).shape, dtype=dx.dtype)
        phases[key][:, rect[0], rect[1]] += dcols[:, i, j, out[0], out[1]]
    for key, g in (phases or {}).items():
        _phase(dx, key, p)[...] = g
    return dx


def _forward(ctx, x, w, b, stride, padding, dilation, groups):
    """x (N, C, H, W), w (O, C/groups, kh, kw), b (O,) or None; stride, dilation pairs,
    padding ((top, bottom), (left, right)). Returns (N, O, OH, OW) laid out batch-last."""
    plan = _Plan(x.shape, w.shape, stride, padding, dilation, groups)
    xh = stored(x, BATCH_LAST)
    ctx.plan = plan
    ctx.has_bias = b is not None
    ctx.pairs = _dense_pairs(plan, x)
    need = ctx.grads_wanted()  # under no_grad: nothing kept for a backward that cannot come
    ctx.kind = _choose(plan, ctx.pairs, xh, w, b, grads=any(need[:3]))
    if ctx.kind == "dense":
        return restore(_dense_forward(ctx, xh, w, b, plan, ctx.pairs), BATCH_LAST)
    if ctx.kind == "depthwise_rows":  # inference: nothing kept
        return restore(_native.depthwise_rows(xh, w, b, plan), BATCH_LAST)
    if ctx.kind in ("direct", "depthwise"):
        ctx.save_for_backward(xh if need[1] else None, w if need[0] else None)
        run = _native.conv_forward if ctx.kind == "direct" else _native.depthwise_forward
        return restore(run(xh, w, b, plan), BATCH_LAST)
    if ctx.kind == "winograd":  # the input kept for the weight gradient, as the implicit GEMM's
        ctx.implicit_weight_grad = bool(need[1]) and _implicit_weight_grad(plan, xh)
        ctx.save_for_backward(xh if need[1] else None, w if need[0] else None)
        y = _winograd(xh, _winograd_weight_of(w), b, (plan.ph0, plan.pw0), (plan.OH, plan.OW))
        return restore(y, BATCH_LAST)
    # decided once, here: the weight gradient from the input itself (backward reads the flag)
    ctx.implicit_weight_grad = bool(need[1]) and ctx.kind in ("implicit", "im2col") and _implicit_weight_grad(plan, xh)
    if ctx.kind == "implicit":  # no patch matrix: backward reads the input, or rebuilds it
        ctx.recompute = need[1]
        ctx.save_for_backward(xh if need[1] else None, w if need[0] else None)
        return restore(_native.gemm_conv(xh, w, b, plan), BATCH_LAST)
    C, N, O, G, OH, OW = plan.C, plan.N, plan.O, groups, plan.OH, plan.OW
    P = OH * OW * N
    K = w.shape[1] * plan.kh * plan.kw
    shape = (C * plan.kh * plan.kw, P)
    # the patch matrix is saved for the weight gradient, or the input is, for the implicit
    # weight gradient or to rebuild the patch matrix in backward (``_recompute``)
    ctx.recompute = need[1] and ctx.kind == "im2col" and (ctx.implicit_weight_grad or _recompute(shape, xh))
    if ctx.kind == "pointwise":
        cols = xh.reshape(shape)
    else:
        temporary = not need[1] or ctx.recompute
        cols = im2col(xh, plan, workspace("cols", shape, xh) if temporary else None).reshape(shape)
    if G == 1:
        out = w.reshape(O, K) @ cols
    else:
        out = (w.reshape(G, O // G, K) @ cols.reshape(G, K, P)).reshape(O, P)
    if b is not None:
        out += b.reshape(O, 1)
    saved = (xh if ctx.recompute else cols) if need[1] else None
    ctx.save_for_backward(saved, w if need[0] else None)
    return restore(out.reshape(O, OH, OW, N), BATCH_LAST)


# resnet18 at 224x224, b8 (Zen 3, 1 thread, CPU time of alternating steps): keeping every patch
# matrix 2081 ms a step and 829 MB peak RSS; rebuilding those of 32 MB and up (the stem and
# layer1's, 58 MB each) 2195 ms and 625 MB; those of 16 MB and up 2291 ms and 542 MB.
_RECOMPUTE_MIN_BYTES = 1 << 25


_patches = threading.local()


class rebuilt_patches:
    """While active in this thread, every im2col convolution saves its input for backward and
    rebuilds its patch matrix there, whatever the size: graph mode's ``rebuild_patches``
    memory pass (a 3x3 kernel's patch matrix is 9 times its input)."""

    def __enter__(self):
        self._previous = getattr(_patches, "always", False)
        _patches.always = True

    def __exit__(self, *exc):
        _patches.always = self._previous


def _recompute(shape, xh):
    """Whether backward rebuilds the patch matrix from the saved input (which the previous op
    keeps anyway) instead of forward keeping it: for the large ones, a 5% slower step for a
    quarter less memory (above); for all of them under ``rebuilt_patches``."""
    return shape[0] * shape[1] * xh.itemsize >= _RECOMPUTE_MIN_BYTES or getattr(_patches, "always", False)


def _choose(p, pairs, xh, w, b, grads=True):
    """THE dispatch of a convolution among its implementations (forward and both gradients
    follow the same choice), with the measured reason for each branch:

    - ``"dense"``: maps with fewer pixels than kernel taps (ResNet's 2x2 and 1x1 stages at
      28x28) as one product with a dense (output pixel, input pixel) weight (``_dense_pairs``):
      im2col there did 9/4 and 9x the needed work in zero padding (D2L ResNet-18 step at 28x28,
      b256: 0.39 -> 0.30 s).
    - ``"direct"``: the native kernels (divenet/_native.c, on CPUs where ``_native.fast_here``)
      for small convolutions (LeNet's): 0.32-0.81x the time of im2col + GEMM up to
      ``_DIRECT_MAX_OUT`` output channels and ``_DIRECT_MAX_TAPS`` taps, 1.03-1.6x beyond;
      the AVX2 copies 0.46-0.77x on 5x5 kernels up to ``_DIRECT_AVX2_MAX_OUT`` outputs, and
      1.01-1.44x at 32 outputs and on 3x3 kernels (``_direct``).
    - ``"depthwise"``: groups == C == O (MobileNet's 3x3 layers), the native kernels: each
      output a tap sum of its own channel, vectorized over the images. im2col and one tiny GEMM
      per group ran them at 0.4-1.6 GFLOP/s (mobilenet 224x224 b8: 1.06 s of a 1.6 s step).
      From ``_native.MIN_BATCH`` images (one vector): below, the kernels' scalar tails made
      mobilenet's batch-1 inference 1.15x PyTorch's time, against 0.70x through im2col.
    - ``"depthwise_rows"``: the same layers under MIN_BATCH images when no gradient is asked
      for (inference), vectorized along output rows (``_native.depthwise_rows``): 0.34-0.50x
      the time of im2col on mobilenet's stride-1 layers at b1, 0.70-0.75x at stride 2 (Zen
      4). Training keeps im2col: the native gradients are vectorized over the images only.
    - ``"pointwise"``: 1x1, stride 1, no padding: the input is already the patch matrix.
    - ``"winograd"``: 3x3 stride-1 layers of 96 channels and more in and out, on maps of 4x4
      outputs and more, in whole vectors of 8 images (``_winograd_takes``): Winograd F(2x2,
      3x3), 16 multiplies per 2x2 outputs where the definition has 36, for the forward and the
      input gradient; the weight gradient as the implicit GEMM's. Zen 4, alternating medians
      of 9, new / old, training (inference): 128 to 512 channels at 224 b8 0.73-0.97x
      (0.60-0.91), at 96 b32 0.81-0.89 (0.87-1.09), at 28 b64 and b256 0.67-1.04 (0.59-1.01);
      64 channels tied (0.89-1.07: the GEMMs over 64 channels run at 100 GFLOP/s and the
      transforms cost as much as they save), a 3x3 map lost 1.16-1.37x (2x2 tiles waste 7 of
      16 outputs).
    - ``"implicit"``: where ``_implicit`` says, per copy of the kernel (AVX-512: grouped, few
      outputs over many taps, or output rows of 112 columns and more; AVX2: grouped, or up to
      64 outputs on rows of 56 columns and more): the GEMM of im2col computed from the input itself (``_native.gemm_conv``);
      stride-1 input gradients the same way, as the correlation of the output gradient with the
      flipped weights (no col2im); the weight gradient where ``_implicit_weight_grad`` says
      from the input as well (``_native.gemm_conv_weight_grad``), else through the patch
      matrix, built in backward.
    - ``"im2col"``: everything else, one GEMM (per group) over the patch matrix; its weight
      gradient also by the implicit kernel where ``_implicit_weight_grad`` says (the forward
      then keeps the input, not the patch matrix).
    """
    if pairs is not None:
        return "dense"
    if _direct(p, xh, w, b):
        return "direct"
    native = _native.usable(xh, w, *(() if b is None else (b,)))  # the kernels below need them
    if p.G > 1 and p.G == p.C == p.O and p.kh * p.kw <= _native.DEPTHWISE_MAX_TAPS and native:
        if p.N >= _native.MIN_BATCH:
            return "depthwise"
        if not grads:
            return "depthwise_rows"
    if p.pointwise:
        return "pointwise"
    if native and _winograd_takes(p):
        return "winograd"
    if native and _implicit(p):
        return "implicit"
    return "im2col"


# Where the implicit GEMM (_native.gemm_conv, both cores) beat im2col + OpenBLAS's
# GEMM (two threads) in the forward: Zen 4, alternating medians of 5, 3x3 unless named, rows of
# L = output width x batch columns (docs/performance.md, seventh session):
# - grouped convolutions, 0.24-0.92x: ResNeXt's 32 groups at 56x56 to 7x7, b1 to b32 (the GEMM
#   per group ran as one batched matmul of small products);
# - at most 32 outputs over 256 taps and more, 0.40-0.90x: DenseNet's 128 -> 32 at b1 (L 7-56)
#   and b8, 192 -> 16, 16 -> 32 5x5, 32 -> 8; 3 taps a column too few there: 3 -> 32 stride 2
#   1.24-1.33x, 24 -> 32 (216 taps) 1.19x;
# - any layer with rows of 112 columns and more, 0.47-0.93x (ResNet's and VGG's 64 to 256
#   channels at b8 and b32, the 7x7 stems at b1 and b8, 1.02-1.04x at 512 channels 7x7 b32 and
#   128 -> 256 stride 2), but only where OpenBLAS's workers sleep soon after a GEMM
#   (_cpu.blas_sleeps_soon): spinning on the second core, they left the kernel's second thread
#   nothing, and these layers lost 1.0-1.8x. Shorter rows of wide layers lost 1.1-3.1x (512
#   channels at 7x7 b8 and b1, 256 -> 512 stride 2 at 14x14 b8): a tile's 32 columns mostly
#   empty, and the weights reloaded per panel.
_IMPLICIT_MAX_OUT = 32
_IMPLICIT_MIN_TAPS = 256
_IMPLICIT_MIN_ROW = 112
# Rows of 56 columns (batch 1 at 56x56, batch 2 at 28x28) at stride 1 win too up to 128
# outputs (tenth session, Zen 4, alternating medians of 11, inference / training): 64 -> 64 at
# 56x56 b1 0.64-0.75 / 0.72-0.73, 32 -> 64 0.84 / 0.77, 128 -> 128 0.77 / 0.86, 128 -> 128 at
# 28x28 b2 0.79-0.92 / 0.83; not wider (256 channels 0.92-0.96 / 0.92-1.07, 512 at 7x7 b8
# 1.11 / 1.25), not at stride 2 (64 -> 128 at 56x56 b2 0.94 / 1.08), not on rows of 28 (128
# channels at 28x28 b1 0.88-0.94 / 1.02); only on maps of 1024 output columns and more, as
# measured (every win above had 1568 or more), so that b8's 7x7 and b32's 3x3 maps (GoogLeNet's
# 5x5 layers) stay where they were. It changes only ResNet's b1 layers in the zoo: resnet18's
# four 64-channel 3x3 layers (b1 inference 0.91-0.98x), resnet50's three (0.95-0.96x).
_IMPLICIT_MIN_ROW_NARROW = 56
_IMPLICIT_NARROW_MAX_OUT = 128
_IMPLICIT_NARROW_MIN_COLUMNS = 1024
# ... and wide layers on very long rows go back to im2col: D2L's ResNet-18 at 28x28 b256 (D2L's
# batch), whose stages 3 and 4 (256 outputs at 7x7, 512 at 4x4: rows of 1792 and 1024 columns)
# ran their forwards 1.3-2.1x slower through the kernel in the network, trained 0.82x the time
# with them on im2col (6481 against 7883 ms, tenth session, Zen 4; 6384-7002 against
# 7486-7954 ms with no layer on the kernel). At b64 (rows of 448 and 256) they stay on it.
_IMPLICIT_WIDE_MAX_ROW = 1024
_IMPLICIT_WIDE_OUT = 256
# The AVX2 copy (6 x 16 tiles) against im2col + OpenBLAS on AMD EPYC Zen 1 (2 cores, AVX2, 8 MB
# L3), forward + backward (forward alone in brackets), alternating medians of 3-5
# (docs/performance.md, eighth session): grouped 0.50-0.69x (0.36-0.61); up to 64 outputs on
# rows of 56 columns and more 0.77-0.94x (0.55-0.87: 64 channels at 56x56 b1 and b8 and 24x24
# b32, DenseNet's 128 -> 32 at 28x28 and 14x14 b8, the stem at b8; its b1 1.02); wider layers
# lost in training 1.02-1.20x (128 to 512 channels, the stride-2 downsamplings 1.11-1.13x,
# though 128 and 256 channels won the forward alone, 0.79-0.98x), rows of 7 columns 1.36x.
_IMPLICIT_AVX2_MAX_OUT = 64
_IMPLICIT_AVX2_MIN_ROW = 56
# Single-tap windows (ResNet's 1x1 stride-2 downsamplings) stay on im2col, a strided copy the
# size of the output: Zen 4, b8, forward 1.04-1.49x and training 1.0-1.61x with the kernels
# (64 -> 128 at 56x56: 11.8 against 7.3 ms); a tile's 12 x 32 sums there add 64 taps.
_IMPLICIT_MIN_WINDOW = 2


def _implicit(p):
    """Whether the implicit-GEMM kernel takes the convolution of plan ``p`` (limits above, per
    copy of the kernel)."""
    og, taps, copy = p.O // p.G, p.C // p.G * p.kh * p.kw, _native.gemm_conv_copy()
    if copy == 0 or og < 4 or p.kh * p.kw < _IMPLICIT_MIN_WINDOW:
        return False
    if copy == 3:
        return p.G > 1 or (og <= _IMPLICIT_AVX2_MAX_OUT and p.OW * p.N >= _IMPLICIT_AVX2_MIN_ROW)
    row = p.OW * p.N
    narrow = (og <= _IMPLICIT_NARROW_MAX_OUT and p.sh == p.sw == 1 and row >= _IMPLICIT_MIN_ROW_NARROW
              and p.OH * row >= _IMPLICIT_NARROW_MIN_COLUMNS)
    long_and_wide = og >= _IMPLICIT_WIDE_OUT and row >= _IMPLICIT_WIDE_MAX_ROW
    return (p.G > 1 or (og <= _IMPLICIT_MAX_OUT and taps >= _IMPLICIT_MIN_TAPS)
            or (((row >= _IMPLICIT_MIN_ROW and not long_and_wide) or narrow) and _cpu.blas_sleeps_soon()))


# Where the one-thread direct kernels beat im2col + a two-thread GEMM, forward + backward
# (measured): LeNet's layers 0.32-0.44x, 4-10 -> 16-32 channels at 28x28 0.48-0.81x; but a
# 64-channel ResNet stem 0.69-1.05x, 16 -> 64 channels 3x3 1.03x, AlexNet's 11x11 first
# layer (96 channels) 1.4-1.6x: wide outputs keep the GEMM busy, small ones starve it.
_DIRECT_MAX_TAPS = 256  # C * kh * kw
_DIRECT_MAX_OUT = 32  # output channels
# The AVX2 copies (8-float tiles, _native.isa() == 3) win on fewer: AMD EPYC Zen 3, one thread,
# CPU time, b128, forward + both gradients (the first layer without its input gradient),
# direct / im2col: 5x5 kernels up to 16 outputs 0.46-0.77x (LeNet's 1 -> 6 0.46, 6 -> 16 at
# 14x14 0.66, 10 -> 16 0.72, 1 -> 16 and 6 -> 16 at 28x28 0.69-0.77), at 32 outputs 1.01-1.24x
# (6 -> 32, 4 -> 32); 3x3 kernels 1.10-1.44x (10 -> 16, 16 -> 16, 8 -> 32, 28 -> 32 at 14-28
# maps; 3 -> 24 stride 2 1.06): their forward loads a vector and 8 broadcasts per 8
# multiply-adds, where the GEMM's register tile reuses its loads.
_DIRECT_AVX2_MAX_OUT = 16
_DIRECT_AVX2_MIN_WINDOW = 25  # kh * kw
# Both copies vectorize over the images, 16 (AVX-512) or 8 (AVX2) to a register, and run the
# rest one image at a time: where that tail is more than an eighth of the batch, im2col or the
# implicit GEMM wins (tenth session, Zen 4, forward + backward, direct / the other path):
# AVX-512 at 8 images 1.5-4.8x (MobileNet's 3 -> 32 stem at 224x224 b8: 93 against 27 ms;
# LeNet's 1 -> 6 and 6 -> 16), at 24 images 1.64x, at 16 images 0.56-0.81x; AVX2 at 4 images
# 2.6x, at 8, 16 and 24 0.70-1.02x.
_DIRECT_TAIL_SHARE = 8  # at most 1 / 8 of the batch in the one-image tail


def _direct(p, xh, w, b):
    """Whether the native direct kernels take this convolution (see the module docstring and
    the limits above, which depend on the copy of the kernels this CPU runs)."""
    avx2 = _native.isa() == 3
    if avx2 and (p.O > _DIRECT_AVX2_MAX_OUT or p.kh * p.kw < _DIRECT_AVX2_MIN_WINDOW):
        return False
    if p.N % (8 if avx2 else 16) * _DIRECT_TAIL_SHARE > p.N:  # (all tail below one vector)
        return False
    return (p.G == 1 and not p.pointwise and p.C * p.kh * p.kw <= _DIRECT_MAX_TAPS
            and p.O <= _DIRECT_MAX_OUT and _native.usable(xh, w, *(() if b is None else (b,))))


def _direct_backward(ctx, g):
    xh, w = ctx.saved
    p, need = ctx.plan, ctx.needs_input_grad
    gh = stored(g, BATCH_LAST)  # a view when g is laid out batch-last
    gx = gw = gb = None
    depthwise = ctx.kind == "depthwise"
    if need[1]:
        gw = (_native.depthwise_weight_grad if depthwise else _native.conv_weight_grad)(xh, gh, p)
    if ctx.has_bias and need[2]:
        gb = np.einsum("op->o", gh.reshape(p.O, -1))
    if need[0]:
        input_grad = _native.depthwise_input_grad if depthwise else _native.conv_input_grad
        gx = restore(input_grad(gh, w, p), BATCH_LAST)
    return gx, gw, gb


_WGRAD_CHUNK = 2048


_WGRAD_COPY_MAX = 1 << 21  # O*K above which the transposed copy costs more than it saves


def _weight_grad(cols, g2):
    """``g2 (O, P) @ cols.T (P, K)``, in C order (the optimizer's one-pass update needs it).
    One dispatch over three formulations of the same product, as measured:

    - O*K tiny and P huge (LeNet's first layer: 6 x 200704 x 25): OpenBLAS streams the long
      reduction at 20 GFLOP/s on one thread; sums of products over P-chunks that stay in cache
      run 2.4x faster.
    - OpenBLAS runs this product fast only with the longer of O and K as the result's rows.
      K >= O (3x3 and 7x7 layers): ``(cols @ g2.T).T`` and a copy to C order: ResNet 64->64 3x3
      1.3x and LeNet 6->16 5x5 2x faster than ``g2 @ cols.T`` with the SkylakeX kernels; on
      Zen 3 (Haswell kernels, resnet18 at 224x224, b8) 1.2-5.5x faster from 64x147 to 512x2304.
      K < O (ResNet's 1x1 stride-2 downsamples, 64 -> 128 ... 256 -> 512): ``g2 @ cols.T``
      3-20x faster (Zen 3: 128x64x6272 21 against 444 ms, loaded host).
    - O*K above ``_WGRAD_COPY_MAX`` (resnet18's 512x4608 layers): the transposed copy of 9 MB
      alone took 24 ms on Zen 3 (power-of-two strides), more than ``g2 @ cols.T`` loses:
      107 against 152 ms (loaded host)."""
    (K, P), O = cols.shape, g2.shape[0]
    n = P // _WGRAD_CHUNK
    if O * K > 1024 or n < 16:
        if K < O or O * K > _WGRAD_COPY_MAX:
            return g2 @ cols.T
        return array_module(cols).ascontiguousarray((cols @ g2.T).T)
    main = n * _WGRAD_CHUNK
    parts = (g2[:, :main].reshape(O, n, _WGRAD_CHUNK).transpose(1, 0, 2)
             @ cols[:, :main].reshape(K, n, _WGRAD_CHUNK).transpose(1, 2, 0))
    gw = parts.sum(axis=0)
    if main < P:
        gw += g2[:, main:] @ cols[:, main:].T
    return gw


# Slices of 32 MB ran as fast as one whole patch matrix (Zen 4: resnet18-small's 64 -> 64 layer
# at 28x28 b64, 44 against 43 ms); of 8 MB, 2.6x slower there (the GEMM re-reads the output
# gradient once per slice of 36 patch rows).
_PATCH_SLICE_BYTES = 1 << 25


def _weight_grad_rebuilt(xh, g2, p):
    """The weight gradient (one group) from the saved input xh (C, H, W, N): its patch matrix
    rebuilt for a slice of input channels at a time, in a workspace of at most
    ``_PATCH_SLICE_BYTES``. Each slice gives its own columns of the result (nothing is summed
    across slices). Rebuilt whole, the 85 MB patch matrix of D2L ResNet-18's first stage at
    96x96 b64 was the largest buffer alive in the training step, in eager and graph mode alike."""
    taps, P = p.kh * p.kw, g2.shape[1]
    step = max(1, _PATCH_SLICE_BYTES // (taps * P * xh.itemsize))
    gw = array_module(xh).empty((p.O, p.C * taps), dtype=xh.dtype)
    part = copy.copy(p)
    for c0 in range(0, p.C, step):
        c1 = min(p.C, c0 + step)
        part.C = c1 - c0  # im2col reads C and the taps of the plan, which the slice shares
        cols = im2col(xh[c0:c1], part, workspace("cols", (part.C * taps, P), xh)).reshape(part.C * taps, P)
        gw[:, c0 * taps:c1 * taps] = _weight_grad(cols, g2)
    return gw


def _backward(ctx, g):
    if ctx.kind == "dense":
        return _dense_backward(ctx, g)
    if ctx.kind in ("direct", "depthwise"):
        return _direct_backward(ctx, g)
    if ctx.kind == "winograd":
        return _winograd_backward(ctx, g)
    cols, w = ctx.saved
    p = ctx.plan
    C, N, O, G, kh, kw, OH, OW = p.C, p.N, p.O, p.G, p.kh, p.kw, p.OH, p.OW
    P = OH * OW * N
    K = C // G * kh * kw
    need = ctx.needs_input_grad
    xp = array_module(g)
    g2 = permuted(g, BATCH_LAST).reshape(O, P)  # a view when g is laid out batch-last
    flipped = _flipped(p) if need[0] and ctx.kind == "implicit" else None
    # ``cols`` is the input where the forward kept no patch matrix
    implicit_weight_grad = need[1] and ctx.implicit_weight_grad and _native.usable(g2)
    # the native kernels' (O, OH, OW, N) gradient, made contiguous once for both (a sum's
    # gradient arrives as a broadcast view)
    gh = xp.ascontiguousarray(g2).reshape(O, OH, OW, N) if implicit_weight_grad or flipped is not None else None
    if ctx.recompute and G > 1 and not implicit_weight_grad:  # rebuild the patch matrix
        cols = im2col(cols, p, workspace("cols", (C * kh * kw, P), cols)).reshape(C * kh * kw, P)
    gx = gw = gb = None
    if need[1]:
        if implicit_weight_grad:
            gw = _native.gemm_conv_weight_grad(cols, gh, p)
        elif ctx.recompute and G == 1:
            gw = _weight_grad_rebuilt(cols, g2, p)
        elif G == 1:
            gw = _weight_grad(cols, g2)
        else:
            gw = (cols.reshape(G, K, P) @ g2.reshape(G, O // G, P).transpose(0, 2, 1)).transpose(0, 2, 1)
            gw = array_module(gw).ascontiguousarray(gw)  # C order: see _weight_grad
        gw = gw.reshape(O, C // G, kh, kw)  # a view where it is already that
    if ctx.has_bias and need[2]:
        gb = array_module(g2).einsum("op->o", g2)  # 4x faster than sum(axis=1) on LeNet's conv1
    if flipped is not None:
        gx = restore(_native.gemm_conv(gh, _flipped_weight(w, p), None, flipped), BATCH_LAST)
    elif need[0]:
        # the patch gradient is a temporary unless it is the input gradient itself (pointwise)
        dcols = None if ctx.kind == "pointwise" else workspace("dcols", (G, K, P), g2)
        if G == 1:
            dcols = xp.matmul(w.reshape(O, K).T, g2, out=None if dcols is None else dcols[0])
        else:
            dcols = xp.matmul(w.reshape(G, O // G, K).transpose(0, 2, 1), g2.reshape(G, O // G, P),
                              out=dcols)
        if ctx.kind == "pointwise":
            dxh = dcols.reshape(C, p.H, p.W, N)
        else:
            dxh = col2im(dcols.reshape(C, kh, kw, OH, OW, N), p)
        gx = restore(dxh, BATCH_LAST)
    return gx, gw, gb


# Where the implicit weight gradient (_native.gemm_conv_weight_grad) beat rebuilding the patch
# matrix for OpenBLAS (_weight_grad_rebuilt; im2col + a batched matmul for groups), Zen 4,
# medians of 5, 3x3 unless named (docs/performance.md, ninth session):
# - columns P = OH * OW * N of 1024 and more, 0.48-0.93x: ResNet's 64 to 256 channels at 224
#   b8 (64 -> 64 56x56 13.9 against 27.0 ms), at 96 b32 and 28 b64, the stems 0.40-0.62x, the
#   stride-2 downsamplings 0.87-0.93x; fewer lost 1.1-3.2x (512 channels at 7x7 b1 and b8, 128
#   at 28x28 b1): a dot product of P columns ends in a sum across the vector's lanes;
# - at most 32 outputs a group (DenseNet's 128 -> 32 at 7x7 to 28x28, b1 and b8; ResNeXt's
#   groups), 0.43-0.56x: there the patch matrix costs more than the product.
# Against OpenBLAS on a patch matrix the forward kept, 0.74-1.07x on those with P >= 1024, so the
# forward keeps the input instead wherever this takes the weight gradient.
# The AVX2 copy (2 x 4 tiles: 3 x 4 and 4 x 3 spilled) was measured on that Zen 4 only, where it
# won those few-output layers (0.59x) and tied on the rest (0.93-1.38x): it takes those only.
_IMPLICIT_WGRAD_MIN_COLUMNS = 1024
_IMPLICIT_WGRAD_MAX_OUT = 32


def _implicit_weight_grad(p, xh):
    """Whether the weight gradient of plan ``p`` runs the implicit GEMM on the saved input xh
    (limits above, per copy of the kernel). Then the forward of an im2col convolution keeps
    the input, not its patch matrix (9 times its size at 3x3), as graph mode's recomputation
    does: both modes run the same kernels."""
    copy = _native.gemm_conv_copy()
    if copy == 0 or p.kh * p.kw < _IMPLICIT_MIN_WINDOW or not _native.usable(xh):
        return False
    few = p.O // p.G <= _IMPLICIT_WGRAD_MAX_OUT
    return few if copy == 3 else few or p.OH * p.OW * p.N >= _IMPLICIT_WGRAD_MIN_COLUMNS


def _flipped(p):
    """The plan of the input gradient of stride-1 plan ``p`` as a convolution of the output
    gradient (O channels) with the flipped weights, when its padding is not negative (padding
    beyond the kernel's reach would crop), and the implicit kernel takes it; else None."""
    if (p.sh, p.sw) != (1, 1):
        return None
    reach_h, reach_w = p.dh * (p.kh - 1), p.dw * (p.kw - 1)
    ph1, pw1 = p.OH - p.H - p.ph0 + reach_h, p.OW - p.W - p.pw0 + reach_w  # stride 1: all used
    pads = ((reach_h - p.ph0, reach_h - ph1), (reach_w - p.pw0, reach_w - pw1))
    if min(pads[0] + pads[1]) < 0:
        return None
    q = _Plan((p.N, p.O, p.OH, p.OW), (p.C, p.O // p.G, p.kh, p.kw), (1, 1), pads, (p.dh, p.dw), p.G)
    return q if _implicit(q) else None


def _flipped_weight(w, p):
    """w (O, C/G, kh, kw) as the weights of the input gradient's convolution: (C, O/G, kh, kw),
    each group's in and out channels swapped and the window turned by 180 degrees."""
    G = p.G
    wg = w.reshape(G, p.O // G, p.C // G, p.kh, p.kw).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    return wg.reshape(p.C, p.O // G, p.kh, p.kw)


# ---- Winograd F(2x2, 3x3) ------------------------------------------------------------------
# A 2x2 output tile of a 3x3 stride-1 convolution from its 4x4 input tile d: y = A^T [(G w G^T) .
# (B^T d B)] A (Lavin and Gray 2016), 16 multiplies where the definition has 36. The 16 tile
# positions xi are 16 GEMMs over the channels, M[xi] (O, tiles) = U[xi] (O, C) @ V[xi] (C,
# tiles), run by OpenBLAS; the native kernels transform the input into V and M into the output
# (divenet/_native.c), over chunks of tile rows that keep V and M in the cache.
_WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float32)
# (9 taps, 16 positions): U[xi = (i, j)] = sum over taps (a, b) of G[i, a] G[j, b] w[.., a, b]
_WINOGRAD_WEIGHT = np.einsum("ia,jb->abij", _WINOGRAD_G, _WINOGRAD_G).reshape(9, 16)
# F(4x4, 3x3) (36 multiplies for 16 outputs) ran these layers in 0.41-0.89x the old time, but its
# float32 input gradients strayed 3.4e-5 from PyTorch's at 128 channels and unit scale, beyond
# the tests' tolerance (1e-5 + 1e-4 |x|): not kept (docs/performance.md, eleventh session).
_WINOGRAD_CHUNK_BYTES = 1 << 24  # V and M of a chunk of tile rows: smaller ones lost (2-8 MB)
# From 96 channels in and out: 64-channel layers tied (Zen 4, alternating medians of 15, new /
# old, inference and training: 64 -> 64 at 56x56 b8 0.89 / 0.96, b16 1.01 / 1.07, at 28x28 b32
# 1.00 / 1.01, b64 0.92 / 0.95; 64 -> 128 1.00 / 0.98), 96 -> 128 at 28x28 b8 won (0.90 / 0.90).
_WINOGRAD_MIN_CHANNELS = 96
_WINOGRAD_MIN_SIDE = 4
_WINOGRAD_BATCH_VECTOR = 8  # the transforms run 8 images to a vector


def _winograd_weight(w, flipped=False):
    """U (16, O, C) of w (O, C, 3, 3) contiguous; ``flipped``: that of the input gradient's
    weights (``_flipped_weight``), (16, C, O), as a transposed view. Turning the window by 180
    degrees reverses the taps, so it is the same product with the taps' rows reversed."""
    O, C = w.shape[:2]
    k = _WINOGRAD_WEIGHT[::-1] if flipped else _WINOGRAD_WEIGHT
    u = (k.T @ w.reshape(O * C, 9).T).reshape(16, O, C)
    return u.transpose(0, 2, 1) if flipped else u


_frozen_transforms = {}  # id(w) -> (weakref to w, U): see _winograd_weight_of


def _winograd_weight_of(w):
    """U of w, kept for as long as w lives where nothing can change w: a read-only array that
    owns its memory (graph mode's folded weights, ``fold_recipe``), as ONNX Runtime pre-packs
    its weights. Any other weight (a parameter an optimizer updates in place) is transformed
    again every call: 1.4 ms for a 512 -> 512 layer."""
    if w.flags.writeable or w.base is not None:
        return _winograd_weight(w)
    key = id(w)
    hit = _frozen_transforms.get(key)
    if hit is not None and hit[0]() is w:
        return hit[1]
    u = _winograd_weight(w)
    _frozen_transforms[key] = (weakref.ref(w, lambda _, key=key: _frozen_transforms.pop(key, None)), u)
    return u


def _winograd(xh, u, b, pads, out_hw):
    """The 3x3 stride-1 convolution of xh (C, H, W, N) contiguous with transformed weights u
    (16, O, C), padded by ``pads`` (top, left) and zeros to the output size ``out_hw``, plus b
    (O,) or None -> (O, OH, OW, N)."""
    C, N, O = xh.shape[0], xh.shape[3], u.shape[1]
    OH, OW = out_hw
    TH, TW = -(-OH // 2), -(-OW // 2)
    rows = min(TH, max(1, _WINOGRAD_CHUNK_BYTES // (16 * TW * N * (C + O) * xh.itemsize)))
    y = np.empty((O, OH, OW, N), dtype=np.float32)
    for t0 in range(0, TH, rows):
        t1 = min(TH, t0 + rows)
        tiles = (t1 - t0) * TW * N
        v = workspace("winograd_v", (16, C, tiles), xh)
        m = workspace("winograd_m", (16, O, tiles), xh)
        _native.winograd_input(xh, v, pads, TW, (t0, t1))
        np.matmul(u, v, out=m)
        _native.winograd_output(m, b, y, TW, (t0, t1))
    return y


def _winograd_takes(p):
    """Whether Winograd F(2x2, 3x3) takes the convolution of plan ``p`` (forward and input
    gradient; the weight gradient as for the implicit GEMM): 3x3, stride 1, no dilation, one
    group, at least ``_WINOGRAD_MIN_CHANNELS`` in and out, whole vectors of images."""
    return (p.kh == p.kw == 3 and (p.sh, p.sw) == (1, 1) and (p.dh, p.dw) == (1, 1) and p.G == 1
            and min(p.C, p.O) >= _WINOGRAD_MIN_CHANNELS and min(p.OH, p.OW) >= _WINOGRAD_MIN_SIDE
            and p.N % _WINOGRAD_BATCH_VECTOR == 0)


def _winograd_backward(ctx, g):
    xh, w = ctx.saved
    p, need = ctx.plan, ctx.needs_input_grad
    gh = stored(g, BATCH_LAST)  # (O, OH, OW, N) contiguous: a view when g is laid out so
    gx = gw = gb = None
    if need[1]:
        if ctx.implicit_weight_grad:
            gw = _native.gemm_conv_weight_grad(xh, gh, p)
        else:
            gw = _weight_grad_rebuilt(xh, gh.reshape(p.O, -1), p).reshape(p.O, p.C, 3, 3)
    if ctx.has_bias and need[2]:
        gb = np.einsum("op->o", gh.reshape(p.O, -1))
    if need[0]:  # the correlation of g with the flipped weights, padded to reach every input
        dx = _winograd(gh, _winograd_weight(w, flipped=True), None, (2 - p.ph0, 2 - p.pw0), (p.H, p.W))
        gx = restore(dx, BATCH_LAST)
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
