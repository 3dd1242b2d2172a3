"""``torch.utils.data``'s names, for code written against PyTorch
(``from divenet.utils.data import DataLoader, TensorDataset``); they live in :mod:`divenet.data`."""
from ..data.dataset import ConcatDataset, Dataset, Subset, TensorDataset, random_split
from ..data.loader import DataLoader, WorkerInfo, default_collate, get_worker_info
from ..data.sampler import (
    BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler,
    WeightedRandomSampler,
)

__all__ = [
    "DataLoader", "Dataset", "TensorDataset", "Subset", "ConcatDataset", "random_split",
    "Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler",
    "WeightedRandomSampler", "BatchSampler", "default_collate", "get_worker_info", "WorkerInfo",
]
