"""DistributedDataParallel: one model replica per rank, gradients averaged in buckets that are
reduced while backward still runs (PyTorch's design, docs/distributed.md).

* At construction rank 0's parameters and buffers are broadcast, so every replica starts equal.
* The trainable parameters are grouped into buckets in reverse registration order (backward
  produces the last layers' gradients first): the first bucket holds up to 1 MiB, so that the
  first reduction starts early, the others up to ``bucket_cap_mb``.
* Each forward in training mode walks the graph it recorded and counts, per parameter, the
  gradients backward will accumulate into it (a weight used twice gets two; an unused one
  none, and is ready at once). A post-accumulate-grad hook on each parameter counts them
  down; when a bucket's parameters are all ready its gradients are copied into the bucket's
  flat buffer, scaled by 1/size, and its ``iallreduce`` starts. Buckets start in index order
  on every rank, as MPI needs its collectives in the same order everywhere.
* When the last bucket has started (the last gradient of the step), the reducer waits for all
  of them and copies the averages back into ``.grad``: still inside ``loss.backward()``, so
  ``loss.backward(); opt.step()`` needs nothing else.
* ``no_sync()`` skips the reduction (gradients accumulate locally); the first backward after
  it reduces the accumulated gradients.
* ``broadcast_buffers`` (default): rank 0's buffers (batch norm's running statistics) are
  broadcast before each training forward.

Timings: each bucket's reduction from its start to its completion (as seen by a poll; the
gradient hooks poll, so the progress engine advances during backward) and the time spent
waiting after backward: ``comm_stats()`` gives the hidden fraction.
"""
from __future__ import annotations

import contextlib
import time

from ..autograd import _edge, is_grad_enabled
from ..backend import array_module
from ..nn.module import Module
from ..tensor import Tensor
from .comm import Communicator

__all__ = ["DistributedDataParallel"]

_FIRST_BUCKET_BYTES = 1 << 20  # PyTorch's first bucket: 1 MiB


