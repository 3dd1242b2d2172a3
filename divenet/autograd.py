"""Reverse-mode autodiff: the Function base class, graph recording and backward.

An op is a ``Function`` subclass with two static methods working on raw arrays (NumPy or
CuPy), never on Tensors:

    forward(ctx, *arrays, **options)  -> array, or a tuple of arrays
    backward(ctx, *grads_of_outputs)  -> one gradient (or None) per positional input

``Op.apply(*tensors, **options)`` unwraps the tensors, runs ``forward`` and, when grad mode is
on and an input requires a gradient, records a ``Node`` so that ``Tensor.backward`` can walk
the graph. The walk is iterative, so graphs of any depth are fine.

In-place ops and version counters (PyTorch's rules, kept simple):

* Every tensor's storage carries a version counter, ``tensor._version = [version, stale]``,
  bumped by every in-place op (``+=``, ``x[i] = v``, ``add_``, ``zero_``, an optimizer step).
  A view made by an op (``reshape``, ``x[0]``, ``permute``, ``split``) and ``detach()`` share
  their input's counter; ``.data`` does not (that is its point: changes through it are not
  tracked), nor does a copy.
* A recorded node remembers ``(counter, version)`` for each input or output whose storage its
  ``ctx.save_for_backward`` kept (found by storage, so a saved reshape of an input counts;
  found only for recorded nodes, so unrecorded ops pay nothing). ``backward`` raises a
  RuntimeError naming the op if such a version changed: never a wrong gradient.
* An in-place op (``apply_inplace``) writes into the target's array. With grad mode on and a
  gradient involved it also records a node and *rebases* the target: the tensor object keeps
  its identity but gets the new node; a stand-in tensor takes over its old history (the
  node's ``prior``). Nodes are numbered (``seq``) in creation order, so a node recorded
  before the rebase that consumed the target still reaches the old history (``_edge``), as
  PyTorch's edges point to the old grad_fn.
* A recorded in-place op on a view ``base[index]`` runs on a copy that is then written into
  the base (``_inplace_on_view``), so ``y[0] *= 3`` works as in PyTorch.
* Not supported, with a clear RuntimeError instead of a wrong gradient: a recorded in-place
  op on another kind of view (reshape, permute, split), and, after a recorded in-place op on
  a tensor, using in the graph (or changing in place) a view of it taken before (``stale``;
  PyTorch regenerates such a view's history): take the view again.
* An in-place op on a leaf that requires grad, with grad mode on, raises (PyTorch's "a leaf
  Variable that requires grad is being used in an in-place operation"); under ``no_grad()``
  it is a plain update, as in ``param -= lr * param.grad``.
"""
from __future__ import annotations

import itertools
import threading

import numpy as np

from .backend import array_module, is_device_array

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


class no_grad:
    """Context manager (and decorator) that turns graph recording off."""

    def __enter__(self):
        self._prev = is_grad_enabled()
        _state.enabled = False

    def __exit__(self, *exc):
        _state.enabled = self._prev

    def __new__(cls, fn=None):
        self = super().__new__(cls)
        return self if fn is None else self(fn)  # bare @no_grad, as in PyTorch

    def __call__(self, fn):
        mode = type(self)

        def wrapped(*args, **kwargs):
            with mode():
                return fn(*args, **kwargs)

        wrapped.__name__ = getattr(fn, "__name__", "wrapped")
        wrapped.__doc__ = getattr(fn, "__doc__", None)
        return wrapped


class enable_grad(no_grad):
    def __enter__(self):
        self._prev = is_grad_enabled()
        _state.enabled = True


class inference_mode(no_grad):
    """PyTorch's ``inference_mode``: here the same as ``no_grad`` (``mode=False``: no change)."""

    def __new__(cls, mode=True):
        self = object.__new__(cls)
        self._mode = mode
        return self if isinstance(mode, bool) else self(mode)  # bare @inference_mode

    def __enter__(self):
        self._prev = is_grad_enabled()
        if self._mode is not False:
            _state.enabled = False

    def __call__(self, fn):
        mode = self._mode is not False

        def wrapped(*args, **kwargs):
            with inference_mode(mode):
                return fn(*args, **kwargs)

        wrapped.__name__ = getattr(fn, "__name__", "wrapped")
        wrapped.__doc__ = getattr(fn, "__doc__", None)
        return wrapped


