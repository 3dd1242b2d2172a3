"""Checkpoints (safetensors + JSON metadata) and model export."""
from .checkpoint import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint
