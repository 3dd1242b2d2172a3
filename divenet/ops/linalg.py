"""Matrix products."""
from __future__ import annotations

from ..autograd import Function
from .elementwise import unbroadcast


def _swap_last(a):
    return a.swapaxes(-1, -2) if a.ndim >= 2 else a


class MatMul(Function):
    """``a @ b`` with NumPy's rules for 1-D operands and batch broadcasting."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a if ctx.needs_input_grad[1] else None,
                              b if ctx.needs_input_grad[0] else None)
        ctx.shapes = (a.shape, b.shape)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        sa, sb = ctx.shapes
        ga = gb = None
        if ctx.needs_input_grad[0]:
            if len(sb) == 1:
                ga = g[..., None] * b if len(sa) > 1 else g * b
            else:
                ga = (g[..., None, :] if len(sa) == 1 else g) @ _swap_last(b)
                if len(sa) == 1:
                    ga = ga[..., 0, :]
            ga = unbroadcast(ga, sa)
        if ctx.needs_input_grad[1]:
            if len(sa) == 1:
                gb = a[:, None] * (g[..., None, :] if len(sb) > 1 else g) if len(sb) > 1 else g * a
            else:
                gb = _swap_last(a) @ (g[..., None] if len(sb) == 1 else g)
                if len(sb) == 1:
                    gb = gb[..., 0]
            gb = unbroadcast(gb, sb)
        return ga, gb
