"""Tensor: an array, the device it lives on, its gradient and the graph node that made it.

PyTorch's API: ``.grad`` is a Tensor without a graph, accumulated by ``backward``; in-place
ops (``+=``, ``x[i] = v``, ``add_``, ``zero_``, ...) write into the array and bump its version
counter (rules in autograd.py's docstring); ``size()`` is the shape and ``numel()`` the number
of elements."""
from __future__ import annotations

import builtins  # this module defines sum, max, min, abs and pow as torch does
import numbers

import numpy as np

from . import autograd
from .backend import CPU, array_module, device as as_device, device_of, transfer
from .ops import elementwise as E, linalg, reduce as R, shape as S

_DTYPES = {
    "float32": np.float32, "float64": np.float64, "float16": np.float16,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "bool": np.bool_,
    "uint8": np.uint8,
}
float32, float64, float16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)
int64, int32, uint8, bool_ = np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.uint8), np.dtype(np.bool_)
int16, int8 = np.dtype(np.int16), np.dtype(np.int8)
half, double, long = float16, float64, int64  # PyTorch's aliases


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
        if not -ndim <= d < builtins.max(ndim, 1):
            raise ValueError(f"dim {d} is out of range for a tensor{shape} with {ndim} dimensions")
        out.append(d % builtins.max(ndim, 1))
    return tuple(out)


class _HookHandle:
    """What a hook registration returns: ``remove()`` unregisters the hook."""

    __slots__ = ("_hooks", "_key")

    def __init__(self, hooks, key):
        self._hooks, self._key = hooks, key

    def remove(self):
        self._hooks.pop(self._key, None)



def _value_read(t, what):
    """A host read of ``t``'s values, or a result computed without an op (comparisons, argmax):
    a tracer (dn.compile) refuses it for traced tensors, which a replay could not recompute."""
    hooks = autograd.current_hooks()
    if hooks is not None:
        read = getattr(hooks, "value_read", None)
        if read is not None:
            read(t, what)


