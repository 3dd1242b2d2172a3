"""Layers: thin Modules over divenet.functional, with PyTorch's names and argument order."""
from __future__ import annotations

import threading

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from . import init
from ._checks import (eps_value, int_tuple, momentum_value, positive_int, probability, real)
from .module import Module, Parameter


def _size_or_none(owner, name, value):
    return None if value is None else positive_int(owner, name, value)


def _empty(*shape):
    return Parameter(np.empty(shape, dtype=np.float32))


# One lock for every lazy layer's first forward: threads running inference on a new model at
# once must all see the same weights, made once (a first forward is rare, so one lock is enough).
_materialize_lock = threading.Lock()


class _Lazy(Module):
    """A layer whose input size may be None: weights are made on the first forward. A
    ``Lazy*`` class names the class it becomes then in ``_becomes`` (PyTorch's
    ``cls_to_become``): ``LazyLinear`` is a ``Linear`` once it has seen an input."""

    _becomes = None

    def _materialize(self, x):
        raise NotImplementedError

    def _ensure(self, x):
        if self._lazy:
            with _materialize_lock:
                if self._lazy:  # another thread may have made them while this one waited
                    self._materialize(x)
                    self.to(x.device)
                    if self._becomes is not None:
                        self.__class__ = self._becomes
                    self._lazy = False  # last: other threads read the weights once this is False


class Linear(_Lazy):
    def __init__(self, in_features, out_features, bias=True):
        self.in_features = _size_or_none("Linear", "in_features", in_features)
        self.out_features = positive_int("Linear", "out_features", out_features)
        self.use_bias = bias
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
                 groups=1, bias=True, padding_mode="zeros"):
        n, name = self._dims, type(self).__name__
        self.in_channels = _size_or_none(name, "in_channels", in_channels)
        self.out_channels = positive_int(name, "out_channels", out_channels)
        self.kernel_size = int_tuple(name, "kernel_size", kernel_size, n)
        self.stride = int_tuple(name, "stride", stride, n)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be non-negative integers, 'same' or "
                                 f"'valid', got {padding!r}")
            if padding == "same" and max(self.stride) > 1:
                raise ValueError(f"{name}: padding='same' is not supported for strided "
                                 f"convolutions, got stride={stride!r}")
            self.padding = padding
        else:
            self.padding = int_tuple(name, "padding", padding, n, low=0)
        self.dilation = int_tuple(name, "dilation", dilation, n)
        self.groups = positive_int(name, "groups", groups)
        self.use_bias = bias
        if padding_mode != "zeros":
            raise ValueError(f"{name}: padding_mode {padding_mode!r} is not supported; only 'zeros'")
        self.padding_mode = padding_mode
        if out_channels % groups:
            raise ValueError(f"{name}: out_channels={out_channels} is not divisible by groups={groups}")
        if in_channels is not None and in_channels % groups:
            raise ValueError(f"{name}: in_channels={in_channels} is not divisible by groups={groups}")
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


def _pool_args(owner, n, kernel_size, stride, padding, dilation=1):
    kernel = int_tuple(owner, "kernel_size", kernel_size, n)
    stride = kernel if stride is None else int_tuple(owner, "stride", stride, n)
    return (kernel, stride, int_tuple(owner, "padding", padding, n, low=0),
            int_tuple(owner, "dilation", dilation, n))


def _show(t):
    return t[0] if len(set(t)) == 1 else t


class MaxPool2d(Module):
    _n = 2

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        _pool_args(type(self).__name__, self._n, kernel_size, stride, padding, dilation)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.return_indices, self.ceil_mode = dilation, return_indices, ceil_mode

    def forward(self, x):
        f = F.max_pool2d if self._n == 2 else F.max_pool1d
        return f(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                 self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, "
                f"padding={self.padding}, dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(MaxPool2d):
    _n = 1


class AvgPool2d(Module):
    _n = 2

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        name = type(self).__name__
        kernel, _, pad, _ = _pool_args(name, self._n, kernel_size, stride, padding)
        if any(p > k // 2 for p, k in zip(pad, kernel)):
            raise ValueError(f"{name}: padding must be at most half of kernel_size, got "
                             f"padding={padding!r} for kernel_size={kernel_size!r}")
        if divisor_override is not None and (isinstance(divisor_override, bool) or divisor_override == 0):
            raise ValueError(f"{name}: divisor_override must be a non-zero int, got {divisor_override!r}")
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x):
        if self._n == 1:
            return F.avg_pool1d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                self.count_include_pad)
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, padding={self.padding}"


