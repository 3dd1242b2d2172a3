"""Gradient clipping, in place on ``.grad`` as PyTorch's torch.nn.utils.clip_grad_*_."""
from __future__ import annotations

import math

from ..backend import array_module


def _with_grads(parameters):
    from ..tensor import Tensor

    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients in place so that their joint ``norm_type``-norm is at most
    ``max_norm``; returns that norm before clipping, a 0-d tensor (as PyTorch's)."""
    from ..tensor import Tensor

    params = _with_grads(parameters)
    if not params:
        return Tensor(0.0)
    grads = [p.grad.array for p in params]
    xp = array_module(grads[0])
    norm_type = float(norm_type)
    if norm_type == math.inf:
        total = xp.stack([xp.abs(g).max() for g in grads]).max()
    elif norm_type == 2:
        total = xp.sqrt(sum(xp.vdot(g.ravel(), g.ravel()) for g in grads))  # BLAS dot, no temporary
    else:
        total = sum((xp.abs(g) ** norm_type).sum() for g in grads) ** (1.0 / norm_type)
    total = xp.asarray(total, dtype=grads[0].dtype)
    value = float(total)  # one host sync for all the parameters
    if error_if_nonfinite and not math.isfinite(value):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is "
                           f"{value}; pass error_if_nonfinite=False to clip anyway")
    scale = max_norm / (value + 1e-6)
    if scale < 1:
        for p, g in zip(params, grads):
            g *= g.dtype.type(scale)
            p.grad._version[0] += 1
    return Tensor._make(total, params[0].device, None)


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient in place to [-clip_value, clip_value]."""
    for p in _with_grads(parameters):
        g = p.grad.array
        array_module(g).clip(g, -clip_value, clip_value, out=g)
        p.grad._version[0] += 1
