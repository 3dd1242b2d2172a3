"""Loss kernels: fused cross-entropy (log-softmax + NLL + label smoothing in one node), NLL on
log-probabilities, mean squared error, L1, Huber / smooth L1, binary cross-entropy on
probabilities and on logits.

Class-index losses take logits or log-probabilities of shape (N, C, *rest) and int targets of
shape (N, *rest); ``(C,)`` with a 0-d target is handled as a batch of one. The class axis is 1.
"""
from __future__ import annotations

import contextlib

import numpy as np

from ..autograd import Function
from ..backend import array_module
from .activation import shifted_exp, sum_keepdims
from .elementwise import unbroadcast


def _flat_targets(xp, y, n_cls):
    """Flat positions of x[n, y[n, *r], *r] in a C-contiguous x (N, C, *rest), for targets y
    (N, *rest): a 1-D take/put on them is several times faster than a multi-array fancy index
    (0.2 ms against 1 ms for (256, 6, 28, 28)). Every position appears once."""
    n = y.shape[0]
    if y.ndim == 1:
        flat = xp.arange(n) * n_cls
        flat += y
        return flat
    r = y.size // n if n else 0
    flat = y * r
    flat += ((xp.arange(n) * (n_cls * r))[:, None] + xp.arange(r)).reshape(y.shape)
    return flat


def _class_targets(ctx, xp, y, n_cls, weight, ignore_index, dtype):
    """Shared preparation of integer class targets. Sets on ``ctx``: ``flat`` (target positions
    in the C-contiguous input), ``valid`` (None when nothing is ignored, else a boolean mask of
    y's shape), ``wy`` (None without class weights, else weight[y] zeroed where ignored) and
    ``denom`` (the 'mean' divisor: the number of counted targets, or the sum of their
    weights; on a device a 0-d device array in ``dtype``)."""
    y = y.astype(xp.int64, copy=False)  # uint8 / int32 targets: no overflow in the positions
    ignored = y == ignore_index
    # On the CPU a batch without ignored targets skips the mask; a device always applies it,
    # as PyTorch's CUDA kernels do, since asking whether any target is ignored is a host sync.
    if xp is not np or (ignored.size and ignored.any()):
        valid = ~ignored
        y = xp.where(ignored, 0, y)
    else:
        valid = None
    ctx.flat = _flat_targets(xp, y, n_cls)
    ctx.valid = valid
    if weight is None:
        ctx.wy = None
        if valid is None:
            ctx.denom = y.size
        elif xp is np:
            ctx.denom = int(valid.sum())
        else:  # stays on the device, in the loss's dtype (a count below 2^24 is exact in float32)
            ctx.denom = valid.sum(dtype=dtype)
    else:
        wy = weight[y]
        if valid is not None:
            wy = xp.where(valid, wy, weight.dtype.type(0))
        ctx.wy = wy
        ctx.denom = wy.sum()


def _reduce(xp, loss, reduction, denom):
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    return _safe_divide(xp, total, denom, loss.dtype)


def _safe_divide(xp, total, denom, dtype):
    """total / denom in ``dtype``; 0 / 0 is NaN (as in PyTorch) without a NumPy warning."""
    if isinstance(denom, (int, float)):
        if denom == 0:
            return xp.asarray(np.nan, dtype=dtype)
        return total / dtype.type(denom)
    with np.errstate(invalid="ignore", divide="ignore"):  # NumPy's (and sim's) warning; CuPy has none
        return total / denom


def _expand(v):
    """Per-target values (shape of y) broadcast over the class axis 1; 0-d stays 0-d."""
    return v if v.ndim == 0 else v[:, None]


def _grad_scale(ctx, g):
    """d(reduced loss) / d(per-target loss): g for 'sum' and 'none', g / denom for 'mean'."""
    if ctx.reduction != "mean":
        return g
    return _safe_divide(array_module(g), g, ctx.denom, g.dtype)


def _as_batch(x, y):
    """(C,) logits with a 0-d target -> a batch of one."""
    if x.ndim == 1:
        return x[None], y.reshape(1), True
    return x, y, False


