"""Checkpoints (safetensors + JSON metadata) and model export."""
from .checkpoint import CheckpointError, find_checkpoint, load_checkpoint, load_metadata, save_checkpoint
