"""Gradient clipping, in place on ``.grad`` as PyTorch's torch.nn.utils.clip_grad_*_."""
from __future__ import annotations

import math

import numpy as np

from ..backend import array_module


def _with_grads(parameters):
    from ..tensor import Tensor

    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients in place so that their joint ``norm_type``-norm is at most
    ``max_norm``; returns that norm before clipping, a 0-d tensor (as PyTorch's).

    On the CPU the norm is read (free there) and gradients within the bound are left alone.
    On a device nothing is read back: the per-parameter norms are stacked and reduced on the
    device and every gradient is multiplied by min(max_norm / (norm + 1e-6), 1), as PyTorch
    does; only ``error_if_nonfinite=True`` reads the norm (one host sync)."""
    from ..tensor import Tensor

    params = _with_grads(parameters)
    if not params:
        return Tensor(0.0)
    grads = [p.grad.array for p in params]
    xp = array_module(grads[0])
    dtype = grads[0].dtype
    norm_type = float(norm_type)
    if norm_type == math.inf:
        total = xp.stack([xp.abs(g).max() for g in grads]).max()
    elif norm_type == 2:
        # BLAS dot per parameter (no temporary), one reduction over them
        total = xp.sqrt(xp.stack([xp.vdot(g.ravel(), g.ravel()) for g in grads]).sum())
    else:
        total = xp.stack([(xp.abs(g) ** norm_type).sum() for g in grads]).sum() ** (1.0 / norm_type)
    total = xp.asarray(total, dtype=dtype)
    on_cpu = xp is np
    if error_if_nonfinite or on_cpu:
        value = float(total)  # one host sync for all the parameters
        if error_if_nonfinite and not math.isfinite(value):
            raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is "
                               f"{value}; pass error_if_nonfinite=False to clip anyway")
    if on_cpu:
        scale = max_norm / (value + 1e-6)
        if scale >= 1:
            return Tensor._make(total, params[0].device, None)
        scale = dtype.type(scale)
    else:
        scale = xp.minimum(dtype.type(max_norm) / (total + dtype.type(1e-6)), dtype.type(1))
    for p, g in zip(params, grads):
        g *= scale
        p.grad._version[0] += 1
    return Tensor._make(total, params[0].device, None)


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient in place to [-clip_value, clip_value]."""
    for p in _with_grads(parameters):
        g = p.grad.array
        array_module(g).clip(g, -clip_value, clip_value, out=g)
        p.grad._version[0] += 1