class CrossEntropy(Function):
    """cross_entropy with integer class targets, fused: one pass builds the softmax that the
    backward needs, the loss comes from the log-sum-exp, and the gradient is
    scale * (softmax * sum(q) - q) for the (smoothed, weighted) target distribution q.

    Per target (row i, class y): with eps = label_smoothing and weights w (all 1 without),
        loss_i = (1 - eps) w[y] (lse_i - x_iy) + eps / C * sum_c w[c] (lse_i - x_ic)
    'mean' divides the sum by sum_i w[y_i] over targets that are not ``ignore_index``."""

    @staticmethod
    def forward(ctx, x, y, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0):
        xp = array_module(x)
        dt = x.dtype.type
        x, y, squeeze = _as_batch(x, y)
        x = xp.ascontiguousarray(x)  # for the flat target positions; a no-op for usual logits
        n_cls = x.shape[1]
        eps = float(label_smoothing)
        ctx.reduction, ctx.eps, ctx.squeeze = reduction, eps, squeeze
        _class_targets(ctx, xp, y, n_cls, weight, ignore_index, x.dtype)

        p, s, shift = shifted_exp(x, 1)
        p /= s  # the softmax, kept for backward
        lse = xp.log(s).reshape(y.shape)
        lse += shift if shift.ndim == 0 else shift.reshape(y.shape)  # log-sum-exp per target
        loss = lse - xp.take(x.reshape(-1), ctx.flat)  # -log p[target]
        if ctx.wy is not None:
            loss *= ctx.wy
        if eps:
            loss *= dt(1 - eps)
            if weight is None:
                smooth = sum_keepdims(x, 1).reshape(y.shape)  # -mean_c log p_c = lse - mean_c x_c
                smooth *= dt(-1 / n_cls)
                smooth += lse
            else:
                smooth = lse * weight.sum()
                smooth -= xp.tensordot(weight, x, axes=([0], [1]))
                smooth *= dt(1 / n_cls)
            smooth *= dt(eps)
            loss += smooth
        if ctx.valid is not None:
            loss = xp.where(ctx.valid, loss, dt(0))
        ctx.weight = weight
        ctx.save_for_backward(p)
        out = _reduce(xp, loss, reduction, ctx.denom)
        return out.reshape(()) if squeeze and reduction == "none" else out

    @staticmethod
    def backward(ctx, g):
        (p,) = ctx.saved
        xp = array_module(p)
        dt = p.dtype.type
        eps, n_cls, weight, valid = ctx.eps, p.shape[1], ctx.weight, ctx.valid
        if ctx.squeeze and g.ndim == 0 and ctx.reduction == "none":
            g = g.reshape(1)
        s = _grad_scale(ctx, g)
        if valid is not None:
            s = xp.where(valid, s, dt(0))  # per target from here on
        if weight is None:
            total = s  # sum of the target distribution is 1 per counted target
            onehot = s * dt(1 - eps) if eps else s
        else:
            onehot = s * ctx.wy
            if eps:
                onehot *= dt(1 - eps)
            total = onehot + s * (weight.sum() * dt(eps / n_cls)) if eps else onehot
        gx = p * _expand(total)  # C-contiguous like p
        if eps:
            uniform = _expand(s * dt(eps / n_cls))
            if weight is not None:
                uniform = uniform * weight.reshape((1, n_cls) + (1,) * (p.ndim - 2))
            gx -= uniform
        flat_gx = gx.reshape(-1)
        flat_gx[ctx.flat] -= onehot
        if ctx.squeeze:
            gx = gx[0]
        return gx, None, None


class SoftCrossEntropy(Function):
    """cross_entropy with class-probability targets of the input's shape:
        loss_i = -sum_c w[c] q_ic log p_ic,   q = (1 - eps) target + eps / C
    'mean' divides by the number of rows (N * prod(rest)). Differentiable in both inputs."""

    @staticmethod
    def forward(ctx, x, target, weight=None, reduction="mean", label_smoothing=0.0):
        xp = array_module(x)
        dt = x.dtype.type
        squeeze = x.ndim == 1
        if squeeze:
            x, target = x[None], target[None]
        n_cls = x.shape[1]
        eps = float(label_smoothing)
        wb = None if weight is None else weight.reshape((1, n_cls) + (1,) * (x.ndim - 2))
        q = target * dt(1 - eps) + dt(eps / n_cls) if eps else target
        if wb is not None:
            q = q * wb
        _, s, shift = shifted_exp(x, 1)
        lse = xp.log(s)
        lse += shift
        logp = x - lse
        loss = -(q * logp).sum(axis=1)
        ctx.reduction, ctx.eps, ctx.squeeze, ctx.denom = reduction, eps, squeeze, loss.size
        ctx.wb = wb
        ctx.save_for_backward(logp, q)
        out = _reduce(xp, loss, reduction, ctx.denom)
        return out.reshape(()) if squeeze and reduction == "none" else out

    @staticmethod
    def backward(ctx, g):
        logp, q = ctx.saved
        xp = array_module(logp)
        dt = logp.dtype.type
        if ctx.squeeze and g.ndim == 0 and ctx.reduction == "none":
            g = g.reshape(1)
        s = _expand(_grad_scale(ctx, g))
        gx = gt = None
        if ctx.needs_input_grad[0]:
            gx = xp.exp(logp)
            gx *= q.sum(axis=1, keepdims=True)
            gx -= q
            gx *= s
        if ctx.needs_input_grad[1]:
            gt = logp * (-s * dt(1 - ctx.eps))
            if ctx.wb is not None:
                gt *= ctx.wb
        if ctx.squeeze:
            gx = None if gx is None else gx[0]
            gt = None if gt is None else gt[0]
        return gx, gt, None


