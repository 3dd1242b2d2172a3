"""Tensor: an array, the device it lives on, its gradient and the graph node that made it."""
from __future__ import annotations

import numbers

import numpy as np

from . import autograd
from .backend import CPU, array_module, device as as_device, device_of, transfer
from .ops import elementwise as E, linalg, reduce as R, shape as S

_DTYPES = {
    "float32": np.float32, "float64": np.float64, "float16": np.float16,
    "int64": np.int64, "int32": np.int32, "bool": np.bool_, "uint8": np.uint8,
}
float32, float64, float16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)
int64, int32, uint8, bool_ = np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.uint8), np.dtype(np.bool_)


class ValuesIndices(tuple):
    """``(values, indices)`` of ``Tensor.max(dim)`` / ``min(dim)``, as torch.return_types."""

    __slots__ = ()

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))

    values = property(lambda self: self[0])
    indices = property(lambda self: self[1])


def as_dtype(dtype):
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise TypeError(f"dtype: unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
        return np.dtype(_DTYPES[dtype])
    return np.dtype(dtype)


def _normalize_axes(dim, ndim):
    """``ndim`` may be the shape itself, so that an error names it."""
    shape = f" of shape {tuple(ndim)}" if isinstance(ndim, tuple) else ""
    ndim = len(ndim) if isinstance(ndim, tuple) else ndim
    if dim is None:
        return None
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    out = []
    for d in dims:
        if not -ndim <= d < max(ndim, 1):
            raise ValueError(f"dim {d} is out of range for a tensor{shape} with {ndim} dimensions")
        out.append(d % max(ndim, 1))
    return tuple(out)


class Tensor:
    __slots__ = ("array", "device", "requires_grad", "grad", "_node", "_slot", "__weakref__")
    __array_priority__ = 1000  # numpy scalars on the left defer to Tensor's operators

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        dev = as_device(device) if device is not None else None
        dtype = as_dtype(dtype)
        if isinstance(data, Tensor):
            data = data.array
        src_dev = device_of(data) if not isinstance(data, (list, tuple, numbers.Number)) else CPU
        if dev is None:
            dev = src_dev
        if src_dev == CPU and not isinstance(data, np.ndarray):
            data = np.asarray(data)
            if dtype is None and data.dtype == np.float64:
                dtype = float32  # Python floats become float32, as in PyTorch
        arr = transfer(data, dev) if src_dev != dev else data
        if dtype is not None and arr.dtype != dtype:
            arr = arr.astype(dtype)
        if requires_grad and arr.dtype.kind != "f":
            raise TypeError(f"tensor: only floating-point tensors can require gradients, got {arr.dtype}")
        self.array = arr
        self.device = dev
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._node = None
        self._slot = 0

    @classmethod
    def _make(cls, array, device, node, slot=0):
        if isinstance(array, np.generic):  # NumPy reductions return scalars, not 0-d arrays
            array = np.asarray(array)
        t = cls.__new__(cls)
        t.array = array
        t.device = device if device is not None else device_of(array)
        t.requires_grad = node is not None and array.dtype.kind == "f"
        t.grad = None
        t._node = node
        t._slot = slot
        return t

    # ---- properties -------------------------------------------------------------------------
    @property
    def shape(self):
        return self.array.shape

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def ndim(self):
        return self.array.ndim

    @property
    def size(self):
        return self.array.size

    def numel(self):
        return int(self.array.size)

    def dim(self):
        return self.array.ndim

    def __len__(self):
        return len(self.array)

    @property
    def data(self):
        """This tensor's values outside the graph, sharing its storage (PyTorch's ``.data``);
        the raw NumPy/CuPy array is ``.array``."""
        return Tensor._make(self.array, self.device, None)

    @data.setter
    def data(self, value):
        array = value.array if isinstance(value, Tensor) else value
        self.array = array if device_of(array) == self.device else transfer(array, self.device)

    @property
    def is_leaf(self):
        return self._node is None

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    # ---- conversion ---------------------------------------------------------------------------
    def numpy(self):
        """The values as a NumPy array (like PyTorch's .detach().cpu().numpy())."""
        return transfer(self.array, CPU)

    def __array__(self, dtype=None, copy=None):
        """NumPy and matplotlib take CPU tensors; a GPU tensor must be moved first, as in PyTorch."""
        if self.device != CPU:
            raise TypeError(f"can't convert a {self.device} tensor to a NumPy array; use .cpu() or .numpy() first")
        return self.array if dtype is None else self.array.astype(dtype, copy=False)

    def item(self):
        if self.array.size != 1:
            raise ValueError(f"item: only a tensor with one element converts to a number, got shape {self.shape}")
        return self.array.reshape(-1)[0].item()

    def tolist(self):
        return self.numpy().tolist()

    def to(self, device=None, dtype=None):
        if isinstance(device, (np.dtype, type)) or isinstance(device, str) and device in _DTYPES:
            device, dtype = None, device  # x.to(dn.float64)
        out = self
        if device is not None:
            dev = as_device(device)
            if dev != self.device:
                out = _ToDevice.apply(self, device=dev)
        if dtype is not None and as_dtype(dtype) != out.dtype:
            out = out.astype(dtype)
        return out

    def cpu(self):
        return self.to(CPU)

    def astype(self, dtype):
        return _Cast.apply(self, dtype=as_dtype(dtype))

    def float(self):
        return self.astype(float32)

    def double(self):
        return self.astype(float64)

    def long(self):
        return self.astype(int64)

    def detach(self):
        return Tensor._make(self.array, self.device, None)

    def requires_grad_(self, flag=True):
        if flag and self.dtype.kind != "f":
            raise TypeError(f"requires_grad_: only floating-point tensors can require gradients, got {self.dtype}")
        self.requires_grad = flag
        return self

    def __repr__(self):
        body = np.array2string(self.numpy(), precision=4, separator=", ", prefix="tensor(")
        extra = ""
        if self.dtype != float32:
            extra += f", dtype={self.dtype}"
        if self.device != CPU:
            extra += f", device={self.device}"
        if self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __bool__(self):
        if self.array.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.array.reshape(-1)[0])

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __hash__(self):
        return id(self)

    # ---- autograd -----------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require a gradient and has no graph")
        if grad is None:
            if self.array.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implied only for a scalar, got shape {self.shape}; "
                    "pass grad= explicitly")
            g = array_module(self.array).ones_like(self.array)
        else:
            g = grad.array if isinstance(grad, Tensor) else array_module(self.array).asarray(grad)
            if g.shape != self.shape:
                raise ValueError(f"backward: grad has shape {g.shape} but the tensor has shape {self.shape}")
            g = g.astype(self.dtype, copy=False)
        autograd.backward(self, g, retain_graph=retain_graph)

    def _accumulate(self, g):
        # always own .grad: g may be a broadcast view, or the very array that backward also
        # handed to another leaf (Add) or that the caller passed in; in-place edits of one
        # .grad must never change another
        xp = array_module(g)
        self.grad = xp.array(g, copy=True) if self.grad is None else xp.asarray(self.grad + g)  # 0-d stays an array

    def zero_grad(self):
        self.grad = None

    # ---- arithmetic ---------------------------------------------------------------------------
    def _lift(self, other):
        if isinstance(other, Tensor):
            return other
        xp = array_module(self.array)
        if isinstance(other, (bool, numbers.Number)):
            dtype = self.dtype if self.dtype.kind == "f" or isinstance(other, numbers.Integral) else float32
            return Tensor._make(xp.asarray(other, dtype=dtype), self.device, None)
        return Tensor(other, device=self.device)

    def _operands(self, o, reverse=False, true_div=False):
        """The two operands of a binary op, with PyTorch's promotion rather than NumPy's: an
        integer operand meets a floating one in the floating dtype (NumPy: int64 * float32 is
        float64), and dividing integers gives float32."""
        o = self._lift(o)
        a, b = (o, self) if reverse else (self, o)
        fa, fb = a.dtype.kind == "f", b.dtype.kind == "f"
        if fa != fb:
            if fa:
                b = b.astype(a.dtype)
            else:
                a = a.astype(b.dtype)
        elif true_div and not fa:
            a, b = a.astype(float32), b.astype(float32)
        return a, b

    def __add__(self, o):
        return E.Add.apply(*self._operands(o))

    def __radd__(self, o):
        return E.Add.apply(*self._operands(o, reverse=True))

    def __sub__(self, o):
        return E.Sub.apply(*self._operands(o))

    def __rsub__(self, o):
        return E.Sub.apply(*self._operands(o, reverse=True))

    def __mul__(self, o):
        return E.Mul.apply(*self._operands(o))

    def __rmul__(self, o):
        return E.Mul.apply(*self._operands(o, reverse=True))

    def __truediv__(self, o):
        return E.Div.apply(*self._operands(o, true_div=True))

    def __rtruediv__(self, o):
        return E.Div.apply(*self._operands(o, reverse=True, true_div=True))

    def __pow__(self, o):
        return E.Pow.apply(*self._operands(o))

    def __rpow__(self, o):
        return E.Pow.apply(*self._operands(o, reverse=True))

    def __neg__(self):
        return E.Neg.apply(self)

    def __matmul__(self, o):
        return matmul(self, self._lift(o))

    def __rmatmul__(self, o):
        return matmul(self._lift(o), self)

    def _compare(self, o, op):
        other = o.array if isinstance(o, Tensor) else o
        return Tensor._make(op(self.array, other), self.device, None)

    def __eq__(self, o):
        return self._compare(o, lambda a, b: a == b)

    def __ne__(self, o):
        return self._compare(o, lambda a, b: a != b)

    def __lt__(self, o):
        return self._compare(o, lambda a, b: a < b)

    def __le__(self, o):
        return self._compare(o, lambda a, b: a <= b)

    def __gt__(self, o):
        return self._compare(o, lambda a, b: a > b)

    def __ge__(self, o):
        return self._compare(o, lambda a, b: a >= b)

    # ---- math ---------------------------------------------------------------------------------
    def exp(self):
        return E.Exp.apply(self)

    def log(self):
        return E.Log.apply(self)

    def sqrt(self):
        return E.Sqrt.apply(self)

    def abs(self):
        return E.Abs.apply(self)

    def clip(self, min=None, max=None):
        return E.Clip.apply(self, lo=min, hi=max)

    clamp = clip

    def maximum(self, other):
        return E.Maximum.apply(self, self._lift(other))

    def minimum(self, other):
        return E.Maximum.apply(self, self._lift(other), smallest=True)

    def relu(self):
        from . import functional as F

        return F.relu(self)

    def sigmoid(self):
        from . import functional as F

        return F.sigmoid(self)

    def tanh(self):
        from . import functional as F

        return F.tanh(self)

    def softmax(self, dim=-1):
        from . import functional as F

        return F.softmax(self, dim)

    def log_softmax(self, dim=-1):
        from . import functional as F

        return F.log_softmax(self, dim)

    # ---- reductions ---------------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False):
        return R.Sum.apply(self, axis=_normalize_axes(dim, self.shape), keepdims=keepdim)

    def mean(self, dim=None, keepdim=False):
        return R.Mean.apply(self, axis=_normalize_axes(dim, self.shape), keepdims=keepdim)

    def amax(self, dim=None, keepdim=False):
        """Largest values over ``dim``; ties share the gradient evenly (torch.amax)."""
        return R.Max.apply(self, axis=_normalize_axes(dim, self.shape), keepdims=keepdim)

    def amin(self, dim=None, keepdim=False):
        return R.Max.apply(self, axis=_normalize_axes(dim, self.shape), keepdims=keepdim, smallest=True)

    def max(self, dim=None, keepdim=False):
        """As in PyTorch: the largest value without ``dim``; with an int ``dim``, the named pair
        ``(values, indices)``, the gradient going to the first largest entry only."""
        return self.amax() if dim is None else self._extreme_along(dim, keepdim, "argmax")

    def min(self, dim=None, keepdim=False):
        return self.amin() if dim is None else self._extreme_along(dim, keepdim, "argmin")

    def _extreme_along(self, dim, keepdim, arg):
        if not isinstance(dim, numbers.Integral):
            raise TypeError(f"max/min: dim must be an int (use amax/amin for several), got {dim!r}")
        dim = _normalize_axes(dim, self.shape)[0]
        idx = getattr(self, arg)(dim, keepdim=True)
        xp = array_module(self.array)
        where = list(xp.ogrid[tuple(slice(n) for n in idx.shape)])
        where[dim] = idx.array
        values = self[tuple(where)]
        if not keepdim:
            values, idx = values.squeeze(dim), idx.squeeze(dim)
        return ValuesIndices(values, idx)

    def var(self, dim=None, keepdim=False, unbiased=True):
        return R.Var.apply(self, axis=_normalize_axes(dim, self.shape), keepdims=keepdim,
                           correction=1 if unbiased else 0)

    def argmax(self, dim=None, keepdim=False, _fn="argmax"):
        xp = array_module(self.array)
        if dim is None:
            out = xp.asarray(getattr(xp, _fn)(self.array), dtype=np.int64)
            return Tensor._make(out.reshape((1,) * self.ndim) if keepdim else out, self.device, None)
        dim = _normalize_axes(dim, self.shape)[0]
        out = getattr(xp, _fn)(self.array, axis=dim)
        if keepdim:
            out = xp.expand_dims(out, dim)
        return Tensor._make(out.astype(np.int64), self.device, None)

    def argmin(self, dim=None, keepdim=False):
        return self.argmax(dim, keepdim, _fn="argmin")  # not argmax(-x): wrong for uint8

    # ---- shape --------------------------------------------------------------------------------
    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        try:
            target = _resolve_shape(shape, self.array.size)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {self.shape} "
                             f"({self.array.size} elements) into {shape}") from None
        if target == self.shape:
            return self
        return S.Reshape.apply(self, shape=target)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        nd = self.ndim
        if nd == 0:
            return self.reshape(1)
        s, e = _normalize_axes((start_dim, end_dim), self.shape)
        shape = self.shape[:s] + (int(np.prod(self.shape[s:e + 1])),) + self.shape[e + 1:]
        return self.reshape(shape)

    def permute(self, *axes):
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        if len(axes) != self.ndim or sorted(_normalize_axes(axes, self.shape)) != list(range(self.ndim)):
            raise ValueError(f"permute: {axes} is not a permutation of the {self.ndim} dims of shape {self.shape}")
        return S.Permute.apply(self, axes=tuple(a % self.ndim for a in axes))

    def transpose(self, dim0=-2, dim1=-1):
        axes = list(range(self.ndim))
        dim0, dim1 = _normalize_axes((dim0, dim1), self.shape)
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return self.permute(*axes)

    def squeeze(self, dim=None):
        if dim is None:
            shape = tuple(n for n in self.shape if n != 1)
        else:
            d = _normalize_axes(dim, self.shape)
            shape = tuple(n for i, n in enumerate(self.shape) if not (i in d and n == 1))
        return self.reshape(shape)

    def unsqueeze(self, dim):
        d = _normalize_axes(dim, self.ndim + 1)[0]  # one more dim than the input
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def expand(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        shape = tuple(self.shape[i - (len(shape) - self.ndim)] if n == -1 else n for i, n in enumerate(shape))
        if len(shape) < self.ndim or any(m != n and m != 1 for m, n in zip(self.shape[::-1], shape[::-1])):
            raise ValueError(f"expand: cannot expand a tensor of shape {self.shape} to {shape}")
        return S.BroadcastTo.apply(self, shape=shape)

    def __getitem__(self, index):
        index = _unwrap_index(index)
        return S.GetItem.apply(self, index=index)

    def contiguous(self):
        return self

    def split(self, split_size_or_sections, dim=0):
        return split(self, split_size_or_sections, dim)

    def chunk(self, chunks, dim=0):
        return chunk(self, chunks, dim)


def _resolve_shape(shape, size):
    shape = tuple(int(n) for n in shape)
    if shape.count(-1) > 1:
        raise ValueError("more than one -1")
    if -1 in shape:
        known = int(np.prod([n for n in shape if n != -1]))
        if known == 0 or size % known:
            raise ValueError("does not divide")
        shape = tuple(size // known if n == -1 else n for n in shape)
    if int(np.prod(shape)) != size:
        raise ValueError("size mismatch")
    return shape


def _unwrap_index(index):
    if isinstance(index, Tensor):
        return index.array
    if isinstance(index, tuple):
        return tuple(i.array if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, list):
        return np.asarray(index)
    return index


class _ToDevice(autograd.Function):
    @staticmethod
    def forward(ctx, a, device):
        ctx.source = device_of(a)
        return transfer(a, device)

    @staticmethod
    def backward(ctx, g):
        return transfer(g, ctx.source)

    @classmethod
    def apply(cls, t, device):
        # the output lives on the target device, so bypass apply's same-device bookkeeping
        record = autograd.is_grad_enabled() and t.requires_grad
        ctx = autograd.Context((t.requires_grad,))
        out = cls.forward(ctx, t.array, device=device)
        node = autograd.Node(cls, ctx, [t], [(out.shape, out.dtype)]) if record else None
        return Tensor._make(out, device, node)


class _Cast(autograd.Function):
    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.dtype) if ctx.dtype.kind == "f" else None


# ---- creation ---------------------------------------------------------------------------------
def tensor(data, dtype=None, device=None, requires_grad=False):
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def _create(fill, shape, dtype, device, requires_grad):
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)
    dev = as_device(device)
    dtype = as_dtype(dtype) or float32
    arr = fill(dev.xp, shape, dtype)
    return Tensor._make(arr, dev, None).requires_grad_(requires_grad)


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    return _create(lambda xp, s, d: xp.zeros(s, dtype=d), shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False):
    return _create(lambda xp, s, d: xp.ones(s, dtype=d), shape, dtype, device, requires_grad)


