"""DataLoader: batches of Tensors from a dataset, with PyTorch's arguments and semantics.

``DataLoader(dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None,
num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
worker_init_fn=None, multiprocessing_context=None, generator=None, *, prefetch_factor=None,
persistent_workers=False, in_order=True)`` as ``torch.utils.data.DataLoader``, plus divenet's
``seed``, ``transform`` (applied to each batch's images), ``device`` (where the batches go) and
``prefetch`` (batches a background thread prepares ahead when ``num_workers=0``).

Two ways to get a batch:

* fast path, for datasets with ``arrays()`` (ArrayDataset, FashionMNIST, MNIST, TensorDataset,
  and a Subset of any of these) and the default ``collate_fn``: one ``np.take`` per array of
  the whole batch, then the dataset's transform and the loader's transform applied to the
  whole image batch (the first array);
* generic path, for any dataset with ``__len__`` and ``__getitem__`` (or with a transform that
  cannot take a batch): the samples are combined by ``collate_fn``, by default
  ``default_collate``: arrays and Tensors are stacked, numbers become int64 / float64 / bool
  Tensors, and tuples, lists, dicts and named tuples are collated field by field (a tuple
  sample gives a list, as in PyTorch). Strings stay as they are.

Order: with ``shuffle=True`` each epoch visits a permutation drawn from
``numpy.random.default_rng([seed, epoch])``, so the order of epoch k depends only on the seed
and k: a resumed run that calls ``set_epoch(k)`` sees the same batches. Each ``iter(loader)``
uses the current epoch and then advances it by one. The seed, when not given, is drawn once
from ``generator`` or else from ``divenet.random.generator()`` (``dn.manual_seed``). A
``sampler`` or ``batch_sampler`` replaces that order (``set_epoch`` is passed on to one that
has it). Random transforms draw from a generator seeded by ``[seed, epoch, 1]`` (one per
worker, ``[seed, epoch, 1, worker_id]``, with ``num_workers > 0``), so augmentation is
reproducible for a given seed and number of workers.

With ``num_workers=0`` and ``prefetch > 0`` a daemon thread prepares up to ``prefetch`` batches
ahead while the training step runs (NumPy releases the GIL in its copies and matmuls); that is
the fastest way for array datasets. Leaving the loop early (``break``) or dropping the
iterator stops the thread; an exception in it is raised in the consumer, with its original
type.

``num_workers > 0`` starts that many worker *processes* (forked where the platform allows,
else ``multiprocessing_context``), each given every ``num_workers``-th batch, and delivers the
batches in order; ``prefetch_factor`` (default 2) batches per worker are in flight. Processes,
not threads, because generic-path datasets spend their time in Python code that holds the GIL.
Measured on the 2-core project machine, an epoch of 6000 28x28 samples through a per-item
Python transform (pad, crop, flip, normalize), batch 64. A bare prototype at load 1: 0.41-0.46 s
with no workers, 0.62-0.74 s with 2 threads (slower than none: GIL contention), 0.36-0.40 s with
2 processes, their start included. This DataLoader at load 6 (other work on both cores):
1.22-1.77 s with ``num_workers=0``, 0.70-2.63 s with 2 workers (4 of 6 epochs faster).
In a worker, ``get_worker_info()`` describes it, and ``divenet``'s and Python's ``random``
generators are seeded per worker and epoch (as PyTorch seeds its own); NumPy's global one is
the ``worker_init_fn``'s to seed. Batches come back pickled through a pipe between our own
processes (files are never read with pickle). Workers must not use the GPU: batches reach
``device`` in the main process.

For a ``device`` other than the CPU, the prefetch thread also copies each batch into the
device's memory, so that the training loop receives device Tensors and spends no time on
uploads (with worker processes, or ``prefetch=0``, the copy happens in the loop).

``pin_memory``: on the CPU a no-op (accepted for PyTorch's code). With a GPU ``device`` and
CuPy, each batch is copied into page-locked host memory before it is sent to the GPU; the
prefetch thread always does so.
"""
from __future__ import annotations

import collections.abc
import importlib
import multiprocessing
import numbers
import os
import queue
import random as _pyrandom
import threading
import time
import traceback
from multiprocessing.reduction import ForkingPickler

import numpy as np

