from __future__ import annotations

import math

from .optimizer import Optimizer, zeros_like


class Adam(Optimizer):
    """Adam (L2 weight decay added to the gradient, as PyTorch's Adam); AdamW decouples it."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"{type(self).__name__}: bad hyper-parameters lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)

    def update(self, p, grad, state, group):
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        t = p.array.dtype.type
        if wd and self.decoupled:
            p.array *= t(1 - lr * wd)
        elif wd:
            grad = grad + t(wd) * p.array
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = zeros_like(p.array)
            state["exp_avg_sq"] = zeros_like(p.array)
        state["step"] += 1
        step = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= t(b1)
        m += t(1 - b1) * grad
        v *= t(b2)
        v += t(1 - b2) * grad * grad
        bias1 = 1 - b1 ** step
        bias2 = 1 - b2 ** step
        denom = (v ** t(0.5)) / t(math.sqrt(bias2))
        denom += t(eps)
        p.array -= t(lr / bias1) * m / denom


class AdamW(Adam):
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
