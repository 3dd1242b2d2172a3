"""Checkpoints (safetensors + JSON metadata) and model export."""
from .checkpoint import (CheckpointError, CheckpointWarning, check_finite, find_checkpoint, load_checkpoint,
                         load_metadata, save_checkpoint)
