"""Graph mode: ``dn.compile(model)`` traces a model's forward into a small IR (ir.py), rewrites
and plans it (passes.py) and replays it on raw arrays (executor.py); docs/compile.md is the
user's guide.

``divenet.compile`` is this package and, called, the function ``compile``: ``dn.compile(model)``,
``dn.compile.TraceError``, ``from divenet.compile import trace_graph`` all work.

May import: autograd, backend, random, tensor, ops (the kernels it replays), nn (Module).
"""
from __future__ import annotations

import sys
import types
import warnings
from collections import OrderedDict

from ..autograd import is_grad_enabled
from ..nn.module import Module
from ..tensor import Tensor
from . import passes as _passes
from .executor import CompiledGraph, Program
from .ir import Graph, Node, Plan, Value
from .trace import TraceError, rebuild, tensor_leaves, trace

__all__ = ["compile", "CompiledModule", "TraceError", "RecompileWarning", "trace_graph", "Graph", "Node",
           "Value", "Plan", "PASSES"]

PASSES = _passes.ALL


class RecompileWarning(UserWarning):
    """A compiled module traced again (a new input signature) or dropped a cached graph."""


def _options(passes, recompute, cache_size, memory_budget=None):
    if passes is None:
        chosen = set(_passes.DEFAULT_PASSES)
    else:
        if isinstance(passes, str):
            raise TypeError(f"compile: passes must be a collection of pass names, got the string {passes!r}; "
                            f"write passes=({passes!r},)")
        chosen = set(passes)
        unknown = sorted(chosen - set(PASSES))
        if unknown:
            raise ValueError(f"compile: unknown pass(es) {unknown}; known: {', '.join(PASSES)}")
    if recompute is not None and recompute != "sqrt" and (
            isinstance(recompute, bool) or not isinstance(recompute, int) or recompute < 1):
        raise ValueError(f"compile: recompute must be None, 'sqrt' or a number of segments >= 1, got {recompute!r}")
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
        raise ValueError(f"compile: cache_size must be an integer >= 1, got {cache_size!r}")
    if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, float))
                                      or memory_budget < 0):
        raise ValueError(f"compile: memory_budget must be a number of bytes >= 0, got {memory_budget!r}")
    return chosen, {"recompute": recompute, "memory_budget": memory_budget}


def trace_graph(model, *args, passes=None, recompute=None, memory_budget=None, **kwargs):
    """Trace one call ``model(*args, **kwargs)`` (run eagerly, in the model's current mode and
    the current grad mode) and return its planned ``Graph``: nodes with op names
    (``node.op``), module paths (``node.path``), values with shapes and bytes
    (``graph.values[i].shape``/``.nbytes``), the memory plan (``graph.plan``) and
    ``graph.memory_timeline()``. For ``divenet graph`` and ``divenet profile``."""
    chosen, options = _options(passes, recompute, 1, memory_budget)
    graph, _ = trace(model, args, kwargs)
    return _passes.run(graph, chosen, options)


def _diff(old, new):
    """What changed between two signatures, in words."""
    (oa, okw, omodes, oreq, ograd), (na, nkw, nmodes, nreq, ngrad) = old, new
    out = []
    if len(oa) != len(na):
        out.append(f"{len(oa)} -> {len(na)} positional inputs")
    for i, (a, b) in enumerate(zip(oa, na)):
        if a == b:
            continue
        if a[0] in ("py", "seq") or b[0] in ("py", "seq"):
            out.append(f"input {i} {a[1]!r} -> {b[1]!r}")
            continue
        for what, x, y in zip(("shape", "dtype", "device", "requires_grad"), a, b):
            if x != y:
                out.append(f"input {i} {what} {x} -> {y}")
    if okw != nkw:
        out.append(f"keyword inputs {dict(okw)} -> {dict(nkw)}")
    if omodes != nmodes:
        out.append("training " + (f"{omodes[0]} -> {nmodes[0]}" if omodes[0] != nmodes[0] else
                                  "mode of a submodule changed"))
    if oreq != nreq:
        out.append("requires_grad of a parameter changed")
    if ograd != ngrad:
        out.append(f"grad mode {'on' if ograd else 'off'} -> {'on' if ngrad else 'off'}")
    return "; ".join(out) or "the signature changed"


