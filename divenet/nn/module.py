"""Module: parameters and submodules found by walking attributes; Sequential; lazy shapes."""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from ..backend import array_module, device as as_device, transfer
from ..tensor import Tensor

_call_stack = threading.local()


class Parameter(Tensor):
    """A Tensor that a Module trains: found by ``parameters()``, always requires a gradient."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        super().__init__(data.array if isinstance(data, Tensor) else data,
                         device=data.device if isinstance(data, Tensor) else None,
                         requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def _children_of(value, prefix):
    """Submodules and tensors directly inside an attribute value (lists and dicts included)."""
    if isinstance(value, (Module, Tensor)):
        yield prefix, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _children_of(v, f"{prefix}.{i}")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _children_of(v, f"{prefix}.{k}")


class Module:
    """Base class of every layer and model.

    Subclasses set parameters (``Parameter``), buffers (plain ``Tensor``, e.g. batch norm's
    running statistics) and submodules as attributes, directly or in lists and dicts, and
    define ``forward``. Layers whose input size is ``None`` create their weights on the first
    forward; ``init(sample)`` does that without recording a graph.
    """

    training = True

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

    # ---- walking --------------------------------------------------------------------------------
    def _entries(self):
        for name, value in vars(self).items():
            if name.startswith("_"):
                continue
            yield from _children_of(value, name)

    def named_children(self):
        for name, value in self._entries():
            if isinstance(value, Module):
                yield name, value

    def children(self):
        return (m for _, m in self.named_children())

    def named_modules(self, prefix=""):
        stack = [(prefix, self)]
        seen = set()
        while stack:
            name, mod = stack.pop()
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            yield name, mod
            kids = list(mod.named_children())
            for child_name, child in reversed(kids):
                stack.append((f"{name}.{child_name}" if name else child_name, child))

    def modules(self):
        return (m for _, m in self.named_modules())

    def _named_tensors(self, want_params):
        seen = set()
        for mod_name, mod in self.named_modules():
            for name, value in mod._entries():
                if isinstance(value, Tensor) and isinstance(value, Parameter) == want_params:
                    if id(value) in seen:
                        continue
                    seen.add(id(value))
                    yield (f"{mod_name}.{name}" if mod_name else name), value

    def named_parameters(self):
        self._check_initialized()
        return self._named_tensors(True)

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self):
        return self._named_tensors(False)

    def buffers(self):
        return (b for _, b in self.named_buffers())

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

    # ---- modes, devices, grads ------------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def to(self, device):
        dev = as_device(device)
        for m in self.modules():
            for _, t in m._entries():
                if isinstance(t, Tensor) and t.device != dev:
                    t.array = transfer(t.array, dev)
                    t.device = dev
                    if t.grad is not None:
                        t.grad = transfer(t.grad, dev)
        self._device = dev
        return self

    @property
    def device(self):
        for _, t in self._named_tensors(True):
            return t.device
        return getattr(self, "_device", as_device("cpu"))

    def zero_grad(self):
        for p in self._named_tensors(True):
            p[1].grad = None

    def num_parameters(self):
        return sum(int(p.array.size) for p in self.parameters())

    # ---- state ----------------------------------------------------------------------------------
    def state_dict(self):
        """Parameters and buffers as NumPy arrays under PyTorch's key names."""
        self._check_initialized()
        out = OrderedDict()
        for name, t in self._named_tensors(True):
            out[name] = transfer(t.array, as_device("cpu")).copy()
        for name, t in self._named_tensors(False):
            out[name] = transfer(t.array, as_device("cpu")).copy()
        return out

    def load_state_dict(self, state, strict=True):
        """Copy arrays (NumPy, CuPy, Tensors, or anything with ``.numpy()``) into the model."""
        self._check_initialized()
        own = OrderedDict(self._named_tensors(True))
        own.update(self._named_tensors(False))
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict into {type(self).__name__}: missing keys {missing[:8]}"
                           f"{' ...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
                           f"{' ...' if len(unexpected) > 8 else ''}")
        for name, t in own.items():
            if name not in state:
                continue
            value = state[name]
            if isinstance(value, Tensor):
                value = value.array
            elif hasattr(value, "detach") and hasattr(value, "numpy"):  # e.g. a torch tensor
                value = value.detach().cpu().numpy()
            if tuple(value.shape) != tuple(t.shape):
                raise ValueError(f"load_state_dict: {name} has shape {tuple(t.shape)} in the model "
                                 f"but {tuple(value.shape)} in the state dict")
            arr = transfer(np.asarray(value) if array_module(value) is np and not isinstance(value, np.ndarray)
                           else value, t.device)
            t.array = arr.astype(t.dtype, copy=True)
        return self

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


class Sequential(Module):
    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], (dict, OrderedDict)):
            self.layers = OrderedDict(layers[0])
        else:
            self.layers = OrderedDict((str(i), m) for i, m in enumerate(layers))

    def _entries(self):  # children are named 0, 1, ... (or by key), as in PyTorch
        for name, m in self.layers.items():
            yield from _children_of(m, name)

    def forward(self, x):
        for layer in self.layers.values():
            x = layer(x)
        return x

    def append(self, layer):
        self.layers[str(len(self.layers))] = layer
        return self

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*list(self.layers.values())[i])
        return list(self.layers.values())[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers.values())


class ModuleList(Module):
    def __init__(self, modules=()):
        self.items = list(modules)

    def _entries(self):
        for i, m in enumerate(self.items):
            yield from _children_of(m, str(i))

    def append(self, m):
        self.items.append(m)
        return self

    def __getitem__(self, i):
        return self.items[i]

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(self.items)
