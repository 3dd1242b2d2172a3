"""Pooling kernels: max and average pooling over the last two axes, and their adaptive forms.

Every kernel works on a stack of planes ``(B, H, W)``. A 4-D activation that is an NCHW view of a
CNHW buffer (what convolution returns) is read through that buffer without a copy, and the result
is handed back in the same layout, so the next convolution again gets contiguous CNHW input.

How a window is read:

- Non-overlapping windows (stride == kernel, no padding, sizes divisible) are a reshape
  ``(B, OH, kh, OW, kw)``: each kernel offset is the strided view ``[:, :, i, :, j]``.
- Any other window: the (padded) input is split once into ``sw`` column phases, contiguous copies
  of columns ``q, q + sw, q + 2 sw, ...``. Kernel offset ``(i, j)`` is then a view of phase
  ``(j*dw) % sw`` whose rows are contiguous, stepping only along the height. Max pooling folds
  the kh*kw offsets with ``maximum``; average pooling sums separably (width, then height).
- The planes are processed in chunks that fit in the L2 cache (on the CPU only; on a GPU the
  whole stack is one chunk), which halves the time of these memory-bound passes.

Max pooling records, per output, the offset ``k = i*kw + j`` of the first maximum in row-major
window order (PyTorch's tie rule) as a uint8, and routes the gradient there.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..backend import array_module

_CHUNK_BYTES = 1 << 20  # working set per chunk of planes: about the size of one core's L2


# ---- layout ------------------------------------------------------------------------------------
def as_planes(x):
    """``x`` (..., H, W) as contiguous planes (B, H, W). A 4-D NCHW view of a CNHW buffer keeps
    the buffer's (c-major) order, without a copy. Returns ``(planes, cnhw)``."""
    h, w = x.shape[-2:]
    if x.ndim == 4 and not x.flags.c_contiguous:
        t = x.transpose(1, 0, 2, 3)
        if t.flags.c_contiguous:
            return t.reshape(-1, h, w), True
    return array_module(x).ascontiguousarray(x).reshape(-1, h, w), False


def from_planes(p, lead, cnhw):
    """Planes (B, OH, OW) back to ``lead + (OH, OW)``, as an NCHW view of a CNHW buffer when
    ``cnhw``."""
    oh, ow = p.shape[-2:]
    if cnhw:
        n, c = lead
        return p.reshape(c, n, oh, ow).transpose(1, 0, 2, 3)
    return p.reshape(tuple(lead) + (oh, ow))


def grad_planes(g, cnhw):
    """An output gradient as planes in the same order as the forward's planes."""
    xp = array_module(g)
    h, w = g.shape[-2:]
    if cnhw:
        return xp.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(-1, h, w)
    return xp.ascontiguousarray(g).reshape(-1, h, w)


