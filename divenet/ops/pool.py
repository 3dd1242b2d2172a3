"""Pooling kernels: max and average pooling over the last two axes, and their adaptive forms.

Max and average pooling of a 4-D activation laid out (C, H, W, N), batch innermost (what
convolution returns), run in that layout (see "batch-last layout" below). Every other input is
pooled as a stack of planes ``(B, H, W)``; an NCHW view of a (C, N, H, W) buffer is read through
that buffer without a copy, and the result is handed back in the input's layout.

How a window is read:

- Non-overlapping windows (stride == kernel, no padding, sizes divisible) are a reshape
  ``(B, OH, kh, OW, kw)``: average pooling adds whole rows, then column pairs; max pooling folds
  the strided views ``[:, :, i, :, j]`` of the kernel offsets.
- Any other window: the (padded) input is split once into stride phases, and every kernel offset
  becomes one contiguous slice of a flattened phase ("wide" output rows; see ``Windows``). Max
  pooling folds the kh*kw offsets with ``maximum``, average pooling adds them: long contiguous
  passes instead of short strided rows (twice as fast in NumPy).
- The planes are processed in chunks that fit in the L2 cache (on the CPU only; on a GPU the
  whole stack is one chunk), which halves again the time of these memory-bound passes.

Batch-last layout: one pass per kernel offset over the rectangle of outputs whose window offset
reads real input (padding is skipped, never materialized), every run a whole batch or more,
and the result keeps the layout.

Max pooling records, per output, the offset ``k = i*kw + j`` of the first maximum in row-major
window order (PyTorch's tie rule) as a uint8, and routes the gradient there.
"""
from __future__ import annotations

import numpy as np

from .. import _native
from ..autograd import Function
from ..backend import array_module, constant, device_of
from .conv import spans, window_taps
from .layout import BATCH_LAST, CHANNELS_FIRST, NCHW, buffer, permuted, restore, stored

_CHUNK_BYTES = 1 << 20  # working set per chunk of planes: about the size of one core's L2


# ---- layout ------------------------------------------------------------------------------------
def as_planes(x):
    """``x`` (..., H, W) as contiguous planes (B, H, W). A channels-first 4-D input
    (ops/layout.py) keeps its buffer's (c-major) order, without a copy. Returns
    ``(planes, cnhw)``."""
    h, w = x.shape[-2:]
    buf = buffer(x, CHANNELS_FIRST) if x.ndim == 4 else None
    if buf is not None:
        return buf.reshape(-1, h, w), True
    return array_module(x).ascontiguousarray(x).reshape(-1, h, w), False


def from_planes(p, lead, cnhw):
    """Planes (B, OH, OW) back to ``lead + (OH, OW)``, as a channels-first view when ``cnhw``."""
    oh, ow = p.shape[-2:]
    if cnhw:
        n, c = lead
        return restore(p.reshape(c, n, oh, ow), CHANNELS_FIRST)
    return p.reshape(tuple(lead) + (oh, ow))


def grad_planes(g, cnhw):
    """An output gradient as planes in the same order as the forward's planes."""
    h, w = g.shape[-2:]
    return stored(g, CHANNELS_FIRST if cnhw else NCHW).reshape(-1, h, w)


