"""Tracing: run the model eagerly once under an ``autograd.OpHooks`` recorder and write every
op application into a ``Graph`` (ir.py).

Each tensor an op reads is resolved when the op runs: a call input, the output of an earlier
recorded op (by tensor identity, else by array identity, so ``detach()`` and ``.data`` of a
traced value are found: they stop the gradient, as in eager mode), or an *external* tensor
(a parameter, buffer or captured tensor: replay reads its ``.array`` afresh each call).
Options that must be read at every call are marked dynamic: batch norm's running statistics
(arrays of buffers, updated in place), dropout's generator (``random.generator(device)``,
so a replay draws fresh numbers from the same stream eager mode uses).

Refused, with a ``TraceError`` naming the module path and the user's source line:
reading a traced value on the host (``.item()``, ``bool()``, ``.numpy()``, ``.tolist()``,
``np.asarray``): the graph could not replay a Python branch taken on it; an in-place op on
a view (``x[0] += 1``); a buffer changed outside the ops (``buffer.array[...] = ...``), which
replay would not repeat. Batch norm's ``num_batches_tracked`` counter, which the layer bumps
outside the ops, is recognised and bumped by the replay too.
"""
from __future__ import annotations

import os
import sys
import weakref

import numpy as np

from .. import autograd
from ..autograd import _same_storage, is_grad_enabled
from ..backend import cpu, transfer
from .ir import Graph, Node

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TraceError(RuntimeError):
    """What ``dn.compile`` cannot turn into a graph (a value read on the host, an in-place op
    on a view, state changed outside the ops)."""


def user_frame():
    """'file:line' of the innermost stack frame outside divenet (the user's code)."""
    f = sys._getframe(1)
    while f is not None:
        path = os.path.abspath(f.f_code.co_filename)
        if not path.startswith(_PACKAGE_DIR + os.sep):
            return f"{f.f_code.co_filename}:{f.f_lineno}"
        f = f.f_back
    return "<unknown>"


