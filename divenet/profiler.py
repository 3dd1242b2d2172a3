"""The op profiler: per-op forward and backward time, MACs, achieved GFLOP/s, bytes of each op's
outputs and bytes live, by op, by module path and by op kind; Chrome trace-event files.

It is an ``autograd.OpHooks`` observer: every op application (``apply``, ``apply_inplace``) and
every backward step of this thread is timed and recorded as an ``Event``. A backward step is
matched to the forward op that recorded its node, so each ``OpRecord`` carries both times. An op
that runs inside another op's forward or backward (a checkpoint's recomputation runs whole
forward passes inside its backward) is recorded too, and its time is taken out of the outer
one's *self* time, which the tables add up (nothing is counted twice).

Bytes live is what the NumPy buffers (and Python objects) alive take, ``tracemalloc``'s current
size sampled after each op (NumPy reports its buffers to tracemalloc); on a GPU, the bytes CuPy's
memory pool has handed out. tracemalloc about doubles a step's time, so ``profile(model, x)``
samples bytes live in one step after the warm-up and times the recorded steps without it, then
copies each op's bytes live over (the steps run the same ops). Used as a context manager the
profile samples in the block itself. On a GPU each op is synchronized, so times are its own.

Two ways in, as ``torch.profiler`` at a small scale::

    prof = profile(model, x, steps=2)        # warm-up, then 2 training steps, recorded
    print(prof.table())
    prof.export_chrome_trace("trace.json")   # open in https://ui.perfetto.dev or chrome://tracing

    with profile() as prof:                  # record whatever runs in the block
        loss = loss_fn(model(x), y); loss.backward()

MACs are counted from shapes in one place, ``op_macs``: convolutions, dense layers and matrix
products (the ops a published GFLOPS figure counts, as ``divenet summary`` does); backward does
one such product per input that needs a gradient (input, weight). Other ops count 0.

A ``dn.compile`` replay is one autograd op (``CompiledGraph``); the executor hands each graph
node it runs to ``compiled_op``, so the tables show the graph's nodes (fused ones under their
own names, ``BatchNormReLU``) and the ``CompiledGraph`` row keeps only the replay's own time.

May import: autograd, tensor, backend, nn (module paths), functional (the default loss).
"""
from __future__ import annotations

import json
import math
import time
import tracemalloc
import weakref
from dataclasses import dataclass, field

from . import autograd
from .tensor import Tensor

__all__ = ["Event", "OpRecord", "Profile", "profile", "op_macs"]

_MATMUL_KINDS = {"Conv2d", "Conv1d", "Linear", "MatMul"}


def op_macs(kind, in_shapes, out_shapes):
    """Multiply-accumulates of one forward application of op ``kind`` (a Function class name)
    from its input and output shapes: output elements x the length of each dot product."""
    if kind not in _MATMUL_KINDS or not out_shapes or len(in_shapes) < 2 or in_shapes[1] is None:
        return 0
    out = math.prod(out_shapes[0])
    if kind in ("Conv2d", "Conv1d"):  # weight (out, in / groups, *kernel)
        return out * math.prod(in_shapes[1][1:])
    if kind == "Linear":  # weight (out, in)
        return out * in_shapes[1][1]
    a = in_shapes[0]  # MatMul: the shared axis is a's last (a 1-D a: its only one)
    return out * (a[-1] if a else 1)


@dataclass
class Event:
    """One timed op application or backward step."""
    name: str  # the op kind (Function class name; an in-place op's name, e.g. add_)
    phase: str  # "forward", "backward" or "recompute" (a forward run inside a backward step)
    path: str  # the module path the op ran in ("" at the top level)
    ts_ns: int  # start, from the profile's start
    dur_ns: int
    self_ns: int = 0  # dur_ns less the events nested in it
    macs: int = 0
    out_bytes: int = 0
    live_bytes: int = 0  # after the op
    peak_bytes: int = 0  # the most live at any moment since the previous event (its scratch included)
    op: int | None = None  # index of its OpRecord
    step: int = 0
    shapes: tuple = ()  # (input shapes, output shapes) of a forward event


@dataclass
class OpRecord:
    """One op application in the forward pass, with its backward step once that ran."""
    index: int
    kind: str
    path: str
    in_shapes: list
    out_shapes: list
    macs: int
    out_bytes: int
    step: int
    position: int  # its place among the ops of its step
    inputs_from: list  # per input: the index of the OpRecord that made it, "param", "input" or None
    forward: Event = None
    backward: Event | None = None
    recorded: bool = False  # whether it recorded a graph node (so backward may reach it)
    backward_macs: int = 0

    @property
    def live_bytes(self):
        return self.forward.live_bytes


