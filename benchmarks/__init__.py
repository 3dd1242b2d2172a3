"""Side-by-side benchmarks of divenet and PyTorch (``python -m benchmarks``)."""
