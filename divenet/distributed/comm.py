"""Communicators: how the ranks of a data-parallel job exchange arrays.

A communicator has ``rank`` and ``size`` and works in place on raw arrays (never Tensors):
``allreduce(a, op)``, ``iallreduce(a, op)`` (a :class:`Work` handle with ``wait()``),
``broadcast(a, root)``, ``allgather(a)`` (a new (size, *a.shape) array) and ``barrier()``.
``op`` is ``"sum"`` or ``"avg"``.

* :class:`MPICommunicator`: NumPy arrays through mpi4py's buffer methods (``Iallreduce``,
  ``Ibcast``, ``Iallgather``, ``Ibarrier``: no pickling). Every wait polls its request with a
  deadline (``timeout`` seconds, default ``DIVENET_DIST_TIMEOUT`` or 600), so a rank that stalls
  makes the others raise :class:`DistributedError` instead of hanging; a rank that dies is
  mpirun's to handle (Open MPI kills the job and names the rank: docs/distributed.md).
* :class:`NCCLCommunicator`: CuPy arrays through NCCL (``cupy.cuda.nccl``), bootstrapped over
  MPI. UNTESTED: written without a multi-GPU machine to run it on.

Polling (``Test``) drives Open MPI's progress engine: a non-blocking collective advances only
while some rank calls into MPI, so DistributedDataParallel also calls :meth:`Work.test` from
its gradient hooks.
"""
from __future__ import annotations

import os
import time

import numpy as np

__all__ = ["Communicator", "MPICommunicator", "NCCLCommunicator", "Work", "DistributedError",
           "default_timeout"]

_OPS = ("sum", "avg")
_SPIN = 2e-3  # seconds a wait spins on Test before it sleeps between polls: small collectives
              # finish within it (measured: a 10 KB allreduce takes 20 us spinning, 1.2 ms with
              # a sleep in the loop)


class DistributedError(RuntimeError):
    """A collective that did not complete: another rank died, stalled or diverged."""


def default_timeout():
    text = os.environ.get("DIVENET_DIST_TIMEOUT", "600")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"DIVENET_DIST_TIMEOUT must be a positive number of seconds, got {text!r}")
    return value


def _check_op(op, what):
    if op not in _OPS:
        raise ValueError(f"{what}: op must be 'sum' or 'avg', got {op!r}")


class Work:
    """A collective in flight. ``wait()`` blocks until it completes (then divides by the size
    for ``op='avg'``); ``test()`` polls once. ``started`` and ``completed`` are
    ``time.perf_counter()`` readings (``completed``: when a test or wait first saw it done)."""

    __slots__ = ("_req", "_finish", "_comm", "_what", "started", "completed")

    def __init__(self, req, comm, what, finish=None):
        self._req, self._comm, self._what, self._finish = req, comm, what, finish
        self.started = time.perf_counter()
        self.completed = None

    def _done(self):
        self.completed = time.perf_counter()
        if self._finish is not None:
            self._finish()
            self._finish = None

    def test(self):
        if self.completed is None and self._comm._test(self._req):
            self._done()
        return self.completed is not None

    def is_completed(self):  # PyTorch's name
        return self.test()

    def wait(self):
        if self.completed is None:
            self._comm._wait(self._req, self._what)
            self._done()
        return True


class Communicator:
    """The interface (and the size-1 behaviour of every method: nothing to exchange)."""

    rank = 0
    size = 1
    local_rank, local_size = 0, 1  # on this machine (its GPU; the BLAS threads of each rank)
    timeout = 600.0

    def _test(self, req):
        return True

    def _wait(self, req, what):
        return None

    def allreduce(self, array, op="sum"):
        self.iallreduce(array, op).wait()
        return array

    def iallreduce(self, array, op="sum"):
        _check_op(op, "iallreduce")
        return Work(None, self, "allreduce")

    def broadcast(self, array, root=0):
        return array

    def allgather(self, array):
        return array[None].copy()

    def barrier(self):
        return None

    def abort(self, code=1):
        os._exit(code)

    def __repr__(self):
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


def _load_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("divenet.distributed needs mpi4py and an MPI library: "
                          "apt-get install openmpi-bin libopenmpi-dev && pip install 'divenet[dist]' "
                          f"({exc})") from None
    return MPI


