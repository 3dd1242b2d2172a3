"""DataLoader: batches of (images, labels) Tensors, prepared by a background thread.

Two ways to get a batch:

* fast path, for datasets with ``arrays()`` (ArrayDataset, FashionMNIST, MNIST): one
  ``np.take`` of the whole batch from the float32 (N, C, H, W) array, then the dataset's
  transform and the loader's transform applied to the whole batch;
* generic path, for any dataset with ``__len__`` and ``__getitem__`` returning
  ``(image, label)`` (or with a transform that cannot take a batch): the samples are stacked.

Shuffling draws a permutation from ``numpy.random.default_rng([seed, epoch])``, so the order
of epoch k depends only on the seed and k: a resumed run that calls ``set_epoch(k)`` sees the
same batches. Each ``iter(loader)`` uses the current epoch and then advances it by one. The
seed, when not given, is drawn once from ``divenet.random.generator()`` (``dn.manual_seed``).
Random transforms draw from a second generator seeded by ``[seed, epoch, 1]``, used by the
worker thread alone, so augmentation is reproducible too.

With ``prefetch > 0`` a daemon thread prepares up to ``prefetch`` batches ahead while the
training step runs (NumPy releases the GIL in its copies and matmuls). Leaving the loop early
(``break``) or dropping the iterator stops the thread; an exception in the thread is raised in
the consumer, with its original type and traceback.
"""
from __future__ import annotations

import numbers
import queue
import threading

import numpy as np

from .. import random as _random
from ..backend import device as as_device, transfer
from .datasets import ArrayDataset
from .transforms import is_batchable

__all__ = ["DataLoader", "ArrayDataset"]

_MASK64 = (1 << 64) - 1


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"DataLoader: {what} must be a positive integer, got {value!r}")
    return int(value)


def _to_numpy(x):
    from ..tensor import Tensor

    if isinstance(x, Tensor):
        return x.numpy()
    return transfer(x, as_device("cpu")) if hasattr(x, "get") else np.asarray(x)


class DataLoader:
    """Iterate over ``dataset`` in batches of ``batch_size``: each item is
    ``(images, labels)`` as Tensors on ``device`` (images float32 (B, C, H, W), labels int64
    (B,))."""

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None,
                 transform=None, device=None, prefetch=2):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader: dataset must have __len__ and __getitem__, got "
                            f"{type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = _positive_int(batch_size, "batch_size")
        if isinstance(prefetch, bool) or not isinstance(prefetch, numbers.Integral) or prefetch < 0:
            raise ValueError(f"DataLoader: prefetch must be a non-negative integer, got {prefetch!r}")
        self.prefetch = int(prefetch)
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform {transform!r} is not callable")
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.transform = transform
        self.device = as_device(device)
        if seed is None:
            seed = int(_random.generator().integers(0, 2 ** 63))
        self.seed = int(seed) & _MASK64
        self.epoch = 0

    # ---- sizes and order ------------------------------------------------------------------
    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter(loader)`` produce epoch ``epoch``'s order (for resuming)."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def order(self, epoch=None) -> np.ndarray:
        """The sample indices of epoch ``epoch`` (default: the next one), in visiting order."""
        epoch = self.epoch if epoch is None else int(epoch)
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def _batches(self, epoch):
        idx = self.order(epoch)
        b = self.batch_size
        return [idx[i:i + b] for i in range(0, len(self) * b, b)]

    # ---- making one batch -----------------------------------------------------------------
    def _plan(self):
        """The function that turns an index array into (images, labels) NumPy arrays."""
        ds = self.dataset
        ds_tf = getattr(ds, "transform", None)
        tf = self.transform
        if hasattr(ds, "arrays") and (ds_tf is None or is_batchable(ds_tf)):
            images, labels = ds.arrays()  # in the caller's thread: errors surface at iter()

            def make(idx, rng):
                x = np.take(images, idx, axis=0)
                if ds_tf is not None:
                    x = ds_tf(x, rng)
                if tf is not None:
                    x = tf(x, rng) if is_batchable(tf) else tf(x)
                return x, np.take(labels, idx, axis=0)

            return make

        def make(idx, rng):
            samples = [ds[int(i)] for i in idx]
            try:
                x = np.stack([_to_numpy(s[0]) for s in samples])
                y = np.asarray([_to_numpy(s[1]) for s in samples])
            except (TypeError, IndexError, ValueError) as exc:
                raise type(exc)(f"DataLoader: cannot stack the samples of {type(ds).__name__} "
                                f"into a batch (each item must be (image, label) with equal "
                                f"image shapes): {exc}") from exc
            if y.dtype.kind in "iub":
                y = y.astype(np.int64, copy=False)
            if tf is not None:
                x = tf(x, rng) if is_batchable(tf) else tf(x)
            return x, y

        return make

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        rng = np.random.default_rng([self.seed, epoch, 1])
        return _LoaderIter(self._batches(epoch), self._plan(), rng, self.device, self.prefetch)

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, device={self.device}, prefetch={self.prefetch})")


_DONE = object()


def _worker(batches, make, rng, q, stop):
    """Runs in the prefetch thread; holds no reference to the iterator, so that dropping the
    iterator collects it (and its __del__ stops this thread)."""
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
            if not put((True, make(idx, rng))):
                return
    except BaseException as exc:  # handed to the consumer, which re-raises it
        try:
            exc.add_note(f"(raised in the DataLoader prefetch thread, batch {k})")
        except AttributeError:
            pass
        put((False, exc))


class _LoaderIter:
    def __init__(self, batches, make, rng, device, prefetch):
        self._batches = batches
        self._make = make
        self._rng = rng
        self._device = device
        self._i = 0
        self._thread = None
        if prefetch > 0 and batches:
            self._queue = queue.Queue(maxsize=prefetch)
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=_worker, args=(batches, make, rng, self._queue, self._stop),
                name="divenet-DataLoader", daemon=True)
            self._thread.start()

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._batches) - self._i

    def _next_from_thread(self):
        while True:
            try:
                return self._queue.get(timeout=0.5)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("DataLoader: the prefetch thread stopped without "
                                       "producing a batch") from None

    def __next__(self):
        if self._i >= len(self._batches):
            self.close()
            raise StopIteration
        if self._thread is not None:
            ok, item = self._next_from_thread()
            if not ok:
                self.close()
                raise item
        else:
            item = self._make(self._batches[self._i], self._rng)
        self._i += 1
        from ..tensor import Tensor

        x, y = item
        dev = self._device
        return Tensor._make(transfer(x, dev), dev, None), Tensor._make(transfer(y, dev), dev, None)

    def close(self):
        """Stop the prefetch thread (idempotent)."""
        self._i = len(self._batches)
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
