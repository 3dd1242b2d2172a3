"""Array kernels: each op's forward and backward on raw NumPy/CuPy arrays, one file per family.

Nothing here imports Tensor; ``divenet.functional`` checks arguments and applies these ops.
"""
