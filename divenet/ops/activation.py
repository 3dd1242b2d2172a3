"""Activation functions, each one fused Function (forward and backward in one node).

Every kernel works elementwise with ufuncs in their default ``order='K'``, so the output keeps
the memory layout of the input (an NCHW tensor stored as CNHW stays CNHW), and in-place ufuncs
on fresh temporaries keep the number of passes over memory low. Constants are cast to the
input's dtype (``x.dtype.type(c)``) so float32 stays float32.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _native
from ..autograd import Function
from ..backend import array_module

# ---- the normal tail, for the exact GELU -------------------------------------------------------
# NumPy has no erf. For z >= 0 we write erfc(z) = t * exp(-z*z + P(t)) with t = 1 / (1 + p*z):
# log(erfc(z) / t) + z*z is a smooth function of t on (0, 1], so a polynomial P fits it well.
# The coefficients below are our own least-squares fits on Chebyshev nodes (reference values
# from mpmath at 50 digits), converted to the monomial basis for Horner's rule:
#   float32: p = 0.5, degree 9, z in [0, 10]  -> relative error of erfc < 5e-8 (before rounding)
#   float64: p = 0.4, degree 20, z in [0, 27] -> relative error of erfc < 1e-14 for z < 4,
#            1e-13 beyond (where exp(-z*z) itself loses digits).
_ERFC_FIT32 = (0.5, (
    -1.2654479969017594, 0.9986327833400771, 0.3866404121338647, 0.03460280007611504,
    0.0012675861628371919, -0.08028043181415374, -0.6962518993212741, 1.1567337574056282,
    -0.6808271778877069, 0.14493021373765635))
_ERFC_FIT64 = (0.4, (
    -1.488655674871882, 1.000000006646784, 0.4199997309836747, 0.1733398158776309,
    0.02589515902833727, -0.05478540276279306, -0.09014343588963718, 0.014453901881200333,
    -0.3629517961251982, 1.5072221255863965, -4.701141693152008, 12.358051174828232,
    -25.507233934856135, 41.63468497125735, -53.35975173488763, 52.12138032007137,
    -37.49354731135262, 19.116003097549502, -6.527683404782245, 1.3401260822362608,
    -0.12526199726657936))
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def normal_tail(x):
    """Q(|x|) = P(X > |x|) = erfc(|x| / sqrt(2)) / 2 for a standard normal X, elementwise, in
    x's dtype and memory layout (a new array)."""
    xp = array_module(x)
    dt = x.dtype.type
    p, coef = _ERFC_FIT64 if x.dtype.itemsize >= 8 else _ERFC_FIT32
    t = xp.abs(x)
    t *= dt(p / _SQRT2)
    t += dt(1)
    xp.reciprocal(t, out=t)
    acc = t * dt(coef[-1])
    acc += dt(coef[-2])
    for c in coef[-3::-1]:
        acc *= t
        acc += dt(c)
    acc += dt(-math.log(2.0))  # the factor 1/2 of the tail, inside the exp
    sq = xp.multiply(x, x)
    sq *= dt(-0.5)  # -z*z with z = |x| / sqrt(2)
    acc += sq
    xp.exp(acc, out=acc)
    acc *= t
    return acc


def erf(x):
    """erf(x) elementwise on a float array (absolute error about 1e-7 in float32, 1e-15 in
    float64); the exact GELU's building block, exposed for tests and other kernels."""
    xp = array_module(x)
    dt = x.dtype.type
    q = normal_tail(x * dt(_SQRT2))  # erfc(|x|) / 2
    q *= dt(-2)
    q += dt(1)  # erf(|x|)
    return xp.copysign(q, x)


# ---- elementwise activations -------------------------------------------------------------------
class ReLU(Function):
    @staticmethod
    def forward(ctx, x):
        out = _native.elementwise("relu", x)  # NumPy's maximum(x, 0), on every core
        if out is None:
            out = array_module(x).maximum(x, x.dtype.type(0))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        d = _native.elementwise("relu_grad", out, g)  # one pass where NumPy makes two
        if d is None:  # PyTorch: zero gradient at 0, and where the output is 0 also for a NaN g
            d = array_module(g).where(out > 0, g, g.dtype.type(0))
        return d