class Recorder(autograd.OpHooks):
    """Records the ops of one forward call of ``model`` into ``graph``."""

    def __init__(self, model, graph):
        self.model, self.graph = model, graph
        self.depth = 0
        # id(Tensor) / id(array) -> (value id, a weak reference that tells whether that id still
        # names the same object): the trace holds no intermediate array alive (eager's peak)
        self.of_tensor = {}  # inputs and op outputs
        self.of_array = {}  # their arrays, for detach() / .data of traced tensors
        self.externals = {}  # id(Tensor) -> value id
        self.keep = []  # the inputs and external tensors (the graph refers to them)
        self.model_ids = {id(t) for _, t in _model_tensors(model)}
        self.owners = {id(t.array): t for _, t in _model_tensors(model)}  # option arrays -> their tensor
        self.inplace_targets = set()  # ids of external tensors changed by recorded in-place ops

    # ---- values -----------------------------------------------------------------------------
    def add_input(self, t, i):
        vid = self.graph.add_value("input", t.shape, t.dtype, requires_grad=t.requires_grad, name=f"input {i}")
        self._bind(t, vid)
        self.keep.append(t)
        self.graph.inputs.append(vid)
        return vid

    def _bind(self, t, vid):
        self.of_tensor[id(t)] = (vid, _ref(t))
        self.of_array[id(t.array)] = (vid, _ref(t.array))

    def _traced(self, t):
        """The value id of traced tensor ``t`` (or of its array), else None."""
        hit = self.of_tensor.get(id(t))
        if hit is None or hit[1]() is not t:
            a = getattr(t, "array", None)
            hit = self.of_array.get(id(a))
            if hit is None or hit[1]() is not a:
                return None
        return hit[0]

    def value_of(self, t):
        """The value id of what an op reads (a Tensor, a raw array or number, or None)."""
        from ..tensor import Tensor

        if t is None:
            return None
        if isinstance(t, Tensor):
            vid = self._traced(t)
            if vid is None:
                vid = self.externals.get(id(t))
                if vid is None:
                    vid = self.graph.add_value("external", t.shape, t.dtype, requires_grad=t.requires_grad, ref=t)
                    self.externals[id(t)] = vid
                    self.keep.append(t)
            return vid
        return self.graph.add_value("const", getattr(t, "shape", None), getattr(t, "dtype", None), array=t)

    def path(self):
        from ..nn.module import _call_stack, _module_path

        stack = getattr(_call_stack, "modules", None) or []
        for i, m in enumerate(stack):
            if m is self.model:
                return _module_path(stack[i:])
        return ""

    def where(self):
        p = self.path()
        return f"{p}: " if p else ""

    # ---- the hooks --------------------------------------------------------------------------
    def apply(self, cls, inputs, kwargs):
        if self.depth:  # an op that applies others inside its own apply is recorded once
            return autograd.run_apply(cls, inputs, kwargs)
        ins = [self.value_of(t) for t in inputs]
        self.depth += 1
        try:
            out = autograd.run_apply(cls, inputs, kwargs)
        finally:
            self.depth -= 1
        outs = out if isinstance(out, tuple) else (out,)
        self._record(cls, inputs, ins, kwargs, outs, inplace=False)
        return out

    def apply_inplace(self, fn, target, others, name, kwargs):
        if self.depth:
            return autograd.run_inplace(fn, target, others, name, kwargs)
        if getattr(target, "_base", None) is not None:
            raise TraceError(f"{self.where()}dn.compile: an in-place op ({name}) on a view of a tensor "
                             f"at {user_frame()} is not supported in a compiled forward; write it out of "
                             "place (y = x + 1) or clone() the view first")
        ins = [self.value_of(target)] + [self.value_of(t) for t in others]
        was_external = self.graph.values[ins[0]].kind == "external"
        self.depth += 1
        try:
            autograd.run_inplace(fn, target, others, name, kwargs)
        finally:
            self.depth -= 1
        if was_external:
            self.inplace_targets.add(id(target))
        self._record(fn, [target, *others], ins, kwargs, (target,), inplace=True)
        return target

    def value_read(self, t, what):
        """Called by Tensor.item/bool/numpy/tolist/__array__ while this recorder is active."""
        from ..tensor import Tensor

        if self._traced(t) is not None or id(t) in self.model_ids or (isinstance(t, Tensor) and t.requires_grad):
            if what in ("argmax()", "argmin()", "any()", "all()", "~"):  # no op records them
                why = ("is computed outside divenet's recorded ops, so a replay could not recompute it: "
                       "compute it outside the compiled module")
            elif what.startswith("a comparison"):
                why = ("is computed outside divenet's recorded ops, so a replay could not recompute it: "
                       "compute masks outside the compiled module (or from arithmetic ops)")
            else:
                why = ("reads the value on the host; a compiled graph cannot replay Python code that "
                       "depends on tensor values: keep the computation in tensor ops, move the read out of "
                       "the compiled module")
            raise TraceError(f"{self.where()}dn.compile: {what} of a traced tensor (shape {tuple(t.shape)}) "
                             f"at {user_frame()} {why}, or run this module without dn.compile")

    # ---- recording --------------------------------------------------------------------------
    def _record(self, cls, inputs, ins, kwargs, outs, inplace):
        from ..tensor import Tensor

        g = self.graph
        # what the op's ctx.needs_input_grad was; under no_grad() eager mode records no node,
        # so no gradient may flow through it in the replay either
        grad = is_grad_enabled()
        needs = [grad and isinstance(t, Tensor) and t.requires_grad for t in inputs]
        dynamic, static = {}, {}
        device = next((t.device for t in inputs if isinstance(t, Tensor)), cpu())
        for key, v in kwargs.items():
            kind = self._dynamic(v, device)
            if kind is None:
                static[key] = v
            else:
                dynamic[key] = kind
        out_ids = []
        for i, o in enumerate(outs):
            vid = g.add_value("op", o.shape, o.dtype, requires_grad=o.requires_grad)
            self._bind(o, vid)  # an in-place target now holds the new value
            out_ids.append(vid)
        node = Node(cls, ins, out_ids, static, dynamic, needs, self.path(), inplace=inplace)
        in_arrays = [t.array if isinstance(t, Tensor) else t for t in inputs]
        out_arrays = [o.array for o in outs]
        node.views = tuple((j, i) for j, oa in enumerate(out_arrays) for i, ia in enumerate(in_arrays)
                           if hasattr(ia, "shape") and not isinstance(ia, np.generic) and _same_storage(oa, ia))
        o0 = getattr(out_arrays[0], "strides", None)
        node.same_layout = tuple(getattr(a, "strides", None) == o0 and getattr(a, "shape", None) == out_arrays[0].shape
                                 for a in in_arrays)
        recorded = outs[0]._node
        if recorded is not None and isinstance(getattr(recorded.ctx, "kind", None), str):
            node.kind = recorded.ctx.kind
        if recorded is not None and recorded.ctx is not None and not inplace:
            saved = [s for s in recorded.ctx.saved
                     if s is not None and hasattr(s, "shape") and not isinstance(s, np.generic)]
            node.saved_inputs = tuple(i for i, a in enumerate(in_arrays) if hasattr(a, "shape")
                                      and not isinstance(a, np.generic) and any(_same_storage(s, a) for s in saved))
            node.saved_outputs = tuple(j for j, a in enumerate(out_arrays) if any(_same_storage(s, a) for s in saved))
            seen, total = set(), 0
            fixed = [a for a, vid in zip(in_arrays, ins) if vid is not None and g.values[vid].kind != "op"
                     and hasattr(a, "shape")]
            for s in saved:
                if any(_same_storage(s, a) for a in fixed):
                    continue  # a parameter's storage lives on anyway: no cost of this node
                base = s if getattr(s, "base", None) is None else s.base
                if id(base) not in seen:
                    seen.add(id(base))
                    total += int(getattr(base, "nbytes", 0) or 0)
            node.saved_bytes = total
        g.add_node(node)

    def _dynamic(self, v, device):
        from .. import random as _random

        if v is None or isinstance(v, (bool, int, float, str, tuple, np.generic)):
            return None
        if hasattr(v, "shape"):
            t = self.owners.get(id(v))
            if t is None:  # made since (a lazy layer's first forward): look again
                self.owners = {id(t.array): t for _, t in _model_tensors(self.model)}
                t = self.owners.get(id(v))
            return ("tensor", t) if t is not None else None
        if v is _random.generator(device):
            return ("rng", device)
        return None


