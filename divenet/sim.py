"""``sim``: a strict simulated GPU for tests, so that NumPy-only code in a GPU path fails on
every machine, not only on a GPU.

It is a test device, not a user device: it computes with NumPy on the CPU, more slowly than
``cpu``. What it adds is CuPy's rules, which plain NumPy code would slip through:

* a ``SimArray`` refuses implicit conversion to a NumPy array (``np.asarray(a)``), as a CuPy
  array does; ``a.get()`` (or ``transfer``) is the explicit copy to the host;
* an operation that mixes a ``SimArray`` with a NumPy array raises ``TypeError``, as CuPy's
  do; Python and NumPy scalars are fine;
* the array module (``backend.array_module``) is a namespace that wraps NumPy's functions: it
  takes and returns ``SimArray``, and refuses NumPy arrays except where CuPy copies them over
  (``asarray``, ``array``: counted as uploads);
* advanced integer indices wrap around instead of raising, as CuPy's do, so code that relies
  on NumPy's bounds check is caught by a test;
* every host sync is counted: ``item()``, ``float()``, ``int()``, ``bool()``, ``tolist()``
  and copies to the host; host-to-device copies are counted as uploads (:func:`counting`);
* it has no ``ctypes`` pointer, so the native CPU kernels (``divenet/_native.py``) and BLAS
  shortcuts (``_cpu.axpy``), which require NumPy arrays, are never reached.

Select it with ``dn.device('sim')``; the test suite runs every device-parametrized test on it
(``python -m pytest --device sim`` runs only those on it).
"""
from __future__ import annotations

import contextlib
import threading
import types
from collections import Counter

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

_lock = threading.Lock()
_counts: Counter = Counter()  # kind of host interaction -> count, since the process started


def _count(kind: str):
    with _lock:
        _counts[kind] += 1


def counts() -> Counter:
    """A snapshot of the host syncs and uploads so far (``'sync'`` and ``'upload'`` keys)."""
    with _lock:
        return Counter(_counts)


@contextlib.contextmanager
def counting():
    """``with counting() as c:`` ... then ``c['sync']``, ``c['upload']``: what the block did."""
    before = counts()
    result: Counter = Counter()
    try:
        yield result
    finally:
        result.update(counts())
        result.subtract(before)


class SimArray(NDArrayOperatorsMixin):
    """An n-d array on the simulated device: a NumPy array behind CuPy's rules."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 2000

    def __init__(self, array: np.ndarray):
        self._a = array

    # ---- what CuPy refuses ---------------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError("sim: implicit conversion to a NumPy array is not allowed (CuPy refuses "
                        "it too); use .get() or backend.transfer(array, cpu) explicitly")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = f"{ufunc.__name__}.{method}" if method != "__call__" else ufunc.__name__
        args = _unwrap_all(inputs, name)
        if "out" in kwargs:
            kwargs["out"] = _unwrap_all(kwargs["out"], name)
        return _wrap(getattr(ufunc, method)(*args, **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        return _wrap(func(*_unwrap_all(args, func.__name__), **_unwrap_all(kwargs, func.__name__)))

    # ---- host syncs ----------------------------------------------------------------------------
    def get(self):
        """The values as a NumPy array: a copy to the host (a sync)."""
        _count("sync")
        return self._a.copy()

    def item(self):
        _count("sync")
        return self._a.item()

    def tolist(self):
        _count("sync")
        return self._a.tolist()

    def __float__(self):
        _count("sync")
        return float(self._a)

    def __int__(self):
        _count("sync")
        return int(self._a)

    def __bool__(self):
        _count("sync")
        return bool(self._a)

    def __index__(self):
        raise TypeError("sim: an array cannot be used as a Python index (CuPy refuses it too); "
                        "call int() explicitly")

    def __repr__(self):
        return f"sim.array({np.array2string(self._a, separator=', ')}, dtype={self._a.dtype})"

    # ---- the rest behaves as the NumPy array ----------------------------------------------------
    def __getitem__(self, index):
        return _wrap(self._a[_index(self._a.shape, index)])

    def __setitem__(self, index, value):
        if isinstance(value, (np.ndarray, list)):  # host data: CuPy copies it over
            _count("upload")
        elif isinstance(value, SimArray):
            value = value._a
        self._a[_index(self._a.shape, index)] = value

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(row) for row in self._a)

    @property
    def device(self):
        return _SIM_DEVICE_ID

    @property
    def T(self):
        return SimArray(self._a.T)

    def __getattr__(self, name):
        if name in ("ctypes", "__array_interface__", "__array_struct__", "tobytes", "data"):
            raise AttributeError(f"sim: arrays have no {name} (device memory is not host memory)")
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        def method(*args, **kwargs):
            return _wrap(attr(*_unwrap_all(args, name), **_unwrap_all(kwargs, name)))

        return method

    def __reduce__(self):
        raise TypeError("sim: arrays are not pickled")


class _DeviceId:
    """What ``SimArray.device`` gives, as CuPy's ``array.device`` gives a cuda Device."""

    id = 0

    def __repr__(self):
        return "<sim device 0>"


