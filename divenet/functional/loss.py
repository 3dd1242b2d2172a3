"""Losses with PyTorch's names and signatures: cross_entropy, nll_loss, mse_loss.

``size_average`` and ``reduce`` (deprecated in PyTorch) are accepted only as None; use
``reduction``.
"""
from __future__ import annotations

import numbers
import warnings

from ..ops import loss as L
from ..tensor import Tensor
from ._checks import require_float, require_tensor

__all__ = ["cross_entropy", "nll_loss", "mse_loss"]

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
    if y.size and (int(y.min()) < 0 or int(y.max()) >= n_cls):  # the usual case costs two reductions
        bad = (y < 0) | (y >= n_cls)
        bad &= y != ignore_index
        if bool(bad.any()):
            wrong = y[bad]
            some = sorted({int(v) for v in wrong.ravel()[:8].tolist()})
            raise ValueError(f"{op}: target values must be in [0, {n_cls}) for input {tuple(input.shape)} "
                             f"(or equal ignore_index={ignore_index}), got {wrong.size} out of range, "
                             f"e.g. {some} (min {int(wrong.min())}, max {int(wrong.max())})")
    return n_cls


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


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean squared error (input - target)^2, reduced by ``reduction``. Shapes that differ but
    broadcast are accepted with a warning, as in PyTorch."""
    op = "mse_loss"
    require_tensor(op, "input", input)
    require_tensor(op, "target", target)
    require_float(op, "input", input)
    require_float(op, "target", target)
    _check_common(op, reduction, size_average, reduce)
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
                      UserWarning, stacklevel=2)
    return L.MSELoss.apply(input, target, reduction=reduction)


def _broadcast_shape(a, b):
    out = []
    for x, y in zip((1,) * (len(b) - len(a)) + tuple(a), (1,) * (len(a) - len(b)) + tuple(b)):
        if x != y and x != 1 and y != 1:
            raise ValueError("no broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)
