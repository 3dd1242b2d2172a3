"""Reverse-mode autodiff: the Function base class, graph recording and backward.

An op is a ``Function`` subclass with two static methods working on raw arrays (NumPy or
CuPy), never on Tensors:

    forward(ctx, *arrays, **options)  -> array, or a tuple of arrays
    backward(ctx, *grads_of_outputs)  -> one gradient (or None) per positional input

``Op.apply(*tensors, **options)`` unwraps the tensors, runs ``forward`` and, when grad mode is
on and an input requires a gradient, records a ``Node`` so that ``Tensor.backward`` can walk
the graph. The walk is iterative, so graphs of any depth are fine.
"""
from __future__ import annotations

import threading

from .backend import array_module

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


class Context:
    """What forward hands to backward. ``needs_input_grad[i]`` tells backward whether it has
    to compute the gradient of positional input ``i`` at all."""

    __slots__ = ("needs_input_grad", "saved", "__dict__")

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved = ()

    def save_for_backward(self, *arrays):
        self.saved = arrays


class Node:
    """One recorded op application in the graph."""

    __slots__ = ("fn", "ctx", "inputs", "out_meta", "freed")

    def __init__(self, fn, ctx, inputs, out_meta):
        self.fn = fn
        self.ctx = ctx
        self.inputs = inputs  # Tensors (or None) in positional order
        self.out_meta = out_meta  # (shape, dtype) per output, to zero-fill unused outputs
        self.freed = False


class Function:
    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **kwargs):
        from .tensor import Tensor

        arrays = []
        device = None
        needs = []
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
            else:
                arrays.append(t)
                needs.append(False)
        record = is_grad_enabled() and any(needs)
        ctx = Context(tuple(needs))
        out = cls.forward(ctx, *arrays, **kwargs)
        multi = isinstance(out, tuple)
        outs = out if multi else (out,)
        node = None
        if record:
            node = Node(cls, ctx, list(inputs), [(o.shape, o.dtype) for o in outs])
        results = tuple(Tensor._make(o, device, node, i) for i, o in enumerate(outs))
        return results if multi else results[0]


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
            child = getattr(t, "_node", None)
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
    pending = {id(root): [None] * len(root.out_meta)}
    pending[id(root)][tensor._slot] = grad
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
        xp = array_module(next(g for g in grads if g is not None))
        grads = [
            g if g is not None else xp.zeros(shape, dtype=dtype)
            for g, (shape, dtype) in zip(grads, node.out_meta)
        ]
        in_grads = node.fn.backward(node.ctx, *grads)
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        inputs = node.inputs
        if not retain_graph:
            node.ctx = None
            node.freed = True
            node.inputs = ()  # drop the references to the inputs (and their arrays) too
        for t, g in zip(inputs, in_grads):
            if g is None or t is None or not getattr(t, "requires_grad", False):
                continue
            if g.shape != t.shape:
                raise RuntimeError(
                    f"{node.fn.__name__}.backward returned a gradient of shape {g.shape} "
                    f"for an input of shape {t.shape}"
                )
            if g.dtype != t.dtype:
                g = g.astype(t.dtype)
            child = t._node
            if child is None:
                t._accumulate(g)
            else:
                slots = pending.setdefault(id(child), [None] * len(child.out_meta))
                prev = slots[t._slot]
                slots[t._slot] = g if prev is None else prev + g
    # the root keeps its (freed) node, so that a second backward() raises instead of
    # silently accumulating into the root
