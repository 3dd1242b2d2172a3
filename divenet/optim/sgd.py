from __future__ import annotations

from .._cpu import axpy
from .optimizer import Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent with PyTorch's momentum, dampening, nesterov and weight decay.
    Updates parameters in place; never writes into ``.grad``."""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening = 0")
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov)

    def update(self, p, grad, state, group):
        lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
        t = p.array.dtype.type
        if wd:
            grad = grad + t(wd) * p.array
        if mom:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= t(mom)
                axpy(1 - group["dampening"], grad, buf)
            grad = grad + t(mom) * buf if group["nesterov"] else buf
        axpy(-lr, grad, p.array)  # one pass (BLAS) instead of a temporary and two