_SIM_DEVICE_ID = _DeviceId()


def _index(shape, index):
    """``index`` unwrapped, with integer-array components wrapped modulo their axis as CuPy does
    (NumPy would raise IndexError: code must not rely on that check for device arrays)."""
    parts = index if isinstance(index, tuple) else (index,)
    if not any(isinstance(p, (SimArray, np.ndarray, list)) for p in parts):
        return index
    if any(p is Ellipsis or p is None for p in parts):
        return _unwrap_all(index, "indexing")
    out, axis = [], 0
    for p in parts:
        if isinstance(p, SimArray):
            p = p._a
        elif isinstance(p, (np.ndarray, list)):  # host index data: CuPy copies it over
            _count("upload")
        if isinstance(p, (np.ndarray, list)):
            p = np.asarray(p)
            if p.dtype.kind in "iu" and axis < len(shape) and shape[axis] > 0:
                p = np.mod(p, shape[axis])
            axis += p.ndim if p.dtype == np.bool_ else 1
        else:
            axis += 1
        out.append(p)
    return tuple(out) if isinstance(index, tuple) else out[0]


def _unwrap_all(value, where):
    """SimArrays unwrapped (in tuples, lists and dicts too); a NumPy array refused."""
    if isinstance(value, SimArray):
        return value._a
    if isinstance(value, np.ndarray):
        raise TypeError(f"sim: {where} mixes a device array with a NumPy array "
                        f"(shape {value.shape}); CuPy refuses this: move it with transfer() first")
    if isinstance(value, (tuple, list)):
        return type(value)(_unwrap_all(v, where) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap_all(v, where) for k, v in value.items()}
    return value


def _wrap(value):
    """NumPy results as SimArrays (scalars as 0-d arrays, as CuPy returns them)."""
    if isinstance(value, np.ndarray):
        return SimArray(value)
    if isinstance(value, np.generic):
        return SimArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def upload(array) -> SimArray:
    """Copy host data (a NumPy array, list or scalar) to the device."""
    if isinstance(array, SimArray):
        return array
    _count("upload")
    return SimArray(np.array(array, copy=True))


class _Namespace(types.SimpleNamespace):
    """A module-like view of a NumPy namespace whose functions take and give SimArrays."""

    def __init__(self, source, name):
        super().__init__()
        self._source, self._name = source, name

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._source, name)
        if isinstance(attr, types.ModuleType):
            wrapped = _Namespace(attr, f"{self._name}.{name}")
        elif isinstance(attr, type) or not callable(attr):
            wrapped = attr  # dtypes (np.float32), constants (np.inf), classes
        else:
            wrapped = _function(attr, f"{self._name}.{name}")
        setattr(self, name, wrapped)  # looked up once
        return wrapped


class _Function:
    """A NumPy function (or ufunc, with its methods) taking and giving SimArrays."""

    __slots__ = ("_fn", "_name")

    def __init__(self, fn, name):
        self._fn, self._name = fn, name

    def __call__(self, *args, **kwargs):
        return _wrap(self._fn(*_unwrap_all(args, self._name), **_unwrap_all(kwargs, self._name)))

    def __getattr__(self, name):  # ufunc.at / reduce / accumulate / outer, and plain attributes
        attr = getattr(self._fn, name)
        return _Function(attr, f"{self._name}.{name}") if callable(attr) else attr


def _function(fn, name):
    if name.rsplit(".", 1)[-1] in ("array", "asarray", "asanyarray"):
        return _upload_function(fn)
    return _Function(fn, name)


def _upload_function(fn):
    def make(obj, *args, **kwargs):
        if isinstance(obj, SimArray):
            return _wrap(fn(obj._a, *args, **kwargs))
        _count("upload")
        return SimArray(np.array(fn(obj, *args, **kwargs), copy=True))

    return make


class _RandomGenerator:
    """``numpy.random.Generator`` drawing into device memory (no upload)."""

    def __init__(self, generator):
        self._g = generator

    def __getattr__(self, name):
        attr = getattr(self._g, name)
        if not callable(attr):
            return attr

        def draw(*args, **kwargs):
            return _wrap(attr(*_unwrap_all(args, name), **_unwrap_all(kwargs, name)))

        return draw


class _Random(_Namespace):
    def __init__(self):
        super().__init__(np.random, "sim.random")

    def default_rng(self, seed=None):
        return _RandomGenerator(np.random.default_rng(seed))


class _IndexTrick:
    """``ogrid``, ``mgrid``, ``r_``, ``c_``: their arrays on the device, as CuPy's are."""

    def __init__(self, trick):
        self._trick = trick

    def __getitem__(self, key):
        return _wrap(self._trick[_unwrap_all(key, "index tricks")])


xp = _Namespace(np, "sim")
xp.ndarray = SimArray
for _name in ("ogrid", "mgrid", "r_", "c_"):
    setattr(xp, _name, _IndexTrick(getattr(np, _name)))
xp.random = _Random()
xp.asnumpy = lambda a: a.get() if isinstance(a, SimArray) else np.asarray(a)
xp.get_array_module = lambda *arrays: xp