class set_grad_enabled:
    """Sets grad mode now (``dn.set_grad_enabled(False)``); as a context manager it restores
    the previous mode on exit, as PyTorch's does."""

    def __init__(self, mode):
        self._prev = is_grad_enabled()
        _state.enabled = bool(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _state.enabled = self._prev


class Context:
    """What forward hands to backward. ``needs_input_grad[i]`` tells backward whether it has
    to compute the gradient of positional input ``i`` at all (as PyTorch's, also under no_grad);
    ``recording``: whether backward can run at all (a node is recorded). Without one, forwards
    keep nothing for backward and may take inference kernels (``grads_wanted``)."""

    __slots__ = ("needs_input_grad", "saved", "recording", "__dict__")

    def __init__(self, needs_input_grad, recording=True):
        self.needs_input_grad = needs_input_grad
        self.recording = recording
        self.saved = ()

    def grads_wanted(self):
        """needs_input_grad where a backward can follow, else all False."""
        return self.needs_input_grad if self.recording else (False,) * len(self.needs_input_grad)

    def save_for_backward(self, *arrays):
        self.saved = arrays


_seq = itertools.count()


class _Edge:
    """What a node keeps of an input made by another node: that node and the output slot, with
    the shape and dtype to check gradients against, but not the array. Keeping the Tensor would
    keep every intermediate array alive until backward, saved for the gradient or not; with
    edges only what ``save_for_backward`` kept stays (PyTorch's edges point to a grad_fn too).
    Taken when the node is recorded, so a later in-place rebase of the tensor does not move it."""

    __slots__ = ("_node", "_slot", "shape", "dtype")
    requires_grad = True

    def __init__(self, t):
        self._node, self._slot, self.shape, self.dtype = t._node, t._slot, t.shape, t.dtype


def _edges(inputs):
    """A node's inputs: the leaf Tensors that accumulate a gradient, an _Edge for each input
    that another node made, None for the rest (no gradient flows there)."""
    from .tensor import Tensor

    return [None if not isinstance(t, Tensor) or not t.requires_grad else t if t._node is None else _Edge(t)
            for t in inputs]


class Node:
    """One recorded op application in the graph."""

    __slots__ = ("fn", "ctx", "inputs", "out_meta", "freed", "seq", "checks", "prior")

    def __init__(self, fn, ctx, inputs, out_meta):
        self.fn = fn
        self.ctx = ctx
        self.inputs = _edges(inputs)  # leaf Tensors, _Edges or None, in positional order
        self.out_meta = out_meta  # (shape, dtype) per output, to zero-fill unused outputs
        self.freed = False
        self.seq = next(_seq)  # creation order: see _edge
        self.checks = ()  # (counter, version, "input"/"output", index, shape) of saved storage
        self.prior = None  # for an in-place node: the stand-in holding the target's old history


def _new_version():
    return [0, False]


def _same_storage(x, y):
    """Whether arrays ``x`` and ``y`` may share memory: NumPy by the owner of the memory (its
    ``base`` collapses to it), other array libraries by their ``may_share_memory``."""
    if x is y:
        return True
    if isinstance(x, np.ndarray):
        if not isinstance(y, np.ndarray):
            return False
        bx, by = x.base, y.base
        if (x if bx is None else bx) is (y if by is None else by):
            return True
        # a base that is not an ndarray (a stride-tricks window): ask NumPy
        return bx is not None and type(bx) is not np.ndarray and bool(np.may_share_memory(x, y))
    if getattr(x, "base", None) is None and getattr(y, "base", None) is None:
        return False
    return bool(array_module(x).may_share_memory(x, y))


def _saved_checks(saved, inputs, outputs):
    from .tensor import Tensor

    arrays = [s for s in saved if s is not None and hasattr(s, "shape") and not isinstance(s, np.generic)]
    checks = []
    if arrays:
        for kind, tensors in (("input", inputs), ("output", outputs)):
            for i, t in enumerate(tensors):
                if isinstance(t, Tensor) and any(_same_storage(s, t.array) for s in arrays):
                    v = t._version
                    checks.append((v, v[0], kind, i, t.shape))
    return tuple(checks)


def _share_views(outputs, inputs):
    """An output that is a view of an input shares the input's version counter."""
    from .tensor import Tensor

    for r in outputs:
        a = r.array
        view = getattr(a, "base", None) is not None
        for t in inputs:
            if isinstance(t, Tensor) and (t.array is a or view and _same_storage(a, t.array)):
                r._version = t._version
                r._base = t
                break


def _stale_error(op):
    return RuntimeError(
        f"{op}: this tensor is a view of a tensor that an in-place operation recorded in the "
        "graph changed after the view was taken; take the view again after the in-place op")


class OpHooks:
    """Observers of every op this thread runs: the tracers (ONNX export, ``dn.compile``) and the
    profiler subclass it and override what they watch. ``with hooks:`` installs an instance for
    the current thread only (other threads run untouched) and restores the previous one on exit.
    Each method must run the op by calling the base method (or ``run_apply`` and friends)."""

    def apply(self, cls, inputs, kwargs):
        return run_apply(cls, inputs, kwargs)

    def apply_inplace(self, fn, target, others, name, kwargs):
        return run_inplace(fn, target, others, name, kwargs)

    def backward(self, node, grads):
        return node.fn.backward(node.ctx, *grads)

    def __enter__(self):
        self._previous = getattr(_state, "hooks", None)
        _state.hooks = self
        return self

    def __exit__(self, *exc):
        _state.hooks = self._previous


def current_hooks():
    return getattr(_state, "hooks", None)


class Function:
    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **kwargs):
        hooks = getattr(_state, "hooks", None)
        if hooks is not None:
            return hooks.apply(cls, inputs, kwargs)
        return run_apply(cls, inputs, kwargs)