from .. import random as _random
from ..backend import device as as_device, transfer
from ..tensor import Tensor
from .dataset import Subset
from .datasets import ArrayDataset
from .sampler import as_rng
from .transforms import is_batchable

__all__ = ["DataLoader", "ArrayDataset", "default_collate", "get_worker_info", "WorkerInfo"]

_MASK64 = (1 << 64) - 1


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"DataLoader: {what} must be a positive integer, got {value!r}")
    return int(value)


def _to_numpy(x):
    if isinstance(x, Tensor):
        return x.numpy()
    return transfer(x, as_device("cpu")) if hasattr(x, "get") else np.asarray(x)


# ---- collation ---------------------------------------------------------------------------------

def _collate(batch):
    """default_collate on NumPy arrays: the same structure, NumPy arrays at the leaves."""
    elem = batch[0]
    if isinstance(elem, (Tensor, np.ndarray)) or hasattr(elem, "__cuda_array_interface__"):
        if elem.dtype.kind in "SUO":
            raise TypeError(f"default_collate: batch must contain tensors, numpy arrays, numbers, "
                            f"dicts or lists; found {elem.dtype}")
        return np.stack([_to_numpy(b) for b in batch])
    if isinstance(elem, np.generic):
        return np.asarray(batch)
    if isinstance(elem, bool):
        return np.asarray(batch, dtype=np.bool_)
    if isinstance(elem, numbers.Integral):
        return np.asarray(batch, dtype=np.int64)
    if isinstance(elem, numbers.Real):
        return np.asarray(batch, dtype=np.float64)  # PyTorch's default_collate: float64
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        out = {k: _collate([d[k] for d in batch]) for k in elem}
        try:
            return type(elem)(out)
        except TypeError:
            return out
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # a named tuple
        return type(elem)(*(_collate(s) for s in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        if any(len(s) != len(elem) for s in batch):
            raise ValueError("default_collate: each element in list of batch should be of equal "
                             f"size, got sizes {[len(s) for s in batch]}")
        return [_collate(s) for s in zip(*batch)]
    raise TypeError(f"default_collate: batch must contain tensors, numpy arrays, numbers, dicts "
                    f"or lists; found {type(elem)}")


def _tensors(obj, dev, arrays=True):
    """``obj`` with its arrays (when ``arrays``) and Tensors made Tensors on ``dev``."""
    if isinstance(obj, Tensor):
        return obj if obj.device == dev else obj.to(dev)
    if arrays and isinstance(obj, np.ndarray):
        return Tensor._make(transfer(obj, dev), dev, None)
    if isinstance(obj, list):
        return [_tensors(o, dev, arrays) for o in obj]
    if isinstance(obj, tuple):
        items = [_tensors(o, dev, arrays) for o in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, dict):
        out = {k: _tensors(v, dev, arrays) for k, v in obj.items()}
        return out if type(obj) is dict else type(obj)(out)
    return obj


def default_collate(batch):
    """Combine a list of samples into a batch as PyTorch's ``default_collate`` does, with
    divenet Tensors (on the CPU) at the leaves."""
    return _tensors(_collate(batch), as_device("cpu"))


def _pinned(obj):
    """NumPy arrays in ``obj`` copied into page-locked memory (GPU targets with CuPy only)."""
    import cupyx

    if isinstance(obj, np.ndarray):
        buf = cupyx.empty_pinned(obj.shape, obj.dtype)
        np.copyto(buf, obj)
        return buf
    if isinstance(obj, list):
        return [_pinned(o) for o in obj]
    if isinstance(obj, dict):
        return type(obj)({k: _pinned(v) for k, v in obj.items()})
    return obj


# ---- making one batch (picklable, for worker processes) -------------------------------------------

class _FastBatch:
    """Index array -> list of arrays taken from ``arrays`` (the fast path)."""

    def __init__(self, arrays, remap, ds_tf, tf):
        self.arrays, self.remap, self.ds_tf, self.tf = arrays, remap, ds_tf, tf
        self.tf_batch = tf is not None and is_batchable(tf)

    def __call__(self, idx, rng):
        if self.remap is not None:  # a Subset: its indices into the underlying arrays
            idx = self.remap[idx]
        x = np.take(self.arrays[0], idx, axis=0)
        if self.ds_tf is not None:
            x = self.ds_tf(x, rng)
        if self.tf is not None:
            x = self.tf(x, rng) if self.tf_batch else self.tf(x)
        return [x] + [np.take(a, idx, axis=0) for a in self.arrays[1:]]


class _GenericBatch:
    """Index array -> the collated samples ``dataset[i]``."""

    def __init__(self, dataset, tf, collate_fn):
        self.dataset, self.tf, self.collate_fn = dataset, tf, collate_fn

    def __call__(self, idx, rng):
        ds = self.dataset
        samples = [ds[i] for i in idx.tolist()]
        if self.collate_fn is not None:
            return self.collate_fn(samples)
        try:
            batch = _collate(samples)
        except (TypeError, IndexError, ValueError) as exc:
            raise type(exc)(f"DataLoader: cannot stack the samples of {type(ds).__name__} "
                            f"into a batch (default_collate needs equal shapes): {exc}") from exc
        tf = self.tf
        if tf is not None:
            call = (lambda x: tf(x, rng)) if is_batchable(tf) else tf
            if isinstance(batch, np.ndarray):
                batch = call(batch)
            elif isinstance(batch, list) and batch and isinstance(batch[0], np.ndarray):
                batch[0] = call(batch[0])
            else:
                raise TypeError(f"DataLoader: transform applies to the images of (image, ...) "
                                f"samples; {type(ds).__name__} gives {type(samples[0]).__name__}")
        return batch


# ---- worker processes ----------------------------------------------------------------------------

class WorkerInfo:
    """What ``get_worker_info()`` returns inside a worker process."""

    __slots__ = ("id", "num_workers", "seed", "dataset")

    def __init__(self, id, num_workers, seed, dataset):  # noqa: A002 (PyTorch's name)
        self.id, self.num_workers, self.seed, self.dataset = id, num_workers, seed, dataset

    def __repr__(self):
        return f"WorkerInfo(id={self.id}, num_workers={self.num_workers}, seed={self.seed})"


_worker_info = None


def get_worker_info():
    """This worker's WorkerInfo inside a DataLoader worker process; None in the main process."""
    return _worker_info


def _failure(exc):
    cls = type(exc)
    return (cls.__module__, cls.__qualname__, str(exc), traceback.format_exc())


def _worker_loop(wid, num_workers, dataset, make, seed, init_fn, tasks, results, parent):
    global _worker_info
    results.cancel_join_thread()  # exit at shutdown even with results nobody reads
    _worker_info = info = WorkerInfo(wid, num_workers, None, dataset)
    rng, init_error, initialized = None, None, False
    while True:
        try:
            msg = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the main process is gone
                return
            continue
        if msg is None:
            return
        if msg[0] == "epoch":
            epoch = msg[1]
            info.seed = int(np.random.default_rng([seed, epoch, 2, wid]).integers(2 ** 63))
            _random.manual_seed(info.seed)
            _pyrandom.seed(info.seed)
            rng = np.random.default_rng([seed, epoch, 1, wid])
            if not initialized:
                initialized = True
                try:
                    if init_fn is not None:
                        init_fn(wid)
                except BaseException as exc:  # every batch of this worker reports it
                    init_error = _failure(exc)
            continue
        gen, k, idx = msg
        if init_error is not None:
            out = (gen, k, False, init_error)
        else:
            try:
                out = (gen, k, True, make(idx, rng))
            except BaseException as exc:
                out = (gen, k, False, _failure(exc))
        try:
            data = ForkingPickler.dumps(out)
        except Exception as exc:
            data = ForkingPickler.dumps((gen, k, False, ("builtins", "TypeError", (
                f"DataLoader: batch {k} cannot be sent from worker {wid} to the main process "
                f"({exc})"), "")))
        results.put(bytes(data))


def _rebuild(failure, wid, k):
    module, qualname, message, tb = failure
    try:
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        exc = cls(message)
    except Exception:
        exc = RuntimeError(f"{qualname}: {message}")
    exc.add_note(f"(raised in DataLoader worker process {wid}, batch {k}; its traceback:)\n{tb}")
    return exc


class _WorkerPool:
    def __init__(self, loader, make):
        ctx = loader.multiprocessing_context
        if ctx is None:
            ctx = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        if isinstance(ctx, str):
            ctx = multiprocessing.get_context(ctx)
        n = self.n = loader.num_workers
        self.tasks = [ctx.Queue() for _ in range(n)]
        self.results = ctx.Queue()
        self.gen = 0
        self.procs = [ctx.Process(target=_worker_loop, name=f"divenet-DataLoader-worker-{w}",
                                  args=(w, n, loader.dataset, make, loader.seed,
                                        loader.worker_init_fn, self.tasks[w], self.results,
                                        os.getpid()), daemon=True)
                      for w in range(n)]
        for p in self.procs:
            p.start()

    def start_epoch(self, epoch):
        self.gen += 1
        for q in self.tasks:
            q.put(("epoch", epoch))
        return self.gen

    def check_alive(self):
        for w, p in enumerate(self.procs):
            if not p.is_alive():
                raise RuntimeError(f"DataLoader worker {w} (pid {p.pid}) exited unexpectedly "
                                   f"with exit code {p.exitcode}")

    def shutdown(self):
        procs, self.procs = self.procs, []
        for q in self.tasks:
            try:
                q.put(None)
            except (OSError, ValueError):
                pass
        for p in procs:
            p.join(timeout=2.0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2.0)
        for q in self.tasks + [self.results]:
            q.cancel_join_thread()
            q.close()

    def __del__(self):
        try:
            self.shutdown()
        except Exception:
            pass


# ---- the loader ------------------------------------------------------------------------------------

def _checked_callable(value, what):
    if value is not None and not callable(value):
        raise TypeError(f"DataLoader: {what} {value!r} is not callable")
    return value


class DataLoader:
    """Iterate over ``dataset`` in batches of ``batch_size`` Tensors on ``device``; for
    (image, label) datasets each batch is ``[images, labels]`` (float32 (B, C, H, W) images,
    int64 (B,) labels)."""

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
                 worker_init_fn=None, multiprocessing_context=None, generator=None, *,
                 prefetch_factor=None, persistent_workers=False, in_order=True, seed=None,
                 transform=None, device=None, prefetch=2):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader: dataset must have __len__ and __getitem__, got "
                            f"{type(dataset).__name__}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers option should be non-negative; use "
                             f"num_workers=0 to load in the main process, got {num_workers!r}")
        if not isinstance(timeout, numbers.Real) or timeout < 0:
            raise ValueError(f"DataLoader: timeout option should be non-negative, got {timeout!r}")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("DataLoader: prefetch_factor option could only be specified with "
                             "num_workers > 0 (worker processes); otherwise set prefetch_factor "
                             "to None (divenet's prefetch= sets the thread's depth)")
        if num_workers == 0 and persistent_workers:
            raise ValueError("DataLoader: persistent_workers option needs num_workers > 0")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("DataLoader: batch_sampler option is mutually exclusive with "
                                 "batch_size, shuffle, sampler, and drop_last")
            batch_size = None
        elif batch_size is None:
            raise ValueError("DataLoader: batch_size must be a positive integer, got None "
                             "(unbatched loading is not supported)")
        else:
            batch_size = _positive_int(batch_size, "batch_size")
        if num_workers:
            prefetch_factor = _positive_int(2 if prefetch_factor is None else prefetch_factor,
                                            "prefetch_factor")
        if isinstance(prefetch, bool) or not isinstance(prefetch, numbers.Integral) or prefetch < 0:
            raise ValueError(f"DataLoader: prefetch must be a non-negative integer, got {prefetch!r}")
        if transform is not None and collate_fn is not None:
            raise ValueError("DataLoader: transform= works with the default collate_fn; apply it "
                             "inside your collate_fn instead")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.drop_last = bool(drop_last)
        self.num_workers = int(num_workers)
        self.collate_fn = _checked_callable(collate_fn, "collate_fn")
        self.pin_memory = bool(pin_memory)
        self.timeout = timeout
        self.worker_init_fn = _checked_callable(worker_init_fn, "worker_init_fn")
        self.multiprocessing_context = multiprocessing_context
        self.generator = generator
        self.prefetch_factor = prefetch_factor
        self.persistent_workers = bool(persistent_workers)
        self.in_order = bool(in_order)  # batches always arrive in order, which in_order=False allows
        self.prefetch = int(prefetch)
        self.transform = _checked_callable(transform, "transform")
        self.device = as_device(device)
        if seed is None:
            rng = as_rng(generator, "DataLoader")
            seed = int(rng.integers(0, 2 ** 63))
        self.seed = int(seed) & _MASK64
        self.epoch = 0
        self._pool = None

    # ---- sizes and order ------------------------------------------------------------------
    def __len__(self):
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n = len(self.sampler if self.sampler is not None else self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter(loader)`` produce epoch ``epoch``'s order (for resuming); a
        sampler with ``set_epoch`` (a distributed one) is told too."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)
        for s in (self.sampler, self.batch_sampler):
            if hasattr(s, "set_epoch"):
                s.set_epoch(self.epoch)

    def order(self, epoch=None) -> np.ndarray:
        """The sample indices of epoch ``epoch`` (default: the next one), in visiting order.
        With a sampler or batch sampler, one pass of it (``epoch`` is its business)."""
        if self.batch_sampler is not None:
            return np.concatenate([np.asarray(b, np.int64) for b in self.batch_sampler] or [np.zeros(0, np.int64)])
        if self.sampler is not None:
            return np.fromiter(iter(self.sampler), dtype=np.int64)
        epoch = self.epoch if epoch is None else int(epoch)
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def _batches(self, epoch):
        if self.batch_sampler is not None:
            return [np.asarray(b, dtype=np.int64) for b in self.batch_sampler]
        idx = self.order(epoch)
        b = self.batch_size
        n = len(idx) // b * b if self.drop_last else len(idx)
        return [idx[i:i + b] for i in range(0, n, b)]

    # ---- making one batch -----------------------------------------------------------------
    def _plan(self):
        """The callable that turns an index array into a batch of NumPy arrays."""
        base, remap = self.dataset, None
        while isinstance(base, Subset):  # compose the indices, take from the arrays underneath
            ind = np.asarray(base.indices, dtype=np.int64)
            remap = ind if remap is None else ind[remap]
            base = base.dataset
        ds_tf = getattr(base, "transform", None)
        if self.collate_fn is None and hasattr(base, "arrays") and (ds_tf is None or is_batchable(ds_tf)):
            arrays = tuple(base.arrays())  # in the caller's thread: errors surface at iter()
            return _FastBatch(arrays, remap, ds_tf, self.transform)
        return _GenericBatch(self.dataset, self.transform, self.collate_fn)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        batches = self._batches(epoch)
        pool, own = None, False
        if self.num_workers and batches:
            if self.persistent_workers:
                if self._pool is None:
                    self._pool = _WorkerPool(self, self._plan())
                pool = self._pool
            else:
                pool, own = _WorkerPool(self, self._plan()), True
            make = None
        else:
            make = self._plan()
        # a GPU target stages batches in page-locked memory when asked, and always when a
        # prefetch thread makes them (the staging then costs the training loop nothing)
        pin = (self.pin_memory or (self.prefetch > 0 and not self.num_workers)) \
            and self.device.kind == "gpu" and _cupyx_available()
        return _LoaderIter(batches, make, np.random.default_rng([self.seed, epoch, 1]), self,
                           pool, own, epoch, pin)

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown()

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, num_workers={self.num_workers}, "
                f"device={self.device}, prefetch={self.prefetch})")


