"""The optional native kernels of divenet/_native.c, through ctypes.

``pip install`` compiles them when the machine has a C compiler (pyproject.toml marks the
extension optional); without them, or with ``DIVENET_NO_NATIVE=1``, every op runs its NumPy
code, which stays the reference the tests compare the kernels with. They take float32 NumPy
arrays laid out (C, H, W, N), batch innermost, as convolutions keep their activations
(divenet/ops/conv.py); callers check :func:`usable` first.

Memory safety: ctypes releases the GIL for the call, so every array whose pointer goes to C is
held in a named local until the call returns (``f(tmp().ctypes.data)`` would free ``tmp()``
before C reads it, and another thread could reuse the memory). The kernels keep no state
between calls, so any number of threads may call them at once.

Why they exist: LeNet's small convolutions (1 -> 6 and 6 -> 16 channels, 5x5) run at
20-150 GFLOP/s as im2col + GEMM, memory-bound on the patch matrix; the same sums computed
directly, vectorized over the images, run at 140-180 GFLOP/s on one core without building it
(docs/performance.md).
"""
from __future__ import annotations

import ctypes
import functools
import os

import numpy as np

_VERSION = 14  # dn_version() of the sources this file expects
_BLOCK = 8  # channels per register tile in the kernels (CB in _native.c)
# the batch from which the batch-last pooling and depthwise kernels fill one 8-float vector of
# images (below, their scalar tails ran slower than NumPy: mobilenet batch-1 inference 1.15x
# PyTorch's time against 0.80x)
MIN_BATCH = 8


@functools.cache
def library():
    """The loaded kernel library, or None."""
    if os.environ.get("DIVENET_NO_NATIVE") == "1":
        return None
    import glob

    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, "_native_lib*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        version = getattr(lib, "dn_version", None)
        if version is None or version() != _VERSION:
            continue  # built from older sources: pip install again to rebuild
        ptr = ctypes.c_void_p
        for prefix in ("dn_", "dn_avx2_") if hasattr(lib, "dn_avx2_conv_forward") else ("dn_",):
            for name, nargs, restype in (("conv_forward", 5, None), ("conv_input_grad", 4, None),
                                         ("conv_weight_grad", 4, ctypes.c_int)):
                fn = getattr(lib, prefix + name)
                fn.argtypes = [ptr] * nargs
                fn.restype = restype
        for name, nargs in (("sigmoid", 3), ("tanh", 3), ("relu", 3), ("sigmoid_grad", 4), ("tanh_grad", 4), ("relu_grad", 4),
                            ("avg_pool", 4), ("avg_pool_grad", 4), ("depthwise_forward", 5),
                            ("depthwise_input_grad", 4), ("depthwise_weight_grad", 4), ("max_pool", 4),
                            ("max_pool_grad", 4)):
            getattr(lib, "dn_" + name).argtypes = [ptr] * nargs
        lib.dn_depthwise_weight_grad.restype = ctypes.c_int
        for name, nargs in (("bn_forward", 9), ("bn_backward", 8), ("depthwise_rows", 6), ("winograd_input", 4),
                            ("winograd_output", 4)):
            getattr(lib, "dn_" + name).argtypes = [ptr] * nargs
        if hasattr(lib, "dn_avx2_gemm_conv"):
            lib.dn_gemm_conv.argtypes = lib.dn_avx2_gemm_conv.argtypes = [ptr] * 6
            lib.dn_gemm_conv_weight_grad.argtypes = lib.dn_avx2_gemm_conv_weight_grad.argtypes = [ptr] * 5
        return lib
    return None


@functools.cache
def isa() -> int:
    """Which copy of the kernels this CPU runs (``dn_isa``): 4 the AVX-512 one, 3 the AVX2 one,
    0 the generic one (another CPU, or no library)."""
    lib = library()
    return 0 if lib is None else lib.dn_isa()


