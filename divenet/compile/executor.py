"""The executor of ``dn.compile``: replays a planned ``Graph`` on raw arrays.

A ``Program`` turns the graph's nodes into steps (value ids become indices into one list of
arrays, ``env``) and runs each op's ``forward(ctx, *arrays, **options)`` directly: no Tensor
or autograd ``Node`` per op, which is most of eager mode's cost on small models.

To autograd the whole replay is one op, ``CompiledGraph``: its forward runs the steps and
keeps each op's context, its backward runs the ops' ``backward(ctx, ...)`` in reverse order,
accumulating gradients per value, and returns the gradients of the call's inputs and of the
parameters (which are its inputs too), so ``loss.backward()`` and the optimizers are
unchanged. Inference replays (no gradient involved) keep no contexts at all.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .. import random as _random
from ..autograd import Context, Function, _same_storage, current_hooks
from ..backend import array_module
from ..ops.conv import rebuilt_patches
from .passes import fold_recipe, pinned, records


class _Step:
    __slots__ = ("cls", "fn", "ins", "outs", "kw", "dyn", "needs", "keep", "free", "single", "scalar",
                 "inplace", "ext_target", "effect", "pinned", "in_dtypes", "out_meta", "grad_any", "bn",
                 "rebuild", "free_again", "again")

    def __init__(self, graph, node, hole):
        v = graph.values
        self.cls = node.cls
        self.fn = node.impl or node.cls.forward
        self.ins = [hole if i is None else i for i in node.inputs]
        self.outs = list(node.outputs)
        self.kw = node.kwargs
        self.dyn = list(node.dynamic.items()) or None
        self.needs = node.needs
        self.grad_any = any(node.needs)
        self.keep = False
        self.free = ()
        self.free_again = ()  # what a recomputation of this step's segment drops after it
        self.single = len(self.outs) == 1
        self.scalar = any(v[o].shape == () for o in self.outs)
        self.inplace = node.inplace
        t = v[node.inputs[0]] if node.inplace else None
        self.ext_target = t.ref if t is not None and t.kind == "external" else None
        self.effect = node.effect[1] if node.effect else None
        self.pinned = pinned(node)
        self.again = not self.pinned  # whether a recomputation of its segment re-runs it
        self.bn = node.effect is not None or "running_mean" in node.dynamic
        self.in_dtypes = [None if i is None else v[i].dtype for i in node.inputs]
        self.out_meta = [(v[o].shape, v[o].dtype) for o in self.outs]
        self.rebuild = ()  # (input index, the step that rebuilds that input) pairs (fuse_bn_relu)

    def options(self, again=False):
        """The options of this call; ``again`` (a recomputation): batch norm's running
        statistics left out, since the first run already updated them."""
        if self.dyn is None:
            return self.kw
        kw = dict(self.kw)
        for key, (kind, ref) in self.dyn:
            if again and self.bn and key in ("running_mean", "running_var", "momentum"):
                kw[key] = None if key != "momentum" else 0.0
            elif kind == "tensor":
                kw[key] = ref.array
            elif kind == "rng":
                kw[key] = _random.generator(ref)
            else:  # bn_momentum: PyTorch's cumulative average, 1 / batches seen
                kw[key] = 1.0 / float(ref.num_batches_tracked.array)
        return kw


class Program:
    """A graph ready to run: ``forward`` / ``backward`` (training) or ``infer``."""

    def __init__(self, graph):
        self.graph = graph
        plan = graph.plan
        n = len(graph.values)
        self.hole = n  # an env slot that stays None (absent optional inputs)
        self.template = [None] * (n + 1)
        for v in graph.values:
            if v.kind == "const":
                self.template[v.id] = v.array
        self.records = records(graph)
        grad_ext = [v for v in graph.externals if v.requires_grad] if self.records else []
        self.grad_tensors = [v.ref for v in grad_ext]
        self.arg_ids = list(graph.inputs) + [v.id for v in grad_ext]
        self.arg_needs = [graph.values[i].requires_grad for i in self.arg_ids]
        # leaves (parameters) take their gradients as eager mode gives them, one contribution
        # at a time into .grad, so that no second copy of every gradient lives at the end
        self.leaves = [None] * (n + 1)
        for v in grad_ext:
            if v.ref._node is None:
                self.leaves[v.id] = v.ref
        self.read_ext = [(v.id, v.ref) for v in graph.externals if not (self.records and v.requires_grad)]
        self.derived = [v for v in graph.values if v.kind == "derived"]
        self._fold_cache = {}
        self.out_ids = list(graph.outputs)
        self.steps = [_Step(graph, node, self.hole) for node in graph.nodes]
        self.segments = plan.segments or [(0, len(self.steps))]
        self.recomputed = set(plan.recomputed)
        for k in plan.kept:
            self.steps[k].again = False
        self.release = plan.release
        self.rebuild_patches = plan.rebuild_patches
        self.segment_values = {}
        for j, (a, b) in enumerate(self.segments):
            if j in self.recomputed:
                self.segment_values[j] = [o for s in self.steps[a:b] if s.again for o in s.outs
                                          if o not in self.out_ids]
        self.release_after = plan.release_after_segment
        out_set = set(self.out_ids)
        for j in self.recomputed:
            # a recomputation drops what its segment made after the last reader in the segment
            # (right away when none is there): the contexts hold what the backward needs
            a, b = self.segments[j]
            last = {o: k for k in range(a, b) if self.steps[k].again for o in self.steps[k].outs
                    if o not in out_set}
            for k in range(a, b):
                if self.steps[k].again:
                    for i in self.steps[k].ins:
                        if i in last:
                            last[i] = k
            drop = {}
            for vid, k in last.items():
                drop.setdefault(k, []).append(vid)
            for k, vids in drop.items():
                self.steps[k].free_again = tuple(vids)
        # without recomputation the backward visits nodes in eager mode's order (autograd's
        # depth-first topological sort), so gradients that meet are summed in the same order
        # and the results are bitwise eager's
        self.order = None if plan.segments else _eager_order(graph)
        for j, (a, b) in enumerate(self.segments):
            for k in range(a, b):
                s = self.steps[k]
                s.keep = self.records and s.grad_any and (j not in self.recomputed or not s.again)
                s.free = tuple(plan.free_after[k])
        if self.records:
            seg = {k: j for j, (a, b) in enumerate(self.segments) for k in range(a, b)}

            def held(k, r):
                """Whether step k's context exists at step r's backward: kept from the forward,
                or re-run with r's own segment."""
                s = self.steps[k]
                return s.keep or (s.again and seg[k] == seg[r] and seg[r] in self.recomputed)

            for r, (s, node) in enumerate(zip(self.steps, graph.nodes)):
                # the reader's and the fused producer's contexts, both there at its backward
                makers = ((i, graph.values[node.inputs[i]].producer) for i in node.rebuild)
                s.rebuild = tuple((i, k) for i, k in makers if held(r, r) and held(k, r))

    # ---- forward ------------------------------------------------------------------------------
    def _start(self, arrays):
        env = self.template.copy()
        for vid, a in zip(self.arg_ids, arrays):
            env[vid] = a
        for vid, t in self.read_ext:
            env[vid] = t.array
        if self.derived:
            self._derive(env)
        return env

    def _derive(self, env):
        for v in self.derived:
            part, recipe = v.ref
            params, mean, var = recipe[0], recipe[1], recipe[2]
            tensors = [None if p is None else self.graph.values[p].ref for p in params] + [mean, var]
            key = [(None, None) if t is None else (t.array, t._version[0]) for t in tensors]
            hit = self._fold_cache.get(id(recipe))
            if hit is None or any(a is not b or x != y for (a, x), (b, y) in zip(hit[0], key)):
                arrays = [None if p is None else env[p] for p in params]
                hit = self._fold_cache[id(recipe)] = (key, *fold_recipe(recipe, arrays))
            env[v.id] = hit[1] if part == "w" else hit[2]

    def _run(self, env, ctxs, start, stop, again=False):
        steps = self.steps
        observe = _observer()
        for k in range(start, stop):
            s = steps[k]
            if again and not s.again:
                continue
            if s.effect is not None and not again:
                s.effect.num_batches_tracked.array += 1  # as the layer does before its op
            ctx = Context(s.needs)
            args = [env[i] for i in s.ins]
            kw = s.kw if s.dyn is None else s.options(again)
            if observe is None:
                out = s.fn(ctx, *args, **kw)
            else:
                out = observe(self.graph.nodes[k], "recompute" if again else "forward",
                              lambda: s.fn(ctx, *args, **kw), self.graph)
            if s.inplace:
                out = env[s.ins[0]]
                if s.ext_target is not None and not again:
                    s.ext_target._version[0] += 1
            if s.single:
                if s.scalar and isinstance(out, np.generic):
                    out = np.asarray(out)  # as Tensor._make does
                env[s.outs[0]] = out
            else:
                for vid, o in zip(s.outs, out):
                    env[vid] = np.asarray(o) if s.scalar and isinstance(o, np.generic) else o
            if again:
                if s.grad_any:
                    ctxs[k] = ctx
                    if s.rebuild:
                        _drop_saved(ctx, s, env)
                for vid in s.free_again:
                    env[vid] = None
            else:
                if s.keep:
                    ctxs[k] = ctx
                    if s.rebuild:
                        _drop_saved(ctx, s, env)
                if self.release:
                    for vid in s.free:
                        env[vid] = None

    def infer(self, arrays):
        """A replay without gradients: the output arrays."""
        env = self._start(arrays)
        self._run(env, None, 0, len(self.steps))
        return tuple(env[v] for v in self.out_ids)

    def forward(self, arrays):
        env = self._start(arrays)
        ctxs = [None] * len(self.steps)
        with self._patches():
            self._run(env, ctxs, 0, len(self.steps))
        return tuple(env[v] for v in self.out_ids), [env, ctxs]

    def _patches(self):
        """The convolutions' saving policy of the training replay (the rebuild_patches pass)."""
        return rebuilt_patches() if self.rebuild_patches else contextlib.nullcontext()

    # ---- backward -----------------------------------------------------------------------------
    def backward(self, state, grads):
        env, ctxs = state
        steps = self.steps
        genv = [None] * len(env)
        summed = [False] * len(env)
        owned = [False] * len(env)  # genv[v] is an array no one else holds (see _handed_over)
        for vid, g in zip(self.out_ids, grads):
            if g is not None:
                prev = genv[vid]
                genv[vid] = g if prev is None else prev + g
        release = self.release
        leaves = self.leaves
        observe = _observer()
        for j in range(len(self.segments) - 1, -1, -1):
            a, b = self.segments[j]
            if j in self.recomputed:
                with self._patches():
                    self._run(env, ctxs, a, b, again=True)
            for k in (range(b - 1, a - 1, -1) if self.order is None else self.order):
                ctx = ctxs[k]
                if ctx is None:
                    continue
                s = steps[k]
                if release:
                    ctxs[k] = None
                if s.single:
                    gs = [genv[s.outs[0]]]
                    if gs[0] is None:
                        continue
                else:
                    gs = [genv[v] for v in s.outs]
                    if all(g is None for g in gs):
                        continue
                    xp = array_module(next(g for g in gs if g is not None))
                    gs = [g if g is not None else xp.zeros(shape, dtype=dt) for g, (shape, dt) in zip(gs, s.out_meta)]
                if release:
                    for v in s.outs:
                        genv[v] = None
                if getattr(ctx, "dn_dropped", None):
                    _restore_saved(ctx, ctxs)
                # the backward may overwrite an output gradient that only this replay holds
                ctx.overwrite_grad = release and s.single and owned[s.outs[0]]
                if observe is None:
                    res = s.cls.backward(ctx, *gs)
                else:
                    res = observe(self.graph.nodes[k], "backward", lambda: s.cls.backward(ctx, *gs), self.graph)
                if not isinstance(res, tuple):
                    res = (res,)
                for vid, g, need, dt in zip(s.ins, res, s.needs, s.in_dtypes):
                    if need and g is not None:
                        mine = g.dtype != dt
                        if mine:
                            g = g.astype(dt)
                        leaf = leaves[vid]
                        if leaf is not None:
                            leaf._accumulate(g)
                            continue
                        prev = genv[vid]
                        if prev is None:
                            genv[vid] = g
                            owned[vid] = mine or _handed_over(g, res, gs)
                        elif summed[vid] or (owned[vid] and prev.strides == g.strides):
                            # a sum made here, or a gradient only this replay holds, laid out as
                            # prev + g would be: add in place (as autograd does)
                            prev += g
                        else:  # the first g may be shared (Add hands one array to both inputs)
                            genv[vid] = prev + g
                            summed[vid] = owned[vid] = True
                # what the names still hold is garbage the next backward (or the next segment's
                # recomputation) would otherwise run beside: a context, a summed-in gradient
                ctx = gs = res = g = prev = None
            ctx = gs = None
            if j in self.recomputed:
                for vid in self.segment_values[j]:
                    env[vid] = None
                for vid in self.release_after.get(j, ()):
                    env[vid] = None
        if release:
            state[0] = state[1] = None
        return tuple(genv[v] if need else None for v, need in zip(self.arg_ids, self.arg_needs))

    def versions(self):
        return [t._version[0] for t in self.grad_tensors]

    def check_versions(self, versions):
        for t, v, vid in zip(self.grad_tensors, versions, self.arg_ids[len(self.graph.inputs):]):
            if t._version[0] != v:
                name = self.graph.values[vid].name
                raise RuntimeError(
                    f"backward: {name} (shape {tuple(t.shape)}), which the compiled graph saved for the "
                    f"gradient, was changed by an in-place operation (now at version {t._version[0]}, "
                    f"saved at version {v}); call backward() before optimizer.step()")


