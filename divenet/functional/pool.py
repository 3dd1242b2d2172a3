"""Pooling with PyTorch's names, signatures and semantics: max and average pooling in 1-D and
2-D, and adaptive average and max pooling."""
from __future__ import annotations

import numbers

from ..ops import pool as P
from ._checks import pair, require_float, require_ndim

__all__ = [
    "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
    "max_pool1d", "avg_pool1d", "adaptive_avg_pool1d", "adaptive_max_pool1d",
]


def _window_args(op, x, kernel_size, stride, padding, dilation, ceil_mode, n=2):
    """Checked (kernel, stride, padding, dilation, output size) for the last ``n`` axes."""
    kernel = pair(op, "kernel_size", kernel_size, n)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel
    stride = pair(op, "stride", stride, n)
    padding = pair(op, "padding", padding, n)
    dilation = pair(op, "dilation", dilation, n)
    for name, vals, low in (("kernel_size", kernel, 1), ("stride", stride, 1),
                            ("dilation", dilation, 1), ("padding", padding, 0)):
        if any(v < low for v in vals):
            what = "positive" if low else "non-negative"
            raise ValueError(f"{op}: {name} must be {what}, got {_show(vals)}")
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(f"{op}: padding {_show(padding)} must be at most half of "
                         f"kernel_size {_show(kernel)}")
    spatial = tuple(x.shape[-n:])
    out = tuple(P.pool_output_size(s, k, st, p, d, ceil_mode)
                for s, k, st, p, d in zip(spatial, kernel, stride, padding, dilation))
    if any(o < 1 for o in out):
        eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        raise ValueError(f"{op}: input of shape {tuple(x.shape)} padded by {_show(padding)} is "
                         f"smaller than the (dilated) kernel {_show(eff)}; the output would be "
                         f"{_show(out)}")
    return kernel, stride, padding, dilation, out


def _show(t):
    return t[0] if len(t) == 1 else t