class _Hooks(autograd.OpHooks):
    def __init__(self, prof):
        self.prof = prof
        self.open = []  # child time of the events in progress (for their self time)
        self.in_backward = 0

    def _run_apply(self, cls, inputs, kwargs):
        prev = self._previous
        return prev.apply(cls, inputs, kwargs) if prev is not None else autograd.run_apply(cls, inputs, kwargs)

    def _timed(self, run):
        self.open.append(0)
        t0 = time.perf_counter_ns()
        try:
            out = run()
            self.prof._sync(out)
        finally:
            child = self.open.pop()
        t1 = time.perf_counter_ns()
        if self.open:
            self.open[-1] += t1 - t0
        return out, t0, t1, child

    def apply(self, cls, inputs, kwargs):
        out, t0, t1, child = self._timed(lambda: self._run_apply(cls, inputs, kwargs))
        self.prof._forward(cls.__name__, inputs, out, t0, t1, child, self.in_backward)
        return out

    def apply_inplace(self, fn, target, others, name, kwargs):
        prev = self._previous
        run = ((lambda: prev.apply_inplace(fn, target, others, name, kwargs)) if prev is not None else
               (lambda: autograd.run_inplace(fn, target, others, name, kwargs)))
        out, t0, t1, child = self._timed(run)
        self.prof._forward(name, (target, *others), out, t0, t1, child, self.in_backward)
        return out

    def backward(self, node, grads):
        prev = self._previous
        needs = node.ctx.needs_input_grad if node.ctx is not None else ()
        self.in_backward += 1
        try:
            out, t0, t1, child = self._timed(
                lambda: prev.backward(node, grads) if prev is not None else node.fn.backward(node.ctx, *grads))
        finally:
            self.in_backward -= 1
        self.prof._backward(node, needs, out, t0, t1, child)
        return out

    def compiled_op(self, node, phase, run, graph):
        """One node of a ``dn.compile`` replay (compile/executor.py), timed as the op it runs:
        ``phase`` "forward", "recompute" (inside the backward) or "backward"."""
        if phase == "forward":
            out, t0, t1, child = self._timed(run)
            self.prof._compiled_forward(node, graph, out, t0, t1, child)
            return out
        self.in_backward += 1
        try:
            out, t0, t1, child = self._timed(run)
        finally:
            self.in_backward -= 1
        self.prof._compiled_later(node, graph, phase, out, t0, t1, child)
        return out


def _shape(t):
    return tuple(t.shape) if hasattr(t, "shape") else None


def _nbytes(out):
    outs = out if isinstance(out, tuple) else (out,)
    return sum(int(o.array.nbytes) for o in outs if isinstance(o, Tensor))


