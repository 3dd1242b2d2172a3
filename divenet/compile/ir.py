"""The graph IR of ``dn.compile``: values (edges) and nodes (one op of ``ops/`` each).

A ``Graph`` is what one traced forward call did, in execution order:

* a ``Value`` is one array: a call input (``kind="input"``), a tensor the forward read from
  outside (``"external"``: a parameter, a buffer, a captured tensor; read afresh at every
  call, so optimizer steps and ``load_state_dict`` are seen), a constant (``"const"``: a raw
  array or number handed to an op, or a folded result), a derived array (``"derived"``: batch
  norm folded into a convolution's weights, recomputed when its sources change) or the output
  of a node (``"op"``). It knows its shape, dtype and whether it needs a gradient.
* a ``Node`` is one op application: the ``Function`` subclass, its input and output value
  ids, its options (``kwargs``; options that must be read at every call, such as batch norm's
  running statistics or dropout's generator, are in ``dynamic``), the module path it ran in,
  and what the trace saw of it (which inputs and outputs its backward context kept).

The passes (passes.py) rewrite a graph and attach a ``Plan`` (what to free when, what runs
in place, the recomputation segments); the executor (executor.py) runs it. ``str(graph)``
prints it, one node a line. This module imports nothing but NumPy.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Value", "Node", "Graph", "Plan"]


class Value:
    __slots__ = ("id", "kind", "shape", "dtype", "requires_grad", "name", "producer", "ref", "array")

    def __init__(self, vid, kind, shape, dtype, requires_grad=False, name="", producer=None, ref=None,
                 array=None):
        self.id, self.kind = vid, kind
        self.shape = tuple(shape) if shape is not None else None
        self.dtype = dtype
        self.requires_grad = requires_grad
        self.name = name  # the state_dict key of a parameter or buffer, "input 0", ...
        self.producer = producer  # index of the node making it ("op" values)
        self.ref = ref  # the Tensor an "external" value reads; the recipe of a "derived" one
        self.array = array  # a "const" value's array (or Python number)

    @property
    def nbytes(self):
        if self.shape is None or self.dtype is None:
            return 0
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def label(self):
        shape = "x".join(map(str, self.shape)) if self.shape else "scalar"
        dtype = np.dtype(self.dtype).name if self.dtype is not None else type(self.array).__name__
        return f"%{self.id}:{dtype}[{shape}]"


class Node:
    __slots__ = ("index", "cls", "inputs", "outputs", "kwargs", "dynamic", "needs", "path", "inplace",
                 "saved_inputs", "saved_outputs", "saved_bytes", "views", "effect", "impl",
                 "same_layout", "rebuild", "kind")

    def __init__(self, cls, inputs, outputs, kwargs, dynamic, needs, path, inplace=False):
        self.index = -1
        self.cls = cls
        self.inputs = list(inputs)  # value ids (None for an absent optional input)
        self.outputs = list(outputs)
        self.kwargs = dict(kwargs)  # static options
        self.dynamic = dict(dynamic)  # option -> ("tensor", Tensor) | ("rng", device) | ("bn_momentum", module)
        self.needs = tuple(needs)  # ctx.needs_input_grad as eager mode had it
        self.path = path  # module path ("layer1.0.conv1"), "" at the top
        self.inplace = inplace  # a recorded in-place op: output 0 is input 0's storage
        self.saved_inputs = ()  # indices of inputs whose storage the backward context kept
        self.saved_outputs = ()
        self.saved_bytes = 0  # bytes the backward context held at trace time
        self.views = ()  # (output index, input index) pairs that share storage
        self.effect = None  # ("bn_count", module): a counter eager mode bumps before the op
        self.impl = None  # a pass's replacement forward (in-place kernels), else None
        self.same_layout = ()  # per input: laid out in memory as output 0 was (equal strides)
        self.rebuild = ()  # input indices whose saved arrays the producer rebuilds in backward (fuse_bn_relu)
        self.kind = None  # the implementation the op's dispatch chose at trace time (a convolution's ctx.kind)

    @property
    def op(self):
        return self.cls.__name__

    @property
    def pure(self):
        """Whether dropping or folding the node changes nothing but its outputs."""
        return not (self.inplace or self.dynamic or self.effect or
                    any(hasattr(v, "shape") and not isinstance(v, np.generic) for v in self.kwargs.values()))


class Plan:
    """What the memory passes decided (executor.py follows it):

    * ``free_after[k]``: value ids whose last forward reader is node ``k``; their arrays are
      dropped then (a backward context that saved one keeps it alive on its own);
    * ``segments``: None, or (start, stop) node ranges for recomputation: the forward keeps
      only what crosses a segment boundary and re-runs a segment just before its backward;
    * ``stored``: value ids kept for recomputation, and ``release_after_segment[j]``: those
      dropped once segment ``j``'s backward has run;
    * ``rebuild_patches``: the training replay runs under ``ops.conv.rebuilt_patches``.
    """

    def __init__(self, n_nodes):
        self.free_after = [[] for _ in range(n_nodes)]
        self.segments = None
        self.recomputed = ()  # segment indices that are re-run (the others keep their contexts)
        self.kept = set()  # nodes of re-run segments that keep their forward contexts, not re-run
        self.context_bytes = None  # per node, what its context keeps in the replay (recompute's costs)
        self.stored = set()
        self.release_after_segment = {}
        self.release = False  # whether the release pass ran (else the forward's arrays live to the end)
        self.rebuild_patches = False  # convolutions save their inputs, not patch matrices

    def segment_of(self, k):
        for j, (a, b) in enumerate(self.segments or ()):
            if a <= k < b:
                return j
        return 0


class Graph:
    """One traced call: ``values`` by id, ``nodes`` in execution order, the call's tensor
    inputs (``inputs``, value ids in argument order), ``outputs`` (value ids) and the
    structure to rebuild the returned object (``out_tree``)."""

    def __init__(self, training, grad):
        self.values: list[Value] = []
        self.nodes: list[Node] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.out_tree = None
        self.training, self.grad = training, grad
        self.passes: list[str] = []  # the passes that ran, in order
        self.plan: Plan | None = None

    def add_value(self, kind, shape, dtype, **kw):
        v = Value(len(self.values), kind, shape, dtype, **kw)
        self.values.append(v)
        return v.id

    def add_node(self, node):
        node.index = len(self.nodes)
        self.nodes.append(node)
        for vid in node.outputs:
            self.values[vid].producer = node.index
        return node

    def renumber(self):
        for v in self.values:
            if v.kind == "op":
                v.producer = None  # a removed node's outputs have no producer any more
        for i, node in enumerate(self.nodes):
            node.index = i
            for vid in node.outputs:
                self.values[vid].producer = i

    def readers(self):
        """value id -> indices of the nodes that read it, in order."""
        out = {}
        for node in self.nodes:
            for vid in node.inputs:
                if vid is not None:
                    out.setdefault(vid, []).append(node.index)
        return out

    @property
    def externals(self):
        return [v for v in self.values if v.kind == "external"]

    def memory_timeline(self):
        """Bytes of values alive after each forward node under the plan (without what backward
        contexts keep): the picture ``divenet graph`` draws beside the graph."""
        plan = self.plan
        live = {v.id for v in self.values if v.kind == "input"}
        total = sum(self.values[i].nbytes for i in live)
        out = []
        for node in self.nodes:
            for vid in node.outputs:
                if vid not in live and not (node.inplace and vid == node.outputs[0]):
                    live.add(vid)
                    total += self.values[vid].nbytes
            if plan is not None:
                for vid in plan.free_after[node.index]:
                    if vid in live:
                        live.discard(vid)
                        total -= self.values[vid].nbytes
            out.append(total)
        return out

    def __str__(self):
        lines = [f"graph(training={self.training}, grad={self.grad}, passes={self.passes})"]
        for v in self.values:
            if v.kind in ("input", "external", "derived"):
                lines.append(f"  {v.kind:8s} {v.label()} {v.name}" + (" (grad)" if v.requires_grad else ""))
        free = self.plan.free_after if self.plan is not None else None
        for node in self.nodes:
            ins = ", ".join("None" if i is None else self._arg(i) for i in node.inputs)
            opts = ", ".join(f"{k}={_short(v)}" for k, v in node.kwargs.items())
            opts += "".join(f", {k}=<{d[0]}>" for k, d in node.dynamic.items())
            outs = ", ".join(self.values[i].label() for i in node.outputs)
            note = []
            if node.path:
                note.append(node.path)
            if node.inplace or node.impl is not None:
                note.append("in place")
            if node.rebuild:
                note.append("saved " + " ".join(f"%{node.inputs[i]}" for i in node.rebuild) + " rebuilt")
            if free is not None and free[node.index]:
                note.append("frees " + " ".join(f"%{i}" for i in free[node.index]))
            lines.append(f"  {outs} = {node.op}({ins}{', ' if opts and ins else ''}{opts})"
                         + (f"  # {'; '.join(note)}" if note else ""))
        lines.append("  return " + ", ".join(f"%{i}" for i in self.outputs))
        return "\n".join(lines)

    def _arg(self, vid):
        v = self.values[vid]
        return f"{_short(v.array)}" if v.kind == "const" and not hasattr(v.array, "shape") else f"%{vid}"


def _short(v):
    if hasattr(v, "shape") and not isinstance(v, np.generic):
        return f"<array {tuple(v.shape)}>"
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."