@functools.cache
def gemm_conv_copy() -> int:
    """Which copy of the implicit-GEMM kernel ``gemm_conv`` runs on this CPU: 4 the AVX-512 one
    (``dn_gemm_conv``), 3 the AVX2 one (``dn_avx2_gemm_conv``), 0 none (no library, or a CPU
    without AVX2 and FMA). The library's own check, not :func:`isa`, which tests override to run
    the direct kernels' clones everywhere: this kernel has no generic copy to fall back on."""
    lib = library()
    return lib.dn_isa() if lib is not None and hasattr(lib, "dn_avx2_gemm_conv") else 0


def _kernel(name):
    """The library's kernel ``name`` for this CPU: ``dn_avx2_*`` (8-float tiles) on AVX2 CPUs
    without AVX-512, else ``dn_*`` (16-float tiles; target_clones picks the AVX-512 copy)."""
    return getattr(library(), ("dn_avx2_" if isa() == 3 else "dn_") + name)


@functools.cache
def fast_here() -> bool:
    """Whether this CPU runs the kernels faster than im2col + GEMM: one with AVX-512 (16-float
    tiles) or AVX2 + FMA (the ``dn_avx2_*`` copies, 8-float tiles). The 16-float tiles alone
    spilled on an AVX2-only AMD EPYC (Zen 3) and ran 5-35x slower than the NumPy path (LeNet
    conv1 b256: forward 53 against 10 ms, input gradient 323 against 9 ms); the 8-float ones
    run LeNet's layers in 0.24-0.82x its time there (docs/performance.md). The generic copy
    (other CPUs) is not measured, so there the NumPy path runs. ``DIVENET_NATIVE=1`` takes the
    kernels anyway (the tests check their results on every CPU)."""
    return os.environ.get("DIVENET_NATIVE") == "1" or isa() in (3, 4)


def usable(*arrays) -> bool:
    """Whether the kernels are loaded, fast on this CPU, and every array a float32 NumPy array."""
    return (library() is not None and fast_here()
            and all(type(a) is np.ndarray and a.dtype == np.float32 for a in arrays))


