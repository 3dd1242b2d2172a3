"""Map-style datasets as ``torch.utils.data`` has them: Dataset, TensorDataset, Subset,
ConcatDataset and random_split.

A dataset is anything with ``__len__`` and ``__getitem__``; ``Dataset`` is an optional base
class (``a + b`` concatenates). TensorDataset and a Subset of a dataset with ``arrays()`` give
the DataLoader's fast path: whole batches are taken from the arrays with one ``np.take``.
"""
from __future__ import annotations

import bisect
import itertools
import math
import numbers
import operator
import warnings

import numpy as np

from .sampler import as_rng

__all__ = ["Dataset", "TensorDataset", "Subset", "ConcatDataset", "random_split"]


class Dataset:
    """Base class of map-style datasets: subclasses define ``__getitem__`` and ``__len__``."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __add__(self, other):
        return ConcatDataset([self, other])


class TensorDataset(Dataset):
    """Samples are ``tuple(t[i] for t in tensors)``; all tensors (divenet Tensors or NumPy
    arrays) share their first dimension."""

    def __init__(self, *tensors):
        from ..tensor import Tensor

        if not tensors:
            raise ValueError("TensorDataset: needs at least one tensor")
        for t in tensors:
            if not isinstance(t, (Tensor, np.ndarray)) or t.ndim == 0:
                raise TypeError(f"TensorDataset: each argument must be a Tensor or NumPy array with "
                                f"at least one dimension, got {type(t).__name__}"
                                f"{' of shape ()' if getattr(t, 'ndim', 1) == 0 else ''}")
        sizes = [t.shape[0] for t in tensors]
        if len(set(sizes)) != 1:
            raise ValueError(f"TensorDataset: size mismatch between tensors: first dimensions {sizes}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]

    def arrays(self):
        """The tensors as NumPy arrays (no copy on the CPU), for the DataLoader's fast path."""
        return tuple(t.numpy() if hasattr(t, "numpy") else t for t in self.tensors)


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = indices

    def __getitem__(self, idx):
        if isinstance(idx, list):
            return self.dataset[[self.indices[i] for i in idx]]
        return self.dataset[self.indices[idx]]

    def __len__(self):
        return len(self.indices)


class ConcatDataset(Dataset):
    """The samples of each dataset in turn."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        for d in self.datasets:
            if not hasattr(d, "__len__") or not hasattr(d, "__getitem__"):
                raise TypeError(f"ConcatDataset: each dataset must have __len__ and __getitem__, "
                                f"got {type(d).__name__}")
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx):
        n = len(self)
        idx = operator.index(idx)
        if idx < 0:
            if -idx > n:
                raise ValueError(f"ConcatDataset: absolute value of index {idx} should not exceed "
                                 f"dataset length {n}")
            idx += n
        if idx >= n:
            raise IndexError(f"ConcatDataset: index {idx} is out of range for {n} samples")
        d = bisect.bisect_right(self.cumulative_sizes, idx)
        return self.datasets[d][idx - (self.cumulative_sizes[d - 1] if d else 0)]


def random_split(dataset, lengths, generator=None):
    """Split ``dataset`` into non-overlapping Subsets of the given ``lengths``, or of fractions
    summing to 1 (``floor(n * f)`` each, the remainder handed out one by one from the first
    split, as PyTorch does). ``generator``: a ``numpy.random.Generator``, an int seed, or None
    for divenet's global generator."""
    n = len(dataset)
    lengths = list(lengths)
    if not lengths or any(isinstance(x, bool) or not isinstance(x, numbers.Real) or x < 0
                          for x in lengths):
        raise ValueError(f"random_split: lengths must be non-negative integers or fractions, "
                         f"got {lengths}")
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:  # fractions (PyTorch's rule)
        sizes = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
        for i, size in enumerate(sizes):
            if size == 0:
                warnings.warn(f"random_split: length of split at index {i} is 0; this split "
                              f"will be empty", stacklevel=2)
        lengths = sizes
    elif not all(isinstance(x, numbers.Integral) for x in lengths):
        raise ValueError(f"random_split: fractions must sum to 1, got {lengths} (sum {sum(lengths)})")
    if sum(lengths) != n:
        raise ValueError(f"random_split: sum of input lengths {sum(lengths)} does not equal the "
                         f"length of the input dataset {n}")
    perm = as_rng(generator, "random_split").permutation(n).tolist()
    ends = list(itertools.accumulate(int(x) for x in lengths))
    return [Subset(dataset, perm[end - int(size):end]) for size, end in zip(lengths, ends)]