class NLLLoss(Function):
    """nll_loss on log-probabilities: loss_i = -w[y_i] x[i, y_i]; 'mean' divides by the sum of
    the counted targets' weights. Backward scatters -scale * w[y] at the targets."""

    @staticmethod
    def forward(ctx, x, y, weight=None, reduction="mean", ignore_index=-100):
        xp = array_module(x)
        dt = x.dtype.type
        x, y, squeeze = _as_batch(x, y)
        x = xp.ascontiguousarray(x)
        ctx.reduction, ctx.squeeze, ctx.shape, ctx.dtype = reduction, squeeze, x.shape, x.dtype
        _class_targets(ctx, xp, y, x.shape[1], weight, ignore_index, x.dtype)
        loss = -xp.take(x.reshape(-1), ctx.flat)
        if ctx.wy is not None:
            loss *= ctx.wy
        if ctx.valid is not None:
            loss = xp.where(ctx.valid, loss, dt(0))
        out = _reduce(xp, loss, reduction, ctx.denom)
        return out.reshape(()) if squeeze and reduction == "none" else out

    @staticmethod
    def backward(ctx, g):
        xp = array_module(g)
        dt = g.dtype.type
        if ctx.squeeze and g.ndim == 0 and ctx.reduction == "none":
            g = g.reshape(1)
        s = -_grad_scale(ctx, g)
        if ctx.wy is not None:
            s = s * ctx.wy
        if ctx.valid is not None:
            s = xp.where(ctx.valid, s, dt(0))
        gx = xp.zeros(ctx.shape, dtype=ctx.dtype)
        gx.reshape(-1)[ctx.flat] = s
        if ctx.squeeze:
            gx = gx[0]
        return gx, None, None


class MSELoss(Function):
    """(input - target)^2, reduced; inputs broadcast against each other."""

    @staticmethod
    def forward(ctx, a, b, reduction="mean"):
        xp = array_module(a)
        d = a - b
        ctx.shapes, ctx.reduction, ctx.denom = (a.shape, b.shape), reduction, d.size
        ctx.save_for_backward(d)
        if reduction == "none":
            return d * d
        flat = d.ravel(order="K")  # a view: d is a fresh array, dense in memory order
        total = xp.dot(flat, flat)
        return total if reduction == "sum" else _safe_divide(xp, total, d.size, d.dtype)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved
        dt = d.dtype.type
        s = _grad_scale(ctx, g)
        return _pair_grads(ctx, d * (s * dt(2)))


def _pair_grads(ctx, gd):
    """Gradients of an elementwise loss of (a - b) for d(loss)/d(a) = gd, unbroadcast."""
    sa, sb = ctx.shapes
    need = ctx.needs_input_grad
    return (unbroadcast(gd, sa) if need[0] else None,
            unbroadcast(-gd, sb) if need[1] else None)


class L1Loss(Function):
    """|input - target|, reduced; gradient sign(input - target) (0 at 0, as in PyTorch)."""

    @staticmethod
    def forward(ctx, a, b, reduction="mean"):
        xp = array_module(a)
        d = a - b
        ctx.shapes, ctx.reduction, ctx.denom = (a.shape, b.shape), reduction, d.size
        ctx.save_for_backward(d)
        return _reduce(xp, xp.abs(d), reduction, d.size)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved
        gd = array_module(d).sign(d)
        gd *= _grad_scale(ctx, g)
        return _pair_grads(ctx, gd)


