"""The data pipeline: IDX files, MNIST / Fashion-MNIST from local files, transforms, datasets
and samplers as ``torch.utils.data`` has them, and a DataLoader (prefetch thread or worker
processes). divenet never downloads: see ``divenet.data.datasets`` for where the files are
looked for."""
from .dataset import ConcatDataset, Dataset, Subset, TensorDataset, random_split
from .datasets import (
    ArrayDataset, DatasetNotFoundError, FashionMNIST, MNIST, dataset_locations, describe_datasets,
    find_dataset,
)
from .idx import IDXError, read_idx, write_idx
from .loader import DataLoader, WorkerInfo, default_collate, get_worker_info
from .sampler import (
    BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler,
    WeightedRandomSampler,
)
from .transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, Resize

__all__ = [
    "ArrayDataset", "DatasetNotFoundError", "FashionMNIST", "MNIST", "dataset_locations",
    "describe_datasets", "find_dataset", "IDXError", "read_idx", "write_idx", "DataLoader",
    "Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip", "Resize",
    "Dataset", "TensorDataset", "Subset", "ConcatDataset", "random_split",
    "Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler",
    "WeightedRandomSampler", "BatchSampler", "default_collate", "get_worker_info", "WorkerInfo",
]