def run_apply(cls, inputs, kwargs):
    """``cls.apply(*inputs, **kwargs)`` without the hooks."""
    from .tensor import Tensor

    arrays = []
    device = None
    needs = []
    stale = False
    for t in inputs:
        if isinstance(t, Tensor):
            if device is None:
                device = t.device
            elif t.device != device:
                raise ValueError(
                    f"{cls.__name__.lower()}: inputs live on different devices "
                    f"({device} and {t.device}); move them with .to(device) first"
                )
            arrays.append(t.array)
            needs.append(t.requires_grad)
            if t._version[1]:
                stale = True
        else:
            arrays.append(t)
            needs.append(False)
    if device is not None:
        _check_raw_arrays(cls, device, arrays, kwargs)
    record = is_grad_enabled() and any(needs)
    ctx = Context(tuple(needs), record)
    out = cls.forward(ctx, *arrays, **kwargs)
    multi = isinstance(out, tuple)
    outs = out if multi else (out,)
    node = None
    if record:
        if stale:
            raise _stale_error(cls.__name__.lower())
        node = Node(cls, ctx, list(inputs), [(o.shape, o.dtype) for o in outs])
    results = tuple(Tensor._make(o, device, node, i) for i, o in enumerate(outs))
    _share_views(results, inputs)
    if record and ctx.saved:
        node.checks = _saved_checks(ctx.saved, inputs, results)
    return results if multi else results[0]


