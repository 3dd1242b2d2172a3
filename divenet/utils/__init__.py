"""PyTorch-style utilities: ``divenet.utils.data`` is ``torch.utils.data``'s API (datasets,
samplers, DataLoader, default_collate), implemented in :mod:`divenet.data`;
``divenet.utils.checkpoint`` is activation checkpointing (``torch.utils.checkpoint``)."""
from . import checkpoint, data

__all__ = ["checkpoint", "data"]
