"""The graph passes of ``dn.compile``: each a small function ``pass(graph, options)`` that
rewrites the graph in place (ir.py), switchable by name (``dn.compile(model, passes=...)``).

Rewriting passes (run in this order):

* ``dce``: drops nodes whose outputs nobody reads (not random ones, not ones that update
  state such as batch norm in training).
* ``fold_constants``: runs, once at compile time, pure nodes whose inputs are all constants
  (tensors made inside the forward from Python numbers), keeping their results as constants.
* ``fold_batchnorm``: in inference graphs (nothing needs a gradient), an eval-mode batch
  norm after a convolution that only it reads becomes part of the convolution: the weights
  ``w * gamma / sqrt(var + eps)`` and bias are *derived* values, recomputed by the executor
  whenever a source array or its version counter changes (an optimizer step, ``no_grad``
  in-place edits, ``load_state_dict``), never stale. A refold makes new read-only arrays, so a
  Winograd convolution keeps their transform (ops/conv.py ``_winograd_weight_of``).
* ``fuse_bn_relu``: BatchNorm -> ReLU and BatchNorm -> Add -> ReLU become one
  ``BatchNormReLU`` node (ops/fused.py) that keeps batch norm's input but not ReLU's output;
  readers that saved that output (a convolution's input) drop it after their forward and the
  executor has the fused node rebuild it, bitwise, just before their backward.
* ``share_concat``: chains of channel concatenations that each extend the last (a DenseNet
  block) write into one buffer (``ConcatGrow``, ops/shape.py) instead of one per layer.

Memory passes (they fill ``graph.plan``):

* ``recompute_cheap`` (on by default, when no ``recompute``/``memory_budget`` is asked for):
  the ``recompute`` machinery below, re-running only segments that together cost under 5% of
  the forward's work and lower the estimated peak (a one-channel stem on a large map).

* ``recompute`` (``recompute="sqrt"`` or a number of segments, and/or ``memory_budget=``
  bytes): cuts the nodes into segments of about equal context bytes (as the replay keeps them),
  each cut moved to where the fewest bytes cross it nearby; the forward keeps only the values
  that cross into a re-run segment (and what random ops drew) and re-runs each segment just
  before its backward, keeping the forward contexts of small-context tail nodes (max pooling);
  "sqrt" re-runs only the segments that lower the estimated peak (``_peak``), a number of
  segments all but the last, a budget as many (from the first) as needed.
* ``inplace``: ReLU and Add write into an input that no later node reads, that no backward
  context saved, that is no view of (or viewed by) another value, and whose memory layout
  is the one eager mode's result had (so later kernels take the same paths, bit for bit).
* ``release``: drops every array after its last forward reader; the backward drops each
  node's context as soon as its backward ran. Off, the executor keeps every array of the
  forward until the backward ends (eager mode's peak).
* ``rebuild_patches``: convolutions keep their input for backward and rebuild the patch
  matrix there, which eager mode does only for patch matrices of 32 MB and up.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd import Context
from ..backend import array_module
from .ir import Node, Plan

DEFAULT_PASSES = ("dce", "fold_constants", "fold_batchnorm", "fuse_bn_relu", "share_concat", "recompute_cheap",
                  "inplace", "release", "rebuild_patches")


def records(graph):
    """Whether replays of ``graph`` record a backward (grad mode on and a gradient involved)."""
    return graph.grad and any(any(n.needs) for n in graph.nodes)


def _removable(node):
    return node.pure and node.effect is None


# ---- rewriting passes ---------------------------------------------------------------------------
def dce(graph, options=None):
    """Dead-code elimination: remove pure nodes whose outputs no later node nor the graph reads."""
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if _removable(node) and not any(v in live for v in node.outputs):
            continue
        kept.append(node)
        live.update(v for v in node.inputs if v is not None)
    removed = len(graph.nodes) - len(kept)
    graph.nodes = kept[::-1]
    graph.renumber()
    return removed


def fold_constants(graph, options=None):
    """Run pure nodes whose inputs are all constants now; their outputs become constants."""
    kept, folded = [], 0
    for node in graph.nodes:
        vals = [None if v is None else graph.values[v] for v in node.inputs]
        if not _removable(node) or not vals or any(v is not None and v.kind != "const" for v in vals) \
                or all(v is None for v in vals):
            kept.append(node)
            continue
        ctx = Context((False,) * len(vals))
        out = node.cls.forward(ctx, *[None if v is None else v.array for v in vals], **node.kwargs)
        for vid, o in zip(node.outputs, out if isinstance(out, tuple) else (out,)):
            v = graph.values[vid]
            v.kind, v.array, v.producer, v.requires_grad = "const", o, None, False
        folded += 1
    graph.nodes = kept
    graph.renumber()
    return folded


def fold_batchnorm(graph, options=None):
    """Eval-mode batch norm folded into the convolution before it (inference graphs only)."""
    from ..ops.conv import Conv2d
    from ..ops.norm import BatchNorm

    if records(graph):
        return 0
    readers = graph.readers()
    outputs = set(graph.outputs)
    drop, folded = set(), 0
    for bn in graph.nodes:
        if bn.cls is not BatchNorm or bn.kwargs.get("training") or \
                set(bn.dynamic) != {"running_mean", "running_var"} or bn.inputs[0] is None:
            continue
        src = graph.values[bn.inputs[0]]
        conv = graph.nodes[src.producer] if src.kind == "op" else None
        if conv is None or conv.cls is not Conv2d or readers.get(src.id) != [bn.index] or src.id in outputs:
            continue
        params = [conv.inputs[1], conv.inputs[2] if len(conv.inputs) > 2 else None, bn.inputs[1], bn.inputs[2]]
        if any(p is not None and graph.values[p].kind not in ("external", "const") for p in params):
            continue
        w = graph.values[params[0]]
        recipe = (params, bn.dynamic["running_mean"][1], bn.dynamic["running_var"][1], bn.kwargs.get("eps", 1e-5))
        wid = graph.add_value("derived", w.shape, w.dtype, name=f"folded weight ({bn.path or 'bn'})", ref=("w", recipe))
        bid = graph.add_value("derived", (w.shape[0],), w.dtype, name=f"folded bias ({bn.path or 'bn'})",
                              ref=("b", recipe))
        conv.inputs = [conv.inputs[0], wid, bid]
        conv.needs = (conv.needs[0], False, False)
        conv.outputs = list(bn.outputs)
        graph.values[bn.outputs[0]].producer = conv.index
        src.producer = None
        drop.add(bn.index)
        folded += 1
    graph.nodes = [n for n in graph.nodes if n.index not in drop]
    graph.renumber()
    return folded


def fuse_bn_relu(graph, options=None):
    """BatchNorm -> ReLU and BatchNorm -> Add -> ReLU (ResNet's residual) become one
    ``BatchNormReLU`` node (ops/fused.py) when the batch norm's output (and the sum) has no
    other reader: the node keeps batch norm's input but not ReLU's output. Readers of a fused
    output without a skip that save it for backward (a convolution's input) are marked to
    drop it after their forward; the executor has the fused node rebuild it (bitwise) just
    before their backward. Bitwise eager's results; the other operand of the Add is any value
    made before the ReLU."""
    from ..ops.activation import ReLU
    from ..ops.elementwise import Add
    from ..ops.fused import BatchNormReLU
    from ..ops.norm import BatchNorm

    readers = graph.readers()
    outputs = set(graph.outputs)

    def sole_reader(vid):
        r = readers.get(vid, [])
        return graph.nodes[r[0]] if len(r) == 1 and vid not in outputs else None

    fused, gone = {}, set()  # ReLU index -> the fused node; indices of the nodes it replaces
    for bn in graph.nodes:
        if bn.cls is not BatchNorm or bn.inplace or bn.impl is not None or len(bn.inputs) != 3:
            continue
        z = graph.values[bn.outputs[0]]
        nxt, skip, skip_needs, chain = sole_reader(z.id), None, False, [bn.index]
        if nxt is not None and nxt.cls is Add and not nxt.inplace and nxt.impl is None \
                and nxt.inputs.count(z.id) == 1:
            i = 1 - nxt.inputs.index(z.id)
            other = graph.values[nxt.inputs[i]] if nxt.inputs[i] is not None else None
            if other is None or other.shape != z.shape or np.dtype(other.dtype) != np.dtype(z.dtype):
                continue  # a broadcast add is left alone
            skip, skip_needs = other.id, nxt.needs[i]
            chain.append(nxt.index)
            nxt = sole_reader(nxt.outputs[0])
        if nxt is None or nxt.cls is not ReLU or nxt.inplace or nxt.impl is not None:
            continue
        chain.append(nxt.index)
        if gone.intersection(chain):  # two batch norms meeting in one Add: the first one fuses
            continue
        node = Node(BatchNormReLU, list(bn.inputs) + [skip], list(nxt.outputs), bn.kwargs, bn.dynamic,
                    tuple(bn.needs) + (skip_needs,), bn.path)
        node.effect = bn.effect
        node.saved_inputs = bn.saved_inputs
        node.saved_bytes = bn.saved_bytes + (z.nbytes // z.dtype.itemsize if skip is not None else 0)
        node.same_layout = (False,) * 4
        fused[nxt.index] = node
        gone.update(chain)
    # the fused node runs where the ReLU ran (every input, the skip too, exists by then)
    graph.nodes = [fused.get(n.index, n) for n in graph.nodes if n.index not in gone or n.index in fused]
    graph.renumber()
    readers = graph.readers()
    for node in fused.values():
        if node.inputs[3] is not None:
            continue  # with a skip the output cannot be rebuilt from the node's own context
        for k in readers.get(node.outputs[0], []):
            r = graph.nodes[k]
            i = r.inputs.index(node.outputs[0])
            if i in r.saved_inputs and not r.inplace and r.impl is None and not r.views:
                r.rebuild = tuple(sorted(set(r.rebuild) | {i}))
    return len(fused)


def share_concat(graph, options=None):
    """Chains of channel concatenations where each extends the last, whose result no other
    concatenation and no in-place op reads (a DenseNet block: layer l's input is layer l-1's
    input and its new features), become ``ConcatGrow`` links (ops/shape.py) writing into one
    buffer, as memory-efficient DenseNets share one (Pleiss et al. 2017): a batch norm that
    saved each link's result kept a block's concatenations alive at once, quadratic in its
    layers. Links are marked as views of their first input, so ``inplace`` leaves them alone."""
    from ..ops.shape import Concat, ConcatGrow

    readers = graph.readers()

    def link(node):
        v = graph.values[node.outputs[0]]
        return node.cls is Concat and not node.inplace and node.impl is None and node.kwargs.get("axis") == 1 \
            and v.shape is not None and len(v.shape) == 4

    after = {}  # a link's index -> the next link, which extends its result
    for node in graph.nodes:
        if not link(node) or node.inputs[0] is None or node.inputs.count(node.inputs[0]) != 1:
            continue
        v = graph.values[node.inputs[0]]
        if v.kind != "op" or not link(graph.nodes[v.producer]):
            continue
        others = [graph.nodes[r] for r in readers[v.id] if r != node.index]
        if not any(r.cls is Concat or r.inplace for r in others):
            after[v.producer] = node.index
    starts = set(after) - set(after.values())
    count = 0
    for k in sorted(starts):
        chain = [k]
        while chain[-1] in after:
            chain.append(after[chain[-1]])
        total = graph.values[graph.nodes[chain[-1]].outputs[0]].shape[1]
        for i in chain:
            node = graph.nodes[i]
            node.cls = ConcatGrow
            node.kwargs = dict(node.kwargs, total=total, first=i == k)
            node.views = tuple(sorted(set(node.views) | {(0, 0)}))
        count += len(chain)
    return count


def fold_recipe(recipe, arrays):
    """The folded convolution weight and bias from (w, b, gamma, beta), mean, var, eps."""
    (w, b, gamma, beta), mean, var, eps = arrays, recipe[1].array, recipe[2].array, recipe[3]
    xp = array_module(w)
    dt = w.dtype.type
    scale = 1 / xp.sqrt(var.astype(w.dtype) + dt(eps))
    if gamma is not None:
        scale = scale * gamma
    shift = -mean.astype(w.dtype) * scale
    if beta is not None:
        shift = shift + beta
    wf = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    bf = shift if b is None else b * scale + shift
    if xp is np:  # refolded into a new array, never written: the convolution may keep its transform
        wf.flags.writeable = False
    return wf, bf


# ---- memory passes ------------------------------------------------------------------------------
def _bn_stats(node):
    from ..ops.fused import BatchNormReLU
    from ..ops.norm import BatchNorm

    return node.cls in (BatchNorm, BatchNormReLU) and set(node.dynamic) <= {"running_mean", "running_var", "momentum"}


def pinned(node):
    """A node a recomputation must not re-run: it draws random numbers or changes state that
    the first run already changed (kept: its context and outputs from the forward)."""
    return bool(node.dynamic) and not _bn_stats(node)


def recompute(graph, options):
    """Cut the nodes into segments (see the module docstring); fills plan.segments/stored.
    With ``memory_budget`` (bytes), segments are recomputed from the first on only until the
    estimated peak of what the step keeps fits (fewer re-runs when memory allows)."""
    plan = graph.plan
    how = options.get("recompute")
    budget = options.get("memory_budget")
    cheap = options.get("cheap")  # recompute_cheap's policy: only when nothing else is asked
    n = len(graph.nodes)
    if (not how and budget is None and not cheap) or not records(graph) or n < 2:
        return 0
    k = max(1, min(n, int(how) if how not in (None, "sqrt") else math.ceil(math.sqrt(n))))
    cost = plan.context_bytes = [_replay_saved(graph, node, options.get("patches_rebuilt")) for node in graph.nodes]
    total = sum(cost) or 1
    bounds, acc = [0], 0
    for i, c in enumerate(cost):
        acc += max(c, 1)
        if acc >= (total + n) * len(bounds) / k and i + 1 < n and len(bounds) < k:
            bounds.append(i + 1)
    bounds.append(n)
    crossing = _crossing(graph)
    bounds = _snap(bounds, crossing)
    plan.segments = [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
    seg_of = {i: j for j, (a, b) in enumerate(plan.segments) for i in range(a, b)}
    last = len(plan.segments) - 1
    candidates = [j for j, (a, b) in enumerate(plan.segments)
                  if j != last and not any(graph.nodes[i].inplace for i in range(a, b))]

    def peak(chosen):
        return _peak(graph, plan.segments, seg_of, chosen, cost, crossing)

    chosen = candidates
    if cheap:
        chosen = _cheap_segments(graph, plan.segments, candidates, peak)
        if not chosen:
            plan.segments = plan.context_bytes = None
            return 0
    elif budget is not None:
        chosen = []
        for j in candidates:
            if peak(chosen) <= budget:
                break
            chosen.append(j)
    elif how == "sqrt":
        # a segment is re-run only where that lowers the peak (a number of segments asked for
        # re-runs all but the last, as documented): a CNN's peak comes at the end of
        # the backward, beside the large early activations and every parameter's gradient, and
        # the contexts of a late segment are gone by then (D2L ResNet-18: the stage-3 blocks
        # cost as much to re-run as stage 1's for a quarter of the bytes)
        top = peak(chosen)
        for j in reversed(candidates):
            fewer = [i for i in chosen if i != j]
            if peak(fewer) <= top:
                chosen = fewer
    plan.recomputed = tuple(chosen)
    plan.kept = _kept(graph, plan.segments, chosen)
    for vid, segs in _stored(graph, seg_of, set(chosen), plan.kept).items():
        plan.stored.add(vid)
        plan.release_after_segment.setdefault(min(segs), []).append(vid)
    return len(plan.segments)


# recompute_cheap: a segment is re-run by default when that costs under this share of the
# forward's work (D2L ResNet-18's one-channel stem at 96x96: 4% of the forward, 36 MB of batch
# norm input not kept; LeNet's first segment would be half its forward: never chosen)
CHEAP_SHARE = 0.05
# the work of one output element of an op without products (batch norm, ReLU, pooling), in
# multiply-accumulates: about 8 bytes moved per element at 10 GB/s against 75 GMAC/s
ELEMENT_MACS = 32


def _work(graph, node):
    """Estimated work of running ``node``'s forward, in multiply-accumulates."""
    from ..profiler import op_macs

    shapes = [None if v is None else graph.values[v].shape for v in node.inputs]
    outs = [graph.values[o].shape for o in node.outputs]
    return op_macs(node.cls.__name__, shapes, outs) or ELEMENT_MACS * sum(math.prod(s) for s in outs)


def _cheap_segments(graph, segments, candidates, peak):
    """The candidate segments re-run by ``recompute_cheap``: most bytes saved per unit of work
    first, while the total stays under CHEAP_SHARE of the forward's work and each one lowers
    the estimated peak further."""
    work = [_work(graph, node) for node in graph.nodes]
    budget = CHEAP_SHARE * sum(work)
    top = peak([])
    cost, saved = {}, {}
    for j in candidates:
        a, b = segments[j]
        kept = _kept(graph, segments, [j])
        cost[j] = sum(work[i] for i in range(a, b) if i not in kept and not pinned(graph.nodes[i])) or 1
        saved[j] = top - peak([j])
    chosen = []
    for j in sorted((j for j in candidates if saved[j] > 0), key=lambda j: -saved[j] / cost[j]):
        if cost[j] > budget:
            continue
        lower = peak(chosen + [j])
        if lower < top:
            chosen.append(j)
            top, budget = lower, budget - cost[j]
    return sorted(chosen)


def _replay_saved(graph, node, patches_rebuilt):
    """The bytes ``node``'s context keeps in the replay: what the trace saw, except that under
    ``rebuild_patches`` an im2col or dense small-map convolution keeps its input, not a patch
    matrix (9 times a 3x3 kernel's input: counted as such, the cuts crowded into the small late
    stages) or a dense weight."""
    from ..ops.conv import Conv1d, Conv2d

    if patches_rebuilt and node.cls in (Conv1d, Conv2d) and node.kind in ("im2col", "dense") \
            and node.inputs[0] is not None:
        return min(node.saved_bytes, graph.values[node.inputs[0]].nbytes)
    return node.saved_bytes


def _crossing(graph):
    """``out[c]``: the bytes of the values a cut before node ``c`` leaves to store (made by a
    node before ``c``, read by ``c`` or a later one)."""
    n = len(graph.nodes)
    diff = [0] * (n + 2)
    for vid, r in graph.readers().items():
        v = graph.values[vid]
        if v.kind == "op" and v.producer is not None and r[-1] > v.producer:
            diff[v.producer + 1] += v.nbytes
            diff[r[-1] + 1] -= v.nbytes
    out, acc = [], 0
    for d in diff[:n + 1]:
        acc += d
        out.append(acc)
    return out


def _snap(bounds, crossing):
    """Each inner cut moved, within half a segment either way, to where the fewest bytes cross
    it (nearest first among equals): a ResNet's block outputs, not a convolution's output and
    the skip beside it; D2L ResNet-18's stem after its max pool (9.4 MB at 96x96 b64), not
    before it (37.7 MB)."""
    out = [bounds[0]]
    for i in range(1, len(bounds) - 1):
        lo = max(out[-1] + 1, (bounds[i - 1] + bounds[i]) // 2 + 1)
        hi = min(bounds[-1] - 1, (bounds[i] + bounds[i + 1]) // 2)
        best = min(range(lo, hi + 1), key=lambda c: (crossing[c], abs(c - bounds[i])), default=None)
        if best is not None:
            out.append(best)
    out.append(bounds[-1])
    return out


def _kept(graph, segments, recomputed):
    """Nodes of re-run segments that keep their forward contexts instead: those whose context
    is small beside their outputs (max pooling's one-byte indices, an Add's nothing) and whose
    outputs no re-run node of the segment reads. Re-running them would remake those outputs
    for nothing (D2L ResNet-18's stem max pool: 9.4 MB beside two 37.7 MB maps)."""
    readers = graph.readers()
    kept = set()
    for j in recomputed:
        a, b = segments[j]
        for i in range(b - 1, a - 1, -1):
            node = graph.nodes[i]
            out = sum(graph.values[o].nbytes for o in node.outputs)
            if pinned(node) or node.inplace or 2 * node.saved_bytes > out:
                continue
            if all(r in kept or not a <= r < b for o in node.outputs for r in readers.get(o, ())):
                kept.add(i)
    return kept


def _stored(graph, seg_of, recomputed, kept=frozenset()):
    """value id -> the recomputed segments that re-read it (so the forward must keep it)."""
    need = {}
    for node in graph.nodes:
        j = seg_of[node.index]
        if j not in recomputed or node.index in kept:
            continue
        for vid in node.inputs:
            if vid is None:
                continue
            v = graph.values[vid]
            if v.kind != "op" or seg_of[v.producer] != j or pinned(graph.nodes[v.producer]):
                need.setdefault(vid, set()).add(j)
        if pinned(node):
            for vid in node.outputs:
                need.setdefault(vid, set()).add(j)
    return need


def _peak(graph, segments, seg_of, recomputed, cost, crossing):
    """The estimated peak bytes of a training step when the ``recomputed`` segments are re-run:
    the largest, over the segments' backwards (last first), of what is alive then: the stored
    values and the contexts kept from the forward that no segment processed so far has
    released, the parameter gradients made so far, the re-run segment's contexts and its
    largest output, and the gradients entering it. (The forward's end is the last segment's.)"""
    chosen = set(recomputed)
    kept = _kept(graph, segments, chosen)
    m = len(segments)
    held = [0] * m  # bytes alive from the forward until segment j's backward has run
    for vid, segs in _stored(graph, seg_of, chosen, kept).items():
        if graph.values[vid].kind == "op":
            held[min(segs)] += graph.values[vid].nbytes
    grads = [0] * m  # parameter gradients made by segment j's backward
    last_reader = {}
    for node in graph.nodes:
        j = seg_of[node.index]
        if j not in chosen or node.index in kept:
            held[j] += cost[node.index]
        for vid in node.inputs:
            if vid is not None and graph.values[vid].kind == "external" and graph.values[vid].requires_grad:
                last_reader[vid] = j
    for vid, j in last_reader.items():
        grads[j] += graph.values[vid].nbytes
    alive = [0] * m
    acc = 0
    for j in range(m):
        acc += held[j]
        alive[j] = acc
    top, made = 0, 0
    for j in range(m - 1, -1, -1):
        a, b = segments[j]
        made += grads[j]
        here = alive[j] + made + crossing[b]
        if j in chosen:
            rerun = [i for i in range(a, b) if i not in kept and not pinned(graph.nodes[i])]
            here += sum(cost[i] for i in rerun) + max(
                (graph.values[o].nbytes for i in rerun for o in graph.nodes[i].outputs), default=0)
        top = max(top, here)
    return top


def inplace(graph, options=None):
    """ReLU and Add run in place on a dead, unsaved, unaliased input (see the module docstring)."""
    from ..ops.activation import ReLU
    from ..ops.elementwise import Add

    plan = graph.plan
    rec = records(graph)
    readers = graph.readers()
    outputs = set(graph.outputs)
    viewed = set()
    for node in graph.nodes:
        for j, i in node.views:
            if not (node.inplace and j == 0 and i == 0):
                viewed.add(node.outputs[j])
                viewed.add(node.inputs[i])
    saved = set()
    if rec:
        for node in graph.nodes:
            saved.update(node.inputs[i] for i in node.saved_inputs)
            saved.update(node.outputs[j] for j in node.saved_outputs)
    group = {}  # value id -> the list of values sharing its storage (in-place chains)
    for node in graph.nodes:
        if node.inplace:
            g = group.setdefault(node.inputs[0], [node.inputs[0]])
            g.append(node.outputs[0])
            group[node.outputs[0]] = g
    seg = plan.segment_of if plan.segments else (lambda k: 0)
    count = 0
    for node in graph.nodes:
        if node.cls is ReLU:
            candidates = (0,)
        elif node.cls is Add:
            candidates = (0, 1)
        else:
            continue
        out = graph.values[node.outputs[0]]
        for i in candidates:
            vid = node.inputs[i]
            if vid is None:
                continue
            members = group.get(vid, [vid])
            ok = True
            for m in members:
                v = graph.values[m]
                if v.kind != "op" or m in outputs or m in viewed or m in saved or m in plan.stored \
                        or readers.get(m, [node.index])[-1] > node.index or seg(v.producer) != seg(node.index):
                    ok = False
                    break
            v = graph.values[vid]
            # the same memory layout as eager mode's result, so later kernels take the same paths
            if not ok or v.shape != out.shape or np.dtype(v.dtype) != np.dtype(out.dtype) \
                    or not node.same_layout[i]:
                continue
            if node.cls is Add and readers[vid].count(node.index) > 1:  # x + x
                continue
            node.impl = _relu_inplace if node.cls is ReLU else (_add_into_a if i == 0 else _add_into_b)
            g = group.setdefault(vid, [vid])
            g.append(out.id)
            group[out.id] = g
            count += 1
            break
    return count


# in-place twins of ops/activation.py ReLU and ops/elementwise.py Add: the same arithmetic
# (so bitwise the same values) and the same context for their backward
def _relu_inplace(ctx, x):
    array_module(x).maximum(x, x.dtype.type(0), out=x)
    ctx.save_for_backward(x)
    return x


def _add_into_a(ctx, a, b):
    ctx.shapes = (a.shape, b.shape)
    array_module(a).add(a, b, out=a)
    return a


def _add_into_b(ctx, a, b):
    ctx.shapes = (a.shape, b.shape)
    array_module(b).add(a, b, out=b)
    return b


def release(graph, options=None):
    """Liveness: each value is dropped after its last forward reader (see Plan)."""
    plan = graph.plan
    readers = graph.readers()
    keep = set(graph.outputs) | plan.stored
    count = 0
    for v in graph.values:
        if v.id in keep or v.kind not in ("op", "input", "external", "derived", "const"):
            continue
        r = readers.get(v.id)
        if r:
            last = r[-1]
        elif v.kind == "op" and v.producer is not None:
            last = v.producer
        else:
            continue
        plan.free_after[last].append(v.id)
        count += 1
    plan.release = True
    return count


def rebuild_patches(graph, options=None):
    """Convolutions save their input and rebuild the patch matrix in backward (one im2col
    more per convolution) instead of keeping it: D2L ResNet-18 at 96x96 batch 64 peaked at
    0.81x eager's NumPy bytes without this and 0.61x with it, for about 7% more step time."""
    from ..ops.conv import Conv1d, Conv2d

    graph.plan.rebuild_patches = True
    return sum(n.cls in (Conv1d, Conv2d) for n in graph.nodes)


REWRITES = {"dce": dce, "fold_constants": fold_constants, "fold_batchnorm": fold_batchnorm,
            "fuse_bn_relu": fuse_bn_relu, "share_concat": share_concat}
MEMORY = {"inplace": inplace, "release": release, "rebuild_patches": rebuild_patches}
ALL = tuple(REWRITES) + ("recompute_cheap",) + tuple(MEMORY)


def run(graph, passes, options):
    """Run the selected passes in their fixed order; fills graph.plan and graph.passes."""
    for name, fn in REWRITES.items():
        if name in passes:
            fn(graph, options)
            graph.passes.append(name)
    if "dce" in passes and "fold_batchnorm" in passes:
        dce(graph, options)
    graph.plan = Plan(len(graph.nodes))
    graph.plan.release = False
    asked = bool(options.get("recompute")) or options.get("memory_budget") is not None
    cheap = "recompute_cheap" in passes and not asked
    if recompute(graph, dict(options, patches_rebuilt="rebuild_patches" in passes, cheap=cheap)) and asked:
        graph.passes.append("recompute")
    elif cheap:
        graph.passes.append("recompute_cheap")  # it ran; plan.recomputed says what it chose
    for name, fn in MEMORY.items():
        if name in passes:
            fn(graph, options)
            graph.passes.append(name)
    return graph