def _check_raw_arrays(fn, device, arrays, kwargs):
    """Arrays handed to an op outside Tensors (options such as batch norm's running stats, an
    index) must live on the inputs' device: NumPy would mix them in silently on the CPU path
    and CuPy fails far from the cause. Only NumPy arrays next to device inputs and device
    arrays next to CPU inputs are refused; scalars, tuples and Generators pass."""
    on_cpu = device.kind == "cpu"
    for where, values in (("input", enumerate(arrays)), ("option", kwargs.items())):
        for key, v in values:
            if isinstance(v, np.ndarray):
                wrong = not on_cpu
            elif on_cpu and not isinstance(v, (int, float, tuple, str, np.generic)) and v is not None:
                wrong = is_device_array(v)
            else:
                continue
            if wrong:
                kind = "a NumPy array" if isinstance(v, np.ndarray) else "a device array"
                raise ValueError(f"{fn.__name__.lower()}: {where} {key} is {kind} of shape {tuple(v.shape)} "
                                 f"but the tensor inputs live on {device}; move it with .to(device) first")


def apply_inplace(fn, target, *others, name, **kwargs):
    """Run ``fn.forward(ctx, target.array, *other_arrays, **kwargs)``, which writes its result
    into ``target.array`` (an in-place op: ``add_``, ``x[i] = v``); bump the version; with grad
    mode on and a gradient involved, record a node and rebase ``target`` onto it (see the
    module docstring). Returns ``target``."""
    hooks = getattr(_state, "hooks", None)
    if hooks is not None:
        return hooks.apply_inplace(fn, target, others, name, kwargs)
    return run_inplace(fn, target, others, name, kwargs)


def run_inplace(fn, target, others, name, kwargs):
    """``apply_inplace`` without the hooks."""
    from .tensor import Tensor

    version = target._version
    if version[1]:
        raise _stale_error(name)
    arrays, needs = [], [target.requires_grad]
    for t in others:
        if isinstance(t, Tensor):
            if t.device != target.device:
                raise ValueError(f"{name}: the tensor lives on {target.device} but the other operand "
                                 f"on {t.device}; move it with .to(device) first")
            arrays.append(t.array)
            needs.append(t.requires_grad)
        else:
            arrays.append(t)
            needs.append(False)
    _check_raw_arrays(fn, target.device, arrays, kwargs)
    record = is_grad_enabled() and any(needs)
    if record:
        if target.requires_grad and target._node is None:
            raise RuntimeError(f"{name}: a leaf Variable that requires grad is being used in an in-place "
                               "operation; do it under dn.no_grad() (or on .data), or out of place")
        base = getattr(target, "_base", None)
        if base is not None:
            return _inplace_on_view(fn, target, base, others, name, kwargs)
    ctx = Context(tuple(needs) if record else (False,) * len(needs))
    fn.forward(ctx, target.array, *arrays, **kwargs)
    version[0] += 1
    if record:
        prior = _stand_in(target)
        version[1] = True  # views taken before now show values the graph does not describe
        target._version = [version[0], False]
        node = Node(fn, ctx, [prior, *others], [(target.shape, target.dtype)])
        node.prior = prior
        target._node, target._slot = node, 0
        target.requires_grad = target.dtype.kind == "f"
        if ctx.saved:
            node.checks = _saved_checks(ctx.saved, others, (target,))
    return target


def _inplace_on_view(fn, view, base, others, name, kwargs):
    """A recorded in-place op on ``view = base[index]``: the op runs on a copy, the copy is
    written into ``base[index]`` (recorded on the base), and the view is taken again, so both
    tensors describe their new values (``y[0] *= 3`` and ``y[0].mul_(3)`` work as in PyTorch).
    Other views (reshape, permute, split) are refused rather than given a wrong gradient."""
    index = getattr(view, "_view_index", None)
    if index is None:
        raise RuntimeError(
            f"{name}: a differentiable in-place operation on this view (not of the form x[index]) "
            "is not supported; apply it to the tensor it views, or clone() the view first")
    new = view.clone()
    apply_inplace(fn, new, *others, name=name, **kwargs)
    base._set(index, new, name)
    fresh = base[index]
    if fresh._node is not None:  # nodes that consumed the view before reach its old history
        fresh._node.prior = _stand_in(view)
    view._node, view._slot, view._version = fresh._node, fresh._slot, fresh._version
    view.requires_grad = fresh.requires_grad
    return view