def full(shape, value, dtype=None, device=None, requires_grad=False):
    if dtype is None and isinstance(value, (bool, np.bool_)):
        dtype = bool_
    elif dtype is None and isinstance(value, numbers.Integral):
        dtype = int64
    return _create(lambda xp, s, d: xp.full(s, value, dtype=d), (shape,), dtype, device, requires_grad)


def empty(*shape, dtype=None, device=None):
    return _create(lambda xp, s, d: xp.empty(s, dtype=d), shape, dtype, device, False)


def arange(start, end=None, step=1, dtype=None, device=None):
    if end is None:
        start, end = 0, start
    ints = all(isinstance(v, numbers.Integral) for v in (start, end, step))
    dtype = as_dtype(dtype) or (int64 if ints else float32)
    dev = as_device(device)
    return Tensor._make(dev.xp.arange(start, end, step, dtype=dtype), dev, None)


def _like(t, value, dtype, device, requires_grad):
    """A tensor of ``t``'s shape filled with ``value``; on ``t``'s device it also keeps ``t``'s
    memory layout, as PyTorch's preserve_format does (a gradient seeded with ``ones_like`` of a
    convolution output is then already in the layout its backward reads)."""
    dev = as_device(device) if device is not None else t.device
    if dev != t.device:
        return full(t.shape, value, dtype=dtype or t.dtype, device=dev, requires_grad=requires_grad)
    out = dev.xp.full_like(t.array, value, dtype=as_dtype(dtype) or t.dtype)
    return Tensor._make(out, dev, None).requires_grad_(requires_grad)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    return _like(t, 0, dtype, device, requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    return _like(t, 1, dtype, device, requires_grad)


def full_like(t, value, dtype=None, device=None, requires_grad=False):
    return _like(t, value, dtype, device, requires_grad)


# ---- functions over several tensors -----------------------------------------------------------
def matmul(a, b):
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least 1 dimension, got {a.shape} and {b.shape}")
    ka = a.shape[-1]
    kb = b.shape[-2] if b.ndim >= 2 else b.shape[0]
    if ka != kb:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align ({ka} != {kb})")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dims of shapes {a.shape} and {b.shape} do not broadcast") from None
    return linalg.MatMul.apply(a, b)