def _geometry(p, h=None, w=None):
    """The int64 geometry array of _native.c from a conv plan (divenet/ops/conv.py ``_Plan``)."""
    macs = p.O * (p.C // p.G) * p.kh * p.kw * p.OH * p.OW * p.N
    return np.array([p.C, p.H if h is None else h, p.W if w is None else w, p.N, p.O, p.kh, p.kw,
                     p.OH, p.OW, p.sh, p.sw, p.ph0, p.pw0, p.dh, p.dw, conv_threads(macs)], dtype=np.int64)


def threads() -> int:
    """How many threads a kernel call splits its work among: every core where OpenBLAS's idle
    workers sleep soon (``_cpu.blas_sleeps_soon``: LeNet's step on 2 cores, Zen 4, 2 kernel
    threads 0.80x the time of one), else the cores OpenBLAS leaves idle plus this one: a worker
    spinning for 0.1 s after each GEMM made a kernel thread on its core slower than none (2
    kernel threads 1.5x the time of one on Zen 4; a LeNet epoch 0.96-0.99x PyTorch's time
    against 0.85x on Zen 3)."""
    from . import _cpu

    n = cores()
    if _cpu.blas_sleeps_soon():
        return n
    return max(1, n - (_cpu.blas_threads() or n) + 1)


# Starting and joining a thread costs about 0.1 ms a call (Zen 4, KVM), so a kernel splits its
# work among threads only from SPLIT_MIN_VALUES floats (elementwise, batch norm, pooling) or
# SPLIT_MIN_MACS multiply-adds (convolutions). Whole models, alternating medians (Zen 4, ms),
# these limits against splitting every call: resnet18 b1 inference 35.5 / 41.7, densenet121
# b1 75.6 / 97.5, mobilenet b1 19.5 / 24.7; training at 224 b8 the same (resnet18 642 / 641,
# mobilenet 311 / 313). Limits of 4M values and 16M multiply-adds lost 4-11% at b8 (mobilenet
# training 346 ms): maps read from memory gain from a second core sooner than a hot-cache
# loop suggests (there, 2 threads lost up to 2M values).
SPLIT_MIN_VALUES = 1 << 18
SPLIT_MIN_MACS = 1 << 22


def split_threads(values) -> int:
    """The threads a kernel over ``values`` floats takes (above)."""
    return threads() if values >= SPLIT_MIN_VALUES else 1


def conv_threads(macs, every_core=False) -> int:
    """The threads a convolution kernel of ``macs`` multiply-adds takes: :func:`threads`, or
    every core (``every_core``), from SPLIT_MIN_MACS."""
    return (cores() if every_core else threads()) if macs >= SPLIT_MIN_MACS else 1


@functools.cache
def cores() -> int:
    """os.cpu_count(), asked once (7 us a call, and a LeNet step asks 9 times)."""
    return os.cpu_count() or 1


def _padded_to_block(a, axis):
    """``a`` contiguous, zero-extended along ``axis`` to a multiple of the kernels' tile."""
    extra = -a.shape[axis] % _BLOCK
    if extra == 0:
        return np.ascontiguousarray(a)
    shape = list(a.shape)
    shape[axis] += extra
    out = np.zeros(shape, dtype=a.dtype)  # C order (np.pad would keep a's memory order)
    out[tuple(slice(0, n) for n in a.shape)] = a
    return out


def conv_forward(xh, w, b, p):
    """xh (C, H, W, N) contiguous, w (O, C, kh, kw), b (O,) or None -> out (O, OH, OW, N)."""
    wt = _padded_to_block(w.transpose(1, 2, 3, 0), 3)
    bias = _padded_to_block(b if b is not None else np.zeros(p.O, np.float32), 0)
    out = np.empty((p.O, p.OH, p.OW, p.N), dtype=np.float32)
    geometry = _geometry(p)  # a named local: a temporary would be freed before C reads it
    _kernel("conv_forward")(xh.ctypes.data, wt.ctypes.data, bias.ctypes.data, out.ctypes.data,
                              geometry.ctypes.data)
    return out


def conv_input_grad(gh, w, p):
    """gh (O, OH, OW, N) contiguous, w (O, C, kh, kw) -> dx (C, H, W, N)."""
    wd = _padded_to_block(w.transpose(0, 2, 3, 1), 3)
    dx = np.empty((p.C, p.H, p.W, p.N), dtype=np.float32)
    geometry = _geometry(p)
    _kernel("conv_input_grad")(gh.ctypes.data, wd.ctypes.data, dx.ctypes.data, geometry.ctypes.data)
    return dx


def conv_weight_grad(xh, gh, p):
    """xh (C, H, W, N), gh (O, OH, OW, N), both contiguous -> dw (O, C, kh, kw), C order.

    The kernel reads the input with its padding written out: every tap of every window is then
    an offset into real memory."""
    hp = max(p.ph0 + p.H, (p.OH - 1) * p.sh + (p.kh - 1) * p.dh + 1)
    wp = max(p.pw0 + p.W, (p.OW - 1) * p.sw + (p.kw - 1) * p.dw + 1)
    if (hp, wp) == (p.H, p.W):
        xpad = xh
    else:
        xpad = np.zeros((p.C, hp, wp, p.N), dtype=np.float32)
        xpad[:, p.ph0:p.ph0 + p.H, p.pw0:p.pw0 + p.W] = xh
    dwt = np.empty((p.C, p.kh, p.kw, p.O), dtype=np.float32)
    geometry = _geometry(p, hp, wp)
    if _kernel("conv_weight_grad")(xpad.ctypes.data, gh.ctypes.data, dwt.ctypes.data,
                                     geometry.ctypes.data) != 0:
        raise MemoryError(f"conv2d weight gradient: no memory for {p.C * p.kh * p.kw} tap offsets")
    return np.ascontiguousarray(dwt.transpose(3, 0, 1, 2))




GEMM_MR = 12  # output channels per weight block of the implicit GEMM (GEMM_MR in _native.c)


def _phase_buffer(xh, p):
    """The implicit GEMM's view of the input xh (C, H, W, N) of plan ``p``: (xq, off, geometry).

    xq holds the input's stride phases, zero-padded: phase (a, b) holds the padded rows a,
    a + sh, ... and columns b, b + sw, ..., so every tap of an output row reads one contiguous
    run of (output width x batch) floats at a fixed offset from the row's start: off[k] for
    tap k = (c, i, j) of a group, plus oh * row. geometry is the kernels' int64 array
    {G, O/G, K, OH, L = OW * N, row, group stride, P = OH * L, threads}."""
    C, N, G = p.C, p.N, p.G
    cg = C // G
    hp = max(p.ph0 + p.H, (p.OH - 1) * p.sh + (p.kh - 1) * p.dh + 1)
    wp = max(p.pw0 + p.W, (p.OW - 1) * p.sw + (p.kw - 1) * p.dw + 1)
    hq, wq = -(-hp // p.sh), -(-wp // p.sw)
    plane = hq * wq * N
    flat = np.zeros(p.sh * p.sw * C * plane + 32, dtype=np.float32)  # 32: a tile's overreach
    xq = flat[:-32].reshape(p.sh, p.sw, C, hq, wq, N)
    for a in range(p.sh):  # input row r is padded row r + ph0: phase (r + ph0) % sh, row // sh
        r0 = (a - p.ph0) % p.sh
        for c in range(p.sw):
            s0 = (c - p.pw0) % p.sw
            part = xh[:, r0::p.sh, s0::p.sw]
            t0, u0 = (r0 + p.ph0) // p.sh, (s0 + p.pw0) // p.sw
            xq[a, c, :, t0:t0 + part.shape[1], u0:u0 + part.shape[2]] = part
    i = np.arange(p.kh) * p.dh
    j = np.arange(p.kw) * p.dw
    tap = ((i[:, None] % p.sh) * p.sw + j[None, :] % p.sw) * C * plane + (i[:, None] // p.sh) * wq * N \
        + (j[None, :] // p.sw) * N
    off = (np.arange(cg)[:, None, None] * plane + tap[None]).reshape(-1).astype(np.int64)
    # every core: it stands in for OpenBLAS's GEMM, which has them all (docs/performance.md)
    geometry = np.array([G, p.O // G, cg * p.kh * p.kw, p.OH, p.OW * N, wq * N, cg * plane,
                         p.OH * p.OW * N, conv_threads(p.O * cg * p.kh * p.kw * p.OH * p.OW * N, every_core=True)],
                        dtype=np.int64)
    return flat, off, geometry


def gemm_conv(xh, w, b, p):
    """The convolution of plan ``p`` by the implicit GEMM (the copy :func:`gemm_conv_copy` names):
    xh (C, H, W, N) contiguous, w (O, C/G, kh, kw), b (O,) or None -> out (O, OH, OW, N)."""
    G, O = p.G, p.O
    og = O // G
    xq, off, geometry = _phase_buffer(xh, p)
    K = int(geometry[2])
    # the weights per group in blocks of GEMM_MR channels (the last rounded up to 4 with zero
    # rows), each block tap-major, (K, rows): written once, straight into place
    full, rest = divmod(og, GEMM_MR)
    tail = -(-rest // 4) * 4
    opad = full * GEMM_MR + tail
    wr = w.reshape(G, og, K)
    wpk = np.empty((G, opad * K), dtype=np.float32)
    split = full * GEMM_MR
    wpk[:, :split * K].reshape(G, full, K, GEMM_MR)[...] = wr[:, :split].reshape(G, full, GEMM_MR, K).transpose(0, 1, 3, 2)
    last = wpk[:, split * K:].reshape(G, K, tail)
    last[..., :rest] = wr[:, split:].transpose(0, 2, 1)
    last[..., rest:] = 0
    bias = np.zeros((G, opad), dtype=np.float32)
    if b is not None:
        bias[:, :og] = b.reshape(G, og)
    out = np.empty((O, p.OH, p.OW, p.N), dtype=np.float32)
    lib = library()
    kernel = lib.dn_gemm_conv if gemm_conv_copy() == 4 else lib.dn_avx2_gemm_conv
    kernel(xq.ctypes.data, wpk.ctypes.data, bias.ctypes.data, out.ctypes.data, off.ctypes.data,
           geometry.ctypes.data)
    return out


def gemm_conv_weight_grad(xh, gh, p):
    """The weight gradient of plan ``p`` by the implicit GEMM, without a patch matrix:
    xh (C, H, W, N) and gh (O, OH, OW, N) contiguous -> dw (O, C/G, kh, kw)."""
    xq, off, geometry = _phase_buffer(xh, p)
    dw = np.zeros((p.O, p.C // p.G, p.kh, p.kw), dtype=np.float32)
    lib = library()
    kernel = lib.dn_gemm_conv_weight_grad if gemm_conv_copy() == 4 else lib.dn_avx2_gemm_conv_weight_grad
    kernel(xq.ctypes.data, gh.ctypes.data, dw.ctypes.data, off.ctypes.data, geometry.ctypes.data)
    return dw


# ---- Winograd F(2x2, 3x3) transforms (divenet/ops/conv.py runs the GEMM between them) -------
def _winograd_geometry(c, shape, pads, tiles_w, rows, out_hw):
    C, H, W, N = shape
    return np.array([c, H, W, N, pads[0], pads[1], tiles_w, rows[0], rows[1], out_hw[0], out_hw[1],
                     split_threads(16 * c * (rows[1] - rows[0]) * tiles_w * N)], dtype=np.int64)


def winograd_input(xh, v, pads, tiles_w, rows):
    """V (16, C, tiles) of tile rows [rows[0], rows[1]) into ``v`` (contiguous, that size) from
    xh (C, H, W, N) contiguous, padded by ``pads`` (top, left) and zeros beyond."""
    zeros = np.zeros(xh.shape[3], dtype=np.float32)
    geometry = _winograd_geometry(xh.shape[0], xh.shape, pads, tiles_w, rows, (0, 0))
    library().dn_winograd_input(xh.ctypes.data, zeros.ctypes.data, v.ctypes.data, geometry.ctypes.data)


def winograd_output(m, b, y, tiles_w, rows):
    """The output rows of tile rows [rows[0], rows[1]) into y (O, OH, OW, N) contiguous from M
    (16, O, tiles) contiguous, plus b (O,) or None."""
    O, OH, OW, N = y.shape
    geometry = _winograd_geometry(O, (O, 0, 0, N), (0, 0), tiles_w, rows, (OH, OW))
    b = None if b is None else np.ascontiguousarray(b)
    library().dn_winograd_output(m.ctypes.data, _ptr(b), y.ctypes.data, geometry.ctypes.data)


def max_pool(xh, kernel, stride, padding, dilation, out_hw, need_idx):
    """Window maxima of xh (C, H, W, N) -> (out (C, OH, OW, N), the uint8 tap of each first
    maximum or None), as ops/pool.py's ``max_pool_batch_last``; None where the kernel cannot
    run (more than 255 taps, or not a contiguous float32 NumPy array)."""
    if not usable(xh) or not xh.flags.c_contiguous or kernel[0] * kernel[1] > 255:
        return None
    C, _, _, N = xh.shape
    out = np.empty((C, *out_hw, N), dtype=np.float32)
    idx = np.empty(out.shape, dtype=np.uint8) if need_idx else None
    geometry = _pool_geometry(xh.shape, kernel, stride, padding, dilation, out_hw)
    library().dn_max_pool(xh.ctypes.data, out.ctypes.data, None if idx is None else idx.ctypes.data,
                          geometry.ctypes.data)
    return out, idx


def max_pool_grad(gh, idx, kernel, stride, padding, dilation, in_hw):
    """The input gradient (C, H, W, N) of :func:`max_pool` from gh (C, OH, OW, N), or None."""
    if not usable(gh) or idx is None or idx.dtype != np.uint8 or not idx.flags.c_contiguous:
        return None
    gh = np.ascontiguousarray(gh)
    C, OH, OW, N = gh.shape
    gx = np.empty((C, *in_hw, N), dtype=np.float32)
    geometry = _pool_geometry((C, *in_hw, N), kernel, stride, padding, dilation, (OH, OW))
    library().dn_max_pool_grad(gh.ctypes.data, idx.ctypes.data, gx.ctypes.data, geometry.ctypes.data)
    return gx


DEPTHWISE_MAX_TAPS = 49  # DW_MAX_TAPS in _native.c


def depthwise_forward(xh, w, b, p):
    """A depthwise convolution (groups == C == O): xh (C, H, W, N) contiguous, w (C, 1, kh, kw),
    b (C,) or None -> out (C, OH, OW, N)."""
    wc = np.ascontiguousarray(w, dtype=np.float32)
    bias = None if b is None else np.ascontiguousarray(b, dtype=np.float32)
    out = np.empty((p.C, p.OH, p.OW, p.N), dtype=np.float32)
    geometry = _geometry(p)
    library().dn_depthwise_forward(xh.ctypes.data, wc.ctypes.data, None if bias is None else bias.ctypes.data,
                                   out.ctypes.data, geometry.ctypes.data)
    return out


def depthwise_rows(xh, w, b, p):
    """The same convolution as :func:`depthwise_forward`, vectorized along output rows (width x
    batch) instead of images: for batches under MIN_BATCH."""
    xq, off, geometry = _phase_buffer(xh, p)
    wc = np.ascontiguousarray(w, dtype=np.float32)
    bias = None if b is None else np.ascontiguousarray(b, dtype=np.float32)
    out = np.empty((p.C, p.OH, p.OW, p.N), dtype=np.float32)
    library().dn_depthwise_rows(xq.ctypes.data, wc.ctypes.data, _ptr(bias), out.ctypes.data, off.ctypes.data,
                                geometry.ctypes.data)
    return out


def depthwise_input_grad(gh, w, p):
    """gh (C, OH, OW, N) contiguous, w (C, 1, kh, kw) -> dx (C, H, W, N)."""
    wc = np.ascontiguousarray(w, dtype=np.float32)
    dx = np.empty((p.C, p.H, p.W, p.N), dtype=np.float32)
    geometry = _geometry(p)
    library().dn_depthwise_input_grad(gh.ctypes.data, wc.ctypes.data, dx.ctypes.data, geometry.ctypes.data)
    return dx


def depthwise_weight_grad(xh, gh, p):
    """xh (C, H, W, N), gh (C, OH, OW, N), both contiguous -> dw (C, 1, kh, kw)."""
    dw = np.empty((p.C, 1, p.kh, p.kw), dtype=np.float32)
    geometry = _geometry(p)
    if library().dn_depthwise_weight_grad(xh.ctypes.data, gh.ctypes.data, dw.ctypes.data, geometry.ctypes.data):
        raise ValueError(f"depthwise_weight_grad: at most {DEPTHWISE_MAX_TAPS} taps, got {p.kh * p.kw}")
    return dw


def _dense(a):
    """Whether ``a`` covers one block of memory with positive strides, in any axis order (a
    batch-last view of a convolution's output is): elementwise kernels then run over it flat."""
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return True
    order = sorted(range(a.ndim), key=lambda i: -a.strides[i])
    return a.transpose(order).flags.c_contiguous and min(a.strides) > 0


def elementwise(name, *arrays, out=None):
    """``out = name(*arrays)`` by the kernel ``dn_<name>``: "sigmoid", "tanh" or "relu" of x, or
    "sigmoid_grad" / "tanh_grad" / "relu_grad" of (y, g); ``out`` (may be an input) or a new
    array in the first input's memory order. None when the kernel cannot run on these arrays
    (no library, not float32 NumPy, or not dense in one common layout): the caller runs NumPy."""
    first = arrays[0]
    given = arrays if out is None else (*arrays, out)
    if not usable(*given) or any(a.shape != first.shape for a in given):
        return None
    if first.size and any(a.strides != first.strides or not _dense(a) for a in given):
        return None
    if out is None:
        out = np.empty_like(first)  # the same strides as a dense input
    if first.size == 0:
        return out
    split = split_threads(first.size)
    size = np.array([first.size, split], dtype=np.int64)  # named: held until C returns
    getattr(library(), "dn_" + name)(*(a.ctypes.data for a in arrays), out.ctypes.data, size.ctypes.data)
    return out


# ---- batch norm over (C, L), each channel's values contiguous (ops/norm.py) --------------------
def _ptr(a):
    return None if a is None else a.ctypes.data


def bn_forward(u, weight, bias, eps, y, mean=None, invstd=None):
    """Batch norm of u (C, L) contiguous into y: training (no mean given) from the batch's
    statistics, returned as (mean, biased var, invstd); eval from the given mean and invstd.
    weight and bias may be None. One rounding an operation, as ops/norm.py's NumPy blocks."""
    C, L = u.shape
    stats = np.empty((3, C), dtype=np.float32)
    geometry = np.array([C, L, split_threads(C * L), mean is None, 0, 0], dtype=np.int64)
    eps = np.array([eps], dtype=np.float32)
    library().dn_bn_forward(u.ctypes.data, _ptr(weight), _ptr(bias), _ptr(mean), _ptr(invstd), y.ctypes.data,
                            stats.ctypes.data, eps.ctypes.data, geometry.ctypes.data)
    return stats[0], stats[1], stats[2]


def bn_backward(u, g, mean, invstd, weight, training, dx=None, sums=True):
    """Batch norm's backward over u, g (C, L) contiguous from the saved mean and invstd: writes
    the input gradient into ``dx`` (may be g; None: not computed) and returns (sum(g),
    sum(g xhat)) when ``sums`` (else None): the bias and weight gradients."""
    C, L = u.shape
    out = np.empty((2, C), dtype=np.float32)
    geometry = np.array([C, L, split_threads(C * L), training, sums, dx is not None], dtype=np.int64)
    library().dn_bn_backward(u.ctypes.data, g.ctypes.data, mean.ctypes.data, invstd.ctypes.data, _ptr(weight),
                             _ptr(dx), out.ctypes.data, geometry.ctypes.data)
    return (out[0], out[1]) if sums else None


def _pool_geometry(shape, kernel, stride, padding, dilation, out_hw):
    """The geometry array of a pooling of a (C, H, W, N) buffer (a convolution's, O = C)."""
    C, H, W, N = shape
    return np.array([C, H, W, N, C, *kernel, *out_hw, *stride, *padding, *dilation, split_threads(C * H * W * N)],
                    dtype=np.int64)


def _avg_geometry(win, shape):
    return _pool_geometry(shape, (win.kh, win.kw), (win.sh, win.sw), (win.ph, win.pw), (1, 1), (win.OH, win.OW))


def _pool_scale(scale, win):
    """The (OH, OW) divisors' reciprocals as one float32 array (a scalar spread out)."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(scale, dtype=np.float32), (win.OH, win.OW)))


def avg_pool(xh, win, scale):
    """Window means of xh (C, H, W, N) for ops/pool.py's ``Windows`` (no dilation); ``scale``
    a scalar or (OH, OW) array. None where the kernel cannot run (the caller runs NumPy)."""
    if not usable(xh) or not xh.flags.c_contiguous:
        return None
    C, _, _, N = xh.shape
    out = np.empty((C, win.OH, win.OW, N), dtype=np.float32)
    s, geometry = _pool_scale(scale, win), _avg_geometry(win, xh.shape)  # named: held until C returns
    library().dn_avg_pool(xh.ctypes.data, s.ctypes.data, out.ctypes.data, geometry.ctypes.data)
    return out


def avg_pool_grad(gh, win, scale):
    """The input gradient (C, H, W, N) of :func:`avg_pool` from gh (C, OH, OW, N), or None."""
    if not usable(gh):
        return None
    gh = np.ascontiguousarray(gh)  # the small side (a quarter of LeNet's inputs)
    C, _, _, N = gh.shape
    gx = np.empty((C, win.H, win.W, N), dtype=np.float32)
    s, geometry = _pool_scale(scale, win), _avg_geometry(win, (C, win.H, win.W, N))
    library().dn_avg_pool_grad(gh.ctypes.data, s.ctypes.data, gx.ctypes.data, geometry.ctypes.data)
    return gx
