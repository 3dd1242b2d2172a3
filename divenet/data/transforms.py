"""Image transforms on float arrays, for one image (C, H, W) or a whole batch (N, C, H, W).

Datasets already give float32 (C, H, W) images in [0, 1] (what torchvision's ToTensor does),
so there is no ToTensor here. The DataLoader applies a dataset's transform to whole batches
(one vectorized call per batch instead of a Python call per image); random transforms then
draw their parameters per sample.

Random transforms take ``rng`` (a ``numpy.random.Generator``); without one they use
``divenet.random.generator()``, which ``dn.manual_seed`` seeds. The DataLoader passes its own
generator, seeded from its seed and the epoch, so augmentation is reproducible and does not
depend on what the training step draws meanwhile.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import random as _random
from ..backend import array_module

__all__ = ["Transform", "Compose", "Normalize", "Resize", "RandomCrop", "RandomHorizontalFlip",
           "bilinear_matrix", "is_batchable"]


def _pair(value, what, name):
    if isinstance(value, numbers.Integral):
        value = (int(value), int(value))
    else:
        try:
            value = tuple(int(v) for v in value)
        except TypeError:
            raise TypeError(f"{name}: {what} must be an int or a pair (h, w), got {value!r}") from None
        if len(value) != 2:
            raise ValueError(f"{name}: {what} must be an int or a pair (h, w), got {value!r}")
    if min(value) <= 0:
        raise ValueError(f"{name}: {what} must be positive, got {value}")
    return value


class Transform:
    """Base class: ``t(x, rng=None)`` for x of shape (C, H, W) or (N, C, H, W)."""

    def __call__(self, x, rng=None):
        from ..tensor import Tensor

        wrap = isinstance(x, Tensor)
        arr = x.array if wrap else x
        if not hasattr(arr, "ndim") or not hasattr(arr, "dtype"):
            raise TypeError(f"{type(self).__name__}: expected an array, got {type(x).__name__}")
        if arr.ndim not in (3, 4):
            raise ValueError(f"{type(self).__name__}: expected an image (C, H, W) or a batch "
                             f"(N, C, H, W), got shape {tuple(arr.shape)}")
        single = arr.ndim == 3
        out = self._apply(arr[None] if single else arr, rng)
        if single:
            out = out[0]
        return Tensor._make(out, x.device, None) if wrap else out

    def _apply(self, x, rng):  # x: (N, C, H, W)
        raise NotImplementedError

    @staticmethod
    def _rng(rng):
        return rng if rng is not None else _random.generator()


def is_batchable(transform) -> bool:
    """Whether ``transform`` accepts a batch (N, C, H, W): divenet transforms do."""
    if isinstance(transform, Compose):
        return all(is_batchable(t) for t in transform.transforms)
    return isinstance(transform, Transform)


class Compose(Transform):
    """Apply transforms in order. Plain callables are called with the array alone."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not callable")

    def __call__(self, x, rng=None):
        for t in self.transforms:
            x = t(x, rng) if isinstance(t, Transform) else t(x)
        return x

    def __repr__(self):
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class Normalize(Transform):
    """``(x - mean) / std`` per channel; ``mean`` and ``std`` are numbers or one per channel."""

    def __init__(self, mean, std):
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.ndim != 1 or self.std.ndim != 1:
            raise ValueError(f"Normalize: mean and std must be numbers or sequences, got "
                             f"shapes {self.mean.shape} and {self.std.shape}")
        if np.any(self.std == 0):
            raise ValueError(f"Normalize: std {self.std.tolist()} contains a zero")

    def _apply(self, x, rng):
        if x.dtype.kind != "f":
            raise TypeError(f"Normalize: expected a floating-point image, got {x.dtype}")
        c = x.shape[1]
        for what, v in (("mean", self.mean), ("std", self.std)):
            if len(v) not in (1, c):
                raise ValueError(f"Normalize: {what} has {len(v)} values but the image has {c} "
                                 f"channels (shape {tuple(x.shape)})")
        xp = array_module(x)
        mean = xp.asarray(self.mean.astype(x.dtype)).reshape(1, -1, 1, 1)
        std = xp.asarray(self.std.astype(x.dtype)).reshape(1, -1, 1, 1)
        return (x - mean) / std

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