class _Strong:
    """A stand-in weak reference for objects that take none (NumPy scalars)."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __call__(self):
        return self.obj


def _ref(obj):
    try:
        return weakref.ref(obj)
    except TypeError:
        return _Strong(obj)


def _model_tensors(model):
    return list(model._named_tensors(True)) + list(model.named_buffers())


def _host(a):
    return a if isinstance(a, np.ndarray) else transfer(a, cpu())


def tensor_leaves(args, out=None):
    """The tensors of positional inputs, nested tuples and lists included, in order."""
    from ..tensor import Tensor

    out = [] if out is None else out
    for a in args:
        if isinstance(a, Tensor):
            out.append(a)
        elif isinstance(a, (tuple, list)):
            tensor_leaves(a, out)
    return out


def flatten_outputs(out, leaves):
    """The structure of a returned object with its tensors replaced by their leaf index."""
    from ..tensor import Tensor

    if isinstance(out, Tensor):
        leaves.append(out)
        return ("t", len(leaves) - 1)
    if isinstance(out, (tuple, list)):
        return (type(out), [flatten_outputs(o, leaves) for o in out])
    if isinstance(out, dict):
        return (type(out), [(k, flatten_outputs(v, leaves)) for k, v in out.items()])
    return ("py", out)


def rebuild(tree, leaves):
    kind, body = tree
    if kind == "t":
        return leaves[body]
    if kind == "py":
        return body
    if issubclass(kind, dict):
        return kind((k, rebuild(t, leaves)) for k, t in body)
    items = [rebuild(t, leaves) for t in body]
    return kind(*items) if hasattr(kind, "_fields") else kind(items)  # a namedtuple takes fields


def trace(model, args, kwargs):
    """Run ``model(*args, **kwargs)`` eagerly, recording it. Returns (graph, the eager result)."""
    from ..ops.norm import BatchNorm
    from ..tensor import Tensor

    graph = Graph(training=model.training, grad=is_grad_enabled())
    rec = Recorder(model, graph)
    before = {name: (t, _host(t.array).copy()) for name, t in model.named_buffers()}
    for i, a in enumerate(tensor_leaves(args)):
        rec.add_input(a, i)
    with rec:
        out = model(*args, **kwargs)
    leaves = []
    graph.out_tree = flatten_outputs(out, leaves)
    graph.outputs = [rec.value_of(t) for t in leaves]

    # name the external values; bind batch norm's counter; refuse other state changed outside ops
    names = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        names.setdefault(id(t), name)
    rec.keep.clear()
    for v in graph.externals:
        v.name = names.get(id(v.ref), "captured tensor")
    # a tensor the forward made from constants (dn.ones(3), dn.tensor(2.0)) is referenced by
    # nothing but this graph now: a constant of the graph (which constant folding may fold);
    # one that something else holds (a private attribute) stays external, read at every call
    for v in graph.externals:
        t = v.ref
        if v.name == "captured tensor" and not t.requires_grad and v.id not in graph.outputs \
                and sys.getrefcount(t) <= 3:  # v.ref, t and getrefcount's argument
            v.kind, v.array, v.ref = "const", t.array, None
        del t
    bn_modules = {id(m.running_mean): m for m in model.modules()
                  if getattr(m, "running_mean", None) is not None and hasattr(m, "num_batches_tracked")}
    explained = set(rec.inplace_targets)
    for node in graph.nodes:
        for kind in node.dynamic.values():
            if kind[0] == "tensor":
                explained.add(id(kind[1]))
        if node.cls is BatchNorm and node.kwargs.get("training") and "running_mean" in node.dynamic:
            m = bn_modules.get(id(node.dynamic["running_mean"][1]))
            if m is not None:
                node.effect = ("bn_count", m)
                explained.add(id(m.num_batches_tracked))
                if m.momentum is None:
                    node.dynamic["momentum"] = ("bn_momentum", m)
                    node.kwargs.pop("momentum", None)
    for name, (t, old) in before.items():
        if id(t) in explained:
            continue
        new = _host(t.array)
        if new.shape != old.shape or not np.array_equal(new, old, equal_nan=True):
            raise TraceError(f"dn.compile: buffer {name} changed during the forward outside the divenet "
                             "ops (a raw array write); a replay would not repeat it: update it with tensor "
                             "ops (buffer.add_(...)) or run this model without dn.compile")
    return graph, out
