"""Weight initializers, in place on a Tensor's data, drawn from divenet's seeded generator of
the tensor's device (``divenet.random.generator(device)``: drawn in device memory, nothing is
uploaded). The defaults of the layers match PyTorch's."""
from __future__ import annotations

import math

import numpy as np

from ..backend import transfer
from ..random import generator


def _fans(t):
    shape = t.shape
    if len(shape) < 2:
        raise ValueError(f"init: fan in and fan out need at least 2 dims, got shape {tuple(shape)}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity, param=None):
    if nonlinearity in ("linear", "conv1d", "conv2d", "sigmoid", "identity"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}")


def _set(t, values):
    t.array = transfer(values.astype(t.dtype, copy=False), t.device)
    return t


def uniform_(t, a=0.0, b=1.0):
    return _set(t, generator(t.device).uniform(a, b, t.shape))


def normal_(t, mean=0.0, std=1.0):
    return _set(t, mean + std * generator(t.device).standard_normal(t.shape))


def constant_(t, value):
    return _set(t, t.device.xp.full(t.shape, value, dtype=t.dtype))


def zeros_(t):
    return constant_(t, 0.0)


def ones_(t):
    return constant_(t, 1.0)


def xavier_uniform_(t, gain=1.0):
    fan_in, fan_out = _fans(t)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound)


def xavier_normal_(t, gain=1.0):
    fan_in, fan_out = _fans(t)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def _kaiming_std(t, a, mode, nonlinearity):
    fan_in, fan_out = _fans(t)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    bound = math.sqrt(3.0) * _kaiming_std(t, a, mode, nonlinearity)
    return uniform_(t, -bound, bound)


def kaiming_normal_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    return normal_(t, 0.0, _kaiming_std(t, a, mode, nonlinearity))


def default_layer_init_(weight, bias=None):
    """PyTorch's default for Linear and Conv: kaiming_uniform(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in))
    for the weight, and U(+-1/sqrt(fan_in)) for the bias."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = _fans(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        uniform_(bias, -bound, bound)