def _check_input(op, x, n):
    want = (n + 1, n + 2)
    require_ndim(op, "input", x, *want)
    require_float(op, "input", x)
    if 0 in tuple(x.shape)[-(n + 1):]:
        raise ValueError(f"{op}: input of shape {tuple(x.shape)} has an empty channel or spatial dim")


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over (dilated) windows of the last two axes of a (N, C, H, W) or (C, H, W) input;
    padding counts as -inf. With ``return_indices`` also the flat index h*W + w of each max."""
    op = "max_pool2d"
    _check_input(op, input, 2)
    k, s, p, d, out = _window_args(op, input, kernel_size, stride, padding, dilation, ceil_mode)
    res = P.MaxPool2d.apply(input, kernel=k, stride=s, padding=p, dilation=d, out_hw=out,
                            return_indices=bool(return_indices))
    if return_indices:
        return res[0], res[1].detach()
    return res


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over windows of the last two axes of a (N, C, H, W) or (C, H, W) input. Padding is
    zero; the divisor follows PyTorch (see ``ops.pool.avg_divisor``)."""
    op = "avg_pool2d"
    _check_input(op, input, 2)
    k, s, p, _, out = _window_args(op, input, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None:
        if not isinstance(divisor_override, numbers.Integral) or divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must be a non-zero int, got {divisor_override!r}")
    return P.AvgPool2d.apply(input, kernel=k, stride=s, padding=p, out_hw=out,
                             count_include_pad=bool(count_include_pad),
                             divisor_override=None if divisor_override is None else int(divisor_override))


def _adaptive_size(op, x, output_size, n):
    spatial = tuple(x.shape[-n:])
    if output_size is None or isinstance(output_size, numbers.Integral):
        sizes = (output_size,) * n
    else:
        try:
            sizes = tuple(output_size)
        except TypeError:
            raise TypeError(f"{op}: output_size must be an int, None or {n} of them, "
                            f"got {output_size!r}") from None
        if len(sizes) != n:
            raise ValueError(f"{op}: output_size must be an int, None or {n} of them, got {output_size!r}")
    out = []
    for s, o in zip(spatial, sizes):
        if o is None:
            out.append(s)
        elif not isinstance(o, numbers.Integral):
            raise TypeError(f"{op}: output_size must hold ints or None, got {output_size!r}")
        elif o < 1:
            raise ValueError(f"{op}: output_size must be positive, got {output_size!r} "
                             f"for input of shape {tuple(x.shape)}")
        else:
            out.append(int(o))
    return tuple(out)


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed (OH, OW): window i along an axis of length n is
    [floor(i n / o), ceil((i + 1) n / o)). An int or pair; None keeps that dim."""
    op = "adaptive_avg_pool2d"
    _check_input(op, input, 2)
    (h, w), (oh, ow) = input.shape[-2:], _adaptive_size(op, input, output_size, 2)
    if h % oh == 0 and w % ow == 0:  # the windows tile the input: plain pooling
        k = (h // oh, w // ow)
        return P.AvgPool2d.apply(input, kernel=k, stride=k, padding=(0, 0), out_hw=(oh, ow))
    return P.AdaptiveAvgPool2d.apply(input, out_hw=(oh, ow))


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Max pooling to a fixed (OH, OW) with the adaptive windows of ``adaptive_avg_pool2d``."""
    op = "adaptive_max_pool2d"
    _check_input(op, input, 2)
    (h, w), (oh, ow) = input.shape[-2:], _adaptive_size(op, input, output_size, 2)
    if h % oh == 0 and w % ow == 0:
        k = (h // oh, w // ow)
        res = P.MaxPool2d.apply(input, kernel=k, stride=k, padding=(0, 0), dilation=(1, 1),
                                out_hw=(oh, ow), return_indices=bool(return_indices))
    else:
        res = P.AdaptiveMaxPool2d.apply(input, out_hw=(oh, ow), return_indices=bool(return_indices))
    if return_indices:
        return res[0], res[1].detach()
    return res


# ---- 1-D: the 2-D kernels on (..., 1, L) -------------------------------------------------------
def _lift1d(x):
    return x.reshape(tuple(x.shape[:-1]) + (1, x.shape[-1]))


def _drop1d(y):
    return y.reshape(tuple(y.shape[:-2]) + (y.shape[-1],))


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over windows of the last axis of a (N, C, L) or (C, L) input."""
    op = "max_pool1d"
    _check_input(op, input, 1)
    k, s, p, d, out = _window_args(op, input, kernel_size, stride, padding, dilation, ceil_mode, n=1)
    res = P.MaxPool2d.apply(_lift1d(input), kernel=(1,) + k, stride=(1,) + s, padding=(0,) + p,
                            dilation=(1,) + d, out_hw=(1,) + out, return_indices=bool(return_indices))
    if return_indices:
        return _drop1d(res[0]), _drop1d(res[1].detach())
    return _drop1d(res)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Mean over windows of the last axis of a (N, C, L) or (C, L) input."""
    op = "avg_pool1d"
    _check_input(op, input, 1)
    k, s, p, _, out = _window_args(op, input, kernel_size, stride, padding, 1, ceil_mode, n=1)
    y = P.AvgPool2d.apply(_lift1d(input), kernel=(1,) + k, stride=(1,) + s, padding=(0,) + p,
                          out_hw=(1,) + out, count_include_pad=bool(count_include_pad))
    return _drop1d(y)


def adaptive_avg_pool1d(input, output_size):
    op = "adaptive_avg_pool1d"
    _check_input(op, input, 1)
    (o,) = _adaptive_size(op, input, output_size, 1)
    return _drop1d(adaptive_avg_pool2d(_lift1d(input), (1, o)))


def adaptive_max_pool1d(input, output_size, return_indices=False):
    op = "adaptive_max_pool1d"
    _check_input(op, input, 1)
    (o,) = _adaptive_size(op, input, output_size, 1)
    res = adaptive_max_pool2d(_lift1d(input), (1, o), return_indices=return_indices)
    if return_indices:
        return _drop1d(res[0]), _drop1d(res[1])
    return _drop1d(res)