def bilinear_matrix(n_in: int, n_out: int, dtype=np.float32) -> np.ndarray:
    """The (n_out, n_in) matrix of 1-D linear interpolation with align_corners=False (pixel
    centres: source = (dst + 0.5) * n_in / n_out - 0.5, clamped at 0), as in PyTorch's
    ``interpolate(mode='bilinear', align_corners=False, antialias=False)``. Each row holds
    at most two nonzero weights summing to 1.

    The weights are computed the way PyTorch's CPU kernel computes them for ``dtype``: the
    scale n_in / n_out rounded to ``dtype``, the source coordinate as one fused multiply-add
    (rounded once), the weights as ``src - floor(src)`` and ``1 - that`` in ``dtype``. Weights
    computed in float64 throughout and rounded afterwards differ from PyTorch's by up to
    1e-6 absolute, which shows as 1e-4 relative error on dark pixels."""
    t = np.dtype(dtype).type if np.dtype(dtype) in (np.float32, np.float64) else np.float32
    m = np.zeros((n_out, n_in), dtype=t)
    rows = np.arange(n_out)
    if n_in == n_out:
        m[rows, rows] = 1
        return m.astype(dtype, copy=False)
    scale = t(n_in) / t(n_out)
    # fma(scale, dst + 0.5, -0.5): exact in float64 for a float32 scale, then rounded once
    src = (np.float64(scale) * (rows + 0.5) - 0.5).astype(t)
    src = np.maximum(src, t(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam1 = np.clip(src - i0.astype(t), t(0), t(1))
    i1 = np.minimum(i0 + 1, n_in - 1)
    m[rows, i0] += t(1) - lam1  # each row appears once per assignment: no duplicate indices
    m[rows, i1] += lam1
    return m.astype(dtype, copy=False)


class Resize(Transform):
    """Bilinear resize, as ``interpolate(mode='bilinear', align_corners=False,
    antialias=False)``: ``size`` (h, w), or an int for the shorter side (aspect ratio kept,
    as in torchvision). Separable: one interpolation matrix per axis, applied by matmuls
    (the width pass as one large GEMM over the whole batch). Downscaling does not
    antialias."""

    def __init__(self, size):
        if isinstance(size, numbers.Integral):
            if size <= 0:
                raise ValueError(f"Resize: size must be positive, got {size}")
            self.size = int(size)
        else:
            self.size = _pair(size, "size", "Resize")
        self._mats = {}

    def output_size(self, h: int, w: int):
        if isinstance(self.size, tuple):
            return self.size
        s = self.size
        if h <= w:
            return s, max(1, int(s * w / h))
        return max(1, int(s * h / w)), s

    def _matrix(self, xp, n_in, n_out, dtype):
        key = (xp.__name__, n_in, n_out, np.dtype(dtype).str)
        m = self._mats.get(key)
        if m is None:
            m = self._mats[key] = xp.asarray(bilinear_matrix(n_in, n_out, dtype))
        return m

    def _apply(self, x, rng):
        if x.dtype.kind != "f":
            raise TypeError(f"Resize: expected a floating-point image, got {x.dtype}")
        n, c, h, w = x.shape
        ho, wo = self.output_size(h, w)
        xp = array_module(x)
        out = x
        if wo != w:
            mw = self._matrix(xp, w, wo, x.dtype)
            out = (out.reshape(n * c * h, w) @ mw.T).reshape(n, c, h, wo)
        if ho != h:
            out = self._matrix(xp, h, ho, x.dtype) @ out
        return out

    def __repr__(self):
        return f"Resize(size={self.size})"


class RandomCrop(Transform):
    """Crop a random ``size`` window from each image, after zero-padding (``fill``) it by
    ``padding``: an int, (left/right, top/bottom), or (left, top, right, bottom) as in
    torchvision. Offsets are drawn per sample: the tops, then the lefts."""

    def __init__(self, size, padding=0, fill=0):
        self.size = _pair(size, "size", "RandomCrop")
        if isinstance(padding, numbers.Integral):
            pad = (int(padding),) * 4
        else:
            pad = tuple(int(p) for p in padding)
            if len(pad) == 2:
                pad = (pad[0], pad[1], pad[0], pad[1])
            elif len(pad) != 4:
                raise ValueError(f"RandomCrop: padding must be an int, 2 or 4 values, got {padding!r}")
        if min(pad) < 0:
            raise ValueError(f"RandomCrop: padding must be non-negative, got {padding!r}")
        self.padding = pad  # left, top, right, bottom
        self.fill = fill

    def _apply(self, x, rng):
        rng = self._rng(rng)
        xp = array_module(x)
        left, top, right, bottom = self.padding
        n, c, h, w = x.shape
        hp, wp = h + top + bottom, w + left + right
        ch, cw = self.size
        if ch > hp or cw > wp:
            raise ValueError(f"RandomCrop: crop size {self.size} is larger than the padded image "
                             f"({hp}, {wp}) (input {tuple(x.shape)}, padding {self.padding})")
        if any(self.padding):
            x = xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)),
                       constant_values=x.dtype.type(self.fill))
        tops = rng.integers(0, hp - ch + 1, size=n)
        lefts = rng.integers(0, wp - cw + 1, size=n)
        if ch == hp and cw == wp:
            return x
        rows = xp.asarray(tops[:, None] + np.arange(ch))[:, None, :, None]
        cols = xp.asarray(lefts[:, None] + np.arange(cw))[:, None, None, :]
        return x[xp.arange(n)[:, None, None, None], xp.arange(c)[None, :, None, None], rows, cols]

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability ``p`` (drawn per sample)."""

    def __init__(self, p=0.5):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def _apply(self, x, rng):
        rng = self._rng(rng)
        xp = array_module(x)
        flip = rng.random(x.shape[0]) < self.p
        if not flip.any():
            return x
        return xp.where(xp.asarray(flip)[:, None, None, None], x[..., ::-1], x)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"
