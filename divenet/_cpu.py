"""Process-wide CPU settings that must be made before NumPy loads its BLAS, measured on the
project's 2-core AVX-512 machine (see benchmarks/ and docs/performance.md):

- NumPy's bundled OpenBLAS runs its Haswell (AVX2) kernels on AVX-512 CPUs (also when a
  machine-wide ``OPENBLAS_CORETYPE=Haswell`` asks for them, as on the project machines); its
  SkylakeX kernels run large SGEMMs 1.7x faster there (100 -> 170 GFLOP/s on 2 threads) and a
  ResNet-18 training step 15-20% faster, so on a CPU with AVX-512 an unset or AVX2 core type
  is raised to SkylakeX.
- glibc returns every large freed array to the OS and page-faults it back on the next step;
  raising the mmap and trim thresholds keeps a training step's buffers mapped.

``DIVENET_NO_CPU_TUNING=1`` turns both off. Importing NumPy before divenet leaves OpenBLAS's
kernel choice alone (it is made when NumPy loads).
"""
from __future__ import annotations

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
    _tune_malloc()


def _openblas():
    """NumPy's bundled OpenBLAS (found among the loaded libraries), or None."""
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
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    return setter, getter
    return None


def set_blas_threads(n: int) -> bool:
    """Use ``n`` OpenBLAS threads from now on; False where NumPy's BLAS is not OpenBLAS.

    On a machine where other jobs compete for the cores, one thread avoids OpenBLAS's workers
    waiting on each other for a time slice (measured: a LeNet step 3x faster with one competing
    process; 20% slower on a quiet machine). See docs/performance.md."""
    if int(n) < 1:
        raise ValueError(f"set_blas_threads: need at least 1 thread, got {n}")
    found = _openblas()
    if found is None:
        return False
    found[0](int(n))
    return True


def blas_threads():
    """The number of OpenBLAS threads in use, or None where NumPy's BLAS is not OpenBLAS."""
    found = _openblas()
    return None if found is None else int(found[1]())