def _handed_over(g, res, gs):
    """Whether gradient ``g``, one of a backward's results ``res``, is an array only the caller
    holds: writeable, and sharing no memory with another result (Add hands one array to both
    inputs) nor with an incoming gradient ``gs`` (an identity's backward returns its own)."""
    if not getattr(getattr(g, "flags", None), "writeable", True) or sum(r is g for r in res) > 1:
        return False
    return not any(x is not None and _same_storage(g, x) for x in (*gs, *(r for r in res if r is not g)))


def _drop_saved(ctx, step, env):
    """Drop from ``ctx`` the saved arrays that are (views of) an input a fused BatchNormReLU
    made and can rebuild; remember how to view the rebuilt array as each of them."""
    saved, dropped = list(ctx.saved), []
    for i, k in step.rebuild:
        y = env[step.ins[i]]
        for j, a in enumerate(saved):
            how = _view_of(a, y)
            if how is not None:
                saved[j] = None
                dropped.append((j, k, how, a.strides))
    if dropped:
        ctx.saved = tuple(saved)
        ctx.dn_dropped = dropped


def _view_of(a, y):
    """How saved array ``a`` views all of ``y``: (layout or None, reshape or None), else None."""
    from ..ops.layout import BATCH_LAST, CHANNELS_FIRST, NCHW, permuted

    if not hasattr(a, "strides") or a.size != y.size or a.dtype != y.dtype or not _same_storage(a, y):
        return None
    for name in (None, BATCH_LAST, CHANNELS_FIRST, NCHW):
        v = y if name is None or y.ndim < 3 else permuted(y, name)
        if v.shape == a.shape and v.strides == a.strides:
            return name, None
        if v.flags.c_contiguous and a.flags.c_contiguous:
            return name, a.shape  # the whole buffer reshaped (a pointwise convolution's patches)
    return None