class AvgPool1d(AvgPool2d):
    _n = 1

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)


class AdaptiveAvgPool2d(Module):
    _n = 2

    def __init__(self, output_size):
        name = type(self).__name__
        sizes = (output_size,) * self._n if output_size is None or isinstance(output_size, int) \
            else tuple(output_size) if isinstance(output_size, (tuple, list)) else None
        if sizes is None or len(sizes) != self._n or not all(
                s is None or (isinstance(s, int) and not isinstance(s, bool) and s > 0) for s in sizes):
            raise ValueError(f"{name}: output_size must be positive integers or None (an int or "
                             f"{self._n} of them), got {output_size!r}")
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size) if self._n == 2 else \
            F.adaptive_avg_pool1d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(AdaptiveAvgPool2d):
    def __init__(self, output_size, return_indices=False):
        super().__init__(output_size)
        self.return_indices = return_indices

    def forward(self, x):
        f = F.adaptive_max_pool2d if self._n == 2 else F.adaptive_max_pool1d
        return f(x, self.output_size, self.return_indices)


class AdaptiveAvgPool1d(AdaptiveAvgPool2d):
    _n = 1


class AdaptiveMaxPool1d(AdaptiveMaxPool2d):
    _n = 1


class _BatchNorm(_Lazy):
    _ndims = (2, 3, 4)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        name = type(self).__name__
        self.num_features = _size_or_none(name, "num_features", num_features)
        self.eps, self.momentum = eps_value(name, eps), momentum_value(name, momentum)
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
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.array += 1  # in place: stays a 0-d array
            if momentum is None:  # cumulative moving average, as in PyTorch
                momentum = 1.0 / float(self.num_batches_tracked.array)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=use_batch, momentum=0.0 if momentum is None else momentum,
                            eps=self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    _ndims = (4,)


class LayerNorm(Module):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if not shape or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be positive integers, got {normalized_shape!r}")
        self.normalized_shape = shape
        self.eps = eps_value("LayerNorm", eps)
        self.elementwise_affine = elementwise_affine
        self.weight = Parameter(np.ones(shape, dtype=np.float32)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(shape, dtype=np.float32)) if elementwise_affine and bias else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class LocalResponseNorm(Module):
    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        self.size = positive_int("LocalResponseNorm", "size", size)
        self.alpha, self.beta, self.k = alpha, beta, k

    def forward(self, x):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


# ``inplace=True`` is accepted (PyTorch code passes it everywhere) but the result is computed
# out of place: the returned tensor holds the same values, the input is left unchanged, and
# autograd stays correct. Code that reads the input expecting it overwritten sees the old values.
class _Inplace(Module):
    inplace = False

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Dropout(_Inplace):
    def __init__(self, p=0.5, inplace=False):
        self.p = probability("Dropout", "p", p)
        self.inplace = inplace

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class ReLU(_Inplace):
    """max(x, 0). ``inplace=True`` computes out of place (same values; the input is kept)."""

    def __init__(self, inplace=False):
        self.inplace = inplace

    def forward(self, x):
        return F.relu(x)


class ReLU6(_Inplace):
    def __init__(self, inplace=False):
        self.inplace = inplace

    def forward(self, x):
        return F.relu6(x)


class Hardtanh(_Inplace):
    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False):
        real("Hardtanh", "min_val", min_val)
        real("Hardtanh", "max_val", max_val)
        if min_val > max_val:
            raise ValueError(f"Hardtanh: min_val {min_val} must not exceed max_val {max_val}")
        self.min_val, self.max_val, self.inplace = min_val, max_val, inplace

    def forward(self, x):
        return F.hardtanh(x, self.min_val, self.max_val)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}" + (", inplace=True" if self.inplace else "")