class LeakyReLU(Function):
    @staticmethod
    def forward(ctx, x, negative_slope=0.01):
        xp = array_module(x)
        slope = x.dtype.type(negative_slope)
        ctx.slope = slope
        ctx.save_for_backward(x)
        if 0 <= negative_slope <= 1:
            return xp.maximum(x, x * slope)
        return xp.where(x > 0, x, x * slope)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return array_module(g).where(x > 0, g, g * ctx.slope)


class Sigmoid(Function):
    """sigma(x), by the native kernel where it runs (``_native.elementwise``: 5-12x NumPy's
    speed on float32), else as (1 + tanh(x / 2)) / 2, about twice as fast as 1 / (1 + exp(-x))
    in NumPy and never overflowing. The backward uses the saved output: sigma * (1 - sigma)."""

    @staticmethod
    def forward(ctx, x):
        out = _sigmoid(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        d = _native.elementwise("sigmoid_grad", out, g)
        if d is None:
            d = array_module(out).subtract(out.dtype.type(1), out)
            d *= out
            d *= g
        return d


def _sigmoid(x):
    out = _native.elementwise("sigmoid", x)
    if out is not None:
        return out
    xp = array_module(x)
    half = x.dtype.type(0.5)
    out = xp.multiply(x, half)
    xp.tanh(out, out=out)
    out += x.dtype.type(1)
    out *= half
    return out


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        out = tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        d = _native.elementwise("tanh_grad", out, g)
        if d is None:
            xp = array_module(out)
            d = xp.multiply(out, out)
            xp.subtract(out.dtype.type(1), d, out=d)
            d *= g
        return d


def tanh(x, out=None):
    """tanh(x) into ``out`` (may be x) or a new array: the native kernel where it runs (3x
    NumPy's float32 speed), else NumPy's (or CuPy's)."""
    done = _native.elementwise("tanh", x, out=out)
    if done is not None:
        return done
    return array_module(x).tanh(x, out=out)


class Hardtanh(Function):
    """clip(x, min_val, max_val); the gradient passes strictly inside (PyTorch's convention,
    also for relu6 = hardtanh(x, 0, 6))."""

    @staticmethod
    def forward(ctx, x, min_val=-1.0, max_val=1.0):
        dt = x.dtype.type
        ctx.lo, ctx.hi = dt(min_val), dt(max_val)
        out = array_module(x).clip(x, ctx.lo, ctx.hi)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        mask = out > ctx.lo
        mask &= out < ctx.hi
        return g * mask


class SiLU(Function):
    """x * sigmoid(x); d/dx = s * (1 + x * (1 - s))."""

    @staticmethod
    def forward(ctx, x):
        s = _sigmoid(x)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved
        d = array_module(s).subtract(s.dtype.type(1), s)
        d *= x
        d += s.dtype.type(1)
        d *= s
        d *= g
        return d


class GELU(Function):
    """x * Phi(x), Phi the standard normal CDF (``approximate='none'``), or PyTorch's tanh
    approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (``approximate='tanh'``)."""

    _BETA = math.sqrt(2.0 / math.pi)
    _KAPPA = 0.044715

    @staticmethod
    def forward(ctx, x, approximate="none"):
        xp = array_module(x)
        dt = x.dtype.type
        ctx.approximate = approximate
        if approximate == "tanh":
            inner = xp.multiply(x, x)
            inner *= dt(GELU._KAPPA)
            inner += dt(1)
            inner *= x
            inner *= dt(GELU._BETA)
            xp.tanh(inner, out=inner)  # tanh(beta (x + kappa x^3))
            ctx.save_for_backward(x, inner)
            out = inner + dt(1)
            out *= x
            out *= dt(0.5)
            return out
        q = normal_tail(x)
        cdf = xp.where(x < 0, q, dt(1) - q)
        ctx.save_for_backward(x, cdf)
        return x * cdf

    @staticmethod
    def backward(ctx, g):
        x, saved = ctx.saved
        xp = array_module(x)
        dt = x.dtype.type
        if ctx.approximate == "tanh":
            th = saved
            # d/dx = 0.5 (1 + th) + 0.5 x (1 - th^2) beta (1 + 3 kappa x^2)
            sech2 = xp.multiply(th, th)
            xp.subtract(dt(1), sech2, out=sech2)
            poly = xp.multiply(x, x)
            poly *= dt(3 * GELU._KAPPA)
            poly += dt(1)
            poly *= x
            poly *= dt(GELU._BETA)
            sech2 *= poly
            sech2 += th
            sech2 *= dt(0.5)
            sech2 += dt(0.5)
            sech2 *= g
            return sech2
        cdf = saved
        # d/dx = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
        d = xp.multiply(x, x)
        d *= dt(-0.5)
        xp.exp(d, out=d)
        d *= x
        d *= dt(_INV_SQRT_2PI)
        d += cdf
        d *= g
        return d


# ---- softmax family ----------------------------------------------------------------------------
_ONES = {}


def _ones_column(n, dtype):
    col = _ONES.get((n, dtype))
    if col is None:
        col = np.ones((n, 1), dtype=dtype)
        col.flags.writeable = False
        _ONES[(n, dtype)] = col
    return col


def sum_keepdims(e, axis):
    """``e.sum(axis, keepdims=True)``. On the CPU a sum over the last axis of a C-contiguous
    float array is a matrix-vector product with a ones column: BLAS does it several times faster
    than NumPy's reduction over many short rows (5 us against 1.3 us for (256, 10), 1.1 ms
    against 0.07 ms for (65536, 10)). Only up to 2**20 elements: OpenBLAS's sgemv measured
    7.6 ms for (4096, 1000), ten times NumPy's sum."""
    if (isinstance(e, np.ndarray) and axis == e.ndim - 1 and e.ndim >= 2 and 0 < e.shape[-1]
            and e.size <= 1 << 20 and e.flags.c_contiguous and e.dtype in (np.float32, np.float64)):
        out = e.reshape(-1, e.shape[-1]) @ _ones_column(e.shape[-1], e.dtype)
        return out.reshape(e.shape[:-1] + (1,))
    return e.sum(axis=axis, keepdims=True)


def shifted_exp(x, axis):
    """(e, s, shift) with e = exp(x - shift) (a new array), s = sum(e, axis, keepdims) and
    log(s) + shift the log-sum-exp along ``axis``: the stable core of softmax and
    cross-entropy.

    The shift is the max along ``axis``, except on the CPU, where NumPy's max over short rows
    is slow (13 us for (256, 10), against 1.5 us for the max of the whole array): there the
    global max comes first, and is kept if every row's sum stays above sqrt(tiny) (no row lies
    so far below the global max that its exponentials lose precision); otherwise, or with
    inf/nan in x, the per-row max is used."""
    xp = array_module(x)
    if xp is np and x.size:
        shift = x.max()
        e = x - shift
        np.exp(e, out=e)
        s = sum_keepdims(e, axis)
        if s.min() >= np.sqrt(np.finfo(x.dtype).tiny):  # False for nan
            return e, s, shift
    shift = x.max(axis=axis, keepdims=True)
    e = x - shift
    xp.exp(e, out=e)
    return e, sum_keepdims(e, axis), shift


class Softmax(Function):
    """exp(x - max) / sum, along ``axis``; backward y * (g - sum(g * y))."""

    @staticmethod
    def forward(ctx, x, axis):
        ctx.axis = axis
        if x.size == 0:
            out = x.copy()
        else:
            out, s, _ = shifted_exp(x, axis)
            out /= s
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        d = g - sum_keepdims(g * out, ctx.axis)
        d *= out
        return d


class LogSoftmax(Function):
    """x - max - log(sum(exp(x - max))), along ``axis``; backward g - exp(y) * sum(g)."""

    @staticmethod
    def forward(ctx, x, axis):
        xp = array_module(x)
        ctx.axis = axis
        if x.size == 0:
            out = x.copy()
        else:
            _, s, shift = shifted_exp(x, axis)
            lse = xp.log(s)
            lse += shift
            out = x - lse
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        xp = array_module(out)
        d = xp.exp(out)
        d *= sum_keepdims(g, ctx.axis)
        xp.subtract(g, d, out=d)
        return d