class Profile:
    """What ``profile`` recorded: ``events`` (every timed op and backward step, in order),
    ``ops`` (the forward ops, each with its backward event), ``steps``; ``table()`` prints the
    top ops, ``export_chrome_trace(path)`` writes a trace. Also a context manager that records
    what runs inside it (this thread only); ``step()`` marks the start of the next step."""

    def __init__(self, memory=True, params=None, inputs=None):
        self.memory = memory
        self.events: list[Event] = []
        self.ops: list[OpRecord] = []
        self.steps = 1
        self.title = ""
        self._step = 0
        self._position = 0
        self._t0 = None
        self._hooks = None
        # id(node) -> (node.seq, OpRecord): matches backward steps to forward ops; the sequence
        # number, not the node, so a node backward never reaches does not keep its arrays alive
        self._by_node = {}
        self._replayed = {}  # (id(graph), node index) -> OpRecord: a compiled node's latest forward
        self._made = {}  # id(tensor) -> (weakref, OpRecord index): the graph's edges
        self._params = {id(p) for p in (params or ())}
        self._inputs = {id(t) for t in (inputs or ())}
        self._paths = {}
        self._started_tracemalloc = False
        self._gpu = False
        self._sample = memory  # sample bytes live after each op (profile() samples a warm-up step)

    # ---- recording -----------------------------------------------------------------------------
    def __enter__(self):
        if self._hooks is not None:
            raise RuntimeError("profile: this profile is already recording")
        if self._t0 is None:
            self._t0 = time.perf_counter_ns()
        if self._sample and not tracemalloc.is_tracing():
            tracemalloc.start()
            self._started_tracemalloc = True
        if self._sample:
            tracemalloc.reset_peak()
        self._hooks = _Hooks(self)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        self._hooks = None
        if self._started_tracemalloc:
            tracemalloc.stop()
            self._started_tracemalloc = False

    def step(self):
        """Start the next step (the tables average over steps)."""
        self._step += 1
        self._position = 0
        self.steps = self._step + 1

    def _sync(self, out):
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        arr = getattr(first, "array", first)  # a Tensor's, or a compiled node's raw array
        if arr is not None and type(arr).__module__.split(".", 1)[0] == "cupy":
            import cupy

            self._gpu = True
            cupy.cuda.get_current_stream().synchronize()

    def _live(self):
        """(bytes live now, the most since the last call)."""
        if not self._sample:
            return 0, 0
        if self._gpu:
            import cupy

            n = int(cupy.get_default_memory_pool().used_bytes())
            return n, n
        live = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        return live

    def _path(self):
        from .nn.module import _call_stack, _module_path

        stack = getattr(_call_stack, "modules", None)
        if not stack or len(stack) < 2:
            return ""
        key = tuple(map(id, stack))
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = _module_path(stack)
        return path

    def _source(self, t):
        if not isinstance(t, Tensor):
            return None
        made = self._made.get(id(t))
        if made is not None and made[0]() is t:
            return made[1]
        if id(t) in self._params:
            return "param"
        if id(t) in self._inputs:
            return "input"
        return "param" if t.requires_grad and t._node is None else None

    def _forward(self, kind, inputs, out, t0, t1, child, in_backward):
        outs = out if isinstance(out, tuple) else (out,)
        rec = self._record(kind, self._path(), [_shape(t) for t in inputs], [_shape(o) for o in outs],
                           _nbytes(out), [self._source(t) for t in inputs], t0, t1, child,
                           "recompute" if in_backward else "forward")
        node = getattr(outs[0], "_node", None) if outs else None
        if node is not None:
            rec.recorded = True
            self._by_node[id(node)] = (node.seq, rec)
        for o in outs:
            if isinstance(o, Tensor):
                self._made[id(o)] = (weakref.ref(o), rec.index)

    def _record(self, kind, path, in_shapes, out_shapes, out_bytes, sources, t0, t1, child, phase):
        """A forward op application: its Event and OpRecord."""
        macs = op_macs(kind, in_shapes, out_shapes)
        ev = Event(kind, phase, path, t0 - self._t0, t1 - t0, t1 - t0 - child, macs, out_bytes, *self._live(),
                   len(self.ops), self._step, (in_shapes, out_shapes))
        rec = OpRecord(len(self.ops), kind, path, in_shapes, out_shapes, macs, out_bytes, self._step,
                       self._position, sources, ev)
        self._position += 1
        self.ops.append(rec)
        self.events.append(ev)
        return rec

    def _compiled_forward(self, node, graph, out, t0, t1, child):
        values = graph.values
        outs = out if isinstance(out, (tuple, list)) else (out,)
        made = {o: self._replayed.get((id(graph), values[o].producer)) for o in node.inputs if o is not None}
        sources = [None if i is None else "input" if values[i].kind == "input" else
                   "param" if values[i].kind in ("external", "derived") else made[i].index if made[i] else None
                   for i in node.inputs]
        rec = self._record(node.op, node.path, [None if i is None else values[i].shape for i in node.inputs],
                           [values[o].shape for o in node.outputs],
                           sum(int(getattr(o, "nbytes", 0)) for o in outs), sources, t0, t1, child, "forward")
        rec.recorded = any(node.needs)
        self._replayed[(id(graph), node.index)] = rec

    def _compiled_later(self, node, graph, phase, out, t0, t1, child):
        """A compiled node's backward step or recomputation, under its forward's record."""
        rec = self._replayed.get((id(graph), node.index))
        macs, nbytes = 0, 0
        if phase == "backward":
            if rec is not None and rec.macs:
                macs = rec.macs * sum(1 for n in node.needs[:2] if n)
            grads = out if isinstance(out, tuple) else (out,)
            nbytes = sum(int(g.nbytes) for g in grads if g is not None and hasattr(g, "nbytes"))
        elif rec is not None:
            macs = rec.macs
        ev = Event(node.op, phase, node.path, t0 - self._t0, t1 - t0, t1 - t0 - child, macs, nbytes, *self._live(),
                   rec.index if rec else None, self._step)
        if rec is not None and phase == "backward":
            rec.backward, rec.backward_macs = ev, macs
        self.events.append(ev)

    def _backward(self, node, needs, out, t0, t1, child):
        found = self._by_node.pop(id(node), None)
        rec = found[1] if found is not None and found[0] == node.seq else None
        macs = 0
        if rec is not None and rec.macs:
            macs = rec.macs * sum(1 for n in needs[:2] if n)  # one product per input and weight gradient
        grads = out if isinstance(out, tuple) else (out,)
        nbytes = sum(int(g.nbytes) for g in grads if g is not None and hasattr(g, "nbytes"))
        ev = Event(node.fn.__name__, "backward", rec.path if rec else "", t0 - self._t0, t1 - t0, t1 - t0 - child,
                   macs, nbytes, *self._live(), rec.index if rec else None, self._step)
        if rec is not None:
            rec.backward, rec.backward_macs = ev, macs
        self.events.append(ev)

    # ---- results -----------------------------------------------------------------------------------
    @property
    def peak_live_bytes(self):
        return max((max(e.live_bytes, e.peak_bytes) for e in self.events), default=0)

    def totals(self):
        """Per step: forward and backward self time (ns) and MACs."""
        out = {"forward_ns": 0, "backward_ns": 0, "forward_macs": 0, "backward_macs": 0}
        for e in self.events:
            side = "forward" if e.phase == "forward" else "backward"
            out[f"{side}_ns"] += e.self_ns
            out[f"{side}_macs"] += e.macs
        return {k: v / self.steps for k, v in out.items()}

    def rows(self, group_by="op", depth=None):
        """Per-step sums grouped by ``"op"`` (one op of the step: its place, kind and module),
        ``"module"`` (module path) or ``"kind"`` (op kind), sorted by total time, longest first.
        Each row: key, kind, path, calls, fwd_ns, bwd_ns, fwd_macs, bwd_macs, out_bytes, live_bytes
        (the most seen after any of its ops). ``depth`` cuts module paths to their first
        ``depth`` names (1: the model's top-level blocks)."""
        if group_by not in ("op", "module", "kind"):
            raise ValueError(f"profile: group_by must be 'op', 'module' or 'kind', got {group_by!r}")
        groups = {}
        for e in self.events:
            rec = self.ops[e.op] if e.op is not None else None
            kind = rec.kind if rec else e.name
            path = ".".join(e.path.split(".")[:depth]) if depth and group_by == "module" else e.path
            key = {"op": (rec.position if rec else None, kind, path), "module": path, "kind": kind}[group_by]
            g = groups.get(key)
            if g is None:
                g = groups[key] = {"key": key, "kind": kind if group_by != "module" else "", "path": path,
                                   "calls": 0, "fwd_ns": 0, "bwd_ns": 0, "fwd_macs": 0, "bwd_macs": 0,
                                   "out_bytes": 0, "live_bytes": 0}
            side = "fwd" if e.phase == "forward" else "bwd"
            g[f"{side}_ns"] += e.self_ns
            g[f"{side}_macs"] += e.macs
            if e.phase == "forward":
                g["calls"] += 1
                g["out_bytes"] += e.out_bytes
            g["live_bytes"] = max(g["live_bytes"], e.live_bytes)
        n = self.steps
        rows = []
        for g in groups.values():
            for k in ("calls", "fwd_ns", "bwd_ns", "fwd_macs", "bwd_macs", "out_bytes"):
                g[k] /= n
            rows.append(g)
        rows.sort(key=lambda g: -(g["fwd_ns"] + g["bwd_ns"]))
        return rows

    def table(self, group_by="op", top=20, depth=None):
        """The ``top`` rows of ``rows(group_by, depth)`` as a text table (times in ms per step)."""
        rows = self.rows(group_by, depth)
        first = {"op": ("Op", "Module"), "module": ("Module",), "kind": ("Op kind",)}[group_by]
        head = (*first, "Calls", "Fwd ms", "Bwd ms", "MACs", "Fwd GFLOP/s", "Bwd GFLOP/s", "Out MB", "Live MB")
        body = []
        for g in rows[:top] if top else rows:
            names = {"op": (g["kind"], g["path"] or "(top)"), "module": (g["path"] or "(top)",),
                     "kind": (g["kind"],)}[group_by]
            body.append((*names, f"{g['calls']:g}", f"{g['fwd_ns'] / 1e6:.3f}", f"{g['bwd_ns'] / 1e6:.3f}",
                         _si(g["fwd_macs"]), _rate(g["fwd_macs"], g["fwd_ns"]), _rate(g["bwd_macs"], g["bwd_ns"]),
                         f"{g['out_bytes'] / 2 ** 20:.2f}",
                         f"{g['live_bytes'] / 2 ** 20:.1f}" if self.memory else "-"))
        widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(head)]
        left = len(first)

        def line(cells):
            return "  ".join(f"{c:<{w}}" if i < left else f"{c:>{w}}"
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "-" * len(line(head))
        what = {"op": "ops", "module": "modules", "kind": "op kinds"}[group_by]
        shown = f"top {min(top, len(rows))} of {len(rows)}" if top and top < len(rows) else f"all {len(rows)}"
        out = [f"{what} by time per step ({shown})", rule, line(head), rule, *map(line, body), rule]
        return "\n".join(out)

    def summary(self):
        """Totals per step, one paragraph."""
        t = self.totals()
        lines = [self.title] if self.title else []
        lines.append(f"per step: forward {t['forward_ns'] / 1e6:.2f} ms ({_si(t['forward_macs'])} MACs, "
                     f"{_rate(t['forward_macs'], t['forward_ns'])} GFLOP/s)")
        if t["backward_ns"]:
            lines.append(f"          backward {t['backward_ns'] / 1e6:.2f} ms ({_si(t['backward_macs'])} MACs, "
                         f"{_rate(t['backward_macs'], t['backward_ns'])} GFLOP/s)")
        if self.memory:
            lines.append(f"peak bytes live: {self.peak_live_bytes / 2 ** 20:.1f} MB"
                         + (" (CuPy's pool)" if self._gpu else " (tracemalloc: NumPy buffers and Python objects)"))
        return "\n".join(lines)

    def chrome_trace(self):
        """The trace as a dict in Chrome's trace-event format: complete events ("ph": "X", ts
        and dur in microseconds) on a forward (tid 1) and a backward (tid 2) track, with shapes,
        module path and MACs in their args, and a "bytes live" counter track."""
        events = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "divenet"}},
                  {"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "forward"}},
                  {"name": "thread_name", "ph": "M", "pid": 1, "tid": 2, "args": {"name": "backward"}}]
        for e in self.events:
            args = {"module": e.path, "step": e.step, "macs": e.macs, "out_bytes": e.out_bytes}
            if e.op is not None:
                rec = self.ops[e.op]
                args.update(op=e.op, inputs=[list(s) if s is not None else None for s in rec.in_shapes],
                            outputs=[list(s) if s is not None else None for s in rec.out_shapes])
            if self.memory:
                args["live_bytes"], args["peak_bytes"] = e.live_bytes, e.peak_bytes
            ts = e.ts_ns / 1e3
            events.append({"name": e.name, "cat": e.phase, "ph": "X", "ts": ts, "dur": e.dur_ns / 1e3,
                           "pid": 1, "tid": 1 if e.phase == "forward" else 2, "args": args})
            if self.memory:
                events.append({"name": "bytes live", "ph": "C", "ts": ts + e.dur_ns / 1e3, "pid": 1,
                               "args": {"bytes": e.live_bytes}})
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"title": self.title, "steps": self.steps}}

    def export_chrome_trace(self, path):
        """Write ``chrome_trace()`` as JSON to ``path`` (torch.profiler's name)."""
        with open(path, "w") as f:
            json.dump(self.chrome_trace(), f)

    def __repr__(self):
        return f"Profile({len(self.ops)} ops, {len(self.events)} events, {self.steps} step(s))"


