"""Normalization with PyTorch's names, signatures and semantics: batch norm, layer norm and local
response norm."""
from __future__ import annotations

import numbers

from ..ops import norm as N
from ._checks import require_float, require_tensor

__all__ = ["batch_norm", "layer_norm", "local_response_norm"]


def _check_param(op, name, t, shape, x):
    if t is None:
        return None
    require_tensor(op, name, t)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} has shape {tuple(t.shape)} but input of shape {tuple(x.shape)} "
                         f"needs {tuple(shape)}")
    return t


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Per-channel normalization of a (N, C, ...) input. Training normalizes with the batch's
    mean and biased variance and updates ``running_mean`` / ``running_var`` in place (momentum
    ``m``: new = (1 - m) old + m batch, with the unbiased variance); either may be None. Eval
    normalizes with the running statistics."""
    op = "batch_norm"
    require_tensor(op, "input", input)
    if input.ndim < 2:
        raise ValueError(f"{op}: input must be at least 2-D (N, C, ...), got shape {tuple(input.shape)}")
    require_float(op, "input", input)
    c = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is None:
            continue
        require_tensor(op, name, t)
        if tuple(t.shape) != (c,):
            raise ValueError(f"{op}: {name} has shape {tuple(t.shape)} but input of shape "
                             f"{tuple(input.shape)} has {c} channels")
        if t.device != input.device:  # updated in place: it must live where the input does
            raise ValueError(f"{op}: {name} lives on {t.device} but input of shape "
                             f"{tuple(input.shape)} on {input.device}; move it with .to(device) first")
    weight = _check_param(op, "weight", weight, (c,), input)
    bias = _check_param(op, "bias", bias, (c,), input)
    if not isinstance(momentum, numbers.Real):
        raise TypeError(f"{op}: momentum must be a number, got {momentum!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{op}: eps must be a number, got {eps!r}")
    if eps <= 0 if training else eps < 0:  # PyTorch's rule: eps = 0 may divide by 0 in training
        raise ValueError(f"{op}: eps must be {'positive during training' if training else 'non-negative'}, "
                         f"got {eps!r} (input of shape {tuple(input.shape)})")
    if training:
        per_channel = input.numel() // c if c else 0
        if per_channel <= 1:
            raise ValueError(f"{op}: expected more than 1 value per channel when training, "
                             f"got input of shape {tuple(input.shape)}")
    elif running_mean is None or running_var is None:
        raise ValueError(f"{op}: running_mean and running_var are required when training=False "
                         f"(input of shape {tuple(input.shape)})")
    return N.BatchNorm.apply(
        input, weight, bias,
        running_mean=None if running_mean is None else running_mean.array,
        running_var=None if running_var is None else running_var.array,
        training=bool(training), momentum=float(momentum), eps=float(eps))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalizes over the trailing dims ``normalized_shape`` with the biased variance;
    ``weight`` and ``bias`` (optional) have that shape."""
    op = "layer_norm"
    require_tensor(op, "input", input)
    require_float(op, "input", input)
    if isinstance(normalized_shape, numbers.Integral):
        shape = (int(normalized_shape),)
    else:
        try:
            shape = tuple(int(s) for s in normalized_shape)
        except TypeError:
            raise TypeError(f"{op}: normalized_shape must be an int or a sequence of ints, "
                            f"got {normalized_shape!r}") from None
    k = len(shape)
    if k == 0 or k > input.ndim or tuple(input.shape[input.ndim - k:]) != shape:
        raise ValueError(f"{op}: normalized_shape {shape} does not match the trailing dims of "
                         f"input of shape {tuple(input.shape)}")
    weight = _check_param(op, "weight", weight, shape, input)
    bias = _check_param(op, "bias", bias, shape, input)
    return N.LayerNorm.apply(input, weight, bias, ndim=k, eps=float(eps))


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """x / (k + alpha / size * sum of x^2 over ``size`` neighbouring channels) ** beta, the
    window zero-padded size // 2 before and (size - 1) // 2 after (AlexNet's normalization)."""
    op = "local_response_norm"
    require_tensor(op, "input", input)
    if input.ndim < 3:
        raise ValueError(f"{op}: input must be at least 3-D (N, C, ...), got shape {tuple(input.shape)}")
    require_float(op, "input", input)
    if not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"{op}: size must be a positive int, got {size!r}")
    return N.LocalResponseNorm.apply(input, size=int(size), alpha=float(alpha), beta=float(beta),
                                     k=float(k))
