"""Losses with PyTorch's names and signatures: cross_entropy, nll_loss, mse_loss, l1_loss,
huber_loss, smooth_l1_loss, binary_cross_entropy, binary_cross_entropy_with_logits.

``size_average`` and ``reduce`` (deprecated in PyTorch) are accepted only as None; use
``reduction``.
"""
from __future__ import annotations

import numbers
import warnings

from ..ops import loss as L
from ..tensor import Tensor
from ._checks import require_float, require_tensor

__all__ = ["check_deferred", "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss",
           "binary_cross_entropy", "binary_cross_entropy_with_logits"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_common(op, reduction, size_average, reduce):
    if size_average is not None or reduce is not None:
        raise ValueError(f"{op}: size_average and reduce are deprecated and not supported; "
                         f"use reduction='mean', 'sum' or 'none'")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_weight(op, weight, n_cls, input):
    if weight is None:
        return
    require_tensor(op, "weight", weight)
    if tuple(weight.shape) != (n_cls,):
        raise ValueError(f"{op}: weight must have shape ({n_cls},), one per class of input "
                         f"{tuple(input.shape)}, got {tuple(weight.shape)}")
    if weight.dtype != input.dtype:
        raise TypeError(f"{op}: weight dtype {weight.dtype} differs from input dtype {input.dtype}")
    if weight.device != input.device:
        raise ValueError(f"{op}: weight lives on {weight.device} but input on {input.device}")


def _check_class_targets(op, input, target, ignore_index):
    """input (N, C, *rest) or (C,); target int of shape (N, *rest) or (), values in [0, C) or
    ignore_index."""
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have a class dimension, got a 0-d tensor")
    require_tensor(op, "target", target)
    want = () if input.ndim == 1 else (input.shape[0],) + tuple(input.shape[2:])
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices (int64), got {target.dtype} "
                        f"with shape {tuple(target.shape)} for input {tuple(input.shape)}")
    if tuple(target.shape) != want:
        raise ValueError(f"{op}: target of shape {tuple(target.shape)} does not match input "
                         f"{tuple(input.shape)}; expected target shape {want}")
    if target.device != input.device:
        raise ValueError(f"{op}: target lives on {target.device} but input on {input.device}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    n_cls = input.shape[0] if input.ndim == 1 else input.shape[1]
    y = target.array
    if not y.size:
        return n_cls
    if target.device.kind != "cpu":  # a device: no sync here (see defer_check)
        bad = (y < 0) | (y >= n_cls)
        bad &= y != ignore_index
        defer_check(bad.any(), f"{op}: target values must be in [0, {n_cls}) for input of shape "
                               f"(*, {n_cls}, ...) (or equal ignore_index={ignore_index}); a batch "
                               f"on {input.device} had targets out of range")
    elif int(y.min()) < 0 or int(y.max()) >= n_cls:  # the usual case costs two reductions
        bad = (y < 0) | (y >= n_cls)
        bad &= y != ignore_index
        if bool(bad.any()):
            wrong = y[bad]
            some = sorted({int(v) for v in wrong.ravel()[:8].tolist()})
            raise ValueError(f"{op}: target values must be in [0, {n_cls}) for input {tuple(input.shape)} "
                             f"(or equal ignore_index={ignore_index}), got {wrong.size} out of range, "
                             f"e.g. {some} (min {int(wrong.min())}, max {int(wrong.max())})")
    return n_cls


# ---- argument checks a device makes without a host sync ---------------------------------------------
# On the CPU a bad target or index is a ValueError at the call. On a GPU, reading whether any
# was bad would stall the device's queue at every call (PyTorch's CUDA kernels make the same
# trade with a device-side assert that surfaces later), so the check's verdict, a 0-d bool
# device array, is recorded here and read by check_deferred(): the Trainer calls it at its log
# points and at the end of evaluate(); a hand-written loop can call it where it reads its loss.
# Meanwhile an out-of-range index reads a wrapped-around row, as CuPy's indexing does.
_deferred: dict = {}  # message -> 0-d bool device array: "some call since the last check was bad"


def defer_check(bad, message):
    """Record the device verdict ``bad`` (0-d bool, True: the arguments were wrong) to be
    raised as ``ValueError(message)`` by the next :func:`check_deferred`."""
    flag = _deferred.get(message)
    if flag is None:
        _deferred[message] = bad
    else:
        flag |= bad  # in place, on the device


def check_deferred():
    """Raise ValueError for the first deferred argument check that failed since the last call
    (and forget them all). One host sync per kind of check recorded; none when nothing was."""
    if not _deferred:
        return
    pending = list(_deferred.items())
    _deferred.clear()
    for message, flag in pending:
        if bool(flag):
            raise ValueError(message + " (checked lazily on the device; see check_deferred)")


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross-entropy between logits ``input`` (N, C, *rest) or (C,) and ``target``: integer
    class indices (N, *rest) (or ()), or class probabilities of the input's shape. One fused
    node: log-softmax, negative log-likelihood and label smoothing, backward
    (softmax - smoothed one-hot) / N for the mean."""
    op = "cross_entropy"
    require_tensor(op, "input", input)
    require_float(op, "input", input)
    _check_common(op, reduction, size_average, reduce)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
            or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have a class dimension, got a 0-d tensor")
    n_cls = input.shape[0] if input.ndim == 1 else input.shape[1]
    if isinstance(target, Tensor) and target.dtype.kind == "f" and target.shape == input.shape:
        if target.dtype != input.dtype:
            raise TypeError(f"{op}: probability target dtype {target.dtype} differs from input "
                            f"dtype {input.dtype} (shape {tuple(input.shape)})")
        if target.device != input.device:
            raise ValueError(f"{op}: target lives on {target.device} but input on {input.device}")
        _check_weight(op, weight, n_cls, input)
        return L.SoftCrossEntropy.apply(input, target, weight, reduction=reduction,
                                        label_smoothing=float(label_smoothing))
    _check_class_targets(op, input, target, ignore_index)
    _check_weight(op, weight, n_cls, input)
    return L.CrossEntropy.apply(input, target, weight, reduction=reduction,
                                ignore_index=int(ignore_index), label_smoothing=float(label_smoothing))


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log-likelihood of log-probabilities ``input`` (N, C, *rest) or (C,) at integer
    class indices ``target`` (N, *rest) (or ())."""
    op = "nll_loss"
    require_tensor(op, "input", input)
    require_float(op, "input", input)
    _check_common(op, reduction, size_average, reduce)
    n_cls = _check_class_targets(op, input, target, ignore_index)
    _check_weight(op, weight, n_cls, input)
    return L.NLLLoss.apply(input, target, weight, reduction=reduction, ignore_index=int(ignore_index))


def _check_pair(op, input, target):
    """input and target: float Tensors of one dtype; shapes that differ but broadcast are
    accepted with a warning, as in PyTorch."""
    require_tensor(op, "input", input)
    require_tensor(op, "target", target)
    require_float(op, "input", input)
    require_float(op, "target", target)
    if input.dtype != target.dtype:
        raise TypeError(f"{op}: input dtype {input.dtype} and target dtype {target.dtype} differ "
                        f"(input {tuple(input.shape)}, target {tuple(target.shape)})")
    if input.shape != target.shape:
        try:
            _broadcast_shape(input.shape, target.shape)
        except ValueError:
            raise ValueError(f"{op}: input {tuple(input.shape)} and target {tuple(target.shape)} "
                             f"have different shapes that do not broadcast") from None
        warnings.warn(f"{op}: target size {tuple(target.shape)} differs from input size "
                      f"{tuple(input.shape)}; they will be broadcast, which is likely not intended",
                      UserWarning, stacklevel=3)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean squared error (input - target)^2, reduced by ``reduction``."""
    op = "mse_loss"
    _check_pair(op, input, target)
    _check_common(op, reduction, size_average, reduce)
    return L.MSELoss.apply(input, target, reduction=reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean absolute error |input - target|, reduced by ``reduction``."""
    op = "l1_loss"
    _check_pair(op, input, target)
    _check_common(op, reduction, size_average, reduce)
    return L.L1Loss.apply(input, target, reduction=reduction)


def _positive(op, name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not (value >= 0 if allow_zero else value > 0):
        raise ValueError(f"{op}: {name} must be a {'non-negative' if allow_zero else 'positive'} "
                         f"number, got {value!r}")
    return float(value)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta), for d = input - target."""
    op = "huber_loss"
    _check_pair(op, input, target)
    _check_common(op, reduction, None, None)
    delta = _positive(op, "delta", delta)
    return L.HuberLoss.apply(input, target, reduction=reduction, delta=delta)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (l1_loss for beta = 0)."""
    op = "smooth_l1_loss"
    _check_pair(op, input, target)
    _check_common(op, reduction, size_average, reduce)
    beta = _positive(op, "beta", beta, allow_zero=True)
    if beta == 0:
        return L.L1Loss.apply(input, target, reduction=reduction)
    return L.HuberLoss.apply(input, target, reduction=reduction, delta=beta, scale=1.0 / beta)


def _check_binary(op, input, target, weights, same_size_text):
    """Float input and target of one shape, dtype and device; each (name, tensor) in
    ``weights`` (or None) broadcasts to the input's shape. Returns their arrays."""
    require_tensor(op, "input", input)
    require_float(op, "input", input)
    require_tensor(op, "target", target)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(same_size_text.format(t=tuple(target.shape), i=tuple(input.shape)))
    out = []
    for name, t in (("target", target),) + weights:
        if t is None:
            out.append(None)
            continue
        require_tensor(op, name, t)
        if t.dtype != input.dtype:
            raise TypeError(f"{op}: {name} dtype {t.dtype} differs from input dtype {input.dtype} "
                            f"(shape {tuple(input.shape)})")
        if t.device != input.device:
            raise ValueError(f"{op}: {name} lives on {t.device} but input on {input.device}")
        if name != "target":
            try:
                ok = _broadcast_shape(input.shape, t.shape) == tuple(input.shape)
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{op}: {name} of shape {tuple(t.shape)} does not broadcast to "
                                 f"input {tuple(input.shape)}")
            out.append(t.array)
    return out


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """-w (y log x + (1 - y) log(1 - x)) for probabilities ``input`` in [0, 1] and targets of
    its shape; the logs are clamped at -100 as in PyTorch. ``weight`` broadcasts to the
    input (a constant: no gradient)."""
    op = "binary_cross_entropy"
    _check_common(op, reduction, size_average, reduce)
    (w,) = _check_binary(op, input, target, (("weight", weight),),
                         f"{op}: target size {{t}} differs from input size {{i}}; they must be the same")
    x = input.array
    if x.size:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"{op}: all elements of input should be between 0 and 1 (probabilities; "
                             f"use binary_cross_entropy_with_logits for logits), got values from "
                             f"{lo:g} to {hi:g} in input {tuple(input.shape)}")
    return L.BCE.apply(input, target, weight=w, reduction=reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """binary_cross_entropy(sigmoid(input), target), fused and stable for any logit.
    ``pos_weight`` multiplies the positive term (one per class: it broadcasts along the last
    axis); ``weight`` the whole loss. Both are constants (no gradient)."""
    op = "binary_cross_entropy_with_logits"
    _check_common(op, reduction, size_average, reduce)
    w, pw = _check_binary(op, input, target, (("weight", weight), ("pos_weight", pos_weight)),
                          f"{op}: target size {{t}} must be the same as input size {{i}}")
    return L.BCEWithLogits.apply(input, target, weight=w, pos_weight=pw, reduction=reduction)


def _broadcast_shape(a, b):
    out = []
    for x, y in zip((1,) * (len(b) - len(a)) + tuple(a), (1,) * (len(a) - len(b)) + tuple(b)):
        if x != y and x != 1 and y != 1:
            raise ValueError("no broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)