class HuberLoss(Function):
    """scale * (0.5 d^2 if |d| < delta else delta (|d| - 0.5 delta)), d = input - target;
    gradient scale * clip(d, -delta, delta). huber_loss is scale 1; smooth_l1_loss(beta) is
    delta = beta, scale = 1 / beta."""

    @staticmethod
    def forward(ctx, a, b, reduction="mean", delta=1.0, scale=1.0):
        xp = array_module(a)
        dt = a.dtype.type
        d = a - b
        ctx.shapes, ctx.reduction, ctx.denom = (a.shape, b.shape), reduction, d.size
        ctx.delta, ctx.scale = delta, scale
        ctx.save_for_backward(d)
        ad = xp.abs(d)
        loss = xp.where(ad < dt(delta), dt(0.5) * d * d, dt(delta) * (ad - dt(0.5 * delta)))
        if scale != 1.0:
            loss *= dt(scale)
        return _reduce(xp, loss, reduction, d.size)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved
        dt = d.dtype.type
        gd = array_module(d).clip(d, dt(-ctx.delta), dt(ctx.delta))
        gd *= _grad_scale(ctx, g) * dt(ctx.scale) if ctx.scale != 1.0 else _grad_scale(ctx, g)
        return _pair_grads(ctx, gd)


def _weighted(loss, weight):
    return loss if weight is None else loss * weight


class BCEWithLogits(Function):
    """Binary cross-entropy on logits x with targets y in [0, 1], computed stably:
        loss = (1 - y) x + (1 + (p - 1) y) softplus(-x),  softplus(-x) = log1p(exp(-|x|)) + max(-x, 0)
    for ``pos_weight`` p (1 without), times ``weight`` (both broadcast against x; constants).
    d/dx = (1 - y) - (1 + (p - 1) y) (1 - sigmoid(x));  d/dy = -x + (p - 1) softplus(-x)."""

    @staticmethod
    def forward(ctx, x, y, weight=None, pos_weight=None, reduction="mean"):
        xp = array_module(x)
        dt = x.dtype.type
        sp = xp.log1p(xp.exp(-xp.abs(x)))
        sp += xp.maximum(-x, dt(0))
        loss = (dt(1) - y) * x
        if pos_weight is None:
            loss += sp
        else:
            loss += (dt(1) + (pos_weight - dt(1)) * y) * sp
        loss = _weighted(loss, weight)
        ctx.reduction, ctx.denom, ctx.weight, ctx.pos_weight = reduction, loss.size, weight, pos_weight
        ctx.save_for_backward(x, y)
        return _reduce(xp, loss, reduction, loss.size)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved
        xp = array_module(x)
        dt = x.dtype.type
        s = _grad_scale(ctx, g)
        if ctx.weight is not None:
            s = s * ctx.weight
        pw = ctx.pos_weight
        gx = gy = None
        if ctx.needs_input_grad[0]:
            one_minus_sig = dt(0.5) - dt(0.5) * xp.tanh(x * dt(0.5))  # 1 - sigmoid(x), stable
            if pw is None:
                gx = dt(1) - y - one_minus_sig
            else:
                gx = dt(1) - y - (dt(1) + (pw - dt(1)) * y) * one_minus_sig
            gx *= s
        if ctx.needs_input_grad[1]:
            gy = -x
            if pw is not None:
                sp = xp.log1p(xp.exp(-xp.abs(x)))
                sp += xp.maximum(-x, dt(0))
                gy = gy + (pw - dt(1)) * sp
            gy = gy * s
        return gx, gy, None, None


class BCE(Function):
    """Binary cross-entropy on probabilities x in [0, 1]:
        loss = -w (y log x + (1 - y) log(1 - x)), each log clamped to >= -100 (PyTorch's);
    d/dx = w (x - y) / max(x (1 - x), 1e-12);  d/dy = w (log(1 - x) - log x)."""

    @staticmethod
    def forward(ctx, x, y, weight=None, reduction="mean"):
        xp = array_module(x)
        dt = x.dtype.type
        with np.errstate(divide="ignore") if xp is np else contextlib.nullcontext():
            log_x = xp.maximum(xp.log(x), dt(-100))
            log_1mx = xp.maximum(xp.log(dt(1) - x), dt(-100))
        loss = y * log_x
        loss += (dt(1) - y) * log_1mx
        loss = -_weighted(loss, weight)
        ctx.reduction, ctx.denom, ctx.weight = reduction, loss.size, weight
        ctx.save_for_backward(x, y, log_x, log_1mx)
        return _reduce(xp, loss, reduction, loss.size)

    @staticmethod
    def backward(ctx, g):
        x, y, log_x, log_1mx = ctx.saved
        xp = array_module(x)
        dt = x.dtype.type
        s = _grad_scale(ctx, g)
        if ctx.weight is not None:
            s = s * ctx.weight
        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = (x - y) / xp.maximum(x * (dt(1) - x), dt(1e-12))
            gx *= s
        if ctx.needs_input_grad[1]:
            gy = (log_1mx - log_x) * s
        return gx, gy, None
