"""Layers: thin Modules over divenet.functional, with PyTorch's names and argument order."""
from __future__ import annotations

import threading

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from . import init
from .module import Module, Parameter


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _empty(*shape):
    return Parameter(np.empty(shape, dtype=np.float32))


# One lock for every lazy layer's first forward: threads running inference on a new model at
# once must all see the same weights, made once (a first forward is rare, so one lock is enough).
_materialize_lock = threading.Lock()


class _Lazy(Module):
    """A layer whose input size may be None: weights are made on the first forward."""

    def _materialize(self, x):
        raise NotImplementedError

    def _ensure(self, x):
        if self._lazy:
            with _materialize_lock:
                if self._lazy:  # another thread may have made them while this one waited
                    self._materialize(x)
                    self.to(x.device)
                    self._lazy = False  # last: other threads read the weights once this is False


class Linear(_Lazy):
    def __init__(self, in_features, out_features, bias=True):
        self.in_features, self.out_features, self.use_bias = in_features, out_features, bias
        self.weight = None
        self.bias = None
        self._lazy = in_features is None
        if not self._lazy:
            self._build()

    def _build(self):
        self.weight = _empty(self.out_features, self.in_features)
        self.bias = _empty(self.out_features) if self.use_bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.default_layer_init_(self.weight, self.bias)

    def _materialize(self, x):
        self.in_features = x.shape[-1]
        self._build()

    def forward(self, x):
        self._ensure(x)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.use_bias}"


class _ConvNd(_Lazy):
    _dims = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True):
        n = self._dims
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kernel_size,) * n if isinstance(kernel_size, int) else tuple(kernel_size)
        self.stride = (stride,) * n if isinstance(stride, int) else tuple(stride)
        self.padding = padding if isinstance(padding, str) else ((padding,) * n if isinstance(padding, int) else tuple(padding))
        self.dilation = (dilation,) * n if isinstance(dilation, int) else tuple(dilation)
        self.groups, self.use_bias = groups, bias
        if out_channels % groups:
            raise ValueError(f"{type(self).__name__}: out_channels={out_channels} is not divisible by groups={groups}")
        if in_channels is not None and in_channels % groups:
            raise ValueError(f"{type(self).__name__}: in_channels={in_channels} is not divisible by groups={groups}")
        self.weight = None
        self.bias = None
        self._lazy = in_channels is None
        if not self._lazy:
            self._build()

    def _build(self):
        self.weight = _empty(self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.bias = _empty(self.out_channels) if self.use_bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.default_layer_init_(self.weight, self.bias)

    def _materialize(self, x):
        if x.ndim != self._dims + 2:
            raise ValueError(f"{type(self).__name__}: expected a {self._dims + 2}-D input, got shape {tuple(x.shape)}")
        self.in_channels = x.shape[1]
        if self.in_channels % self.groups:
            raise ValueError(f"{type(self).__name__}: input has {self.in_channels} channels, "
                             f"not divisible by groups={self.groups}")
        self._build()

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding not in ((0,) * self._dims, "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if not self.use_bias:
            s += ", bias=False"
        return s


class Conv2d(_ConvNd):
    _dims = 2

    def forward(self, x):
        self._ensure(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Conv1d(_ConvNd):
    _dims = 1

    def forward(self, x):
        self._ensure(x)
        return F.conv1d(x, self.weight, self.bias, self.stride[0],
                        self.padding if isinstance(self.padding, str) else self.padding[0],
                        self.dilation[0], self.groups)


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, "
                f"padding={self.padding}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(AdaptiveAvgPool2d):
    def forward(self, x):
        return F.adaptive_max_pool2d(x, self.output_size)


class _BatchNorm(_Lazy):
    _ndims = (2, 3, 4)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = self.bias = self.running_mean = self.running_var = None
        self._lazy = num_features is None
        if not self._lazy:
            self._build()

    def _build(self):
        c = self.num_features
        if self.affine:
            self.weight = Parameter(np.ones(c, dtype=np.float32))
            self.bias = Parameter(np.zeros(c, dtype=np.float32))
        if self.track_running_stats:
            self.running_mean = Tensor(np.zeros(c, dtype=np.float32))
            self.running_var = Tensor(np.ones(c, dtype=np.float32))
            self.num_batches_tracked = Tensor(np.zeros((), dtype=np.int64))

    def _materialize(self, x):
        self.num_features = x.shape[1]
        self._build()

    def forward(self, x):
        if x.ndim not in self._ndims:
            raise ValueError(f"{type(self).__name__}: expected a {' or '.join(f'{n}-D' for n in self._ndims)} "
                             f"input, got shape {tuple(x.shape)}")
        self._ensure(x)
        use_batch = self.training or not self.track_running_stats
        if self.training and self.track_running_stats:
            self.num_batches_tracked.array += 1  # in place: stays a 0-d array
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=use_batch, momentum=self.momentum, eps=self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class BatchNorm1d(_BatchNorm):
    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    _ndims = (4,)


class LayerNorm(Module):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=np.float32)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype=np.float32)) if elementwise_affine else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class LocalResponseNorm(Module):
    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class Dropout(Module):
    def __init__(self, p=0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    def __init__(self, approximate="none"):
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)


class Softmax(Module):
    def __init__(self, dim=-1):
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)


class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)


class Identity(Module):
    def forward(self, x):
        return x


class Embedding(Module):
    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = _empty(num_embeddings, embedding_dim)
        init.normal_(self.weight)
        if padding_idx is not None:
            self.weight.array[padding_idx] = 0

    def forward(self, idx):
        return F.embedding(idx, self.weight, self.padding_idx)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class ChannelShuffle(Module):
    def __init__(self, groups):
        self.groups = groups

    def forward(self, x):
        return F.channel_shuffle(x, self.groups)

    def extra_repr(self):
        return f"groups={self.groups}"