def _stand_in(t):
    """A tensor holding ``t``'s current graph identity, for a node's ``prior``."""
    from .tensor import Tensor

    prior = Tensor._make(t.array, t.device, t._node, t._slot)
    prior.requires_grad = t.requires_grad
    prior._version = t._version
    return prior


def _edge(t, seq):
    """The graph identity that input ``t`` had when the node numbered ``seq`` recorded it: an
    in-place op since then rebased ``t`` onto a newer node, whose ``prior`` holds the old one."""
    node = getattr(t, "_node", None)
    while node is not None and node.seq > seq:
        t = node.prior
        node = t._node
    return t, node


def _check_versions(node):
    for counter, version, kind, i, shape in node.checks:
        if counter[0] != version:
            raise RuntimeError(
                f"backward: {kind} {i} of {node.fn.__name__} (shape {tuple(shape)}), which it saved "
                f"for the gradient, was changed by an in-place operation (now at version "
                f"{counter[0]}, saved at version {version}); make that change out of place "
                "(x = x + y) or on a clone()")


def _topological_order(root_node):
    """Nodes reachable from ``root_node``, each after every node that consumes its outputs.
    Iterative depth-first search: no recursion limit for deep graphs."""
    order = []
    visited = {id(root_node)}
    stack = [(root_node, iter(root_node.inputs))]
    while stack:
        node, it = stack[-1]
        advanced = False
        for t in it:
            child = _edge(t, node.seq)[1]
            if child is not None and id(child) not in visited:
                visited.add(id(child))
                stack.append((child, iter(child.inputs)))
                advanced = True
                break
        if not advanced:
            stack.pop()
            order.append(node)
    order.reverse()  # consumers first
    return order


def backward(tensor, grad, retain_graph=False):
    """Accumulate d(tensor)/d(leaf) * grad into the ``.grad`` of every leaf that requires it."""
    root = tensor._node
    if root is None:
        if tensor.requires_grad:
            tensor._accumulate(grad)
        return
    hooks = getattr(_state, "hooks", None)
    pending = {id(root): [None] * len(root.out_meta)}
    pending[id(root)][tensor._slot] = grad
    summed = set()  # (node id, slot) of the pending gradients that are sums made below
    for node in _topological_order(root):
        grads = pending.pop(id(node), None)
        if grads is None:
            continue
        if node.freed:
            raise RuntimeError(
                "backward: this graph was already freed by an earlier backward(); "
                "pass retain_graph=True to the first call to go through it twice"
            )
        if all(g is None for g in grads):
            continue
        if node.checks:
            _check_versions(node)
        xp = array_module(next(g for g in grads if g is not None))
        grads = [
            g if g is not None else xp.zeros(shape, dtype=dtype)
            for g, (shape, dtype) in zip(grads, node.out_meta)
        ]
        in_grads = node.fn.backward(node.ctx, *grads) if hooks is None else hooks.backward(node, grads)
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        inputs = node.inputs
        if not retain_graph:
            node.ctx = None
            node.freed = True
            node.inputs = ()  # drop the references to the inputs (and their arrays) too
        for t, g in zip(inputs, in_grads):
            if g is None or t is None:
                continue
            t, child = _edge(t, node.seq)
            if not getattr(t, "requires_grad", False):
                continue
            if g.shape != t.shape:
                raise RuntimeError(
                    f"{node.fn.__name__}.backward returned a gradient of shape {g.shape} "
                    f"for an input of shape {t.shape}"
                )
            if g.dtype != t.dtype:
                g = g.astype(t.dtype)
            if child is None:
                t._accumulate(g)
            else:
                slots = pending.setdefault(id(child), [None] * len(child.out_meta))
                prev = slots[t._slot]
                if prev is None:
                    slots[t._slot] = g
                elif (id(child), t._slot) in summed:
                    prev += g  # a sum this walk made: no one else holds it
                else:  # the first g may be shared (Add hands one array to both inputs)
                    slots[t._slot] = prev + g
                    summed.add((id(child), t._slot))
    # the root keeps its (freed) node, so that a second backward() raises instead of
    # silently accumulating into the root
