"""What ``divenet train --distributed`` needs from this package (the CLI delegates here).

Under ``mpirun -np N`` every rank runs the same command: the communicator comes from MPI,
``--batch-size`` is the global batch (each rank loads batch / N of it through a
DistributedSampler), each rank gets the cores it was bound to (else its share) as BLAS
threads, and any error on any rank ends the whole job at once (MPI_Abort) with one line
naming the rank, instead of leaving the others waiting in a collective.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback

__all__ = ["setup", "check_batch", "train_order", "abort_on_error"]


def setup(device, threads=None):
    """The world communicator and this rank's device (MPI for the CPU; NCCL, untested, with
    ``gpu:{local rank}`` for a GPU); sets this rank's BLAS threads unless ``threads`` was given."""
    from ..backend import device as as_device
    from . import init_process_group

    if device.kind not in ("cpu", "gpu"):
        raise ValueError(f"argument --distributed: trains on the cpu (MPI) or gpu (NCCL), not on {device}")
    try:
        comm = init_process_group("nccl" if device.kind == "gpu" else "mpi")
    except ImportError as exc:
        raise ValueError(f"argument --distributed: {exc}") from None
    if device.kind == "gpu":
        device = as_device(f"gpu:{comm.local_rank}")
    if threads is None and comm.size > 1:
        from .._cpu import set_blas_threads

        mine, cores = len(os.sched_getaffinity(0)), os.cpu_count() or 1
        # mpirun binds each of a few ranks to a core: use what it gave; unbound, share the machine
        set_blas_threads(mine if mine < cores else max(1, cores // comm.local_size))
    return comm, device


def check_batch(batch, comm):
    """The per-rank batch of a global ``batch``; refuses one that does not split evenly."""
    if batch % comm.size:
        raise ValueError(f"argument --batch-size: {batch} is the global batch, split evenly over the "
                         f"{comm.size} ranks, so it must be divisible by {comm.size}")
    return batch // comm.size


def train_order(dataset, comm, seed):
    """DataLoader arguments giving this rank its share of each epoch's shuffled order."""
    from .sampler import DistributedSampler

    return {"sampler": DistributedSampler(dataset, comm.size, comm.rank, shuffle=True, seed=seed)}


@contextlib.contextmanager
def abort_on_error(comm, command, user_errors=(ValueError, RuntimeError, OSError)):
    """In a job of several ranks, an exception on this rank prints ``divenet COMMAND: error:
    rank R of N: ...`` (with the traceback unless it is one of ``user_errors``) and aborts
    every rank; in a job of one it propagates unchanged."""
    try:
        yield
    except BaseException as exc:
        if comm is None or comm.size == 1 or isinstance(exc, SystemExit) and not exc.code:
            raise
        if isinstance(exc, KeyboardInterrupt):
            msg, code = "interrupted; the last complete checkpoint is kept", 130
        else:
            msg, code = str(exc) or type(exc).__name__, 2
            if not isinstance(exc, user_errors):
                traceback.print_exc()
        where = f"rank {comm.rank} of {comm.size}"
        msg = msg if msg.startswith(where) else f"{where}: {msg}"  # a DistributedError names it
        print(f"divenet {command}: error: {msg}; stopping every rank",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        comm.abort(code)