class CompiledModule(Module):
    """What ``dn.compile(model)`` returns: a Module sharing ``model``'s parameters, buffers
    and submodules (``parameters()``, ``state_dict()``, ``train()``/``eval()``, ``to()`` act on
    the model) whose calls replay traced graphs, one per input signature."""

    def __init__(self, model, passes=None, recompute=None, cache_size=8, memory_budget=None):
        if not isinstance(model, Module):
            raise TypeError(f"compile: expected a divenet.nn.Module, got {type(model).__name__}")
        chosen, options = _options(passes, recompute, cache_size, memory_budget)
        d = self.__dict__
        d["_orig_mod"], d["_passes"], d["_options"], d["_cache_size"] = model, chosen, options, cache_size
        d["_cache"] = OrderedDict()  # signature -> Program, least recently used first
        d["_last"] = None
        d["_modes"] = None
        d["traces"] = 0  # how many times this module traced

    # the model's entries are this module's: state_dict keys, parameters, children as the model's
    def _entries(self):
        return self._orig_mod._entries()

    def __getattr__(self, name):
        model = self.__dict__.get("_orig_mod")
        if model is None:
            raise AttributeError(name)
        return getattr(model, name)

    def __getitem__(self, index):  # a compiled Sequential indexes as the model does
        return self._orig_mod[index]

    def __len__(self):
        return len(self._orig_mod)

    def __iter__(self):
        return iter(self._orig_mod)

    def train(self, mode=True):
        self._orig_mod.train(mode)
        self.__dict__["training"] = mode
        return self

    def extra_repr(self):
        return ""

    def __repr__(self):
        return f"Compiled({self._orig_mod!r})"

    @property
    def graphs(self):
        """The cached graphs, least recently used first."""
        return [p.graph for p in self._cache.values()]

    def reset(self):
        """Forget every traced graph (after replacing a submodule or parameter object)."""
        self._cache.clear()
        self.__dict__["_last"] = None
        self.__dict__["_modes"] = None

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)  # the model's own __call__ records module paths

    def _signature(self, args, kwargs):
        parts = [_part(a) for a in args]
        kw = ()
        if kwargs:
            for k, v in kwargs.items():
                if isinstance(v, Tensor):
                    raise TypeError(f"compile: tensor keyword argument {k!r}: a compiled module takes its "
                                    "tensor inputs positionally")
            kw = tuple(sorted((k, v if _hashable(v) else repr(v)) for k, v in kwargs.items()))
        modes = self._modes
        if modes is None:
            modes = self.__dict__["_modes"] = (list(self._orig_mod.modules()), None)
        modules, params = modes
        flags = tuple(m.training for m in modules)
        req = tuple(p.requires_grad for p in params) if params is not None else ()
        return tuple(parts), kw, flags, req, is_grad_enabled()

    def forward(self, *args, **kwargs):
        key = self._signature(args, kwargs)
        program = self._cache.get(key)
        if program is not None:
            self._cache.move_to_end(key)
            return self._replay(program, args)
        return self._trace(key, args, kwargs)

    def _replay(self, program, args):
        tensors = tensor_leaves(args)
        if program.records:
            outs = CompiledGraph.apply(*tensors, *program.grad_tensors, program=program)
        else:
            device = tensors[0].device if tensors else None
            outs = [Tensor._make(a, device, None) for a in program.infer([t.array for t in tensors])]
        return rebuild(program.graph.out_tree, list(outs))

    def _trace(self, key, args, kwargs):
        if self._cache:
            warnings.warn(f"dn.compile: {type(self._orig_mod).__name__} traced again for a new input "
                          f"signature ({_diff(self._last, key)})", RecompileWarning, stacklevel=4)
        graph, out = trace(self._orig_mod, args, kwargs)
        _passes.run(graph, self._passes, self._options)
        program = Program(graph)
        self.__dict__["traces"] += 1
        if self._modes[1] is None:  # the parameters exist now (lazy layers made theirs in the trace)
            self.__dict__["_modes"] = (list(self._orig_mod.modules()), list(self._orig_mod.parameters()))
            key = self._signature(args, kwargs)
        self._cache[key] = program
        self.__dict__["_last"] = key
        if len(self._cache) > self._cache_size:
            old, _ = self._cache.popitem(last=False)
            warnings.warn(f"dn.compile: {type(self._orig_mod).__name__}'s cache of {self._cache_size} graphs "
                          f"is full; dropped the least recently used one ({_diff(old, key)} since it); "
                          "raise cache_size= or keep input shapes fixed", RecompileWarning, stacklevel=4)
        return out


def _part(a):
    """One positional input's part of a signature: a tensor's meta, a tuple/list's parts (an
    LSTM's (h, c) state), else the value."""
    if isinstance(a, Tensor):
        return (a.shape, a.dtype, a.device, a.requires_grad)
    if isinstance(a, (tuple, list)) and any(isinstance(x, (Tensor, tuple, list)) for x in a):
        return ("seq", tuple(_part(x) for x in a))
    return ("py", a if _hashable(a) else repr(a))


def _hashable(v):
    try:
        hash(v)
        return True
    except TypeError:
        return False


def compile(model, *, passes=None, recompute=None, cache_size=8, memory_budget=None):
    """Graph mode: a Module sharing ``model``'s parameters whose calls replay traced graphs.

    ``passes``: the pass names to run (default: all of ``PASSES``; ``()`` for none);
    ``recompute``: None, ``"sqrt"`` (about sqrt(n) segments) or a number of segments to
    recompute in backward instead of storing ("sqrt" re-runs only those that lower the estimated
    peak); ``memory_budget``: bytes a training step may peak at (estimated: saved contexts,
    stored values, parameter gradients): segments are recomputed, first ones first, only until
    the estimate fits (implies recompute="sqrt" segments); ``cache_size``: graphs kept, one per input
    signature (shapes, dtypes, devices, requires_grad, train/eval, grad mode); a new signature
    traces again with a ``RecompileWarning`` naming what changed, and beyond ``cache_size``
    the least recently used graph is dropped with a warning."""
    return CompiledModule(model, passes=passes, recompute=recompute, cache_size=cache_size,
                          memory_budget=memory_budget)


class _CallableModule(types.ModuleType):
    # dn.compile(model) calls compile(); dn.compile.TraceError etc. are this package's names
    def __call__(self, model, **options):
        return compile(model, **options)


sys.modules[__name__].__class__ = _CallableModule