def _chunk(xp, planes, plane_elems, itemsize):
    if xp is not np:
        return max(planes, 1)
    return max(1, min(planes, _CHUNK_BYTES // max(plane_elems * itemsize, 1)))


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
    """Where every kernel offset of a pooling window reads, for planes (B, H, W)."""

    def __init__(self, in_hw, out_hw, kernel, stride, padding, dilation):
        (self.H, self.W), (self.OH, self.OW) = in_hw, out_hw
        (self.kh, self.kw), (self.sh, self.sw) = kernel, stride
        (self.ph, self.pw), (self.dh, self.dw) = padding, dilation
        H, W, OH, OW = self.H, self.W, self.OH, self.OW
        kh, kw, sh, sw = self.kh, self.kw, self.sh, self.sw
        ph, pw, dh, dw = self.ph, self.pw, self.dh, self.dw
        self.tiled = (kh == sh and kw == sw and dh == 1 and dw == 1 and ph == 0 and pw == 0
                      and H == OH * kh and W == OW * kw)
        # rows and columns of the padded frame that some window touches
        self.Hn = (OH - 1) * sh + dh * (kh - 1) + 1
        self.Wn = (OW - 1) * sw + dw * (kw - 1) + 1
        # (row offset, phase, column shift inside the phase) of each kernel offset, row-major
        self.offsets = [(i * dh, (j * dw) % sw, (j * dw) // sw) for i in range(kh) for j in range(kw)]
        self.col_offsets = [((j * dw) % sw, (j * dw) // sw) for j in range(kw)]
        self.row_offsets = [i * dh for i in range(kh)]
        # the input itself serves as the only phase: stride 1 along the width, nothing padded
        self.direct = sw == 1 and ph == 0 and pw == 0 and self.Hn <= H and self.Wn <= W
        self.hr = min(H, self.Hn - ph)  # input rows inside the frame
        self.phases = {}
        for q in sorted({q for _, q, _ in self.offsets}):
            nq = len(range(q, self.Wn, sw))
            c0 = (q - pw) % sw  # first input column that lands in phase q
            t0 = (c0 + pw) // sw  # ... at this position of the phase
            cnt = min(len(range(c0, W, sw)), nq - t0)
            self.phases[q] = (nq, c0, t0, cnt)

    def plane_elems(self):
        return self.Hn * self.Wn if not self.tiled else self.H * self.W

    # ---- phases of a chunk of input planes ----
    def buffers(self, xp, cb, dtype, fill):
        if self.tiled or self.direct:
            return None
        return {q: xp.full((cb, self.Hn, nq), fill, dtype=dtype) for q, (nq, _, _, _) in self.phases.items()}

    def load(self, src, bufs):
        """The phases of input planes ``src`` (n, H, W); ``bufs`` come from ``buffers``."""
        n = src.shape[0]
        if self.tiled:
            return src.reshape(n, self.OH, self.kh, self.OW, self.kw)
        if self.direct:
            return {0: src}
        out = {}
        for q, (nq, c0, t0, cnt) in self.phases.items():
            buf = bufs[q][:n]
            if cnt > 0 and self.hr > 0:
                buf[:, self.ph:self.ph + self.hr, t0:t0 + cnt] = \
                    src[:, :self.hr, c0:c0 + (cnt - 1) * self.sw + 1:self.sw]
            out[q] = buf
        return out

    def grad_buffers(self, xp, cb, dtype):
        if self.tiled or self.direct:
            return None
        return {q: xp.empty((cb, self.Hn, nq), dtype=dtype) for q, (nq, _, _, _) in self.phases.items()}

    def grad_phases(self, gx, bufs):
        """Zeroed gradient phases for input-gradient planes ``gx`` (n, H, W), which start zero."""
        n = gx.shape[0]
        if self.tiled:
            return gx.reshape(n, self.OH, self.kh, self.OW, self.kw)
        if self.direct:
            return {0: gx}
        out = {}
        for q, buf in bufs.items():
            b = buf[:n]
            b.fill(0)
            out[q] = b
        return out

    def store(self, phases, gx):
        """Write gradient phases back into the input-gradient planes ``gx``."""
        if self.tiled or self.direct:
            return
        for q, (nq, c0, t0, cnt) in self.phases.items():
            if cnt > 0 and self.hr > 0:
                gx[:, :self.hr, c0:c0 + (cnt - 1) * self.sw + 1:self.sw] = \
                    phases[q][:, self.ph:self.ph + self.hr, t0:t0 + cnt]

    def view(self, phases, k):
        """The (n, OH, OW) view of kernel offset ``k`` (row-major)."""
        if self.tiled:
            i, j = divmod(k, self.kw)
            return phases[:, :, i, :, j]
        r, q, c = self.offsets[k]
        return phases[q][:, r:r + (self.OH - 1) * self.sh + 1:self.sh, c:c + self.OW]

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
    """Max over windows of planes ``a`` (B, H, W) -> (out, idx or None)."""
    xp = array_module(a)
    B = a.shape[0]
    out = xp.empty((B, win.OH, win.OW), dtype=a.dtype)
    nk = win.kh * win.kw
    idx = xp.empty((B, win.OH, win.OW), dtype=_index_dtype(nk)) if need_idx else None
    cb = _chunk(xp, B, win.plane_elems(), a.itemsize)
    bufs = win.buffers(xp, cb, a.dtype, -np.inf)
    if need_idx:
        mask = xp.empty((cb, win.OH, win.OW), dtype=np.bool_)
        tmp = xp.empty((cb, win.OH, win.OW), dtype=idx.dtype)
    for b0 in range(0, B, cb):
        b1 = min(B, b0 + cb)
        n = b1 - b0
        ph = win.load(a[b0:b1], bufs)
        o = out[b0:b1]
        o[...] = win.view(ph, 0)
        if need_idx:
            ix, m, t = idx[b0:b1], mask[:n], tmp[:n]
            ix.fill(0)
        for k in range(1, nk):
            v = win.view(ph, k)
            if need_idx:
                # strictly greater: the first maximum in row-major order keeps its index
                xp.greater(v, o, out=m)
                xp.multiply(m.view(np.uint8), idx.dtype.type(k), out=t)
                xp.maximum(ix, t, out=ix)  # offsets grow, so the newest winner has the largest k
            xp.maximum(o, v, out=o)
    return out, idx


def max_pool_planes_backward(g, idx, win):
    xp = array_module(g)
    B = g.shape[0]
    gx = xp.zeros((B, win.H, win.W), dtype=g.dtype)
    nk = win.kh * win.kw
    cb = _chunk(xp, B, win.plane_elems(), g.itemsize)
    bufs = win.grad_buffers(xp, cb, g.dtype)
    mask = xp.empty((cb, win.OH, win.OW), dtype=np.bool_)
    tmp = xp.empty((cb, win.OH, win.OW), dtype=g.dtype)
    for b0 in range(0, B, cb):
        b1 = min(B, b0 + cb)
        n = b1 - b0
        gxc = gx[b0:b1]
        ph = win.grad_phases(gxc, bufs)
        gc, ix, m, t = g[b0:b1], idx[b0:b1], mask[:n], tmp[:n]
        for k in range(nk):
            xp.equal(ix, idx.dtype.type(k), out=m)
            if win.tiled:  # windows are disjoint: write straight into the gradient
                xp.multiply(gc, m, out=win.view(ph, k))
            else:
                xp.multiply(gc, m, out=t)
                win.view(ph, k)[...] += t
        win.store(ph, gxc)
    return gx


class MaxPool2d(Function):
    """Max pooling over the last two axes of a 3-D or 4-D array. Options: kernel, stride,
    padding, dilation (pairs), out_hw (the output size, ceil mode already applied),
    return_indices (adds a second output: PyTorch's flat indices, int64)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, out_hw, return_indices=False):
        a, cnhw = as_planes(x)
        win = Windows(x.shape[-2:], out_hw, kernel, stride, padding, dilation)
        need_idx = ctx.needs_input_grad[0] or return_indices
        out, idx = max_pool_planes(a, win, need_idx)
        ctx.win, ctx.cnhw, ctx.in_shape = win, cnhw, x.shape
        ctx.save_for_backward(idx)
        lead = x.shape[:-2]
        y = from_planes(out, lead, cnhw)
        if return_indices:
            flat = win.flat_indices(idx, array_module(x))
            return y, from_planes(flat, lead, cnhw)
        return y

    @staticmethod
    def backward(ctx, g, *unused):
        (idx,) = ctx.saved
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
            rows += r[:, :, i]  # contiguous rows first
        c = rows.reshape(B, OH, OW, kw)
        out = c[..., 0].copy()
        for j in range(1, kw):
            out += c[..., j]
        out *= scale
        return out
    out = xp.empty((B, OH, OW), dtype=a.dtype)
    cb = _chunk(xp, B, win.plane_elems(), a.itemsize)
    bufs = win.buffers(xp, cb, a.dtype, 0)
    rowsum = xp.empty((cb, win.Hn, OW), dtype=a.dtype)
    for b0 in range(0, B, cb):
        b1 = min(B, b0 + cb)
        n = b1 - b0
        ph = win.load(a[b0:b1], bufs)
        t = rowsum[:n]
        for jj, (q, c) in enumerate(win.col_offsets):  # along the width, over all frame rows
            v = ph[q][:, :win.Hn, c:c + OW]
            if jj == 0:
                t[...] = v
            else:
                t += v
        o = out[b0:b1]
        for ii, r in enumerate(win.row_offsets):  # then along the height
            v = t[:, r:r + (OH - 1) * win.sh + 1:win.sh]
            if ii == 0:
                o[...] = v
            else:
                o += v
        o *= scale
    return out


def avg_pool_planes_backward(g, win, scale):
    xp = array_module(g)
    B = g.shape[0]
    OH, OW = win.OH, win.OW
    gs = g * scale
    if win.tiled:
        t = xp.repeat(gs, win.kw, axis=2)
        return xp.repeat(t, win.kh, axis=1)
    gx = xp.zeros((B, win.H, win.W), dtype=g.dtype)
    cb = _chunk(xp, B, win.plane_elems(), g.itemsize)
    bufs = win.grad_buffers(xp, cb, g.dtype)
    rowgrad = xp.empty((cb, win.Hn, OW), dtype=g.dtype)
    for b0 in range(0, B, cb):
        b1 = min(B, b0 + cb)
        n = b1 - b0
        t = rowgrad[:n]
        t.fill(0)
        gc = gs[b0:b1]
        for r in win.row_offsets:
            t[:, r:r + (OH - 1) * win.sh + 1:win.sh] += gc
        gxc = gx[b0:b1]
        ph = win.grad_phases(gxc, bufs)
        for q, c in win.col_offsets:
            ph[q][:, :win.Hn, c:c + OW] += t
        win.store(ph, gxc)
    return gx


class AvgPool2d(Function):
    """Average pooling over the last two axes. Options: kernel, stride, padding (pairs), out_hw,
    count_include_pad, divisor_override."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, out_hw, count_include_pad=True, divisor_override=None):
        xp = array_module(x)
        a, cnhw = as_planes(x)
        win = Windows(x.shape[-2:], out_hw, kernel, stride, padding, (1, 1))
        dt = x.dtype.type
        if divisor_override is not None:
            scale = dt(1.0 / divisor_override)
        elif win.tiled:
            scale = dt(1.0 / (win.kh * win.kw))
        else:
            dh = avg_divisor(win.H, win.OH, win.kh, win.sh, win.ph, count_include_pad)
            dw = avg_divisor(win.W, win.OW, win.kw, win.sw, win.pw, count_include_pad)
            scale = xp.asarray(1.0 / (dh[:, None] * dw[None, :]), dtype=x.dtype)
        out = avg_pool_planes(a, win, scale)
        ctx.win, ctx.cnhw, ctx.in_shape, ctx.scale = win, cnhw, x.shape, scale
        return from_planes(out, x.shape[:-2], cnhw)

    @staticmethod
    def backward(ctx, g):
        gx = avg_pool_planes_backward(grad_planes(g, ctx.cnhw), ctx.win, ctx.scale)
        return from_planes(gx, ctx.in_shape[:-2], ctx.cnhw)


# ---- adaptive pooling (windows that do not tile the input) -------------------------------------
def adaptive_bounds(n, o):
    """PyTorch's adaptive windows along one axis: [floor(i n / o), ceil((i + 1) n / o))."""
    i = np.arange(o)
    return (i * n) // o, -((-(i + 1) * n) // o)


def _averaging_matrix(xp, n, o, dtype):
    """(o, n): row i averages the adaptive window i."""
    start, end = adaptive_bounds(n, o)
    cols = np.arange(n)
    inside = (cols[None, :] >= start[:, None]) & (cols[None, :] < end[:, None])
    return xp.asarray(inside / (end - start)[:, None], dtype=dtype)


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
        ah = _averaging_matrix(xp, H, OH, x.dtype)
        aw = _averaging_matrix(xp, W, OW, x.dtype)
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
    The gradient is scattered with one bincount (windows may overlap)."""

    @staticmethod
    def forward(ctx, x, out_hw, return_indices=False):
        xp = array_module(x)
        a, cnhw = as_planes(x)
        B, H, W = a.shape
        OH, OW = out_hw
        hs, he = adaptive_bounds(H, OH)
        ws, we = adaptive_bounds(W, OW)
        rows = [xp.asarray(np.minimum(hs + i, he - 1)) for i in range(int((he - hs).max()))]
        cols = [xp.asarray(np.minimum(ws + j, we - 1)) for j in range(int((we - ws).max()))]
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
        # float64 accumulation inside bincount; the result is cast back to the input's dtype
        gx = xp.bincount(flat.ravel(), weights=gp.ravel(), minlength=B * H * W)
        gx = gx.astype(g.dtype).reshape(B, H, W)
        return from_planes(gx, ctx.in_shape[:-2], ctx.cnhw)
