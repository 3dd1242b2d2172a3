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
