"""The dynamic batcher: requests wait in one bounded queue; one worker thread takes as many as fit
in ``max_batch`` samples once the batch is full or the oldest request has waited ``max_delay_s``,
whichever comes first, runs them as one batch and hands each request its own rows.

Requests are ``concurrent.futures.Future`` objects, so the event loop awaits them with
``asyncio.wrap_future`` and never blocks; a request whose caller gave up (its future cancelled
while still queued) is dropped from its batch instead of computed. :meth:`Batcher.close` stops
new submissions and returns once every request already queued has been answered.
"""
from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future

import numpy as np


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already."""


class Closed(Exception):
    """The batcher is shutting down and takes no new requests."""


class Batcher:
    """``infer(batch)`` maps an (N, ...) float32 array to (N, ...) outputs; it runs on the
    worker thread only. ``on_batch(size, seconds)`` is called after each batch (metrics)."""

    def __init__(self, infer, max_batch=32, max_delay_s=0.005, max_queue=256, on_batch=None):
        if max_batch < 1 or max_queue < 1 or max_delay_s < 0:
            raise ValueError(f"Batcher: max_batch and max_queue must be >= 1 and max_delay_s >= 0, got "
                             f"{max_batch}, {max_queue}, {max_delay_s}")
        self.infer, self.max_batch, self.max_delay_s, self.max_queue = infer, max_batch, max_delay_s, max_queue
        self.on_batch = on_batch
        self._queue = collections.deque()  # (samples, future, arrival time)
        self._samples = 0  # rows queued
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="divenet-serve-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self):
        """Requests waiting for a batch (not yet running)."""
        return len(self._queue)

    def submit(self, samples):
        """Queue an (n, ...) array, 1 <= n <= max_batch; returns a Future of its (n, ...) outputs.
        Raises QueueFull or Closed."""
        n = len(samples)
        if not 1 <= n <= self.max_batch:
            raise ValueError(f"a request of {n} samples; the server batches 1 to {self.max_batch}")
        future = Future()
        with self._cond:
            if self._closed:
                raise Closed("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} requests waiting)")
            self._queue.append((samples, future, time.monotonic()))
            self._samples += n
            self._cond.notify()
        return future

    def close(self, timeout=None):
        """Take no new requests; wait until the worker has answered the queued ones and stopped."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _take(self):
        """Block until a batch is due; return its [(samples, future)], or None once closed and empty."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = self._queue[0][2] + self.max_delay_s
            while self._samples < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            taken, rows = [], 0
            while self._queue and rows + len(self._queue[0][0]) <= self.max_batch:
                samples, future, _ = self._queue.popleft()
                self._samples -= len(samples)
                rows += len(samples)
                taken.append((samples, future))
            return taken

    def _run(self):
        while (taken := self._take()) is not None:
            # a future cancelled while queued (its request timed out) is not computed
            live = [(s, f) for s, f in taken if f.set_running_or_notify_cancel()]
            if not live:
                continue
            start = time.perf_counter()
            try:
                batch = live[0][0] if len(live) == 1 else np.concatenate([s for s, _ in live])
                out = self.infer(batch)
                if len(out) != len(batch):
                    raise RuntimeError(f"the engine returned {len(out)} rows for a batch of {len(batch)}")
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
                for _, f in live:
                    f.set_exception(exc)
                continue
            if self.on_batch is not None:  # before the answers, so metrics read after one include it
                self.on_batch(len(batch), time.perf_counter() - start)
            row = 0
            for samples, f in live:
                f.set_result(out[row:row + len(samples)])
                row += len(samples)
