"""Basic layer kernels: linear (fully connected), dropout, embedding lookup, channel shuffle."""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..backend import array_module, device_of, transfer


class Linear(Function):
    """y = x @ weight.T + bias for x (..., in), weight (out, in), bias (out,): one GEMM on the
    flattened leading dims, the bias added in place. Backward: dx = g @ W, dW = g.T @ x,
    db = sum of g over the leading dims.

    With fewer rows than outputs (a classifier at inference batch sizes) the forward runs as
    ``(W @ x.T).T``: OpenBLAS's product with the short side as the result's rows and the weight
    transposed was 4-13x slower (Zen 3; b8: VGG's 25088 -> 4096 624 against 150 ms, ResNet-50's
    2048 -> 1000 54 against 8 ms; from 128 rows 0.70x, and slower once rows exceed outputs:
    LeNet's 256 x 400 -> 120 1.32x). The result is then a transposed (column-major) view."""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        in_features = weight.shape[1]
        x2 = x.reshape(-1, in_features)
        if x2.shape[0] < weight.shape[0] and array_module(x2) is np:
            y = (weight @ x2.T).T
        else:
            y = x2 @ weight.T  # BLAS reads the transposed view directly, no copy
        if bias is not None:
            y += bias
        need = ctx.needs_input_grad
        ctx.x_shape = x.shape
        ctx.save_for_backward(x2 if need[1] else None, weight if need[0] else None)
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    @staticmethod
    def backward(ctx, g):
        x2, weight = ctx.saved
        need = ctx.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1]) if g.ndim != 2 else g
        gx = (g2 @ weight).reshape(ctx.x_shape) if need[0] else None
        gw = g2.T @ x2 if need[1] else None
        gb = g2.sum(axis=0) if len(need) > 2 and need[2] else None
        return gx, gw, gb


def _uniform_like(x, rng):
    """Uniform [0, 1) float32 numbers drawn on the CPU from ``rng``, as a NumPy array shaped like
    ``x`` and laid out in memory like it (so elementwise products with ``x`` stay streaming)."""
    order = np.argsort([-abs(s) for s in x.strides], kind="stable") if x.ndim > 1 else None
    if order is None or list(order) == list(range(x.ndim)):
        return rng.random(x.shape, dtype=np.float32)
    u = rng.random(tuple(x.shape[i] for i in order), dtype=np.float32)
    return u.transpose(tuple(int(a) for a in np.argsort(order)))  # axes as ints: u may be a device array


class Dropout(Function):
    """Inverted dropout: each element is kept with probability 1 - p and scaled by 1 / (1 - p),
    so that expectations match evaluation mode. The mask comes from ``rng`` (drawn on the CPU,
    so a seed gives the same mask on every device); backward multiplies by the same mask."""

    @staticmethod
    def forward(ctx, x, p, rng):
        xp = array_module(x)
        dt = x.dtype.type
        if p >= 1:
            ctx.save_for_backward(None)
            return xp.zeros_like(x)
        keep = _uniform_like(x, rng) >= np.float32(p)
        if xp is not np:
            keep = transfer(keep, device_of(x))
        mask = xp.multiply(keep, dt(1.0 / (1.0 - p)), dtype=x.dtype)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved
        if mask is None:
            return array_module(g).zeros_like(g)
        return g * mask


class Embedding(Function):
    """out[...] = weight[indices[...]]; the weight gradient sums the output gradient of every
    position that looked a row up (repeated indices accumulate); ``padding_idx``'s row gets
    none."""

    @staticmethod
    def forward(ctx, indices, weight, padding_idx=None):
        xp = array_module(weight)
        ctx.weight_shape = weight.shape
        ctx.padding_idx = padding_idx
        ctx.save_for_backward(indices)
        return xp.take(weight, indices, axis=0)

    @staticmethod
    def backward(ctx, g):
        (indices,) = ctx.saved
        if not ctx.needs_input_grad[1]:
            return None, None
        xp = array_module(g)
        gw = xp.zeros(ctx.weight_shape, dtype=g.dtype)
        # scatter-add; numpy >= 2 runs ufunc.at on a fast path, cupy with atomics
        xp.add.at(gw, indices.reshape(-1), g.reshape(-1, ctx.weight_shape[1]))
        if ctx.padding_idx is not None:
            gw[ctx.padding_idx] = 0
        return None, gw


class ChannelShuffle(Function):
    """ShuffleNet's channel shuffle: view channels (g * c) as (g, c), transpose to (c, g) and
    flatten. Output channel i * g + j is input channel j * c + i. One strided copy that keeps
    the input's memory layout; the backward is the inverse shuffle."""

    @staticmethod
    def forward(ctx, x, groups):
        ctx.groups = groups
        return _shuffle(x, groups, x.shape[1] // groups)

    @staticmethod
    def backward(ctx, g):
        return _shuffle(g, g.shape[1] // ctx.groups, ctx.groups)


def _shuffle(x, a, b):
    """out[:, i * a + j] = x[:, j * b + i] for channels a * b."""
    xp = array_module(x)
    n, rest = x.shape[0], x.shape[2:]
    out = xp.empty_like(x)  # same layout as x
    # splitting one axis in two is always a view (any strides), for the source and for the
    # destination, so the copy lands in ``out`` (no ``.base`` test: CuPy's differs from NumPy's)
    out.reshape((n, b, a) + rest)[...] = x.reshape((n, a, b) + rest).swapaxes(1, 2)
    return out