def _chunk(xp, planes, plane_elems, itemsize):
    if xp is not np:
        return max(planes, 1)
    return max(1, min(planes, _CHUNK_BYTES // max(plane_elems * itemsize, 1)))


# ---- batch-last layout ---------------------------------------------------------------------
_BATCH_LAST_MIN = 64  # below this batch the runs are short: the planes path is faster


def _pool_input(x):
    """``(x, xh)``: the (C, H, W, N) buffer of a batch-last input when the batch is large enough
    for that path, else None; a batch-last input with a small batch is copied to channels-first
    for the planes path (measured, 3x3 stride-2 max pool forward + backward: 8 images 12.0 ->
    4.5 + 0.4 ms for the copy, 32 images 24 -> 15 + 3.5 ms; from 64 images on the batch-last
    path is faster. ResNet's stem pool at 112x112, 8 images, Zen 3: planes 133 ms, batch-last
    248 ms). With the native kernels the batch-last path wins from one vector of images on
    (``_native.MIN_BATCH``): 3x3 stride-2 forward + backward at b8, 64 channels 112x112 40 against the
    planes path's 62 ms, 480 channels 14x14 4.7 against 11.3 ms (loaded host)."""
    xh = buffer(x, BATCH_LAST) if x.ndim == 4 else None
    if xh is None or x.shape[0] >= _BATCH_LAST_MIN or (x.shape[0] >= _native.MIN_BATCH and _native.usable(xh)):
        return x, xh
    return restore(stored(x, CHANNELS_FIRST), CHANNELS_FIRST), None


def _taps(in_hw, out_hw, kernel, stride, padding, dilation):
    """(k = i*kw + j, output rectangle, input rectangle) of every window offset that reads real
    input."""
    (H, W), (OH, OW), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        in_hw, out_hw, kernel, stride, padding, dilation)
    return [(i * kw + j, o, s) for i, j, o, s in
            window_taps(spans(H, OH, kh, sh, ph, dh), spans(W, OW, kw, sw, pw, dw), sh, sw)
            if o is not None]


def _channel_blocks(xp, C, per_channel_bytes):
    """Channel slices whose input and output fit in L2 together, so that the kh*kw passes of a
    window fold run in the cache (measured: ResNet's max pool at 24x24 x 256 images 2.3x
    faster than whole-array passes); a GPU takes all channels at once."""
    step = C if xp is not np else max(1, min(C, _CHUNK_BYTES // max(per_channel_bytes, 1)))
    return [slice(c0, min(C, c0 + step)) for c0 in range(0, C, step)]


def max_pool_batch_last(xh, taps, out_hw, need_idx):
    """xh (C, H, W, N) -> (C, OH, OW, N) maxima, and the uint8 offset i*kw + j of the first
    maximum of each window (or None). ``taps`` from ``_taps``."""
    xp = array_module(xh)
    C, H, W, N = xh.shape
    out = xp.full((C, *out_hw, N), -xp.inf, dtype=xh.dtype)
    idx = xp.zeros(out.shape, dtype=np.uint8) if need_idx else None
    per_channel = (H * W + out_hw[0] * out_hw[1]) * N * xh.itemsize
    blocks = _channel_blocks(xp, C, per_channel)
    hit_buf = xp.empty((blocks[0].stop, *out_hw, N), dtype=bool) if need_idx else None
    for cs in blocks:
        x, o_ = xh[cs], out[cs]
        for _, o, s in taps:
            view = o_[:, o[0], o[1]]
            xp.maximum(view, x[:, s[0], s[1]], out=view)
        if not need_idx:
            continue
        hits = hit_buf[:cs.stop - cs.start]
        # last write wins: visit the offsets backwards so the first maximum in row-major order
        # stays; idx -= (idx - k) * hit is 4x faster than copyto(..., where=hit) on strided views
        for k, o, s in reversed(taps):
            h, iv = hits[:, o[0], o[1]], idx[cs][:, o[0], o[1]]
            xp.equal(x[:, s[0], s[1]], o_[:, o[0], o[1]], out=h)
            d = iv - np.uint8(k)
            d *= h.view(np.uint8)
            iv -= d
    return out, idx


def max_pool_batch_last_backward(gh, idx, taps, in_hw):
    xp = array_module(gh)
    C, OH, OW, N = gh.shape
    gx = xp.zeros((C, *in_hw, N), dtype=gh.dtype)
    per_channel = (in_hw[0] * in_hw[1] + OH * OW) * N * gh.itemsize
    for cs in _channel_blocks(xp, C, per_channel):
        g, i_, dx = gh[cs], idx[cs], gx[cs]
        for k, o, s in taps:
            hit = i_[:, o[0], o[1]] == k
            dx[:, s[0], s[1]] += g[:, o[0], o[1]] * hit
    return gx


def avg_pool_batch_last(xh, taps, out_hw, scale):
    """Window sums of xh (C, H, W, N) times ``scale`` (a scalar or an (OH, OW) array)."""
    xp = array_module(xh)
    out = xp.zeros((xh.shape[0], *out_hw, xh.shape[3]), dtype=xh.dtype)
    for _, o, s in taps:
        out[:, o[0], o[1]] += xh[:, s[0], s[1]]
    out *= scale if xp.ndim(scale) == 0 else scale[:, :, None]
    return out


def avg_pool_batch_last_backward(gh, taps, in_hw, scale, tiled):
    """``tiled``: the windows cover the input exactly once (LeNet's 2x2, stride 2), so each
    offset writes its share of the input gradient outright: no zeroing, no adds."""
    xp = array_module(gh)
    gx = xp.empty if tiled else xp.zeros
    gx = gx((gh.shape[0], *in_hw, gh.shape[3]), dtype=gh.dtype)
    if tiled:
        for _, o, s in taps:
            xp.multiply(gh[:, o[0], o[1]], scale, out=gx[:, s[0], s[1]])
        return gx
    gs = gh * (scale if xp.ndim(scale) == 0 else scale[:, :, None])
    for _, o, s in taps:
        gx[:, s[0], s[1]] += gs[:, o[0], o[1]]
    return gx


def pool_output_size(n, k, s, p, d, ceil_mode):
    """PyTorch's output length: the last window must start inside the input or the left padding."""
    span = n + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        out = -(-span // s) + 1
        if (out - 1) * s >= n + p:
            out -= 1
    else:
        out = span // s + 1
    return out


# ---- window geometry ---------------------------------------------------------------------------
class Windows:
    """Where every kernel offset of a pooling window reads, for planes (B, H, W).

    Tiled windows (stride == kernel, no padding, divisible): offset (i, j) is the view
    ``x.reshape(B, OH, kh, OW, kw)[:, :, i, :, j]``.

    Any other window: the padded frame is split into stride phases, plane (a, b) holding padded
    rows a, a + sh, ... and columns b, b + sw, ... (Hq x Wq, plus one spare row). Offset (i, j)
    reads phase ((i dh) % sh, (j dw) % sw) shifted by ((i dh) // sh, (j dw) // sw), and with the
    plane flattened that is ONE contiguous slice of OH * Wq elements: the output is computed
    "wide", OH rows of pitch Wq, whose last Wq - OW columns are scratch, cropped at the end
    (their gradient is zero). Every per-offset pass is then a long contiguous run.

    ``tile=False`` sends tiled windows down the general path too (the tests compare the two).
    """

    def __init__(self, in_hw, out_hw, kernel, stride, padding, dilation, tile=True):
        (self.H, self.W), (self.OH, self.OW) = in_hw, out_hw
        (self.kh, self.kw), (self.sh, self.sw) = kernel, stride
        (self.ph, self.pw), (self.dh, self.dw) = padding, dilation
        H, W, OH, OW = self.H, self.W, self.OH, self.OW
        kh, kw, sh, sw = self.kh, self.kw, self.sh, self.sw
        ph, pw, dh, dw = self.ph, self.pw, self.dh, self.dw
        self.tiled = tile and (kh == sh and kw == sw and dh == 1 and dw == 1 and ph == 0
                               and pw == 0 and H == OH * kh and W == OW * kw)
        if self.tiled:
            return
        self.Hq = OH + (dh * (kh - 1)) // sh
        self.Wq = OW + (dw * (kw - 1)) // sw
        self.L = (self.Hq + 1) * self.Wq  # one spare row: the wide reads of the last offsets
        self.offsets = []  # (phase, flat start) per kernel offset, row-major
        for i in range(kh):
            for j in range(kw):
                key = ((i * dh) % sh, (j * dw) % sw)
                self.offsets.append((key, ((i * dh) // sh) * self.Wq + (j * dw) // sw))
        self.phases = {}  # phase -> input rows/columns that land in it, and where
        for key in sorted({key for key, _ in self.offsets}):
            rows = self._axis(key[0], sh, ph, H, self.Hq)
            cols = self._axis(key[1], sw, pw, W, self.Wq)
            self.phases[key] = (rows, cols)

    @staticmethod
    def _axis(a, s, p, n, nq):
        """Input indices r0, r0 + s, ... (count) land at plane positions t0, t0 + 1, ..."""
        r0 = (a - p) % s
        t0 = (r0 + p) // s
        return r0, t0, max(0, min(len(range(r0, n, s)), nq - t0))

    def plane_elems(self):
        return self.H * self.W if self.tiled else self.L * len(self.phases)

    # ---- phases ----
    def buffers(self, xp, cb, dtype, fill):
        """Phase planes for a chunk; the padding keeps ``fill``, the rest is written by ``load``."""
        if self.tiled:
            return None
        return {key: xp.full((cb, self.L), fill, dtype=dtype) for key in self.phases}

    def _regions(self, planes, n):
        for key, ((r0, t0, cr), (c0, u0, cc)) in self.phases.items():
            if cr and cc:
                plane = planes[key][:n, :self.Hq * self.Wq].reshape(n, self.Hq, self.Wq)
                yield (plane[:, t0:t0 + cr, u0:u0 + cc],
                       (slice(r0, r0 + (cr - 1) * self.sh + 1, self.sh),
                        slice(c0, c0 + (cc - 1) * self.sw + 1, self.sw)))

    def load(self, src, bufs):
        """The phases of input planes ``src`` (n, H, W)."""
        n = src.shape[0]
        if self.tiled:
            return src.reshape(n, self.OH, self.kh, self.OW, self.kw)
        for region, (rs, cs) in self._regions(bufs, n):
            region[...] = src[:, rs, cs]
        return {key: b[:n] for key, b in bufs.items()}

    def grad_phases(self, bufs, n):
        for b in bufs.values():
            b[:n].fill(0)
        return {key: b[:n] for key, b in bufs.items()}

    def store(self, phases, gx):
        """Write gradient phases back into input-gradient planes ``gx`` (n, H, W), which start
        zero (positions no window reads keep that zero)."""
        for region, (rs, cs) in self._regions(phases, gx.shape[0]):
            gx[:, rs, cs] = region

    def view(self, phases, k):
        """Tiled: the (n, OH, OW) view of kernel offset ``k``; else its wide (n, OH * Wq) slice."""
        if self.tiled:
            i, j = divmod(k, self.kw)
            return phases[:, :, i, :, j]
        key, start = self.offsets[k]
        return phases[key][:, start:start + self.OH * self.Wq]

    def crop(self, wide):
        """(n, OH * Wq) -> the (n, OH, OW) view of its real columns."""
        return wide.reshape(wide.shape[0], self.OH, self.Wq)[:, :, :self.OW]

    def flat_indices(self, idx, xp):
        """PyTorch's return_indices: the flat position h*W + w of each window's maximum."""
        i = idx.astype(np.int64) // self.kw
        j = idx.astype(np.int64) % self.kw
        rows = xp.arange(self.OH, dtype=np.int64)[:, None] * self.sh - self.ph + i * self.dh
        cols = xp.arange(self.OW, dtype=np.int64)[None, :] * self.sw - self.pw + j * self.dw
        return rows * self.W + cols


def _index_dtype(kk):
    return np.uint8 if kk <= 255 else np.int32


# ---- max pooling -------------------------------------------------------------------------------
def max_pool_planes(a, win, need_idx):
    """Max over windows of planes ``a`` (B, H, W) -> (out (B, OH, OW), idx or None). ``idx``
    holds the row-major kernel offset of each window's first maximum: (B, OH, OW) for tiled
    windows, else wide (B, OH * Wq)."""
    xp = array_module(a)
    B = a.shape[0]
    OH, OW = win.OH, win.OW
    nk = win.kh * win.kw
    out = xp.empty((B, OH, OW), dtype=a.dtype)
    width = OH * OW if win.tiled else OH * win.Wq
    idx = xp.empty((B,) + ((OH, OW) if win.tiled else (width,)), dtype=_index_dtype(nk)) if need_idx else None
    cb = _chunk(xp, B, win.plane_elems(), a.itemsize)
    bufs = win.buffers(xp, cb, a.dtype, -np.inf)
    wide = None if win.tiled else xp.empty((cb, width), dtype=a.dtype)
    if need_idx:
        shape = idx.shape[1:]
        mask = xp.empty((cb,) + shape, dtype=np.bool_)
        tmp = xp.empty((cb,) + shape, dtype=idx.dtype)
    for b0 in range(0, B, cb):
        b1 = min(B, b0 + cb)
        n = b1 - b0
        ph = win.load(a[b0:b1], bufs)
        o = out[b0:b1] if win.tiled else wide[:n]
        o[...] = win.view(ph, 0)
        if need_idx:
            ix, m, t = idx[b0:b1], mask[:n], tmp[:n]
            ix.fill(0)
        for k in range(1, nk):
            v = win.view(ph, k)
            if need_idx:
                # strictly greater: the first maximum in row-major order keeps its offset
                xp.greater(v, o, out=m)
                xp.multiply(m.view(np.uint8), idx.dtype.type(k), out=t)
                xp.maximum(ix, t, out=ix)  # offsets grow, so the newest winner has the largest k
            xp.maximum(o, v, out=o)
        if not win.tiled:
            out[b0:b1] = win.crop(o)
    return out, idx


def max_pool_planes_backward(g, idx, win):
    xp = array_module(g)
    B = g.shape[0]
    OH, OW = win.OH, win.OW
    nk = win.kh * win.kw
    gx = xp.zeros((B, win.H, win.W), dtype=g.dtype)
    cb = _chunk(xp, B, win.plane_elems(), g.itemsize)
    shape = idx.shape[1:]
    mask = xp.empty((cb,) + shape, dtype=np.bool_)
    if not win.tiled:
        bufs = win.buffers(xp, cb, g.dtype, 0)
        tmp = xp.empty((cb,) + shape, dtype=g.dtype)
        gwide = xp.zeros((cb, OH, win.Wq), dtype=g.dtype)  # scratch columns stay zero
    for b0 in range(0, B, cb):
        b1 = min(B, b0 + cb)
        n = b1 - b0
        ix, m = idx[b0:b1], mask[:n]
        if win.tiled:  # windows are disjoint: write straight into the gradient
            g5 = gx[b0:b1].reshape(n, OH, win.kh, OW, win.kw)
            for k in range(nk):
                xp.equal(ix, idx.dtype.type(k), out=m)
                xp.multiply(g[b0:b1], m, out=win.view(g5, k))
            continue
        gwide[:n, :, :OW] = g[b0:b1]
        gw = gwide[:n].reshape(n, OH * win.Wq)
        ph = win.grad_phases(bufs, n)
        t = tmp[:n]
        for k in range(nk):
            xp.equal(ix, idx.dtype.type(k), out=m)
            xp.multiply(gw, m, out=t)
            win.view(ph, k)[...] += t
        win.store(ph, gx[b0:b1])
    return gx


class MaxPool2d(Function):
    """Max pooling over the last two axes of a 3-D or 4-D array. Options: kernel, stride,
    padding, dilation (pairs), out_hw (the output size, ceil mode already applied),
    return_indices (adds a second output: PyTorch's flat indices, int64)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, out_hw, return_indices=False):
        x, xh = (x, None) if return_indices else _pool_input(x)
        ctx.geometry = None
        if xh is not None:
            # (in_hw, out_hw, kernel, stride, padding, dilation): _taps' arguments, for the
            # NumPy path only where the native kernels do not run
            ctx.geometry = geo = (x.shape[-2:], out_hw, kernel, stride, padding, dilation)
            need = ctx.needs_input_grad[0]
            found = _native.max_pool(xh, kernel, stride, padding, dilation, out_hw, need)
            out, idx = found or max_pool_batch_last(xh, _taps(*geo), out_hw, need)
            ctx.save_for_backward(idx)
            return restore(out, BATCH_LAST)
        a, cnhw = as_planes(x)
        win = Windows(x.shape[-2:], out_hw, kernel, stride, padding, dilation)
        need_idx = ctx.needs_input_grad[0] or return_indices
        out, idx = max_pool_planes(a, win, need_idx)
        ctx.win, ctx.cnhw, ctx.in_shape = win, cnhw, x.shape
        ctx.save_for_backward(idx)
        lead = x.shape[:-2]
        y = from_planes(out, lead, cnhw)
        if return_indices:
            real = idx if win.tiled else win.crop(idx)
            flat = win.flat_indices(real, array_module(x))
            return y, from_planes(flat, lead, cnhw)
        return y

    @staticmethod
    def backward(ctx, g, *unused):
        (idx,) = ctx.saved
        if ctx.geometry is not None:
            gh = permuted(g, BATCH_LAST)
            in_hw, _, kernel, stride, padding, dilation = ctx.geometry
            gx = _native.max_pool_grad(gh, idx, kernel, stride, padding, dilation, in_hw)
            if gx is None:
                gx = max_pool_batch_last_backward(gh, idx, _taps(*ctx.geometry), in_hw)
            return restore(gx, BATCH_LAST)
        gx = max_pool_planes_backward(grad_planes(g, ctx.cnhw), idx, ctx.win)
        return from_planes(gx, ctx.in_shape[:-2], ctx.cnhw)


# ---- average pooling ---------------------------------------------------------------------------
def avg_divisor(n, o, k, s, p, count_include_pad):
    """PyTorch's per-axis divisor: the padded window clipped at n + p, or only its part inside the
    input when padding is not counted."""
    start = np.arange(o) * s - p
    end = np.minimum(start + k, n + p)
    if count_include_pad:
        return end - start
    return np.minimum(end, n) - np.maximum(start, 0)


def _avg_scale(rows, cols, count_include_pad, dtype):
    """(OH, OW) reciprocals of the window sizes; ``rows``/``cols``: (n, o, k, s, p) per axis."""
    dh = avg_divisor(*rows, count_include_pad)
    dw = avg_divisor(*cols, count_include_pad)
    return (1.0 / (dh[:, None] * dw[None, :])).astype(dtype)


def avg_pool_planes(a, win, scale):
    """Window sums of planes ``a`` times ``scale`` (a scalar or an (OH, OW) array)."""
    xp = array_module(a)
    B = a.shape[0]
    OH, OW = win.OH, win.OW
    if win.tiled:
        kh, kw = win.kh, win.kw
        r = a.reshape(B, OH, kh, win.W)
        rows = r[:, :, 0].copy() if kh > 1 else r[:, :, 0]
        for i in range(1, kh):
            rows += r[:, :, i]  # whole contiguous rows first
        c = rows.reshape(B, OH, OW, kw)
        out = c[..., 0].copy()
        for j in range(1, kw):
            out += c[..., j]
        out *= scale
        return out
    out = xp.empty((B, OH, OW), dtype=a.dtype)
    cb = _chunk(xp, B, win.plane_elems(), a.itemsize)
    bufs = win.buffers(xp, cb, a.dtype, 0)
    wide = xp.empty((cb, OH * win.Wq), dtype=a.dtype)
    for b0 in range(0, B, cb):
        b1 = min(B, b0 + cb)
        n = b1 - b0
        ph = win.load(a[b0:b1], bufs)
        o = wide[:n]
        o[...] = win.view(ph, 0)
        for k in range(1, win.kh * win.kw):
            o += win.view(ph, k)
        xp.multiply(win.crop(o), scale, out=out[b0:b1])
    return out


def avg_pool_planes_backward(g, win, scale):
    xp = array_module(g)
    B = g.shape[0]
    OH, OW = win.OH, win.OW
    if win.tiled:
        gs = g * scale
        t = xp.repeat(gs, win.kw, axis=2)
        return xp.repeat(t, win.kh, axis=1)
    gx = xp.zeros((B, win.H, win.W), dtype=g.dtype)
    cb = _chunk(xp, B, win.plane_elems(), g.itemsize)
    bufs = win.buffers(xp, cb, g.dtype, 0)
    gwide = xp.zeros((cb, OH, win.Wq), dtype=g.dtype)  # scratch columns stay zero
    for b0 in range(0, B, cb):
        b1 = min(B, b0 + cb)
        n = b1 - b0
        xp.multiply(g[b0:b1], scale, out=gwide[:n, :, :OW])
        gw = gwide[:n].reshape(n, OH * win.Wq)
        ph = win.grad_phases(bufs, n)
        for k in range(win.kh * win.kw):
            win.view(ph, k)[...] += gw
        win.store(ph, gx[b0:b1])
    return gx


class AvgPool2d(Function):
    """Average pooling over the last two axes. Options: kernel, stride, padding (pairs), out_hw,
    count_include_pad, divisor_override."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, out_hw, count_include_pad=True, divisor_override=None):
        win = Windows(x.shape[-2:], out_hw, kernel, stride, padding, (1, 1))
        dt = x.dtype.type
        if divisor_override is not None:
            scale = dt(1.0 / divisor_override)
        elif win.tiled:
            scale = dt(1.0 / (win.kh * win.kw))
        else:
            scale = constant(device_of(x), _avg_scale, (win.H, win.OH, win.kh, win.sh, win.ph),
                             (win.W, win.OW, win.kw, win.sw, win.pw), count_include_pad, x.dtype)
        ctx.win, ctx.in_shape, ctx.scale = win, x.shape, scale
        x, xh = _pool_input(x)
        ctx.geometry = None
        if xh is not None:
            ctx.geometry = (x.shape[-2:], out_hw, kernel, stride, padding, (1, 1))  # as max pooling's
            out = _native.avg_pool(xh, win, scale)
            if out is None:
                out = avg_pool_batch_last(xh, _taps(*ctx.geometry), out_hw, scale)
            return restore(out, BATCH_LAST)
        a, cnhw = as_planes(x)
        ctx.cnhw = cnhw
        out = avg_pool_planes(a, win, scale)
        return from_planes(out, x.shape[:-2], cnhw)

    @staticmethod
    def backward(ctx, g):
        if ctx.geometry is not None:
            gh = permuted(g, BATCH_LAST)
            gx = _native.avg_pool_grad(gh, ctx.win, ctx.scale)
            if gx is None:
                gx = avg_pool_batch_last_backward(gh, _taps(*ctx.geometry), ctx.in_shape[-2:], ctx.scale,
                                                  ctx.win.tiled)
            return restore(gx, BATCH_LAST)
        gx = avg_pool_planes_backward(grad_planes(g, ctx.cnhw), ctx.win, ctx.scale)
        return from_planes(gx, ctx.in_shape[:-2], ctx.cnhw)


# ---- adaptive pooling (windows that do not tile the input) -------------------------------------
def adaptive_bounds(n, o):
    """PyTorch's adaptive windows along one axis: [floor(i n / o), ceil((i + 1) n / o))."""
    i = np.arange(o)
    return (i * n) // o, -((-(i + 1) * n) // o)


def _averaging_matrix(n, o, dtype):
    """(o, n): row i averages the adaptive window i (built on the host: see ``constant``)."""
    start, end = adaptive_bounds(n, o)
    cols = np.arange(n)
    inside = (cols[None, :] >= start[:, None]) & (cols[None, :] < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def _adaptive_taps(n, o):
    """(max window, o) int64: row i holds, per window, its i-th index clipped to its last one."""
    start, end = adaptive_bounds(n, o)
    return np.stack([np.minimum(start + i, end - 1) for i in range(int((end - start).max()))])


class AdaptiveAvgPool2d(Function):
    """Adaptive average pooling whose windows do not tile the input (the tiling case is an
    AvgPool2d): out = Ah @ x @ Aw^T per plane, with averaging matrices Ah (OH, H), Aw (OW, W),
    as two large matrix products."""

    @staticmethod
    def forward(ctx, x, out_hw):
        xp = array_module(x)
        a, cnhw = as_planes(x)
        B, H, W = a.shape
        OH, OW = out_hw
        ah = constant(device_of(x), _averaging_matrix, H, OH, x.dtype)
        aw = constant(device_of(x), _averaging_matrix, W, OW, x.dtype)
        t = (a.reshape(B * H, W) @ aw.T).reshape(B, H, OW)
        t = xp.ascontiguousarray(t.transpose(1, 0, 2)).reshape(H, B * OW)
        out = (ah @ t).reshape(OH, B, OW).transpose(1, 0, 2)
        out = xp.ascontiguousarray(out)
        ctx.ah, ctx.aw, ctx.cnhw, ctx.in_shape = ah, aw, cnhw, x.shape
        return from_planes(out, x.shape[:-2], cnhw)

    @staticmethod
    def backward(ctx, g):
        xp = array_module(g)
        gp = grad_planes(g, ctx.cnhw)
        B, OH, OW = gp.shape
        H, W = ctx.ah.shape[1], ctx.aw.shape[1]
        t = xp.ascontiguousarray(gp.transpose(1, 0, 2)).reshape(OH, B * OW)
        t = (ctx.ah.T @ t).reshape(H, B, OW).transpose(1, 0, 2)
        gx = (xp.ascontiguousarray(t).reshape(B * H, OW) @ ctx.aw).reshape(B, H, W)
        return from_planes(gx, ctx.in_shape[:-2], ctx.cnhw)


class AdaptiveMaxPool2d(Function):
    """Adaptive max pooling whose windows do not tile the input (the tiling case is a
    MaxPool2d). Windows have different sizes; each offset (i, j) gathers row start+i, clipped to
    the window's last row (a repeat that never wins a strict comparison), likewise for columns.
    The gradient is scattered with one ``add.at`` in the input's dtype (windows may overlap;
    5x faster than a float64 bincount in NumPy)."""

    @staticmethod
    def forward(ctx, x, out_hw, return_indices=False):
        xp = array_module(x)
        a, cnhw = as_planes(x)
        B, H, W = a.shape
        OH, OW = out_hw
        dev = device_of(x)
        rows, cols = constant(dev, _adaptive_taps, H, OH), constant(dev, _adaptive_taps, W, OW)
        out = pos = None
        for r in rows:
            for c in cols:
                v = a[:, r[:, None], c[None, :]]
                p = (r[:, None] * W + c[None, :]).astype(np.int64)
                if out is None:
                    out = v
                    pos = xp.broadcast_to(p, v.shape).copy()
                else:
                    better = v > out
                    pos = xp.where(better, p, pos)
                    out = xp.maximum(out, v)
        # mixed slice/array indexing may hand back another memory order: make the planes C-order
        out, pos = xp.ascontiguousarray(out), xp.ascontiguousarray(pos)
        ctx.pos, ctx.cnhw, ctx.in_shape = pos, cnhw, x.shape
        lead = x.shape[:-2]
        y = from_planes(out, lead, cnhw)
        if return_indices:
            return y, from_planes(pos, lead, cnhw)
        return y

    @staticmethod
    def backward(ctx, g, *unused):
        xp = array_module(g)
        gp = grad_planes(g, ctx.cnhw)
        B = gp.shape[0]
        H, W = ctx.in_shape[-2:]
        flat = ctx.pos + (xp.arange(B, dtype=np.int64) * (H * W))[:, None, None]
        gx = xp.zeros(B * H * W, dtype=g.dtype)
        xp.add.at(gx, flat.ravel(), gp.ravel())
        gx = gx.reshape(B, H, W)
        return from_planes(gx, ctx.in_shape[:-2], ctx.cnhw)