def _restore_saved(ctx, ctxs):
    """Put the dropped arrays back before the backward that needs them, from the rebuilt output
    of the fused node (bitwise the forward's; kept for that node's own backward)."""
    from ..ops.fused import BatchNormReLU
    from ..ops.layout import permuted

    saved = list(ctx.saved)
    for j, k, (name, shape), strides in ctx.dn_dropped:
        fctx = ctxs[k]
        if fctx.rebuilt is None:
            fctx.rebuilt = BatchNormReLU.rebuild(fctx)
        y = fctx.rebuilt
        v = y if name is None or y.ndim < 3 else permuted(y, name)
        if shape is not None:
            v = v.reshape(shape)
        if v.strides != strides:
            raise RuntimeError(f"dn.compile: a rebuilt saved array has strides {v.strides}, expected {strides}")
        saved[j] = v
    ctx.saved = tuple(saved)
    ctx.dn_dropped = None


def _observer():
    """The active OpHooks' ``compiled_op(node, phase, run, graph)``, if it has one: profilers
    see each graph node of a replay (phase "forward", "recompute" or "backward"; ``run()`` runs
    it and returns its result)."""
    hooks = current_hooks()
    return None if hooks is None else getattr(hooks, "compiled_op", None)


def _eager_order(graph):
    """Node indices, consumers first, as autograd's _topological_order visits them from the
    graph's outputs (an iterative depth-first search over inputs in positional order)."""
    values, nodes = graph.values, graph.nodes

    def producer(vid):
        v = values[vid] if vid is not None else None
        return v.producer if v is not None and v.kind == "op" else None

    order, visited = [], set()
    for root in (producer(v) for v in graph.outputs):
        if root is None or root in visited:
            continue
        visited.add(root)
        stack = [(root, iter(nodes[root].inputs))]
        while stack:
            k, it = stack[-1]
            for vid in it:
                child = producer(vid)
                if child is not None and child not in visited:
                    visited.add(child)
                    stack.append((child, iter(nodes[child].inputs)))
                    break
            else:
                stack.pop()
                order.append(k)
    order.reverse()
    return order


class CompiledGraph(Function):
    """One compiled forward, as a single autograd op (see the module docstring)."""

    @staticmethod
    def forward(ctx, *arrays, program):
        outs, state = program.forward(arrays)
        ctx.program, ctx.state, ctx.versions = program, state, program.versions()
        return outs

    @staticmethod
    def backward(ctx, *grads):
        if ctx.state[1] is None:
            raise RuntimeError("backward: this compiled graph was already freed by an earlier backward(); "
                               "dn.compile(model, passes=...) without 'release' keeps it for retain_graph=True")
        ctx.program.check_versions(ctx.versions)
        return ctx.program.backward(ctx.state, grads)
