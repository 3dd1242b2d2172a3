"""Module: parameters, buffers and submodules found by walking attributes; the containers
Sequential, ModuleList, ModuleDict, ParameterList and ParameterDict; lazy shapes.

Registration follows PyTorch, with divenet's two conveniences kept:

- every ``Parameter`` or ``Module`` assigned to an attribute is registered, whatever its name
  (``self._scale = Parameter(...)`` is trained and saved), also inside plain lists, tuples and
  dicts (PyTorch needs ModuleList / ModuleDict there; divenet walks them too);
- a plain ``Tensor`` assigned to a public attribute is a (persistent) buffer, as
  ``register_buffer`` would make it; one assigned to a ``_private`` attribute is internal
  state that is not saved, moved or listed, unless ``register_buffer`` named it.

Subclasses need not call ``super().__init__()``: everything lives in the instance ``__dict__``,
in assignment order, and explicit registrations (``register_buffer``, ``register_parameter``
with None, non-persistent buffers) are remembered in ``_dn_slots``.
"""
from __future__ import annotations

import threading
from collections import OrderedDict, namedtuple

import numpy as np

from ..backend import array_module, device as as_device, device_of, transfer
from ..tensor import Tensor, as_dtype

_call_stack = threading.local()
_SLOTS = "_dn_slots"  # name -> "parameter" | "buffer" | "buffer_np" (non-persistent) | "module"
_BUFFER_KINDS = ("buffer", "buffer_np")
_EXPECTED = {"parameter": "divenet.nn.Parameter or None", "module": "divenet.nn.Module or None",
             "buffer": "divenet.Tensor or None", "buffer_np": "divenet.Tensor or None"}


class Parameter(Tensor):
    """A Tensor that a Module trains: found by ``parameters()``, requires a gradient."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = np.empty(0, dtype=np.float32)
        super().__init__(data.array if isinstance(data, Tensor) else data,
                         device=data.device if isinstance(data, Tensor) else None,
                         requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What ``load_state_dict`` returns: PyTorch's (missing_keys, unexpected_keys)."""

    __slots__ = ()

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


def _children_of(value, prefix, tensors=True):
    """Submodules and tensors directly inside an attribute value (lists and dicts included);
    plain (non-Parameter) tensors only when ``tensors``."""
    if isinstance(value, Module):
        yield prefix, value
    elif isinstance(value, Tensor):
        if tensors or isinstance(value, Parameter):
            yield prefix, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _children_of(v, f"{prefix}.{i}", tensors)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _children_of(v, f"{prefix}.{k}", tensors)


def _kind_of(value):
    return "parameter" if isinstance(value, Parameter) else "module" if isinstance(value, Module) else None


def _to_args(args, kwargs):
    """(device, dtype) from ``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)``
    and the keywords ``device=``, ``dtype=``, ``non_blocking=`` (accepted, ignored)."""
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    kwargs.pop("non_blocking", None)
    kwargs.pop("copy", None)
    if kwargs:
        raise TypeError(f"Module.to: unexpected keyword arguments {sorted(kwargs)}")
    if len(args) > 2:
        raise TypeError(f"Module.to: expected at most a device and a dtype, got {len(args)} arguments")
    for a in args:
        if isinstance(a, Tensor):
            device, dtype = a.device, a.dtype
        elif isinstance(a, (np.dtype, type)) or (isinstance(a, str) and _is_dtype_name(a)):
            dtype = a
        else:
            device = a
    dev = None if device is None else as_device(device)
    dt = None if dtype is None else as_dtype(dtype)
    if dt is not None and dt.kind != "f":
        raise TypeError(f"Module.to: dtype must be floating point (it casts the floating-point "
                        f"parameters and buffers), got {dt}")
    return dev, dt


def _is_dtype_name(s):
    try:
        as_dtype(s)
    except TypeError:
        return False
    return True


def _moved(arr, dev, dtype):
    if dev is not None and device_of(arr) != dev:
        arr = transfer(arr, dev)
    if dtype is not None and arr.dtype.kind == "f" and arr.dtype != dtype:
        arr = arr.astype(dtype)
    return arr


