"""Process-wide CPU settings that must be made before NumPy loads its BLAS, measured on the
project's 2-core AVX-512 machine (see benchmarks/ and docs/performance.md):

- NumPy's bundled OpenBLAS runs its Haswell (AVX2) kernels on AVX-512 CPUs (also when a
  machine-wide ``OPENBLAS_CORETYPE=Haswell`` asks for them, as on the project machines); its
  SkylakeX kernels run large SGEMMs 1.7x faster there (100 -> 170 GFLOP/s on 2 threads) and a
  ResNet-18 training step 15-20% faster, so on a CPU with AVX-512 an unset or AVX2 core type
  is raised to SkylakeX.
- glibc returns every large freed array to the OS and page-faults it back on the next step;
  raising the mmap and trim thresholds keeps a training step's buffers mapped.
- OpenBLAS's worker threads spin for 2^28 cycles (about 0.1 s) after every GEMM before they
  sleep, so a native kernel's second thread, run between two GEMMs, shared its core with a
  spinning worker and gained nothing (the implicit-GEMM convolution: 1-thread and 2-thread
  times equal). ``OPENBLAS_THREAD_TIMEOUT=20`` (2^20 cycles, about 0.3 ms) lets them sleep
  between a network's ops while keeping them awake through back-to-back GEMMs.

``DIVENET_NO_CPU_TUNING=1`` turns all of it off; a value the user set is kept. Importing NumPy
before divenet leaves OpenBLAS alone (it reads its settings when NumPy loads).
"""
from __future__ import annotations

import functools
import os
import sys


def _has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split())
                    return {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags
    except OSError:
        pass
    return False


def _tune_malloc():
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    ok = libc.mallopt(M_MMAP_THRESHOLD, 1 << 25)  # arrays below 32 MiB come from the heap
    ok &= libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)  # and stay mapped between steps
    return bool(ok)


def configure():
    if os.environ.get("DIVENET_NO_CPU_TUNING") == "1" or not sys.platform.startswith("linux"):
        return
    avx2_types = {"", "haswell", "zen", "sandybridge"}
    if ("numpy" not in sys.modules and os.environ.get("OPENBLAS_CORETYPE", "").lower() in avx2_types
            and _has_avx512()):
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", str(SPIN_LOG2_CYCLES))
    _tune_malloc()


SPIN_LOG2_CYCLES = 20


@functools.cache
def blas_sleeps_soon() -> bool:
    """Whether OpenBLAS's idle workers spin at most 2^SPIN_LOG2_CYCLES cycles (this process's
    environment, as OpenBLAS read it at load; asked once, as every native kernel call asks),
    so that native kernels may use every core."""
    try:
        return int(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "")) <= SPIN_LOG2_CYCLES
    except ValueError:
        return False


@functools.cache
def _openblas():
    """NumPy's bundled OpenBLAS (found among the loaded libraries) as (library, symbol prefix,
    symbol suffix), or None."""
    import ctypes

    import numpy  # noqa: F401  (loads the library)

    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                if (getattr(lib, f"{prefix}_set_num_threads{suffix}", None) is not None
                        and getattr(lib, f"{prefix}_get_num_threads{suffix}", None) is not None):
                    return lib, prefix, suffix
    return None


def _blas_fn(name):
    found = _openblas()
    if found is None:
        return None
    lib, prefix, suffix = found
    return getattr(lib, f"{prefix}_{name}{suffix}", None)


@functools.cache
def _axpy_fns():
    """{dtype: cblas ?axpy} from the bundled OpenBLAS (64-bit integers in the scipy_openblas64
    build, 32-bit otherwise), or {}."""
    import ctypes

    import numpy as np

    found = _openblas()
    if found is None:
        return {}
    lib, prefix, suffix = found
    blas_prefix = "scipy_cblas" if prefix == "scipy_openblas" else "cblas"
    index = ctypes.c_int64 if suffix == "64_" else ctypes.c_int
    fns = {}
    for dtype, letter, scalar in ((np.float32, "s", ctypes.c_float), (np.float64, "d", ctypes.c_double)):
        fn = getattr(lib, f"{blas_prefix}_{letter}axpy{suffix}", None)
        if fn is not None:
            fn.argtypes = [index, scalar, ctypes.c_void_p, index, ctypes.c_void_p, index]
            fn.restype = None
            fns[np.dtype(dtype)] = fn
    return fns


def axpy(a, x, y):
    """``y += a * x`` in place, in one pass: OpenBLAS's ?axpy for contiguous CPU float arrays of
    one dtype (measured: the SGD update of ResNet-18's 11M weights 6.7 -> 1.9 ms), else NumPy
    (or CuPy) with a temporary."""
    import numpy as np

    if (type(x) is np.ndarray and type(y) is np.ndarray and x.dtype == y.dtype and x.shape == y.shape
            and x.flags.c_contiguous and y.flags.c_contiguous and y.flags.writeable):
        fn = _axpy_fns().get(y.dtype)
        if fn is not None:
            fn(y.size, a, x.ctypes.data, 1, y.ctypes.data, 1)
            return y
    y += y.dtype.type(a) * x
    return y


def set_blas_threads(n: int) -> bool:
    """Use ``n`` OpenBLAS threads from now on; False where NumPy's BLAS is not OpenBLAS.

    On a machine where other jobs compete for the cores, one thread avoids OpenBLAS's workers
    waiting on each other for a time slice (measured: a LeNet step 3x faster with one competing
    process; 20% slower on a quiet machine). See docs/performance.md."""
    if int(n) < 1:
        raise ValueError(f"set_blas_threads: need at least 1 thread, got {n}")
    setter = _blas_fn("set_num_threads")
    if setter is None:
        return False
    setter(int(n))
    return True


def blas_threads():
    """The number of OpenBLAS threads in use, or None where NumPy's BLAS is not OpenBLAS."""
    getter = _blas_fn("get_num_threads")
    return None if getter is None else int(getter())