def _si(n):
    from .summary import _si as si

    return si(int(round(n)))


def _rate(macs, ns):
    return f"{2 * macs / ns:.1f}" if macs and ns else "-"


def _default_loss(out):
    """Cross-entropy against fixed labels for (N, C) logits; otherwise the mean of the squares."""
    from . import functional as F
    from .tensor import arange

    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim == 2 and out.shape[1] > 1:
        labels = arange(out.shape[0], device=out.device) % out.shape[1]
        return F.cross_entropy(out, labels)
    return (out * out).mean()


def run_step(model, inputs, train=True, loss_fn=None):
    """One step as the profiler runs it: training (forward, loss, backward; gradients dropped
    first, as ``zero_grad()`` does) or, with ``train=False``, an eval forward under no_grad."""
    is_module = hasattr(model, "train") and hasattr(model, "zero_grad")  # or a plain function
    if train:
        if is_module:
            model.train()
            model.zero_grad()
        out = model(*inputs)
        (loss_fn or _default_loss)(out).backward()
    else:
        if is_module:
            model.eval()
        with autograd.no_grad():
            model(*inputs)


def profile(model=None, input=None, *, steps=1, warmup=1, train=True, loss_fn=None, memory=True):
    """Profile ``model`` on ``input`` (a Tensor or a tuple of them): ``warmup`` unrecorded steps,
    (with ``memory`` and a warm-up) one step that samples bytes live, then ``steps`` timed ones
    (training steps; ``train=False``: eval forwards). Returns the ``Profile``. Without a model,
    returns an empty ``Profile`` to use as a context manager."""
    if model is None:
        if input is not None:
            raise TypeError("profile: input given without a model")
        return Profile(memory=memory)
    if not callable(model):
        raise TypeError(f"profile: model must be a Module (callable), got {type(model).__name__}")
    inputs = input if isinstance(input, (tuple, list)) else (input,)
    if not inputs or not all(isinstance(t, Tensor) for t in inputs):
        raise TypeError("profile: input must be a Tensor or a tuple of Tensors, got "
                        f"{type(input).__name__}")
    for name, v, low in (("steps", steps, 1), ("warmup", warmup, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"profile: {name} must be an integer >= {low}, got {v!r}")
    params = list(model.parameters()) if hasattr(model, "parameters") else []
    for _ in range(warmup):
        run_step(model, inputs, train, loss_fn)
    sampled = None
    if warmup and memory:  # one more step samples bytes live, so tracemalloc does not slow the timed ones
        sampled = Profile(memory=memory, params=params, inputs=inputs)
        with sampled:
            run_step(model, inputs, train, loss_fn)
    prof = Profile(memory=memory, params=params, inputs=inputs)
    prof._sample = memory and sampled is None
    with prof:
        for i in range(steps):
            if i:
                prof.step()
            run_step(model, inputs, train, loss_fn)
    if memory and sampled is not None:
        _merge_live(prof, sampled)
    return prof


def _merge_live(prof, sampled):
    """Copy the bytes live of the sampled step onto each timed step's events, event by event
    (the steps run the same ops; if one did not, the mismatch is an error, not a guess)."""
    ref = sampled.events
    by_step = {}
    for e in prof.events:
        by_step.setdefault(e.step, []).append(e)
    for step, events in by_step.items():
        if [e.name for e in events] != [e.name for e in ref]:
            raise RuntimeError(f"profile: step {step} ran other ops than the warm-up step; profile with "
                               "warmup=0 to sample bytes live in the timed steps themselves")
        for e, r in zip(events, ref):
            e.live_bytes, e.peak_bytes = r.live_bytes, r.peak_bytes


# ---- divenet profile ---------------------------------------------------------------------------------
def zoo_input(name, shape, batch, device, compile=False):
    """Zoo model ``name`` (materialized, on ``device``, seeded) and a random batch of ``shape``
    images, for ``divenet profile`` and ``divenet graph``."""
    import divenet as dn
    from .models import get_model, get_spec
    from .random import randn

    if get_spec(name).kind != "image":
        raise ValueError(f"{name} is a language model; profile and graph take the image models")
    dn.manual_seed(0)
    model = get_model(name, num_classes=10, in_channels=shape[0])
    model.init(dn.zeros(1, *shape))
    model = model.to(device)
    if compile:
        model = dn.compile(model)
    return model, randn(batch, *shape, device=device)


def command(args, shape):
    """``divenet profile``: the tables, the totals and, with ``--trace``, the Chrome trace."""
    model, x = zoo_input(args.model, shape, args.batch, args.device, args.compile)
    prof = profile(model, x, steps=args.steps, warmup=args.warmup, train=not args.eval,
                   memory=not args.no_memory)
    what = "eval forward" if args.eval else "training step (forward, loss, backward)"
    prof.title = (f"{args.model}{' (dn.compile)' if args.compile else ''} on {args.batch}x"
                  f"{'x'.join(map(str, shape))}, {what}, device {args.device}, {args.steps} step(s) "
                  f"after {args.warmup} warm-up")
    print(prof.summary())
    print()
    print(prof.table("op", top=args.top))
    print()
    print(prof.table("module", top=args.top, depth=args.depth))
    print()
    print(prof.table("kind"))
    if args.trace:
        prof.export_chrome_trace(args.trace)
        print(f"\ntrace: {args.trace} ({len(prof.events)} events; open it in https://ui.perfetto.dev or "
              "chrome://tracing)")
    return 0
