"""Side-by-side benchmarks of divenet and PyTorch (``python -m benchmarks``)."""

import divenet  # noqa: E402,F401  (first: it picks OpenBLAS's kernels before NumPy loads)