class SiLU(_Inplace):
    def __init__(self, inplace=False):
        self.inplace = inplace

    def forward(self, x):
        return F.silu(x)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class LeakyReLU(_Inplace):
    def __init__(self, negative_slope=0.01, inplace=False):
        self.negative_slope = real("LeakyReLU", "negative_slope", negative_slope)
        self.inplace = inplace

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class GELU(Module):
    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Softmax(Module):
    _fn = staticmethod(F.softmax)

    def __init__(self, dim=None):
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
            raise ValueError(f"{type(self).__name__}: dim must be an int, got {dim!r}")
        self.dim = dim

    def forward(self, x):
        # dim=None: PyTorch's legacy choice (0 for 0-, 1- and 3-D input, else 1)
        dim = self.dim if self.dim is not None else (0 if x.ndim in (0, 1, 3) else 1)
        return self._fn(x, dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    _fn = staticmethod(F.log_softmax)


def _int(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}: {name} must be an int, got {value!r}")
    return value


class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        self.start_dim = _int("Flatten", "start_dim", start_dim)
        self.end_dim = _int("Flatten", "end_dim", end_dim)

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Splits axis ``dim`` into ``unflattened_size`` (one entry may be -1)."""

    def __init__(self, dim, unflattened_size):
        self.dim = _int("Unflatten", "dim", dim)
        sizes = tuple(unflattened_size) if isinstance(unflattened_size, (tuple, list)) else None
        if not sizes or not all(isinstance(v, int) and not isinstance(v, bool) and (v > 0 or v == -1)
                                for v in sizes) or sizes.count(-1) > 1:
            raise ValueError(f"Unflatten: unflattened_size must be a tuple of positive ints (at "
                             f"most one -1), got {unflattened_size!r}")
        self.unflattened_size = sizes

    def forward(self, x):
        nd = x.ndim
        if not -nd <= self.dim < nd:
            raise ValueError(f"Unflatten: dim {self.dim} is out of range for input of shape {tuple(x.shape)}")
        d = self.dim % nd
        n, sizes = x.shape[d], self.unflattened_size
        known = int(np.prod([v for v in sizes if v != -1]))
        if (-1 in sizes and n % known) or (-1 not in sizes and known != n):
            raise ValueError(f"Unflatten: sizes {sizes} do not multiply to {n}, the size of dim "
                             f"{self.dim} of input {tuple(x.shape)}")
        sizes = tuple(n // known if v == -1 else v for v in sizes)
        return x.reshape(tuple(x.shape[:d]) + sizes + tuple(x.shape[d + 1:]))

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Identity(Module):
    def __init__(self, *args, **kwargs):
        pass  # PyTorch's Identity takes (and ignores) any arguments

    def forward(self, x):
        return x


class Embedding(Module):
    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        num = positive_int("Embedding", "num_embeddings", num_embeddings)
        self.num_embeddings = num
        self.embedding_dim = positive_int("Embedding", "embedding_dim", embedding_dim)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, int) \
                    or not -num <= padding_idx < num:
                raise ValueError(f"Embedding: padding_idx must be an int in [{-num}, {num}) "
                                 f"(within num_embeddings), got {padding_idx!r}")
            padding_idx %= num  # PyTorch keeps it non-negative
        self.padding_idx = padding_idx
        self.weight = _empty(num_embeddings, embedding_dim)
        init.normal_(self.weight)
        if padding_idx is not None:
            self.weight.array[padding_idx] = 0

    def forward(self, idx):
        return F.embedding(idx, self.weight, self.padding_idx)

    def extra_repr(self):
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class ChannelShuffle(Module):
    def __init__(self, groups):
        self.groups = positive_int("ChannelShuffle", "groups", groups)

    def forward(self, x):
        return F.channel_shuffle(x, self.groups)

    def extra_repr(self):
        return f"groups={self.groups}"


# ---- lazy layers: PyTorch's names for the in_features=None / in_channels=None forms --------------
class LazyLinear(Linear):
    """``Linear`` whose in_features comes from the first input; it becomes a ``Linear`` then."""

    _becomes = Linear

    def __init__(self, out_features, bias=True):
        super().__init__(None, out_features, bias)


class LazyConv2d(Conv2d):
    _becomes = Conv2d

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__(None, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode)


class LazyConv1d(Conv1d):
    _becomes = Conv1d

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__(None, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode)


class LazyBatchNorm2d(BatchNorm2d):
    _becomes = BatchNorm2d

    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__(None, eps, momentum, affine, track_running_stats)


class LazyBatchNorm1d(BatchNorm1d):
    _becomes = BatchNorm1d

    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__(None, eps, momentum, affine, track_running_stats)
