"""Trainer: the epoch loop, metrics, progress, checkpoints, resume and training curves."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from . import functional as F
from . import random as dn_random
from .autograd import no_grad
from .io.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from .optim.clip import clip_grad_norm_


class TrainingDiverged(RuntimeError):
    pass


def _flatten_lm(output, target):
    """A language model's (N, T, V) logits and (N, T) targets as one classification batch."""
    return output.reshape(-1, output.shape[-1]), target.reshape(-1)


def evaluate(model, loader, task="classification"):
    """Mean loss and accuracy of ``model`` over ``loader``, in eval mode, without a graph."""
    was_training = model.training
    model.eval()
    total_loss = total_correct = total = 0.0
    with no_grad():
        for x, y in loader:
            out = model(x)
            if task == "language_model":
                out, y = _flatten_lm(out, y)
            n = y.shape[0]
            total_loss += float(F.cross_entropy(out, y).item()) * n
            total_correct += int((out.array.argmax(axis=1) == y.array).sum())
            total += n
    model.train(was_training)
    if total == 0:
        raise ValueError("evaluate: the loader yielded no examples")
    return {"loss": total_loss / total, "acc": total_correct / total}


class _Progress:
    """A tqdm bar on a terminal, nothing per step otherwise (the epoch line is printed anyway)."""

    def __init__(self, total, desc, enabled):
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, loss, acc):
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}", refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Trainer:
    """Train ``model`` with ``optimizer`` for ``epochs`` epochs over ``train_loader``.

    With ``out_dir`` it writes a checkpoint after every epoch, ``metrics.jsonl`` (one object per
    epoch) and ``curves.png``; ``fit(resume=True)`` continues from the newest checkpoint there
    and ends exactly where an uninterrupted run would (same seed, CPU).
    ``task='language_model'`` trains next-token prediction and reports perplexity.
    """

    def __init__(self, model, optimizer, train_loader, test_loader=None, *, epochs=10, out_dir=None,
                 scheduler=None, clip_grad=None, task="classification", metadata=None,
                 progress=True, log=print):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.train_loader, self.test_loader = train_loader, test_loader
        self.epochs, self.clip_grad, self.task = epochs, clip_grad, task
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.metadata = dict(metadata or {})
        self.progress, self.log = progress, log
        self.history = []

    # ---- one epoch --------------------------------------------------------------------------------
    def train_epoch(self, epoch):
        model, opt = self.model, self.optimizer
        model.train()
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)
        bar = _Progress(len(self.train_loader), f"epoch {epoch}", self.progress)
        total_loss = 0.0
        correct = seen = 0
        start = time.perf_counter()
        try:
            for step, (x, y) in enumerate(self.train_loader, 1):
                out = model(x)
                if self.task == "language_model":
                    out, y = _flatten_lm(out, y)
                loss = F.cross_entropy(out, y)
                opt.zero_grad()
                loss.backward()
                value = float(loss.item())
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"training diverged: loss is {value} at epoch {epoch}, step {step}; "
                        "try a smaller --lr (no checkpoint was written for this epoch)")
                if self.clip_grad:
                    clip_grad_norm_(model.parameters(), self.clip_grad)
                opt.step()
                n = y.shape[0]
                total_loss += value * n
                correct += int((out.array.argmax(axis=1) == y.array).sum())
                seen += n
                bar.update(total_loss / seen, correct / seen)
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        return {"train_loss": total_loss / seen, "train_acc": correct / seen,
                "epoch_seconds": seconds, "examples_per_sec": seen / seconds}

    # ---- the loop -----------------------------------------------------------------------------------
    def fit(self, resume=False):
        start = self.restore() if resume else 0
        for epoch in range(start + 1, self.epochs + 1):
            row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self.train_epoch(epoch))
            if self.task == "language_model":
                row["train_perplexity"] = math.exp(min(row["train_loss"], 700))
            if self.test_loader is not None:
                ev = evaluate(self.model, self.test_loader, self.task)
                row["test_loss"], row["test_acc"] = ev["loss"], ev["acc"]
                if self.task == "language_model":
                    row["test_perplexity"] = math.exp(min(ev["loss"], 700))
            if self.scheduler is not None:
                self.scheduler.step()
            self.history.append(row)
            self.log(_format_row(row))
            if self.out_dir is not None:
                self._write_epoch(epoch, row)
        return self.history

    def _write_epoch(self, epoch, row):
        meta = dict(self.metadata)
        meta["rng_state"] = dn_random.get_state()
        if self.scheduler is not None:
            meta["scheduler"] = self.scheduler.state_dict()
        metrics = self.out_dir / "metrics.jsonl"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
        save_checkpoint(self.out_dir, epoch, self.model, self.optimizer, meta)
        plot_curves(metrics, self.out_dir / "curves.png")

    def restore(self):
        """Load the newest checkpoint in ``out_dir``; return the epoch it ended."""
        if self.out_dir is None:
            raise ValueError("resume: the trainer has no out_dir to resume from")
        meta, model_state, optim_state = load_checkpoint(find_checkpoint(self.out_dir))
        self.model.load_state_dict(model_state)
        if optim_state is not None:
            self.optimizer.load_state_dict(optim_state)
        if self.scheduler is not None and "scheduler" in meta:
            self.scheduler.load_state_dict(meta["scheduler"])
        dn_random.set_state(meta["rng_state"])
        epoch = int(meta["epoch"])
        # keep the metrics of the epochs the checkpoint covers, drop any later partial ones
        metrics = self.out_dir / "metrics.jsonl"
        if metrics.exists():
            rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            rows = [r for r in rows if r["epoch"] <= epoch]
            metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
            self.history = rows
        self.log(f"resumed from epoch {epoch} ({self.out_dir})")
        return epoch


def _format_row(row):
    parts = [f"epoch {row['epoch']}", f"train_loss {row['train_loss']:.4f}", f"train_acc {row['train_acc']:.4f}"]
    if "test_acc" in row:
        parts.append(f"test_acc {row['test_acc']:.4f}")
    if "test_perplexity" in row:
        parts.append(f"test_ppl {row['test_perplexity']:.2f}")
    parts += [f"{row['epoch_seconds']:.1f} s", f"{row['examples_per_sec']:.0f} ex/s"]
    return "  ".join(parts)


def plot_curves(metrics_path, png_path):
    """Loss and accuracy per epoch as a PNG (needs matplotlib: pip install 'divenet[plot]')."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(epochs, [r["train_loss"] for r in rows], label="train loss")
    ax.plot(epochs, [r["train_acc"] for r in rows], label="train acc", linestyle="--")
    if rows and "test_acc" in rows[0]:
        ax.plot(epochs, [r["test_acc"] for r in rows], label="test acc", linestyle="-.")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = Path(png_path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png_path)
    return png_path
