"""TensorBoard event files for a training run (``Trainer(tensorboard=...)``,
``divenet train ... --tensorboard``).

Owns the adapter from the Trainer's epoch rows to tensorboardX's ``SummaryWriter`` (a small
pure-Python writer, the install extra ``pip install 'divenet[tensorboard]'``; PyTorch's
``torch.utils.tensorboard`` is never used). At each epoch's end it writes the scalars (loss,
accuracy, perplexity, learning rate, throughput), a histogram of every parameter and of its
gradient (the last step's), and the first convolution's kernels as an image. View with
``tensorboard --logdir RUN/tensorboard``. Imports NumPy and ``divenet.show``'s tile helpers;
tensorboardX only when a writer opens.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .show import conv_layers, kernel_grid

SUBDIR = "tensorboard"  # under the run directory
# epoch-row key -> TensorBoard tag
SCALARS = {"train_loss": "loss/train", "test_loss": "loss/test", "train_acc": "accuracy/train",
           "test_acc": "accuracy/test", "train_perplexity": "perplexity/train",
           "test_perplexity": "perplexity/test", "lr": "learning_rate",
           "examples_per_sec": "throughput/examples_per_sec"}
IMAGE_SIDE = 192  # the kernel grid is enlarged (whole pixels) to about this side


def log_dir(option, out_dir):
    """Where a Trainer's ``tensorboard`` option writes: None (off) for None/False,
    ``out_dir/tensorboard`` for True, else the given directory."""
    if option is None or option is False:
        return None
    if option is True:
        if out_dir is None:
            raise ValueError("Trainer: tensorboard=True writes to OUT_DIR/tensorboard but the trainer "
                             "has no out_dir; pass out_dir, or a directory as tensorboard=")
        return Path(out_dir) / SUBDIR
    if isinstance(option, (str, os.PathLike)) and str(option).strip():
        return Path(option)
    raise TypeError(f"Trainer: tensorboard must be True, False, None or a directory path, got {option!r}")


class EpochWriter:
    """One run's event file writer: ``log_epoch(epoch, row, model)`` after each epoch, then
    ``close()``. Every epoch is flushed to disk, so an interrupted run keeps what it logged."""

    def __init__(self, logdir):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError("Trainer: tensorboard needs tensorboardX: pip install 'divenet[tensorboard]'") from None
        self.logdir = Path(logdir)
        self.writer = SummaryWriter(logdir=str(self.logdir))

    def log_epoch(self, epoch, row, model):
        w = self.writer
        for key, tag in SCALARS.items():
            if isinstance(row.get(key), (int, float)):
                w.add_scalar(tag, float(row[key]), epoch)
        for name, p in model.named_parameters():
            w.add_histogram(f"weights/{name}", p.numpy(), epoch)
            if p.grad is not None:
                w.add_histogram(f"gradients/{name}", p.grad.numpy(), epoch)
        convs = conv_layers(model)
        if convs:
            name, conv = convs[0]
            grid = kernel_grid(conv.weight.numpy())
            scale = max(1, IMAGE_SIDE // max(grid.shape[:2]))
            grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
            w.add_image(f"filters/{name}", grid, epoch, dataformats="HWC" if grid.ndim == 3 else "HW")
        w.flush()

    def close(self):
        self.writer.close()
