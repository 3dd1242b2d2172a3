"""Samplers, as ``torch.utils.data`` has them: the order in which a DataLoader visits indices.

A sampler is an iterable of dataset indices (Python ints) with a ``__len__``; a batch sampler
yields lists of indices. Random samplers draw from ``generator``: a ``numpy.random.Generator``,
an int seed, or None for divenet's global generator (``dn.manual_seed``), so that a seeded run
repeats. (PyTorch's own RNG differs, so a seed does not give PyTorch's indices.)
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import random as _random

__all__ = ["Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler",
           "WeightedRandomSampler", "BatchSampler"]


def as_rng(generator, what):
    """The NumPy generator behind ``generator`` (None: divenet's global one, read at each call
    so that ``dn.manual_seed`` takes effect)."""
    if generator is None:
        return _random.generator()
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    raise TypeError(f"{what}: generator must be a numpy.random.Generator, an int seed or None, "
                    f"got {type(generator).__name__}")


def _check_positive(value, what, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name}: {what} should be a positive integer value, but got {what}={value!r}")
    return int(value)


def _check_bool(value, what, name, exc=ValueError):
    if not isinstance(value, bool):
        raise exc(f"{name}: {what} should be a boolean value, but got {what}={value!r}")
    return value


class Sampler:
    """Base class: subclasses define ``__iter__`` (indices) and usually ``__len__``."""

    def __init__(self, data_source=None):
        pass

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random permutation of the indices, or ``num_samples`` indices drawn with replacement.
    Without replacement, ``num_samples`` beyond the dataset's size takes further permutations,
    as PyTorch does."""

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        self.data_source = data_source
        self.replacement = _check_bool(replacement, "replacement", "RandomSampler", TypeError)
        if num_samples is not None:
            _check_positive(num_samples, "num_samples", "RandomSampler")
        self._num_samples = num_samples
        as_rng(generator, "RandomSampler")  # a bad generator fails here, not at iteration
        self.generator = generator

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        n, k = len(self.data_source), self.num_samples
        rng = as_rng(self.generator, "RandomSampler")
        if self.replacement:
            return iter(rng.integers(0, n, k).tolist())
        if n == 0:
            return iter(())
        perms = [rng.permutation(n) for _ in range(-(-k // n))]
        return iter(np.concatenate(perms)[:k].tolist())

    def __len__(self):
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given indices, in a random order drawn at each iteration."""

    def __init__(self, indices, generator=None):
        self.indices = indices
        as_rng(generator, "SubsetRandomSampler")
        self.generator = generator

    def __iter__(self):
        rng = as_rng(self.generator, "SubsetRandomSampler")
        return iter(self.indices[i] for i in rng.permutation(len(self.indices)).tolist())

    def __len__(self):
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """``num_samples`` indices in [0, len(weights)), index i drawn with probability
    proportional to ``weights[i]`` (the weights need not sum to one)."""

    def __init__(self, weights, num_samples, replacement=True, generator=None):
        name = "WeightedRandomSampler"
        self.num_samples = _check_positive(num_samples, "num_samples", name)
        self.replacement = _check_bool(replacement, "replacement", name)
        w = np.asarray(weights.numpy() if hasattr(weights, "numpy") else weights, dtype=np.float64)
        if w.ndim != 1:
            raise ValueError(f"{name}: weights should be a 1-d sequence, but given weights have "
                             f"shape {w.shape}")
        if len(w) == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"{name}: weights must be finite, non-negative and not all zero")
        if not self.replacement and self.num_samples > np.count_nonzero(w):
            raise ValueError(f"{name}: cannot draw {self.num_samples} samples without replacement "
                             f"from {np.count_nonzero(w)} non-zero weights")
        self.weights = w
        as_rng(generator, name)
        self.generator = generator

    def __iter__(self):
        rng = as_rng(self.generator, "WeightedRandomSampler")
        p = self.weights / self.weights.sum()
        return iter(rng.choice(len(p), self.num_samples, replace=self.replacement, p=p).tolist())

    def __len__(self):
        return self.num_samples


class BatchSampler(Sampler):
    """Lists of ``batch_size`` indices from ``sampler``; the last, shorter one is dropped when
    ``drop_last``."""

    def __init__(self, sampler, batch_size, drop_last):
        self.sampler = sampler
        self.batch_size = _check_positive(batch_size, "batch_size", "BatchSampler")
        self.drop_last = _check_bool(drop_last, "drop_last", "BatchSampler")

    def __iter__(self):
        batch = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
