"""PyTorch-style utilities: ``divenet.utils.data`` is ``torch.utils.data``'s API (datasets,
samplers, DataLoader, default_collate), implemented in :mod:`divenet.data`."""
from . import data

__all__ = ["data"]
