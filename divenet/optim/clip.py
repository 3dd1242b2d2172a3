from __future__ import annotations

import math

from ..backend import array_module


def clip_grad_norm_(parameters, max_norm, norm_type=2.0):
    """Scale every gradient so that their joint norm is at most ``max_norm``; returns the norm
    before clipping (a float)."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    grads = [p.grad for p in params]
    if norm_type == math.inf:
        total = max(float(array_module(g).abs(g).max()) for g in grads)
    else:
        total = sum(float((array_module(g).abs(g) ** norm_type).sum()) for g in grads) ** (1.0 / norm_type)
    scale = max_norm / (total + 1e-6)
    if scale < 1:
        for p in params:  # new arrays: two parameters may share one gradient array
            p.grad = p.grad * p.grad.dtype.type(scale)
    return total