class Tensor:
    # _version: [version, stale], shared with views (autograd.py); _base: the tensor a view was
    # made from, and _view_index its index for x[index]: set only on views (read with getattr);
    # _post_accumulate_hooks: register_post_accumulate_grad_hook's list (read with getattr)
    __slots__ = ("array", "device", "requires_grad", "_grad", "_node", "_slot", "_version", "_base",
                 "_view_index", "_post_accumulate_hooks", "__weakref__")
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
        if getattr(data, "dtype", None) is not None and data.dtype.kind in "OUSVMm":
            raise TypeError(f"tensor: can't make a tensor from strings or objects (NumPy dtype "
                            f"{data.dtype}); expected numbers, nested lists of numbers or a numeric array")
        arr = transfer(data, dev) if src_dev != dev else data
        if dtype is not None and arr.dtype != dtype:
            arr = arr.astype(dtype)
        if requires_grad and arr.dtype.kind != "f":
            raise TypeError(f"tensor: only floating-point tensors can require gradients, got {arr.dtype}")
        self.array = arr
        self.device = dev
        self.requires_grad = bool(requires_grad)
        self._grad = None
        self._node = None
        self._slot = 0
        self._version = [0, False]

    @classmethod
    def _make(cls, array, device, node, slot=0):
        if isinstance(array, np.generic):  # NumPy reductions return scalars, not 0-d arrays
            array = np.asarray(array)
        t = cls.__new__(cls)
        t.array = array
        t.device = device if device is not None else device_of(array)
        t.requires_grad = node is not None and array.dtype.kind == "f"
        t._grad = None
        t._node = node
        t._slot = slot
        t._version = [0, False]
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

    def size(self, dim=None):
        """The shape (PyTorch's ``size()``), or its length along ``dim``; ``numel()`` counts."""
        if dim is None:
            return self.array.shape
        return self.array.shape[_normalize_axes(dim, self.shape)[0]]

    def numel(self):
        return int(self.array.size)

    nelement = numel

    def dim(self):
        return self.array.ndim

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.array.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.array.shape[0]))

    def __contains__(self, value):
        return bool((self == value).any())

    @property
    def grad(self):
        """The accumulated gradient: a Tensor without a graph, or None."""
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"grad: expected a Tensor or None, got {type(value).__name__}; "
                                "wrap an array with dn.tensor(...)")
            if value.shape != self.shape:
                raise ValueError(f"grad: a gradient of shape {value.shape} for a tensor of shape {self.shape}")
            if value.dtype != self.dtype:
                raise TypeError(f"grad: a gradient of dtype {value.dtype} for a tensor of dtype {self.dtype}")
            if value.device != self.device:
                raise ValueError(f"grad: a gradient on {value.device} for a tensor on {self.device}")
        self._grad = value

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
    def grad_fn(self):
        """The recorded node that made this tensor (None for a leaf)."""
        return self._node

    @property
    def is_cuda(self):
        return self.device.kind == "gpu"

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    # ---- conversion ---------------------------------------------------------------------------
    def numpy(self):
        """The values as a NumPy array (like PyTorch's .detach().cpu().numpy())."""
        _value_read(self, "numpy()")
        return transfer(self.array, CPU)

    def __array__(self, dtype=None, copy=None):
        """NumPy and matplotlib take CPU tensors; a GPU tensor must be moved first, as in PyTorch."""
        if self.device != CPU:
            raise TypeError(f"can't convert a {self.device} tensor to a NumPy array; use .cpu() or .numpy() first")
        _value_read(self, "np.asarray()")
        a = self.array
        if dtype is not None and np.dtype(dtype) != a.dtype:
            if copy is False:
                raise ValueError(f"__array__: converting {a.dtype} to {np.dtype(dtype)} needs a copy")
            return a.astype(dtype)
        return a.copy() if copy else a

    def __format__(self, spec):
        if self.ndim == 0:  # f"{loss:.3f}", as PyTorch's
            return format(self.item(), spec)
        if spec:
            raise TypeError(f"unsupported format string {spec!r} for a tensor of shape {self.shape}; "
                            "only 0-d tensors format as numbers")
        return str(self)

    def item(self):
        _value_read(self, "item()")
        if self.array.size != 1:
            raise ValueError(f"item: only a tensor with one element converts to a number, got shape {self.shape}")
        return self.array.reshape(-1)[0].item()

    def tolist(self):
        _value_read(self, "tolist()")
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

    def half(self):
        return self.astype(float16)

    def long(self):
        return self.astype(int64)

    def int(self):
        return self.astype(int32)

    def bool(self):
        return self.astype(bool_)

    def type(self, dtype=None):
        """Without ``dtype``, the type name (``'divenet.FloatTensor'``); with one, a cast to it
        (a dtype or such a name)."""
        if dtype is None:
            name = _TYPE_NAMES.get(self.dtype.name, self.dtype.name)
            return f"divenet.{'' if self.device == CPU else self.device.kind + '.'}{name}"
        if isinstance(dtype, str) and dtype.rsplit(".", 1)[-1] in _TYPE_DTYPES:
            dtype = _TYPE_DTYPES[dtype.rsplit(".", 1)[-1]]
        return self.astype(dtype)

    def type_as(self, other):
        return self.astype(other.dtype)

    def detach(self):
        """A graph-free tensor sharing the storage and its version counter (PyTorch's)."""
        t = Tensor._make(self.array, self.device, None)
        t._version = self._version
        return t

    def detach_(self):
        if getattr(self, "_base", None) is not None:
            raise RuntimeError("detach_: can't detach a view in place; use detach() instead")
        self._node = None
        self.requires_grad = False
        return self

    def clone(self):
        """A copy (same memory layout) that stays in the graph."""
        return E.Clone.apply(self)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"requires_grad_: only floating-point tensors can require gradients, got {self.dtype}")
        if not requires_grad and self._node is not None:
            raise RuntimeError("requires_grad_: only a leaf's flag can be changed; use detach() "
                               "for a tensor computed in the graph")
        self.requires_grad = bool(requires_grad)
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
        _value_read(self, "bool()")
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
    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Accumulate the gradient of this tensor into the ``.grad`` of the leaves; ``gradient``
        (its own gradient) may be left out for a one-element tensor. The graph is freed unless
        ``retain_graph``."""
        if create_graph:
            raise NotImplementedError("backward: create_graph=True (higher-order gradients) is not supported")
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require a gradient and has no graph")
        if gradient is None:
            if self.array.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implied only for a scalar, got shape {self.shape}; "
                    "pass gradient= explicitly")
            g = array_module(self.array).ones_like(self.array)
        else:
            if isinstance(gradient, Tensor) and gradient.device != self.device:
                raise ValueError(f"backward: gradient lives on {gradient.device} but the tensor on "
                                 f"{self.device}; move it with .to(device) first")
            g = gradient.array if isinstance(gradient, Tensor) else array_module(self.array).asarray(gradient)
            if g.shape != self.shape:
                raise ValueError(f"backward: grad has shape {g.shape} but the tensor has shape {self.shape}")
            g = g.astype(self.dtype, copy=False)
        autograd.backward(self, g, retain_graph=bool(retain_graph))

    def _accumulate(self, g):
        # the first gradient is copied, so that .grad is owned: g may be a broadcast view, or
        # the very array that backward also handed to another leaf (Add) or that the caller
        # passed in; later ones add in place, as PyTorch's AccumulateGrad (x.grad stays the
        # same tensor)
        grad = self._grad
        if grad is None:
            self._grad = Tensor._make(array_module(g).array(g, copy=True), self.device, None)
        else:
            grad.array += g
            grad._version[0] += 1
        hooks = getattr(self, "_post_accumulate_hooks", None)
        if hooks:
            for hook in tuple(hooks.values()):
                hook(self)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` each time backward has accumulated a gradient into this leaf's
        ``.grad`` (PyTorch's; DistributedDataParallel starts reductions from it). Returns a
        handle whose ``remove()`` unregisters it."""
        if self._node is not None:
            raise RuntimeError("register_post_accumulate_grad_hook: only leaf tensors accumulate a .grad")
        if not callable(hook):
            raise TypeError(f"register_post_accumulate_grad_hook: hook must be callable, got {type(hook).__name__}")
        hooks = getattr(self, "_post_accumulate_hooks", None)
        if hooks is None:
            hooks = self._post_accumulate_hooks = {}
        key = object()
        hooks[key] = hook
        return _HookHandle(hooks, key)

    def zero_grad(self):
        self.grad = None

    # ---- arithmetic ---------------------------------------------------------------------------
    def _lift(self, other):
        """``other`` as an operand next to this tensor: a Tensor as is, a Python or NumPy
        number as a typed NumPy scalar (this tensor's dtype, or float32 for a float next to an
        integer tensor) that ops take as a constant (on a GPU a kernel argument: no upload, no
        allocation), anything else as a tensor on this tensor's device."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (bool, numbers.Number)):
            dtype = self.dtype if self.dtype.kind == "f" or isinstance(other, numbers.Integral) else float32
            return dtype.type(other)
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
        _value_read(self, "a comparison (or bitwise op)")
        if isinstance(o, Tensor):
            _value_read(o, "a comparison (or bitwise op)")
            if o.device != self.device:
                raise ValueError(f"comparison: the tensors live on {self.device} and {o.device}; "
                                 "move one with .to(device) first")
            o = o.array
        elif not isinstance(o, (bool, numbers.Number)):
            o = Tensor(o, device=self.device).array  # host data (a list, a NumPy array) moves over
        return Tensor._make(op(self.array, o), self.device, None)

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

    def __and__(self, o):
        return self._compare(o, lambda a, b: a & b)

    __rand__ = __and__

    def __or__(self, o):
        return self._compare(o, lambda a, b: a | b)

    __ror__ = __or__

    def __xor__(self, o):
        return self._compare(o, lambda a, b: a ^ b)

    __rxor__ = __xor__

    def __invert__(self):
        _value_read(self, "~")
        return Tensor._make(~self.array, self.device, None)

    def __floordiv__(self, o):
        return self._compare(o, lambda a, b: a // b)

    def __mod__(self, o):
        return self._compare(o, lambda a, b: a % b)

    def __abs__(self):
        return self.abs()

    # ---- in-place ops (autograd.apply_inplace: versions, the leaf rule, rebasing) ------------------
    def _arith_(self, fn, name, other, true_div=False, **options):
        o = self._lift(other)
        kinds = self.dtype.kind == "f", o.dtype.kind == "f"
        if kinds[0] != kinds[1]:  # PyTorch's promotion: the floating operand's dtype
            result = self.dtype if kinds[0] else o.dtype
        else:
            result = float32 if true_div and not kinds[0] else np.result_type(self.dtype, o.dtype)
        if not np.can_cast(result, self.dtype, "same_kind"):
            raise TypeError(f"{name}: the result type {result} can't be cast to this tensor's dtype "
                            f"{self.dtype} in place")
        if o.shape != self.shape and np.broadcast_shapes(o.shape, self.shape) != self.shape:
            raise ValueError(f"{name}: an operand of shape {o.shape} does not broadcast to the "
                             f"tensor's shape {self.shape}")
        if o.dtype != self.dtype and o.dtype.kind == self.dtype.kind == "f":
            o = o.astype(self.dtype)  # a tensor's gradient then flows back through the cast
        return autograd.apply_inplace(fn, self, o, name=name, **options)

    def add_(self, other, *, alpha=1):
        return self._arith_(E.AddInplace, "add_", other, alpha=alpha)

    def sub_(self, other, *, alpha=1):
        return self._arith_(E.AddInplace, "sub_", other, alpha=-alpha)

    def mul_(self, other):
        return self._arith_(E.MulInplace, "mul_", other)

    def div_(self, other):
        return self._arith_(E.DivInplace, "div_", other, true_div=True)

    def __iadd__(self, other):
        return self._arith_(E.AddInplace, "+=", other)

    def __isub__(self, other):
        return self._arith_(E.AddInplace, "-=", other, alpha=-1)

    def __imul__(self, other):
        return self._arith_(E.MulInplace, "*=", other)

    def __itruediv__(self, other):
        return self._arith_(E.DivInplace, "/=", other, true_div=True)

    def clamp_(self, min=None, max=None):  # noqa: A002 (PyTorch's names)
        if min is None and max is None:
            raise ValueError("clamp_: at least one of min and max must be given")
        return autograd.apply_inplace(E.ClipInplace, self, name="clamp_", lo=min, hi=max)

    clip_ = clamp_

    def __setitem__(self, index, value):
        self._set(_unwrap_index(index, self), value, "__setitem__")

    def _set(self, index, value, name):
        if isinstance(value, Tensor) and value.device != self.device:
            value = value.to(self.device)
        value = self._lift(value)
        try:
            return autograd.apply_inplace(S.SetItem, self, value, name=name, index=index)
        except ValueError as exc:
            if "could not broadcast" not in str(exc):
                raise
            raise ValueError(f"{name}: {exc} (tensor of shape {self.shape})") from None

    def copy_(self, src):
        """Copy ``src`` (broadcast, cast, moved to this device) into this tensor."""
        return self._set(Ellipsis, src, "copy_")

    def fill_(self, value):
        return self._set(Ellipsis, value, "fill_")

    def zero_(self):
        return self._set(Ellipsis, 0, "zero_")

    def normal_(self, mean=0.0, std=1.0):
        from .random import randn

        z = randn(self.shape, dtype=self.dtype, device=self.device)
        return self._set(Ellipsis, z.array * self.dtype.type(std) + self.dtype.type(mean), "normal_")

    def uniform_(self, a=0.0, b=1.0):
        from .random import rand

        u = rand(self.shape, dtype=self.dtype, device=self.device)
        return self._set(Ellipsis, u.array * self.dtype.type(b - a) + self.dtype.type(a), "uniform_")

    # ---- math ---------------------------------------------------------------------------------
    def exp(self):
        return E.Exp.apply(self)

    def log(self):
        return E.Log.apply(self)

    def pow(self, exponent):
        return self ** exponent

    def neg(self):
        return -self

    def square(self):
        return self * self

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

    # ---- reductions: PyTorch's dim/keepdim, NumPy's axis/keepdims also taken ----------------------
    def sum(self, dim=None, keepdim=False, dtype=None, *, axis=None, keepdims=None):
        dim, keepdim = _dim_args("sum", dim, keepdim, axis, keepdims)
        t = self if dtype is None else self.astype(dtype)
        return R.Sum.apply(t, axis=_normalize_axes(dim, self.shape), keepdims=keepdim)

    def mean(self, dim=None, keepdim=False, dtype=None, *, axis=None, keepdims=None):
        dim, keepdim = _dim_args("mean", dim, keepdim, axis, keepdims)
        t = self if dtype is None else self.astype(dtype)
        if t.dtype.kind != "f":
            raise TypeError(f"mean: expected a floating-point tensor, got {t.dtype}; use .float() or dtype=")
        return R.Mean.apply(t, axis=_normalize_axes(dim, self.shape), keepdims=keepdim)

    def prod(self, dim=None, keepdim=False, dtype=None, *, axis=None, keepdims=None):
        dim, keepdim = _dim_args("prod", dim, keepdim, axis, keepdims)
        t = self if dtype is None else self.astype(dtype)
        return R.Prod.apply(t, axis=_normalize_axes(dim, self.shape), keepdims=keepdim)

    def amax(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Largest values over ``dim``; ties share the gradient evenly (torch.amax)."""
        dim, keepdim = _dim_args("amax", dim, keepdim, axis, keepdims)
        return R.Max.apply(self, axis=_normalize_axes(dim, self.shape), keepdims=keepdim)

    def amin(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        dim, keepdim = _dim_args("amin", dim, keepdim, axis, keepdims)
        return R.Max.apply(self, axis=_normalize_axes(dim, self.shape), keepdims=keepdim, smallest=True)

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """As in PyTorch: the largest value without ``dim``; with an int ``dim``, the named pair
        ``(values, indices)``, the gradient going to the first largest entry only; with a
        tensor, the elementwise maximum."""
        if isinstance(dim, Tensor):
            return self.maximum(dim)
        dim, keepdim = _dim_args("max", dim, keepdim, axis, keepdims)
        return self.amax() if dim is None else self._extreme_along(dim, keepdim, "argmax")

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        if isinstance(dim, Tensor):
            return self.minimum(dim)
        dim, keepdim = _dim_args("min", dim, keepdim, axis, keepdims)
        return self.amin() if dim is None else self._extreme_along(dim, keepdim, "argmin")

    def _extreme_along(self, dim, keepdim, arg):
        if not isinstance(dim, numbers.Integral):
            raise TypeError(f"max/min: dim must be an int (use amax/amin for several), got {dim!r}")
        dim = _normalize_axes(dim, self.shape)[0]
        idx = getattr(self, arg)(dim, keepdim=True)
        values = S.TakeAlongAxis.apply(self, idx, axis=dim)
        if not keepdim:
            values, idx = values.squeeze(dim), idx.squeeze(dim)
        return ValuesIndices(values, idx)

    def var(self, dim=None, unbiased=True, keepdim=False, *, correction=None, axis=None, keepdims=None):
        """PyTorch's ``var(dim, unbiased, keepdim)`` or ``var(dim, correction=, keepdim=)``."""
        dim, keepdim = _dim_args("var", dim, keepdim, axis, keepdims)
        if correction is None:
            correction = 1 if unbiased else 0
        return R.Var.apply(self, axis=_normalize_axes(dim, self.shape), keepdims=keepdim, correction=correction)

    def std(self, dim=None, unbiased=True, keepdim=False, *, correction=None, axis=None, keepdims=None):
        return self.var(dim, unbiased, keepdim, correction=correction, axis=axis, keepdims=keepdims).sqrt()

    def norm(self, p="fro", dim=None, keepdim=False):
        """The ``p``-norm over ``dim`` (all elements by default): 2 / 'fro', 1, inf, -inf, 0 or
        any other number; its gradient is 0 where a 2-norm is 0, as PyTorch's."""
        if self.dtype.kind != "f":
            raise TypeError(f"norm: expected a floating-point tensor, got {self.dtype}")
        if p in ("fro", 2, 2.0):
            return R.Norm.apply(self, axis=_normalize_axes(dim, self.shape), keepdims=keepdim)
        if p == float("inf"):
            return self.abs().amax(dim, keepdim)
        if p == float("-inf"):
            return self.abs().amin(dim, keepdim)
        if p == 0:
            return (self != 0).astype(self.dtype).sum(dim, keepdim)
        if p == 1:
            return self.abs().sum(dim, keepdim)
        if not isinstance(p, numbers.Real):
            raise ValueError(f"norm: p must be a number or 'fro', got {p!r}")
        return (self.abs() ** p).sum(dim, keepdim) ** (1.0 / p)

    def any(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._logical("any", dim, keepdim, axis, keepdims)

    def all(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._logical("all", dim, keepdim, axis, keepdims)

    def _logical(self, fn, dim, keepdim, axis, keepdims):
        dim, keepdim = _dim_args(fn, dim, keepdim, axis, keepdims)
        _value_read(self, f"{fn}()")
        out = getattr(self.array, fn)(axis=_normalize_axes(dim, self.shape), keepdims=keepdim)
        return Tensor._make(out, self.device, None)

    def argmax(self, dim=None, keepdim=False, *, axis=None, keepdims=None, _fn="argmax"):
        dim, keepdim = _dim_args(_fn, dim, keepdim, axis, keepdims)
        _value_read(self, f"{_fn}()")
        xp = array_module(self.array)
        if dim is None:
            out = xp.asarray(getattr(xp, _fn)(self.array), dtype=np.int64)
            return Tensor._make(out.reshape((1,) * self.ndim) if keepdim else out, self.device, None)
        dim = _normalize_axes(dim, self.shape)[0]
        out = getattr(xp, _fn)(self.array, axis=dim)
        if keepdim:
            out = xp.expand_dims(out, dim)
        return Tensor._make(out.astype(np.int64), self.device, None)

    def argmin(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self.argmax(dim, keepdim, axis=axis, keepdims=keepdims, _fn="argmin")  # not argmax(-x): wrong for uint8

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

    def view(self, *shape):
        if len(shape) == 1 and not isinstance(shape[0], (tuple, list, numbers.Integral)):
            raise TypeError(f"view: expected a shape, got {shape[0]!r} (a view as another dtype is not supported)")
        return self.reshape(*shape)

    def view_as(self, other):
        return self.reshape(other.shape)

    def reshape_as(self, other):
        return self.reshape(other.shape)

    def t(self):
        """The transpose of a matrix (a tensor of at most 2 dims, as PyTorch's)."""
        if self.ndim > 2:
            raise ValueError(f"t: expects a tensor of at most 2 dims, got shape {self.shape}; use transpose(dim0, dim1)")
        return self if self.ndim < 2 else self.transpose(0, 1)

    def repeat(self, *sizes):
        """Tile the tensor ``sizes[i]`` times along dim ``i`` (PyTorch's repeat; np.tile)."""
        sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
        if len(sizes) < self.ndim:
            raise ValueError(f"repeat: {len(sizes)} repeats for a tensor of shape {self.shape}; expected "
                             f"at least {self.ndim}")
        shape = (1,) * (len(sizes) - self.ndim) + self.shape
        spread = self.reshape(tuple(n for d in shape for n in (1, d)))
        tiled = spread.expand(tuple(n for r, d in zip(sizes, shape) for n in (r, d)))
        return tiled.reshape(tuple(r * d for r, d in zip(sizes, shape)))

    def expand_as(self, other):
        return self.expand(other.shape)

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
        index = _unwrap_index(index, self)
        out = S.GetItem.apply(self, index=index)
        if getattr(out, "_base", None) is not None:
            out._view_index = index  # a recorded in-place op on the view writes base[index]
        return out

    def contiguous(self):
        return self

    def split(self, split_size_or_sections, dim=0):
        return split(self, split_size_or_sections, dim)

    def chunk(self, chunks, dim=0):
        return chunk(self, chunks, dim)


def _dim_args(op, dim, keepdim, axis, keepdims):
    """PyTorch's ``dim``/``keepdim``, or NumPy's ``axis``/``keepdims``."""
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{op}: got both dim={dim!r} and axis={axis!r}; pass one")
        dim = axis
    return dim, bool(keepdim if keepdims is None else keepdims)


_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor",
               "int64": "LongTensor", "int32": "IntTensor", "int16": "ShortTensor", "int8": "CharTensor",
               "uint8": "ByteTensor", "bool": "BoolTensor"}
_TYPE_DTYPES = {v: k for k, v in _TYPE_NAMES.items()}


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


def _unwrap_index(index, t):
    """``index`` for ``t.array``: Tensors unwrapped; lists and NumPy arrays as arrays on t's
    device (one copy, as PyTorch takes a CPU index for a CUDA tensor); int and integer-array
    components checked against their axis with NumPy's IndexError, which CuPy (and sim) skip:
    they wrap out-of-range indices silently."""
    parts = list(index) if isinstance(index, tuple) else [index]
    for k, p in enumerate(parts):
        if isinstance(p, Tensor):
            if p.device != t.device and p.device != CPU:
                raise ValueError(f"indexing: a tensor on {t.device} indexed with a tensor on {p.device}; "
                                 f"indices must be on the CPU or on {t.device}")
            parts[k] = p.array
        elif isinstance(p, list):
            parts[k] = np.asarray(p)
    # the axes each part takes: a boolean array as many as it has dims, None/Ellipsis/a bool none
    takes = [p.ndim if getattr(p, "dtype", None) == np.bool_ and getattr(p, "ndim", 0) else
             0 if p is None or p is Ellipsis or isinstance(p, (bool, np.bool_)) else 1 for p in parts]
    axis = 0
    for k, p in enumerate(parts):
        if p is Ellipsis:
            axis = t.ndim - builtins.sum(takes[k + 1:])
            continue
        if axis < t.ndim and not isinstance(p, (bool, np.bool_)):
            n = t.shape[axis]
            if isinstance(p, numbers.Integral):
                if not -n <= p < n:
                    raise IndexError(f"index {int(p)} is out of bounds for axis {axis} with size {n}")
            elif getattr(p, "dtype", None) is not None and p.dtype.kind in "iu" and p.size:
                _check_index_array(p, axis, n)
        if isinstance(p, np.ndarray) and t.device != CPU:
            parts[k] = transfer(p, t.device)
        axis += takes[k]
    return tuple(parts) if isinstance(index, tuple) else parts[0]


def _check_index_array(p, axis, n):
    """NumPy's bounds check for an integer-array index. On a device it costs one small
    reduction and one sync (min and max read together), paid only by advanced indexing."""
    if isinstance(p, np.ndarray):
        lo, hi = int(p.min()), int(p.max())
    else:
        xp = array_module(p)
        lo, hi = (int(v) for v in transfer(xp.stack((p.min(), p.max())), CPU))
    if lo < -n or hi >= n:
        raise IndexError(f"index {hi if hi >= n else lo} is out of bounds for axis {axis} with size {n}")


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
    """A new tensor holding a copy of ``data``, as torch.tensor (``as_tensor`` and
    ``from_numpy`` share the memory instead)."""
    t = Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
    if t.array is (data.array if isinstance(data, Tensor) else data):
        t.array = t.array.copy(order="K")  # keeps a memory layout (batch-last) that the data has
    return t


def as_tensor(data, dtype=None, device=None):
    """A tensor sharing ``data``'s memory where it can (same device and dtype)."""
    if isinstance(data, Tensor) and (dtype is None or as_dtype(dtype) == data.dtype) and \
            (device is None or as_device(device) == data.device):
        return data
    return Tensor(data, dtype=dtype, device=device)


def from_numpy(array):
    """A CPU tensor sharing ``array``'s memory, in its dtype (float64 stays float64)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)


def _shape_arg(op, shape, size):
    if size is not None:
        if shape:
            raise TypeError(f"{op}: got both a shape {shape} and size={size}; pass one")
        shape = (size,)
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def _create(fill, shape, dtype, device, requires_grad):
    shape = _shape_arg("tensor", shape, None)
    dev = as_device(device)
    dtype = as_dtype(dtype) or float32
    arr = fill(dev.xp, shape, dtype)
    return Tensor._make(arr, dev, None).requires_grad_(requires_grad)


def zeros(*shape, size=None, dtype=None, device=None, requires_grad=False):
    shape = _shape_arg("zeros", shape, size)
    return _create(lambda xp, s, d: xp.zeros(s, dtype=d), shape, dtype, device, requires_grad)


def ones(*shape, size=None, dtype=None, device=None, requires_grad=False):
    shape = _shape_arg("ones", shape, size)
    return _create(lambda xp, s, d: xp.ones(s, dtype=d), shape, dtype, device, requires_grad)


def full(shape, value, dtype=None, device=None, requires_grad=False):
    if dtype is None and isinstance(value, (bool, np.bool_)):
        dtype = bool_
    elif dtype is None and isinstance(value, numbers.Integral):
        dtype = int64
    return _create(lambda xp, s, d: xp.full(s, value, dtype=d), (shape,), dtype, device, requires_grad)


def empty(*shape, size=None, dtype=None, device=None, requires_grad=False):
    shape = _shape_arg("empty", shape, size)
    return _create(lambda xp, s, d: xp.empty(s, dtype=d), shape, dtype, device, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    return _create(lambda xp, s, d: xp.eye(n, m, dtype=d), (), dtype, device, requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    return _create(lambda xp, s, d: xp.linspace(start, end, steps, dtype=d), (), dtype, device, requires_grad)


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
        if builtins.sum(sizes) != n:
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
    ref = a if isinstance(a, Tensor) else b
    if not isinstance(cond, Tensor):
        cond = Tensor(cond, device=ref.device)  # host data moves over; a Tensor's device is checked
    return E.Where.apply(cond, ref._lift(a), ref._lift(b))


def mm(a, b):
    """The product of two matrices (2-d only, as torch.mm; ``matmul`` broadcasts)."""
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"mm: expects two matrices, got shapes {a.shape} and {b.shape}")
    return matmul(a, b)


def sum(t, dim=None, keepdim=False, dtype=None):  # noqa: A001 (mirrors torch.sum)
    return t.sum(dim, keepdim, dtype)


def mean(t, dim=None, keepdim=False, dtype=None):
    return t.mean(dim, keepdim, dtype)


def prod(t, dim=None, keepdim=False, dtype=None):
    return t.prod(dim, keepdim, dtype)


def std(t, dim=None, unbiased=True, keepdim=False, *, correction=None):
    return t.std(dim, unbiased, keepdim, correction=correction)


def var(t, dim=None, unbiased=True, keepdim=False, *, correction=None):
    return t.var(dim, unbiased, keepdim, correction=correction)


def max(t, dim=None, keepdim=False):  # noqa: A001
    """torch.max: the largest value, ``(values, indices)`` along an int ``dim``, or the
    elementwise maximum with a tensor."""
    return t.max(dim, keepdim)


def min(t, dim=None, keepdim=False):  # noqa: A001
    return t.min(dim, keepdim)


def amax(t, dim=None, keepdim=False):
    return t.amax(dim, keepdim)


def amin(t, dim=None, keepdim=False):
    return t.amin(dim, keepdim)


def argmax(t, dim=None, keepdim=False):
    return t.argmax(dim, keepdim)


def argmin(t, dim=None, keepdim=False):
    return t.argmin(dim, keepdim)


def norm(t, p="fro", dim=None, keepdim=False):
    return t.norm(p, dim, keepdim)


def reshape(t, shape):
    return t.reshape(shape)


def flatten(t, start_dim=0, end_dim=-1):
    return t.flatten(start_dim, end_dim)


def squeeze(t, dim=None):
    return t.squeeze(dim)


def unsqueeze(t, dim):
    return t.unsqueeze(dim)


def transpose(t, dim0, dim1):
    return t.transpose(dim0, dim1)


def permute(t, dims):
    return t.permute(dims)


def clone(t):
    return t.clone()


def numel(t):
    return t.numel()


def pow(t, exponent):  # noqa: A001
    return t ** exponent


def tanh(t):
    return t.tanh()


def sigmoid(t):
    return t.sigmoid()


def relu(t):
    return t.relu()


def softmax(t, dim):
    return t.softmax(dim)


def log_softmax(t, dim):
    return t.log_softmax(dim)


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