class MPICommunicator(Communicator):
    """NumPy arrays over MPI (``comm``: an mpi4py communicator, default ``MPI.COMM_WORLD``)."""

    def __init__(self, comm=None, timeout=None):
        MPI = self._MPI = _load_mpi()
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = default_timeout() if timeout is None else float(timeout)
        if not self.timeout > 0:
            raise ValueError(f"MPICommunicator: timeout must be a positive number of seconds, got {timeout!r}")
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()

    def _array(self, array, what):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"MPICommunicator.{what}: takes NumPy arrays, got {type(array).__name__} "
                            "(GPU arrays go through NCCLCommunicator)")
        if not array.flags.c_contiguous:
            raise ValueError(f"MPICommunicator.{what}: the array must be C-contiguous (it is reduced in place)")
        return array

    def _test(self, req):
        return req.Test()

    def _wait(self, req, what):
        if req.Test():
            return
        now = time.perf_counter()
        spin_until, deadline = now + _SPIN, now + self.timeout
        delay = 1e-5
        while not req.Test():
            now = time.perf_counter()
            if now > deadline:
                raise DistributedError(
                    f"rank {self.rank} of {self.size}: {what} did not complete within {self.timeout:g} s; "
                    "another rank died, stalled or is in a different collective (raise "
                    "DIVENET_DIST_TIMEOUT if a step or a checkpoint takes longer)")
            if now > spin_until:
                time.sleep(delay)
                delay = min(2 * delay, 1e-3)

    def iallreduce(self, array, op="sum"):
        _check_op(op, "iallreduce")
        self._array(array, "iallreduce")
        req = self.comm.Iallreduce(self._MPI.IN_PLACE, array, op=self._MPI.SUM)
        finish = None
        if op == "avg":
            if array.dtype.kind != "f":
                raise TypeError(f"iallreduce: op='avg' needs a floating array, got {array.dtype}")
            scale = array.dtype.type(1.0 / self.size)
            finish = lambda: np.multiply(array, scale, out=array)  # noqa: E731
        return Work(req, self, f"allreduce of {array.nbytes} bytes", finish)

    def broadcast(self, array, root=0):
        self._array(array, "broadcast")
        Work(self.comm.Ibcast(array, root=root), self, f"broadcast of {array.nbytes} bytes").wait()
        return array

    def allgather(self, array):
        array = np.ascontiguousarray(array)
        out = np.empty((self.size,) + array.shape, dtype=array.dtype)
        Work(self.comm.Iallgather(array, out), self, f"allgather of {array.nbytes} bytes").wait()
        return out

    def barrier(self):
        Work(self.comm.Ibarrier(), self, "barrier").wait()

    def abort(self, code=1):
        """End every rank of the job now (MPI_Abort): a rank that gives up must not leave the
        others waiting in a collective (Finalize would wait for them)."""
        self.comm.Abort(code)


class NCCLCommunicator(Communicator):
    """CuPy arrays over NCCL, one GPU per rank (``gpu:{local rank}``), bootstrapped through
    ``mpi`` (an MPICommunicator: rank 0's NCCL id is broadcast over it).

    UNTESTED: no multi-GPU machine was available while writing it. Collectives run on a stream
    of their own; a Work waits for its event, so ``wait()`` means the result is on the GPU."""

    def __init__(self, mpi=None):
        import cupy
        from cupy.cuda import nccl

        self._cp, self._nccl = cupy, nccl
        self.mpi = mpi if mpi is not None else MPICommunicator()
        self.rank, self.size, self.timeout = self.mpi.rank, self.mpi.size, self.mpi.timeout
        self.local_size = self.mpi.local_size
        cupy.cuda.Device(self.mpi.local_rank).use()
        uid = np.zeros(128, np.int8)  # NCCL_UNIQUE_ID_BYTES; get_unique_id() gives 128 signed chars
        if self.rank == 0:
            uid[:] = nccl.get_unique_id()
        self.mpi.broadcast(uid)
        self.comm = nccl.NcclCommunicator(self.size, tuple(int(v) for v in uid), self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def _dtype(self, array):
        nccl = self._nccl
        table = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
                 np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.int64): nccl.NCCL_INT64,
                 np.dtype(np.int32): nccl.NCCL_INT32, np.dtype(np.uint8): nccl.NCCL_UINT8}
        if array.dtype not in table:
            raise TypeError(f"NCCLCommunicator: unsupported dtype {array.dtype}")
        if not isinstance(array, self._cp.ndarray) or not array.flags.c_contiguous:
            raise TypeError("NCCLCommunicator: takes C-contiguous CuPy arrays")
        return table[array.dtype]

    def _launch(self, what):
        # the collective must see what the compute stream wrote: order it after that stream
        self.stream.wait_event(self._cp.cuda.get_current_stream().record())
        event = self._cp.cuda.Event(disable_timing=True)
        return event, what

    def _test(self, req):
        return req.done

    def _wait(self, req, what):
        deadline = time.perf_counter() + self.timeout
        while not req.done:
            if time.perf_counter() > deadline:
                raise DistributedError(f"rank {self.rank} of {self.size}: {what} did not complete "
                                       f"within {self.timeout:g} s")
            time.sleep(1e-4)
        self._cp.cuda.get_current_stream().wait_event(req)

    def iallreduce(self, array, op="sum"):
        _check_op(op, "iallreduce")
        event, what = self._launch(f"allreduce of {array.nbytes} bytes")
        nccl = self._nccl
        nccl_op = nccl.NCCL_AVG if op == "avg" and hasattr(nccl, "NCCL_AVG") else nccl.NCCL_SUM
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._dtype(array), nccl_op,
                            self.stream.ptr)
        finish = None
        if op == "avg" and nccl_op == nccl.NCCL_SUM:
            finish = lambda: array.__imul__(array.dtype.type(1.0 / self.size))  # noqa: E731
        event.record(self.stream)
        return Work(event, self, what, finish)

    def broadcast(self, array, root=0):
        event, what = self._launch(f"broadcast of {array.nbytes} bytes")
        self.comm.bcast(array.data.ptr, array.size, self._dtype(array), root, self.stream.ptr)
        event.record(self.stream)
        Work(event, self, what).wait()
        return array

    def allgather(self, array):
        array = self._cp.ascontiguousarray(array)
        out = self._cp.empty((self.size,) + array.shape, dtype=array.dtype)
        event, what = self._launch(f"allgather of {array.nbytes} bytes")
        self.comm.allGather(array.data.ptr, out.data.ptr, array.size, self._dtype(array), self.stream.ptr)
        event.record(self.stream)
        Work(event, self, what).wait()
        return out

    def barrier(self):
        self.mpi.barrier()

    def abort(self, code=1):
        self.mpi.abort(code)
