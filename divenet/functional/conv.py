"""Convolutions (cross-correlations) with PyTorch's signatures: ``conv1d``, ``conv2d``."""
from __future__ import annotations

import numbers

from ..ops import conv as C
from ._checks import pair, require_float, require_tensor

__all__ = ["conv1d", "conv2d", "conv_output_size"]


def conv_output_size(n, k, s=1, p=0, d=1):
    """Output length along one axis: ``floor((n + 2p - d*(k-1) - 1) / s) + 1``; ``p`` may also
    be a pair (before, after)."""
    return C.output_size(n, k, s, p, d)


def _fmt(t):
    return "x".join(str(v) for v in t)


def _check(op, nd, x, weight, bias, stride, padding, dilation, groups):
    """Validate everything before any compute. Returns (batched, stride, padding pairs,
    dilation, groups)."""
    require_tensor(op, "input", x)
    require_tensor(op, "weight", weight)
    if bias is not None:
        require_tensor(op, "bias", bias)
    if x.ndim not in (nd + 1, nd + 2):
        layout = "(N, C, L)" if nd == 1 else "(N, C, H, W)"
        raise ValueError(f"{op}: input must be {nd + 2}-D {layout} (or {nd + 1}-D unbatched), "
                         f"got shape {tuple(x.shape)}")
    if weight.ndim != nd + 2:
        layout = "(out_channels, in_channels/groups, k)" if nd == 1 else \
            "(out_channels, in_channels/groups, kh, kw)"
        raise ValueError(f"{op}: weight must be {nd + 2}-D {layout}, got shape {tuple(weight.shape)}")
    require_float(op, "input", x)
    if weight.dtype != x.dtype:
        raise TypeError(f"{op}: weight {tuple(weight.shape)} is {weight.dtype} but input "
                        f"{tuple(x.shape)} is {x.dtype}; convert one with .astype()")
    if bias is not None and bias.dtype != x.dtype:
        raise TypeError(f"{op}: bias {tuple(bias.shape)} is {bias.dtype} but input "
                        f"{tuple(x.shape)} is {x.dtype}")
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    groups = int(groups)
    stride = pair(op, "stride", stride, nd)
    dilation = pair(op, "dilation", dilation, nd)
    if min(stride) < 1:
        raise ValueError(f"{op}: stride must be positive, got {stride}")
    if min(dilation) < 1:
        raise ValueError(f"{op}: dilation must be positive, got {dilation}")

    xs = tuple(x.shape) if x.ndim == nd + 2 else (1,) + tuple(x.shape)
    ws = tuple(weight.shape)
    kernel = ws[2:]
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0),) * nd
        elif padding == "same":
            if max(stride) != 1:
                raise ValueError(f"{op}: padding='same' needs stride 1 (as in PyTorch), got "
                                 f"stride {stride} for input {tuple(x.shape)} and weight {ws}")
            pads = tuple(C.same_padding(k, d) for k, d in zip(kernel, dilation))
        else:
            raise ValueError(f"{op}: padding must be an int, {nd} ints, 'same' or 'valid', "
                             f"got {padding!r}")
    else:
        p = pair(op, "padding", padding, nd)
        if min(p) < 0:
            raise ValueError(f"{op}: padding must be non-negative, got {p}")
        pads = tuple((v, v) for v in p)

    in_ch, out_ch, per_group = xs[1], ws[0], ws[1]
    where = f"input {tuple(x.shape)} and weight {ws}"
    if in_ch % groups:
        raise ValueError(f"{op}: groups={groups} does not divide the {in_ch} input channels "
                         f"of {where}")
    if out_ch % groups:
        raise ValueError(f"{op}: groups={groups} does not divide the {out_ch} output channels "
                         f"of {where}")
    if in_ch != per_group * groups:
        raise ValueError(f"{op}: input {tuple(x.shape)} has {in_ch} channels but weight {ws} "
                         f"with groups={groups} expects {per_group * groups}")
    if bias is not None and tuple(bias.shape) != (out_ch,):
        raise ValueError(f"{op}: bias must have shape ({out_ch},) for weight {ws}, "
                         f"got {tuple(bias.shape)}")
    spatial = xs[2:]
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(spatial, pads))
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    if min(kernel) < 1 or any(s > n for s, n in zip(span, padded)):
        raise ValueError(f"{op}: kernel {_fmt(kernel)} (dilation {dilation}, span {_fmt(span)}) "
                         f"is larger than the padded input {_fmt(padded)} of {where} "
                         f"with padding {pads}")
    return x.ndim == nd + 2, stride, pads, dilation, groups


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # noqa: A002
    """2-D cross-correlation of ``input`` (N, C, H, W) or (C, H, W) with ``weight``
    (O, C/groups, kh, kw), plus ``bias`` (O,). ``padding``: an int, a pair, 'valid' or 'same'
    (stride 1 only; an even kernel pads one more after than before, as PyTorch does).

    The result has shape (N, O, OH, OW) but is laid out in memory as (O, N, OH, OW): a strided
    view that the next convolution reads without a copy."""
    batched, stride, pads, dilation, groups = _check(
        "conv2d", 2, input, weight, bias, stride, padding, dilation, groups)
    x = input if batched else input.reshape((1,) + tuple(input.shape))
    out = C.Conv2d.apply(x, weight, bias, stride=stride, padding=pads, dilation=dilation,
                         groups=groups)
    return out if batched else out.reshape(tuple(out.shape[1:]))


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # noqa: A002
    """1-D cross-correlation of ``input`` (N, C, L) or (C, L) with ``weight`` (O, C/groups, k),
    plus ``bias`` (O,). ``padding``: an int, 'valid' or 'same' (stride 1 only)."""
    batched, stride, pads, dilation, groups = _check(
        "conv1d", 1, input, weight, bias, stride, padding, dilation, groups)
    x = input if batched else input.reshape((1,) + tuple(input.shape))
    out = C.Conv1d.apply(x, weight, bias, stride=stride[0], padding=pads[0], dilation=dilation[0],
                         groups=groups)
    return out if batched else out.reshape(tuple(out.shape[1:]))

