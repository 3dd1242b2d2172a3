"""Data-parallel training across processes, with PyTorch's names (docs/distributed.md).

Owns: communicators (``comm``: MPI via mpi4py for NumPy arrays, NCCL via CuPy for GPU arrays,
untested), :class:`DistributedDataParallel` (``ddp``), :class:`DistributedSampler`
(``sampler``) and :class:`SyncBatchNorm` (``sync_bn``). It may import the layers below it
(tensor, autograd, nn, data); the trainer and the CLI import it, never the reverse. mpi4py is
imported only when a communicator is made, so ``import divenet.distributed`` costs nothing.

Launch: ``mpirun -np 2 divenet train lenet --distributed``; in a script::

    comm = dn.distributed.init_process_group("mpi")
    model = dn.distributed.DistributedDataParallel(model, comm)
"""
from __future__ import annotations

from .comm import Communicator, DistributedError, MPICommunicator, NCCLCommunicator, Work
from .ddp import DistributedDataParallel
from .sampler import DistributedSampler
from .sync_bn import SyncBatchNorm

__all__ = ["Communicator", "MPICommunicator", "NCCLCommunicator", "Work", "DistributedError",
           "DistributedDataParallel", "DistributedSampler", "SyncBatchNorm", "init_process_group",
           "is_initialized", "get_rank", "get_world_size", "destroy_process_group"]

_default = None  # the communicator init_process_group made


def init_process_group(backend="mpi", timeout=None):
    """Make the default communicator (``"mpi"``: NumPy arrays; ``"nccl"``: CuPy arrays, one GPU
    per rank, untested) and return it. Under ``mpirun`` every rank gets its rank and the size;
    without it a single process is rank 0 of 1."""
    global _default
    if backend == "mpi":
        _default = MPICommunicator(timeout=timeout)
    elif backend == "nccl":
        _default = NCCLCommunicator(MPICommunicator(timeout=timeout))
    else:
        raise ValueError(f"init_process_group: backend must be 'mpi' or 'nccl', got {backend!r}")
    return _default


def is_initialized():
    return _default is not None


def _group(group, what):
    if group is not None:
        return group
    if _default is None:
        raise RuntimeError(f"{what}: no process group; call dn.distributed.init_process_group() "
                           "first or pass a communicator")
    return _default


def get_rank(group=None):
    return _group(group, "get_rank").rank


def get_world_size(group=None):
    return _group(group, "get_world_size").size


def destroy_process_group():
    global _default
    _default = None