def _cupyx_available():
    try:
        import cupyx  # noqa: F401
    except ImportError:
        return False
    return True



def _worker(batches, make, rng, q, stop, finish):
    """Runs in the prefetch thread; holds no reference to the iterator, so that dropping the
    iterator collects it (and its __del__ stops this thread). ``finish`` turns a batch of
    NumPy arrays into Tensors on the loader's device: for a GPU the copy into device memory
    happens here, not in the training loop."""
    def put(item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    k = 0
    try:
        for k, idx in enumerate(batches):
            if stop.is_set():
                return
            if not put((True, finish(make(idx, rng)))):
                return
    except BaseException as exc:  # handed to the consumer, which re-raises it
        try:
            exc.add_note(f"(raised in the DataLoader prefetch thread, batch {k})")
        except AttributeError:
            pass
        put((False, exc))


class _Finisher:
    """A batch of NumPy arrays -> Tensors on ``dev``. For a GPU the arrays are staged in
    page-locked host memory (``pin``), from which the copy runs at full bus speed, and the
    copy is waited for (``wait``: in the prefetch thread, where that costs the training loop
    nothing) before the batch is handed over. The copy runs on the thread's default stream,
    which orders it after the kernels already queued, so device memory the training loop
    just freed is never overwritten while a kernel still reads it."""

    __slots__ = ("dev", "flat", "arrays", "pin", "wait")

    def __init__(self, dev, flat, arrays, pin, wait):
        self.dev, self.flat, self.arrays, self.pin = dev, flat, arrays, pin
        self.wait = wait and dev.kind == "gpu"

    def __call__(self, item):
        dev = self.dev
        if self.pin:
            item = _pinned(item)
        if self.flat:  # the fast path's hot loop: no structure to walk
            out = [Tensor._make(transfer(a, dev), dev, None) for a in item]
        else:
            out = _tensors(item, dev, self.arrays)
        if self.wait:
            cp = dev.xp
            with cp.cuda.Device(dev.index):
                cp.cuda.get_current_stream().synchronize()
        return out


class _LoaderIter:
    def __init__(self, batches, make, rng, loader, pool, own_pool, epoch, pin):
        self._batches = batches
        self._make = make
        self._rng = rng
        self._timeout = loader.timeout
        self._flat = pool is None and isinstance(make, _FastBatch)  # a list of arrays
        self._i = 0
        self._thread = None
        self._pool = pool
        threaded = self._threaded = pool is None and loader.prefetch > 0 and bool(batches)
        self._finish = _Finisher(loader.device, self._flat, loader.collate_fn is None, pin, threaded)
        if pool is not None:
            self._own_pool = own_pool
            self._gen = pool.start_epoch(epoch)
            self._depth = loader.prefetch_factor * loader.num_workers
            self._sent = 0
            self._ready = {}
        elif threaded:
            self._queue = queue.Queue(maxsize=loader.prefetch)
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=_worker, args=(batches, make, rng, self._queue, self._stop, self._finish),
                name="divenet-DataLoader", daemon=True)
            self._thread.start()

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._batches) - self._i

    def _waits(self, what):
        """Yields poll intervals until the loader's timeout (if any) has passed."""
        deadline = time.monotonic() + self._timeout if self._timeout else None
        while True:
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0:
                raise RuntimeError(f"DataLoader: timed out after {self._timeout} seconds "
                                   f"waiting for batch {self._i} from {what}")
            yield wait

    def _next_from_thread(self):
        for wait in self._waits("the prefetch thread"):
            try:
                return self._queue.get(timeout=wait)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("DataLoader: the prefetch thread stopped without "
                                       "producing a batch") from None

    def _next_from_workers(self):
        pool, k = self._pool, self._i
        if pool.gen != self._gen:
            raise RuntimeError("DataLoader: a newer iter(loader) took over the persistent "
                               "workers; this iterator can no longer be used")
        while self._sent < len(self._batches) and self._sent < k + self._depth:
            pool.tasks[self._sent % pool.n].put((self._gen, self._sent, self._batches[self._sent]))
            self._sent += 1
        waits = self._waits("the worker processes")
        while k not in self._ready:
            try:
                data = pool.results.get(timeout=next(waits))
            except queue.Empty:
                pool.check_alive()
                continue
            gen, j, ok, item = ForkingPickler.loads(data)
            if gen == self._gen:
                self._ready[j] = (ok, item)
        ok, item = self._ready.pop(k)
        return (True, item) if ok else (False, _rebuild(item, k % pool.n, k))

    def __next__(self):
        if self._i >= len(self._batches):
            self.close()
            raise StopIteration
        if self._pool is not None:
            ok, item = self._next_from_workers()
        elif self._thread is not None:
            ok, item = self._next_from_thread()
        else:
            ok, item = True, self._make(self._batches[self._i], self._rng)
        if not ok:
            self.close()
            raise item
        self._i += 1
        return item if self._threaded else self._finish(item)  # the thread made it Tensors

    def close(self):
        """Stop the prefetch thread or this epoch's worker processes (idempotent)."""
        self._i = len(self._batches)
        pool, self._pool = self._pool, None
        if pool is not None and self._own_pool:
            pool.shutdown()
        thread = self._thread
        if thread is None:
            return
        self._thread = None
        self._stop.set()
        try:  # unblock a worker waiting to put
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        thread.join(timeout=10.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
