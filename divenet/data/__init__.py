"""The data pipeline: IDX files, MNIST / Fashion-MNIST from local files, transforms, and a
DataLoader with a prefetch thread. divenet never downloads: see ``divenet.data.datasets`` for
where the files are looked for."""
from .datasets import (
    ArrayDataset, DatasetNotFoundError, FashionMNIST, MNIST, dataset_locations, describe_datasets,
    find_dataset,
)
from .idx import IDXError, read_idx, write_idx
from .loader import DataLoader
from .transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, Resize

__all__ = [
    "ArrayDataset", "DatasetNotFoundError", "FashionMNIST", "MNIST", "dataset_locations",
    "describe_datasets", "find_dataset", "IDXError", "read_idx", "write_idx", "DataLoader",
    "Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip", "Resize",
]