def _as_state_array(value):
    """A state-dict value as a NumPy or CuPy array (Tensors, torch tensors, array-likes)."""
    if isinstance(value, Tensor):
        return value.array
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # e.g. a torch tensor
        return value.detach().cpu().numpy()
    if array_module(value) is np and not isinstance(value, np.ndarray):
        return np.asarray(value)
    return value


class Module:
    """Base class of every layer and model.

    Subclasses set parameters (``Parameter``), buffers (plain ``Tensor``, e.g. batch norm's
    running statistics, or ``register_buffer``) and submodules as attributes, directly or in
    lists and dicts, and define ``forward``. Layers whose input size is ``None`` create their
    weights on the first forward; ``init(sample)`` does that without recording a graph.
    """

    training = True
    _storage = None  # a container's item storage attribute, walked by its own _entries

    def __init__(self):
        pass  # nothing to set up: subclasses may skip calling it

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        stack = getattr(_call_stack, "modules", None)
        if stack is None:
            stack = _call_stack.modules = []
        stack.append(self)
        try:
            return self.forward(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            if getattr(exc, "_dn_located", False) or len(stack) < 2:
                raise
            located = type(exc)(f"{_module_path(stack)} ({type(self).__name__}): {exc}")
            located._dn_located = True
            raise located from exc
        finally:
            stack.pop()

    # ---- attributes -----------------------------------------------------------------------------
    def __setattr__(self, name, value):
        # PyTorch's rules: a parameter slot takes a Parameter or None, a submodule slot a
        # Module or None, a registered buffer a Tensor or None; anything else is a TypeError
        # (silently turning a weight into a buffer would stop it from training)
        d = self.__dict__
        slots = d.get(_SLOTS)
        kind = slots.get(name) if slots else None
        if kind is None:
            kind = _kind_of(d.get(name))
        new = _kind_of(value)
        if new is not None:
            if slots and name in slots and slots[name] != new:
                del slots[name]
        elif value is not None and kind is not None and (kind in ("parameter", "module") or
                                                         not isinstance(value, Tensor)):
            raise TypeError(f"{type(self).__name__}: cannot assign {type(value).__name__!r} as "
                            f"{'child module' if kind == 'module' else kind.replace('_np', '')} "
                            f"{name!r} ({_EXPECTED[kind]} expected)")
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        object.__delattr__(self, name)
        slots = self.__dict__.get(_SLOTS)
        if slots:
            slots.pop(name, None)

    def _slot_table(self):
        return self.__dict__.setdefault(_SLOTS, {})

    def _check_slot(self, what, name, allowed):
        if not isinstance(name, str):
            raise TypeError(f"{type(self).__name__}: {what} name should be a string, got "
                            f"{type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"{type(self).__name__}: {what} name must be non-empty and contain "
                           f"no '.', got {name!r}")
        d = self.__dict__
        if name in d:
            ok = (d.get(_SLOTS) or {}).get(name) in allowed or _kind_of(d[name]) in allowed or \
                ("buffer" in allowed and isinstance(d[name], Tensor) and _kind_of(d[name]) is None)
            if not ok:
                raise KeyError(f"{type(self).__name__}: attribute {name!r} already exists")
        elif hasattr(type(self), name):
            raise KeyError(f"{type(self).__name__}: attribute {name!r} already exists")

    def register_parameter(self, name, param):
        """Add ``param`` (a Parameter, or None for an empty slot) as ``name``."""
        self._check_slot("parameter", name, ("parameter",))
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"{type(self).__name__}: cannot assign {type(param).__name__!r} object "
                            f"to parameter {name!r} (divenet.nn.Parameter or None required)")
        self._slot_table()[name] = "parameter"
        object.__setattr__(self, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        """Add ``tensor`` (or None) as buffer ``name``: state that is not trained, moved by
        ``to()``, and saved by ``state_dict()`` unless ``persistent=False``."""
        self._check_slot("buffer", name, _BUFFER_KINDS)
        if tensor is not None and (not isinstance(tensor, Tensor) or isinstance(tensor, Parameter)):
            raise TypeError(f"{type(self).__name__}: cannot assign {type(tensor).__name__!r} object "
                            f"to buffer {name!r} (a Tensor that is not a Parameter, or None, required)")
        self._slot_table()[name] = "buffer" if persistent else "buffer_np"
        object.__setattr__(self, name, tensor)

    def add_module(self, name, module):
        """Add ``module`` (or None) as the child ``name``."""
        self._check_slot("module", name, ("module",))
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}: {type(module).__name__} is not a Module subclass")
        self._slot_table()[name] = "module"
        object.__setattr__(self, name, module)

    register_module = add_module

    # ---- walking --------------------------------------------------------------------------------
    def _entries(self):
        """(name, value) of this module's own submodules, parameters and buffers, in
        assignment order."""
        d = self.__dict__
        slots = d.get(_SLOTS) or {}
        skip = self._storage
        for name, value in d.items():
            if name == skip or name == _SLOTS:
                continue
            # a _private plain tensor is internal state unless register_buffer named it
            yield from _children_of(value, name, name[0] != "_" or name in slots)

    def _persistent(self, name):
        slots = self.__dict__.get(_SLOTS)
        return not slots or slots.get(name) != "buffer_np"

    def named_children(self):
        seen = set()
        for name, value in self._entries():
            if isinstance(value, Module) and id(value) not in seen:
                seen.add(id(value))
                yield name, value

    def children(self):
        return (m for _, m in self.named_children())

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(path, module) for this module and every submodule, depth first, in order."""
        stack = [(prefix, self)]
        seen = set() if memo is None else memo  # modules hash by identity
        while stack:
            name, mod = stack.pop()
            if remove_duplicate:
                if mod in seen:
                    continue
                seen.add(mod)
            yield name, mod
            kids = list(mod.named_children())
            for child_name, child in reversed(kids):
                stack.append((f"{name}.{child_name}" if name else child_name, child))

    def modules(self):
        return (m for _, m in self.named_modules())

    def get_submodule(self, target):
        mod = self
        for part in target.split(".") if target else ():
            kids = dict(mod.named_children())
            if part not in kids:
                raise AttributeError(f"{type(mod).__name__} has no submodule {part!r} (in {target!r})")
            mod = kids[part]
        return mod

    def _named_tensors(self, want_params, prefix="", recurse=True, remove_duplicate=True):
        seen = set()
        mods = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mod_name, mod in mods:
            for name, value in mod._entries():
                if isinstance(value, Tensor) and isinstance(value, Parameter) == want_params:
                    if remove_duplicate:
                        if id(value) in seen:
                            continue
                        seen.add(id(value))
                    yield (f"{mod_name}.{name}" if mod_name else name), value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        self._check_initialized()
        return self._named_tensors(True, prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_tensors(False, prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        return (b for _, b in self.named_buffers(recurse=recurse))

    def apply(self, fn):
        """``fn(m)`` for every submodule (children first, as in PyTorch), then ``fn(self)``."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def uninitialized(self):
        """Paths of layers still waiting for their first input to learn their shapes."""
        return [name or type(m).__name__ for name, m in self.named_modules()
                if getattr(m, "_lazy", False)]

    def _check_initialized(self):
        pending = self.uninitialized()
        if pending:
            raise RuntimeError(
                f"{type(self).__name__}: layers {pending[:5]} infer their input size on the first "
                "forward; call model.init(sample_input) before asking for parameters")

    def init(self, sample):
        """Run one forward on ``sample`` without recording a graph, so that every layer whose
        input size was left as None creates its weights. Returns the model."""
        from ..autograd import no_grad

        was_training = self.training
        self.eval()
        with no_grad():
            self(sample)
        self.train(was_training)
        return self

    # ---- modes, devices, dtypes, grads ----------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def to(self, *args, **kwargs):
        """Move every parameter and buffer (and gradient) to a device and/or cast the
        floating-point ones to a dtype, in place: ``to('gpu:0')``, ``to(dn.float64)``,
        ``to('cpu', 'float16')``, ``to(tensor)``. Integer buffers keep their dtype."""
        dev, dtype = _to_args(args, kwargs)
        for m in self.modules():
            for _, t in m._entries():
                if not isinstance(t, Tensor):
                    continue
                for u in (t, t.grad):  # a grad is a Tensor: it moves with its tensor
                    if u is not None:
                        u.array = _moved(u.array, dev, dtype)
                        if dev is not None:
                            u.device = dev
        if dev is not None:
            self._device = dev
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to(f"gpu:{0 if device is None else int(device)}")

    def half(self):
        return self.to(np.float16)

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    @property
    def device(self):
        for _, t in self._named_tensors(True):
            return t.device
        return getattr(self, "_device", as_device("cpu"))

    def zero_grad(self, set_to_none=True):
        """Drop every parameter's gradient (``set_to_none``), or fill it with zeros in place."""
        for _, p in self._named_tensors(True):
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                g = p.grad
                if isinstance(g, Tensor):
                    g.zero_()
                else:
                    g[...] = 0

    def requires_grad_(self, requires_grad=True):
        for _, p in self._named_tensors(True):
            p.requires_grad_(requires_grad)
        return self

    def num_parameters(self):
        return sum(int(p.array.size) for p in self.parameters())

    # ---- state ----------------------------------------------------------------------------------
    def _state_tensors(self):
        """(key, tensor) of what ``state_dict`` saves, in PyTorch's order: per module (depth
        first) its parameters, then its persistent buffers. As in PyTorch, a module or tensor
        reachable by two paths (tied weights) is saved under both keys, so checkpoints of
        either framework load strictly into the other."""
        stack = [("", self, frozenset())]
        while stack:
            mod_name, mod, ancestors = stack.pop()
            entries = [(n, v) for n, v in mod._entries() if isinstance(v, Tensor)]
            for want_params in (True, False):
                for name, t in entries:
                    if isinstance(t, Parameter) != want_params:
                        continue
                    if not want_params and not mod._persistent(name):
                        continue
                    yield (f"{mod_name}.{name}" if mod_name else name), t
            inside = ancestors | {id(mod)}  # a module holding its own ancestor is not a tree
            kids = [(n, c) for n, c in mod.named_children() if id(c) not in inside]
            for name, child in reversed(kids):
                stack.append((f"{mod_name}.{name}" if mod_name else name, child, inside))

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """Parameters and persistent buffers under PyTorch's key names: NumPy copies, or the
        Tensors themselves with ``keep_vars=True``."""
        self._check_initialized()
        out = OrderedDict() if destination is None else destination
        for name, t in self._state_tensors():
            out[prefix + name] = t if keep_vars else transfer(t.array, as_device("cpu")).copy()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (NumPy, CuPy, Tensors, or anything with ``.numpy()``) into the model.
        Every entry is checked before any is copied; a missing or unexpected key (with
        ``strict``), a shape mismatch, or integer data for a floating-point tensor raises
        ValueError naming the key. Returns (missing_keys, unexpected_keys)."""
        self._check_initialized()
        own = OrderedDict(self._state_tensors())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        where = f"{type(self).__name__}.load_state_dict"
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''} "
                             f"(in the model, not in the state dict)")
            if unexpected:
                parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} "
                             f"(in the state dict, not in the model)")
            raise ValueError(f"{where}: {'; '.join(parts)}")
        copies = []
        for name, t in own.items():
            if name not in state_dict:
                continue
            value = _as_state_array(state_dict[name])
            if not hasattr(value, "shape") or not hasattr(value, "dtype"):
                raise ValueError(f"{where}: {name} must be an array or tensor, got "
                                 f"{type(state_dict[name]).__name__}")
            if tuple(value.shape) != tuple(t.shape):
                raise ValueError(f"{where}: {name} has shape {tuple(t.shape)} in the model "
                                 f"but {tuple(value.shape)} in the state dict")
            if t.dtype.kind == "f" and value.dtype.kind not in "f":
                raise ValueError(f"{where}: {name} is {t.dtype} in the model but {value.dtype} "
                                 f"in the state dict (expected floating-point data)")
            copies.append((t, value))
        for t, value in copies:
            t.array = transfer(value, t.device).astype(t.dtype, copy=True)
        return _IncompatibleKeys(missing, unexpected)

    # ---- printing -------------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        kids = list(self.named_children())
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not kids:
            return head + ")"
        lines = [head]
        for name, m in kids:
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


def _module_path(stack):
    """Dotted path of the innermost module in ``stack`` relative to the outermost one."""
    parts = []
    for parent, child in zip(stack, stack[1:]):
        for name, m in parent.named_children():
            if m is child:
                parts.append(name)
                break
        else:
            parts.append("?")
    return ".".join(parts)


# ---- containers ----------------------------------------------------------------------------------
def _require_module(owner, m):
    if not isinstance(m, Module):
        raise TypeError(f"{owner}: {type(m).__name__} is not a Module subclass")
    return m


def _index(owner, i, n):
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"{owner} indices must be integers or slices, got {type(i).__name__}")
    if not -n <= i < n:
        raise IndexError(f"{owner}: index {i} is out of range for length {n}")
    return int(i) % n


class _ItemAccess:
    """``container.key`` for the items of a dict-stored container (``seq.conv1``)."""

    def __getattr__(self, name):
        items = self.__dict__.get("_items")
        if items is not None and name in items:
            return items[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class Sequential(_ItemAccess, Module):
    """Modules applied in order: ``Sequential(a, b, c)`` (children ``0``, ``1``, ``2``) or
    ``Sequential(OrderedDict(name=module, ...))``."""

    _storage = "_items"

    def __init__(self, *args):
        owner = type(self).__name__
        if len(args) == 1 and isinstance(args[0], dict):
            items = OrderedDict((k, _require_module(owner, m)) for k, m in args[0].items())
        else:
            items = OrderedDict((str(i), _require_module(owner, m)) for i, m in enumerate(args))
        object.__setattr__(self, "_items", items)

    def _entries(self):  # children are named 0, 1, ... (or by key), as in PyTorch
        yield from self._items.items()
        yield from Module._entries(self)

    def add_module(self, name, module):
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"{type(self).__name__}: module name must be a non-empty string "
                           f"without '.', got {name!r}")
        self._items[name] = _require_module(type(self).__name__, module)

    register_module = add_module

    def forward(self, x):
        for layer in self._items.values():
            x = layer(x)
        return x

    def _renumber(self, modules):
        self._items.clear()
        self._items.update((str(i), m) for i, m in enumerate(modules))

    def append(self, module):
        self.add_module(str(len(self._items)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        n = len(self._items)
        if isinstance(index, bool) or not isinstance(index, int) or not -n <= index <= n:
            raise IndexError(f"{type(self).__name__}.insert: index {index!r} is out of range for "
                             f"length {n}")
        mods = list(self._items.values())
        mods.insert(index, _require_module(type(self).__name__, module))
        self._renumber(mods)
        return self

    def pop(self, key):
        v = self[key]
        del self[key]
        return v

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._items.items())[idx]))
        return list(self._items.values())[_index(type(self).__name__, idx, len(self._items))]

    def __setitem__(self, idx, module):
        key = list(self._items)[_index(type(self).__name__, idx, len(self._items))]
        self._items[key] = _require_module(type(self).__name__, module)

    def __delitem__(self, idx):
        keys = list(self._items)
        drop = keys[idx] if isinstance(idx, slice) else [keys[_index(type(self).__name__, idx, len(keys))]]
        for k in drop:
            del self._items[k]
        self._renumber(list(self._items.values()))  # PyTorch renumbers after a deletion

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(self._items.values())

    def __add__(self, other):
        if not isinstance(other, Sequential):
            return NotImplemented
        return Sequential(*self, *other)

    def __iadd__(self, other):
        if not isinstance(other, Sequential):
            return NotImplemented
        return self.extend(other)


class ModuleList(Module):
    """A list of modules, registered as children ``0``, ``1``, ..."""

    _storage = "_items"

    def __init__(self, modules=None):
        object.__setattr__(self, "_items", [])
        if modules is not None:
            self.extend(modules)

    def _entries(self):
        for i, m in enumerate(self._items):
            yield str(i), m
        yield from Module._entries(self)

    def append(self, module):
        self._items.append(_require_module(type(self).__name__, module))
        return self

    def extend(self, modules):
        try:
            mods = list(modules)
        except TypeError:
            raise TypeError(f"{type(self).__name__}.extend should be called with an iterable, "
                            f"got {type(modules).__name__}") from None
        self._items.extend(_require_module(type(self).__name__, m) for m in mods)
        return self

    def insert(self, index, module):
        self._items.insert(index, _require_module(type(self).__name__, module))

    def pop(self, key=-1):
        v = self[key]
        del self[key]
        return v

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ModuleList(self._items[idx])
        return self._items[_index(type(self).__name__, idx, len(self._items))]

    def __setitem__(self, idx, module):
        self._items[_index(type(self).__name__, idx, len(self._items))] = \
            _require_module(type(self).__name__, module)

    def __delitem__(self, idx):
        if isinstance(idx, slice):
            del self._items[idx]
        else:
            del self._items[_index(type(self).__name__, idx, len(self._items))]

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        return ModuleList(list(self) + list(other))


class _DictContainer(_ItemAccess, Module):
    """Shared dict behaviour of ModuleDict and ParameterDict."""

    _storage = "_items"

    def __init__(self, items=None):
        object.__setattr__(self, "_items", OrderedDict())
        if items is not None:
            self.update(items)

    def _entries(self):
        for k, v in self._items.items():
            yield from _children_of(v, k)
        yield from Module._entries(self)

    def _convert(self, key, value):
        raise NotImplementedError

    def __setitem__(self, key, value):
        if not isinstance(key, str):
            raise TypeError(f"{type(self).__name__}: keys must be strings, got {type(key).__name__}")
        self._items[key] = self._convert(key, value)

    def __getitem__(self, key):
        return self._items[key]

    def __delitem__(self, key):
        del self._items[key]

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def __contains__(self, key):
        return key in self._items

    def keys(self):
        return self._items.keys()

    def items(self):
        return self._items.items()

    def values(self):
        return self._items.values()

    def get(self, key, default=None):
        return self._items.get(key, default)

    def pop(self, key):
        return self._items.pop(key)

    def clear(self):
        self._items.clear()

    def update(self, items):
        pairs = items.items() if hasattr(items, "items") else items
        for i, pair in enumerate(pairs):
            try:
                k, v = pair
            except (TypeError, ValueError):
                raise TypeError(f"{type(self).__name__}.update: element {i} should be a "
                                f"(key, value) pair, got {pair!r}") from None
            self[k] = v


class ModuleDict(_DictContainer):
    """A dict of modules, registered as children under their keys."""

    def _convert(self, key, value):
        if "." in key or not key:
            raise KeyError(f"ModuleDict: module name must be non-empty and contain no '.', got {key!r}")
        return _require_module(type(self).__name__, value)

    add_module = register_module = _DictContainer.__setitem__


def _as_parameter(value):
    return Parameter(value) if isinstance(value, Tensor) and not isinstance(value, Parameter) else value


def _param_line(key, p):
    if not isinstance(p, Tensor):
        return f"  ({key}): Object of type: {type(p).__name__}"
    size = "x".join(str(s) for s in p.shape)
    return f"  ({key}): Parameter containing: [{p.dtype} of size {size}{_on(p)}]"


def _on(p):
    return "" if p.device == as_device("cpu") else f" on {p.device}"


class ParameterDict(_DictContainer):
    """A dict of parameters (Tensors become Parameters), saved under their keys."""

    def _convert(self, key, value):
        return _as_parameter(value)

    def extra_repr(self):
        return "\n" + "\n".join(_param_line(k, p) for k, p in self._items.items()) + "\n" if self._items else ""


class ParameterList(Module):
    """A list of parameters (Tensors become Parameters), saved as ``0``, ``1``, ..."""

    _storage = "_items"

    def __init__(self, values=None):
        object.__setattr__(self, "_items", [])
        if values is not None:
            self.extend(values)

    def _entries(self):
        for i, p in enumerate(self._items):
            yield from _children_of(p, str(i))
        yield from Module._entries(self)

    def append(self, value):
        self._items.append(_as_parameter(value))
        return self

    def extend(self, values):
        for v in values:
            self.append(v)
        return self

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ParameterList(self._items[idx])
        return self._items[_index(type(self).__name__, idx, len(self._items))]

    def __setitem__(self, idx, value):
        self._items[_index(type(self).__name__, idx, len(self._items))] = _as_parameter(value)

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def __iadd__(self, values):
        return self.extend(values)

    def extra_repr(self):
        return "\n" + "\n".join(_param_line(i, p) for i, p in enumerate(self._items)) + "\n" if self._items else ""