def _tensors_in(obj, out):
    if isinstance(obj, Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _tensors_in(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _tensors_in(o, out)
    return out


def _broadcast_array(comm, array, root=0):
    """Broadcast in place, through a contiguous copy where ``array`` is not contiguous."""
    if array.flags.c_contiguous:
        comm.broadcast(array, root)
        return
    tmp = array_module(array).ascontiguousarray(array)
    comm.broadcast(tmp, root)
    array[...] = tmp


class _Bucket:
    __slots__ = ("index", "params", "buffer", "views", "pending", "work")

    def __init__(self, index, params, xp, dtype):
        self.index, self.params = index, params
        total = sum(p.array.size for _, p in params)
        self.buffer = xp.empty(total, dtype=dtype)
        self.views, offset = [], 0
        for _, p in params:
            self.views.append(self.buffer[offset:offset + p.array.size].reshape(p.shape))
            offset += p.array.size
        self.pending, self.work = len(params), None


class _Reducer:
    """The bucket state of one DistributedDataParallel (a plain object, so that Module's
    attribute walk does not find its parameters a second time)."""

    def __init__(self, named, comm, cap_bytes):
        self.comm, self.named = comm, named
        self.index = {id(p): i for i, (_, p) in enumerate(named)}
        self.buckets, self.slot = [], [None] * len(named)  # slot[i]: (bucket, view) of parameter i
        group, size, cap = [], 0, min(_FIRST_BUCKET_BYTES, cap_bytes)
        for i in reversed(range(len(named))):
            p = named[i][1]
            if group and (size + p.array.nbytes > cap or p.dtype != group[0][1].dtype):
                self._add(group)
                group, size, cap = [], 0, cap_bytes
            group.append((i, p))
            size += p.array.nbytes
        if group:
            self._add(group)
        self.armed = self.started = False  # started: a gradient of this iteration has arrived
        self.remaining = [0] * len(named)
        self.next_launch = 0
        self.steps = 0
        self.totals = {"in_flight_seconds": 0.0, "wait_seconds": 0.0, "allreduce_seconds": 0.0}
        self.last = []  # per bucket of the last step: (bytes, seconds from its start to completion)

    def _add(self, group):
        b = _Bucket(len(self.buckets), group, array_module(group[0][1].array), group[0][1].dtype)
        for (i, _), view in zip(group, b.views):
            self.slot[i] = (b, view)
        self.buckets.append(b)

    # ---- one iteration ----------------------------------------------------------------------
    def check_finished(self):
        if self.armed and self.started:
            missing = [self.named[i][0] for i, r in enumerate(self.remaining) if r > 0]
            raise RuntimeError(
                "DistributedDataParallel: expected to have finished reduction in the prior iteration "
                "before starting a new one; these parameters got fewer gradients than the graph "
                f"of the forward promised: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''} "
                "(was backward interrupted, or did the loss not use every output of the forward?)")

    def prepare(self, output):
        """Count the gradients backward will accumulate into each parameter (see the module
        docstring) and arm the hooks."""
        counts, index = [0] * len(self.named), self.index
        stack = [t._node for t in _tensors_in(output, []) if t._node is not None]
        seen = {id(n) for n in stack}
        while stack:
            node = stack.pop()
            for t in node.inputs:  # leaf Tensors, edges to other nodes, or None
                if t is None:
                    continue
                t, child = _edge(t, node.seq)
                if child is None:
                    i = index.get(id(t))
                    if i is not None:
                        counts[i] += 1
                elif id(child) not in seen:
                    seen.add(id(child))
                    stack.append(child)
        self.remaining, self.next_launch = counts, 0
        for b in self.buckets:
            b.pending, b.work = len(b.params), None
        self.armed, self.started = True, False
        for i, c in enumerate(counts):
            if c == 0:  # unused in this forward: contributes what it holds (or zeros)
                self.ready(i)

    def hook(self, i):
        if not self.armed:
            return
        r = self.remaining[i]
        if r <= 0:
            raise RuntimeError(
                f"DistributedDataParallel: parameter {self.named[i][0]} received more gradients than "
                "the forward's graph gives it (used outside the wrapped module's forward, or a "
                "second backward through the same forward); its bucket was already reduced")
        self.started = True
        self.remaining[i] = r - 1
        if r == 1:
            self.ready(i)

    def ready(self, i):
        p, (b, view) = self.named[i][1], self.slot[i]
        xp = array_module(view)
        scale = view.dtype.type(1.0 / self.comm.size)
        if p.grad is None:
            view[...] = 0
        else:
            xp.multiply(p.grad.array, scale, out=view)
        b.pending -= 1
        buckets = self.buckets
        while self.next_launch < len(buckets) and buckets[self.next_launch].pending == 0:
            nb = buckets[self.next_launch]
            nb.work = self.comm.iallreduce(nb.buffer, "sum")
            self.next_launch += 1
        if self.next_launch == len(buckets):
            self.finish()
            return
        for nb in buckets[:self.next_launch]:  # drive the progress engine: poll the oldest
            if not nb.work.test():
                break

    def finish(self):
        began = time.perf_counter()
        for b in self.buckets:
            b.work.wait()
        ended = time.perf_counter()
        for b in self.buckets:
            for (_, p), view in zip(b.params, b.views):
                if p.grad is None:
                    p.grad = Tensor._make(view.copy(), p.device, None)
                else:
                    array_module(view).copyto(p.grad.array, view)
                    p.grad._version[0] += 1
        self.armed = self.started = False
        works = [b.work for b in self.buckets]
        spans = sorted((w.started, w.completed) for w in works)
        in_flight, start, end = 0.0, spans[0][0], spans[0][1]
        for s, e in spans[1:]:  # the union of the intervals in which a reduction was in flight
            if s > end:
                in_flight += end - start
                start = s
            end = max(end, e)
        in_flight += end - start
        self.steps += 1
        self.totals["in_flight_seconds"] += in_flight
        self.totals["wait_seconds"] += ended - began
        self.totals["allreduce_seconds"] += sum(e - s for s, e in spans)
        self.last = [(b.buffer.nbytes, b.work.completed - b.work.started) for b in self.buckets]


class DistributedDataParallel(Module):
    """``DistributedDataParallel(module, comm=None, bucket_cap_mb=25, broadcast_buffers=True)``:
    train ``module`` (materialized, on its device) with the gradients averaged over the ranks
    of ``comm`` (default: the process group, ``init_process_group``). ``process_group=`` is
    accepted as PyTorch's name for ``comm``. ``state_dict()`` keys start with ``module.``, as
    PyTorch's; ``ddp.module`` is the wrapped model."""

    def __init__(self, module, comm=None, bucket_cap_mb=25, broadcast_buffers=True, *, process_group=None):
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: module must be a divenet Module, got {type(module).__name__}")
        if comm is not None and process_group is not None and comm is not process_group:
            raise ValueError("DistributedDataParallel: pass comm or process_group, not both")
        from . import _group

        comm = _group(comm if comm is not None else process_group, "DistributedDataParallel")
        if not isinstance(comm, Communicator):
            raise TypeError(f"DistributedDataParallel: comm must be a divenet.distributed Communicator, "
                            f"got {type(comm).__name__}")
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) or not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be a positive number, got {bucket_cap_mb!r}")
        pending = module.uninitialized()
        if pending:
            raise RuntimeError(f"DistributedDataParallel: layers {pending[:5]} have no weights yet (their input "
                               "size is inferred on the first forward); call model.init(sample_input) before "
                               "wrapping, so that rank 0's weights can be broadcast")
        self.module = module
        self.comm, self.bucket_cap_mb, self.broadcast_buffers = comm, bucket_cap_mb, bool(broadcast_buffers)
        self.require_backward_grad_sync = True
        self._buffer_arrays = [b for b in module.buffers() if b is not None]
        if comm.size > 1:
            for t in list(module.parameters()) + self._buffer_arrays:
                _broadcast_array(comm, t.array)
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self._reducer = _Reducer(named, comm, int(bucket_cap_mb * (1 << 20))) if comm.size > 1 else None
        self._hooks = []
        if self._reducer is not None:
            for i, (_, p) in enumerate(named):
                self._hooks.append(p.register_post_accumulate_grad_hook(
                    lambda _p, i=i, r=self._reducer: r.hook(i)))

    def forward(self, *args, **kwargs):
        r = self._reducer
        sync = r is not None and self.training and is_grad_enabled()
        if sync:
            r.check_finished()
            if self.broadcast_buffers:
                for b in self._buffer_arrays:
                    _broadcast_array(self.comm, b.array)
        out = self.module(*args, **kwargs)
        if sync and self.require_backward_grad_sync:
            r.prepare(out)
        elif r is not None:
            r.armed = False
        return out

    @contextlib.contextmanager
    def no_sync(self):
        """Within it, backward accumulates gradients locally (no communication); the first
        backward after it averages the accumulated gradients."""
        old = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = old

    @property
    def bucket_sizes(self):
        """Bytes of each gradient bucket, in the order they are reduced."""
        return [b.buffer.nbytes for b in self._reducer.buckets] if self._reducer else []

    def comm_stats(self, reset=False):
        """Communication timings summed over the steps so far: ``in_flight_seconds`` (time in
        which some bucket's reduction was outstanding), ``wait_seconds`` (waiting after the
        last gradient: the part not hidden behind backward), ``allreduce_seconds`` (each
        bucket from its start to its completion, summed), and ``hidden_fraction`` = 1 -
        wait / in_flight; ``last_step``: (bytes, seconds) per bucket of the last step."""
        r = self._reducer
        if r is None:
            return {"steps": 0, "buckets": 0, "in_flight_seconds": 0.0, "wait_seconds": 0.0,
                    "allreduce_seconds": 0.0, "hidden_fraction": None, "last_step": []}
        t = dict(r.totals)
        t.update(steps=r.steps, buckets=len(r.buckets), last_step=list(r.last),
                 hidden_fraction=(1 - t["wait_seconds"] / t["in_flight_seconds"]) if t["in_flight_seconds"] else None)
        if reset:
            r.steps, r.last = 0, []
            r.totals = dict.fromkeys(r.totals, 0.0)
        return t

    def extra_repr(self):
        return f"size={self.comm.size}, bucket_cap_mb={self.bucket_cap_mb}, buckets={len(self.bucket_sizes)}"