def _check_same_rank(op, tensors, dim, skip_dim):
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    first = tensors[0]
    for t in tensors[1:]:
        if t.ndim != first.ndim or any(
                x != y for i, (x, y) in enumerate(zip(t.shape, first.shape)) if not (skip_dim and i == dim)):
            raise ValueError(f"{op}: shapes {[tuple(x.shape) for x in tensors]} do not match "
                             f"{'except in dim ' + str(dim) if skip_dim else 'exactly'}")


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty sequence of tensors")
    dim = _normalize_axes(dim, tensors[0].shape)[0]
    _check_same_rank("cat", tensors, dim, skip_dim=True)
    return S.Concat.apply(*tensors, axis=dim)


concat = cat


def stack(tensors, dim=0):
    tensors = list(tensors)
    _check_same_rank("stack", tensors, 0, skip_dim=False)
    return S.Stack.apply(*tensors, axis=_normalize_axes(dim, tensors[0].ndim + 1)[0])


def split(t, split_size_or_sections, dim=0):
    dim = _normalize_axes(dim, t.shape)[0]
    n = t.shape[dim]
    if isinstance(split_size_or_sections, numbers.Integral):
        step = int(split_size_or_sections)
        if step <= 0:
            raise ValueError(f"split: split size must be positive, got {step}")
        sizes = [step] * (n // step) + ([n % step] if n % step else [])
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise ValueError(f"split: sections {sizes} do not add up to dim {dim} of shape {t.shape}")
    bounds = list(np.cumsum(sizes)[:-1])
    out = S.Split.apply(t, bounds=bounds, axis=dim)
    return out if isinstance(out, tuple) else (out,)


def chunk(t, chunks, dim=0):
    if not isinstance(chunks, numbers.Integral) or chunks <= 0:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
    n = t.shape[_normalize_axes(dim, t.shape)[0]]
    return split(t, -(-n // chunks), dim)


def pad(t, pad, value=0.0):
    """PyTorch convention: ``pad`` lists (before, after) pairs starting from the LAST dim."""
    if len(pad) % 2 or len(pad) // 2 > t.ndim:
        raise ValueError(f"pad: expected an even number of pads for at most {t.ndim} dims "
                         f"of shape {t.shape}, got {pad}")
    widths = [(0, 0)] * t.ndim
    for i in range(len(pad) // 2):
        widths[t.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
    if any(lo < 0 or hi < 0 for lo, hi in widths):
        raise ValueError(f"pad: negative padding {pad} is not supported")
    return S.Pad.apply(t, widths=tuple(widths), value=value)


def where(cond, a, b):
    cond = cond.array if isinstance(cond, Tensor) else cond
    ref = a if isinstance(a, Tensor) else b
    return E.Where.apply(cond, ref._lift(a), ref._lift(b))


def maximum(a, b):
    return a.maximum(b)


def minimum(a, b):
    return a.minimum(b)


def exp(t):
    return t.exp()


def log(t):
    return t.log()


def sqrt(t):
    return t.sqrt()


def abs(t):  # noqa: A001 (mirrors torch.abs)
    return t.abs()


def clip(t, min=None, max=None):  # noqa: A002
    return t.clip(min, max)


clamp = clip
