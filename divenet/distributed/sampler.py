"""DistributedSampler: each rank's share of a dataset, with PyTorch's padding and drop_last rules.

The permutation of epoch ``e`` is ``numpy.random.default_rng([seed, e]).permutation(n)``, the
one a shuffled divenet DataLoader with the same seed visits; rank ``r`` of ``R`` takes every
R-th index from position ``r``. So at any number of ranks, step ``k`` of an epoch trains on
the samples of the one-process run's batch ``k`` (when the per-rank batch is the global batch
/ R), and a run resumes with another number of ranks. PyTorch's permutation comes from
its own generator, so the indices differ from torch's; the structure (lengths, padding,
disjointness) is torch's.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..data.sampler import Sampler, _check_bool

__all__ = ["DistributedSampler"]


def _count(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"DistributedSampler: {what} must be an integer, got {value!r}")
    return int(value)


class DistributedSampler(Sampler):
    """``DistributedSampler(dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
    drop_last=False)``: the indices of rank ``rank`` of ``num_replicas`` (default: the process
    group's). Without ``drop_last`` the index list is padded with its own first indices to a
    multiple of ``num_replicas`` (some samples appear twice per epoch); with it the tail is
    dropped, so every rank gets ``len(dataset) // num_replicas``. Call ``set_epoch(e)`` before
    each epoch (the DataLoader passes its ``set_epoch`` on) for a new shuffle."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if num_replicas is None or rank is None:
            from . import _group

            group = _group(None, "DistributedSampler")
            num_replicas = group.size if num_replicas is None else num_replicas
            rank = group.rank if rank is None else rank
        num_replicas, rank = _count(num_replicas, "num_replicas"), _count(rank, "rank")
        if num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be at least 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:  # PyTorch's message
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.shuffle = _check_bool(shuffle, "shuffle", "DistributedSampler", TypeError)
        self.drop_last = _check_bool(drop_last, "drop_last", "DistributedSampler", TypeError)
        self.seed, self.epoch = _count(seed, "seed"), 0
        if self.seed < 0:
            raise ValueError(f"DistributedSampler: seed must be non-negative, got {seed}")
        n = len(dataset)
        if self.drop_last and n % num_replicas:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch):
        epoch = _count(epoch, "epoch")
        if epoch < 0:
            raise ValueError(f"DistributedSampler.set_epoch: epoch must be non-negative, got {epoch}")
        self.epoch = epoch

    def indices(self):
        """This rank's indices for the current epoch, as an int64 array."""
        n = len(self.dataset)
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle
                 else np.arange(n))
        if self.total_size > n:  # pad by repeating the list from its start
            order = np.resize(order, self.total_size)
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples
