"""Trainer: the epoch loop, metrics, progress, divergence check, checkpoints, resume and curves.

A run directory is a small state machine (``docs/rundir.md``): :func:`run_state` tells a fresh
directory (nothing to resume; a plain start takes it over) from one holding a run to resume
or a finished one. The checkpoint is the record of a run: each ``epoch-NNN.json`` carries the
metrics of every epoch so far, and ``metrics.jsonl``, ``best.json`` and ``curves.png`` are
rewritten from it, atomically, after the checkpoint is complete.
"""
from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple, Optional

from . import functional as F
from . import random as dn_random
from .autograd import no_grad
from .backend import CPU, array_module, transfer
from .functional.loss import check_deferred
from .io import checkpoint as ckpt
from .io.checkpoint import CheckpointError, CheckpointWarning
from .optim.clip import clip_grad_norm_
from .tensorboard import EpochWriter, log_dir

# The divergence bound: a loss above DIVERGENCE_FACTOR x the first step's loss and above
# DIVERGENCE_FLOOR stops the run. A first loss is about ln(classes) (2.3 for ten classes) and
# D2L's recipes stay within a few times it; a cross-entropy of 10 nats gives the right class
# e^-10 of the probability on average, which healthy training never does.
DIVERGENCE_FACTOR = 100.0
DIVERGENCE_FLOOR = 10.0
_DERIVED = ("metrics.jsonl", "curves.png", ckpt.BEST)  # rewritten from the newest checkpoint


class TrainingDiverged(RuntimeError):
    pass


class RunState(NamedTuple):
    """What a run directory holds (see ``docs/rundir.md``).

    ``state``: ``"fresh"`` (no complete checkpoint: start from epoch 1; ``leftovers`` lists the
    files of an interrupted start that a start removes), ``"resumable"`` (a checkpoint before
    the planned last epoch), ``"finished"`` (the checkpoint of the planned last epoch) or
    ``"damaged"`` (checkpoint files, but none whose metadata can be read).
    ``epoch``/``checkpoint``: the newest checkpoint whose metadata reads (None when fresh);
    ``epochs``: the run's planned epochs (the ``epochs`` argument, else the checkpoint's).
    """
    state: str
    epoch: Optional[int] = None
    checkpoint: Optional[Path] = None
    epochs: Optional[int] = None
    leftovers: tuple = ()


def run_state(out_dir, epochs=None):
    """Classify ``out_dir`` without reading any weights; see :class:`RunState`."""
    out_dir = Path(out_dir)
    found = ckpt.checkpoint_epochs(out_dir)
    if not found:
        names = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
        leftovers = tuple(n for n in names if n in _DERIVED or n.endswith(".tmp")
                          or ckpt._WEIGHTS.match(n))
        return RunState("fresh", leftovers=leftovers)
    for e in reversed(found):
        path = out_dir / f"epoch-{e:03d}.json"
        try:
            _, meta = ckpt.load_metadata(path)
        except CheckpointError:
            continue
        planned = epochs if epochs is not None else meta.get("epochs")
        done = isinstance(planned, int) and e >= planned
        return RunState("finished" if done else "resumable", e, path, planned)
    return RunState("damaged", found[-1], out_dir / f"epoch-{found[-1]:03d}.json", epochs)


def _flatten_lm(output, target):
    """A language model's (N, T, V) logits and (N, T) targets as one classification batch."""
    return output.reshape(-1, output.shape[-1]), target.reshape(-1)


def evaluate(model, loader, task="classification"):
    """Mean loss and accuracy of ``model`` over ``loader``, in eval mode, without a graph. On a
    device the sums stay in device memory and are read once, at the end."""
    was_training = model.training
    model.eval()
    total_loss = total_correct = total = 0.0
    dev_loss = dev_correct = None
    with no_grad():
        for x, y in loader:
            out = model(x)
            if task == "language_model":
                out, y = _flatten_lm(out, y)
            n = y.shape[0]
            loss = F.cross_entropy(out, y)
            correct = (out.array.argmax(axis=1) == y.array).sum()
            if loss.device.kind == "cpu":
                total_loss += float(loss.item()) * n
                total_correct += int(correct)
            elif dev_loss is None:
                xp = array_module(loss.array)
                dev_loss, dev_correct = xp.multiply(loss.array, n, dtype=xp.float64), correct
            else:
                dev_loss += xp.multiply(loss.array, n, dtype=xp.float64)
                dev_correct += correct
            total += n
    model.train(was_training)
    if dev_loss is not None:
        check_deferred()
        xp = array_module(dev_loss)
        loss_sum, correct_sum = transfer(xp.stack([dev_loss, dev_correct.astype(xp.float64)]), CPU).tolist()
        total_loss += loss_sum
        total_correct += int(correct_sum)
    if total == 0:
        raise ValueError("evaluate: the loader yielded no examples")
    return {"loss": total_loss / total, "acc": total_correct / total}


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class _Progress:
    """A tqdm bar on a terminal; elsewhere (a log file, a notebook) or without tqdm, a line on
    stderr at each tenth of the epoch or each minute, whichever comes first. Both show the
    running loss and accuracy, the rate and the ETA of the whole run."""

    INTERVAL = 60.0  # seconds between lines of a slow epoch
    BAR_INTERVAL = 0.5  # seconds between the bar's loss/acc refreshes when reading them syncs a device

    def __init__(self, total, epoch, epochs, unit, run_eta, enabled):
        self.total, self.epoch, self.epochs, self.unit, self.run_eta = total, epoch, epochs, unit, run_eta
        self.bar = self.stream = None
        self.start = self.last = time.perf_counter()
        self.next_mark = 1
        if not enabled:
            return
        stream = sys.stderr
        if stream.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total or None, desc=f"epoch {epoch}/{epochs}", leave=False,
                                dynamic_ncols=True)
                return
            except ImportError:
                pass
        self.stream = stream

    def update(self, step, seen, sums):
        """After step ``step``: ``sums`` is (loss sum, correct count), or on a device a function
        that reads them (a host sync), called only where a line or the bar's numbers are due:
        the log points."""
        if self.bar is None and self.stream is None:
            return
        now = time.perf_counter()
        if self.bar is not None:
            if callable(sums) and now - self.last < self.BAR_INTERVAL:
                self.bar.update(1)
                return
            self.last = now
            loss, correct = sums() if callable(sums) else sums
            elapsed = now - self.start
            self.bar.set_postfix_str(f"loss {loss / seen:.4f} acc {correct / seen:.3f} {seen / elapsed:.0f} "
                                     f"{self.unit} run ETA {_duration(self.run_eta(step, elapsed))}",
                                     refresh=False)
            self.bar.update(1)
            return
        if self.total and step * 10 >= self.next_mark * self.total and step < self.total:
            while self.next_mark * self.total <= step * 10:
                self.next_mark += 1
        elif now - self.last < self.INTERVAL:
            return
        self.last = now
        loss, correct = sums() if callable(sums) else sums
        elapsed = now - self.start
        of = f"/{self.total}" if self.total else ""
        print(f"epoch {self.epoch}/{self.epochs}  step {step}{of}  loss {loss / seen:.4f}  acc {correct / seen:.3f}  "
              f"{seen / elapsed:.0f} {self.unit}  run ETA {_duration(self.run_eta(step, elapsed))}",
              file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _DeviceTally:
    """A device epoch's running numbers, kept in device memory so that a training step reads
    nothing back (a host sync would drain the GPU's queue each step): each step's loss goes
    into a buffer and its correct count into a device sum (five small kernels). ``read()``, at
    a log point (a progress line, the epoch end), checks the losses since the last log point
    for divergence, exactly as the CPU checks each step, and fetches the sums: one transfer,
    plus one per kind of deferred argument check (``check_deferred``)."""

    def __init__(self, trainer, epoch, like, total):
        xp = self.xp = array_module(like)
        self.trainer, self.epoch = trainer, epoch
        self.losses = xp.empty(total or 64, dtype=like.dtype)
        self.correct = xp.zeros((), dtype=xp.int64)
        self.steps = self.checked = 0
        self.runs = []  # [batch size, first step, end step]: the weights of the loss sum

    def add(self, loss, out, y, n):
        i = self.steps
        if i == len(self.losses):  # a loader without len(): double the buffer
            grown = self.xp.empty(2 * i, dtype=self.losses.dtype)
            grown[:i] = self.losses
            self.losses = grown
        self.losses[i] = loss
        self.correct += (out.argmax(axis=1) == y).sum()
        runs = self.runs
        if runs and runs[-1][0] == n:
            runs[-1][2] = i + 1
        else:
            runs.append([n, i, i + 1])
        self.steps = i + 1

    def read(self):
        """(loss sum, correct count) so far; raises TrainingDiverged for a diverged step."""
        check_deferred()
        xp, t, a, k = self.xp, self.trainer, self.checked, self.steps
        f64 = xp.float64
        parts = [sum(n * self.losses[s:e].sum(dtype=f64) for n, s, e in self.runs), self.correct.astype(f64)]
        if k > a:
            seg = self.losses[a:k].astype(f64)
            bad = ~xp.isfinite(seg)
            if t.divergence_check:
                bound = t._bound() if t.first_loss is not None else \
                    xp.maximum(seg[0] * DIVERGENCE_FACTOR, DIVERGENCE_FLOOR)  # seg[0]: the run's first loss
                bad |= seg > bound
            j = bad.argmax()  # the first diverged step of the segment (0 when none)
            parts += [bad[j].astype(f64), j.astype(f64), seg[j], seg[0]]
        values = transfer(xp.stack(parts), CPU).tolist()
        self.checked = k
        loss_sum, correct = values[0], int(values[1])
        if k > a:
            bad, j, value, first = values[2:]
            if t.first_loss is None and math.isfinite(first):
                t.first_loss = first
            if bad:
                raise t._diverged(self.epoch, a + int(j) + 1, value)
        return loss_sum, correct


def _loader_description(loader):
    ds = getattr(loader, "dataset", None)
    what = type(loader).__name__
    if ds is not None:
        size = len(ds) if hasattr(ds, "__len__") else "?"
        what += f" over {type(ds).__name__} of {size} examples"
    if hasattr(loader, "batch_size"):
        what += f", batch_size {loader.batch_size}"
    if getattr(loader, "drop_last", False):
        what += ", drop_last"
    return what


def _compiled(model, options):
    """``model`` trained through ``dn.compile(model, **options)``; a DistributedDataParallel
    keeps its reducer and calls the compiled module in its forward."""
    from .compile import compile as dn_compile
    from .distributed.ddp import DistributedDataParallel

    if not isinstance(options, dict):
        raise TypeError(f"Trainer: compile must be True or a dict of dn.compile options, got {options!r}")
    if isinstance(model, DistributedDataParallel):
        model.module = dn_compile(model.module, **options)
        return model
    return dn_compile(model, **options)


def _last_batch(model, x):
    """``model(x)`` for an epoch's last batch, smaller than the others: a compiled model traces
    it once (then replays it every epoch); the RecompileWarning for that shape change alone is
    silenced, as the trainer expects it (any other change still warns)."""
    from .compile import RecompileWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"dn\.compile: .* traced again for a new input signature "
                                r"\(input 0 shape \([\d, ]+\) -> \([\d, ]+\)\)$", RecompileWarning)
        return model(x)


class Trainer:
    """Train ``model`` with ``optimizer`` for ``epochs`` epochs over ``train_loader``.

    With ``out_dir`` it writes a checkpoint after every epoch, then ``metrics.jsonl`` (one
    object per epoch) and ``curves.png``; ``fit(resume=True)`` continues from the newest intact
    checkpoint there and ends exactly where an uninterrupted run would (same seed, CPU).
    ``keep``: how many of the newest checkpoints to keep (0 or None: all); ``keep_best``: also
    keep the one with the best test accuracy, named by ``best.json``. ``divergence_check``:
    stop when the loss exceeds 100x the first step's loss and 10 (a non-finite loss always
    stops the run). ``task='language_model'`` trains next-token prediction and reports
    perplexity. ``tensorboard``: True writes TensorBoard event files to ``out_dir/tensorboard``
    at each epoch's end (a path: there; divenet/tensorboard.py says what is logged).
    ``compile``: True, or a dict of ``dn.compile`` options (``{"recompute": "sqrt"}``), trains
    through ``dn.compile(model, **options)`` (of a DistributedDataParallel's wrapped module: its
    reducer's hooks are on the shared parameters); ``self.model`` is then the compiled module.
    Checkpoints hold the model's own state_dict either way, and evaluation runs the plain model
    eagerly (its numbers are ``divenet evaluate``'s, and eval signatures add no graphs).
    """

    def __init__(self, model, optimizer, train_loader, test_loader=None, *, epochs=10, out_dir=None,
                 scheduler=None, clip_grad=None, task="classification", metadata=None,
                 progress=True, log=print, keep=2, keep_best=False, divergence_check=True,
                 tensorboard=None, comm=None, compile=None):
        if compile not in (None, False):
            model = _compiled(model, {} if compile is True else compile)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.train_loader, self.test_loader = train_loader, test_loader
        self.epochs, self.clip_grad, self.task = epochs, clip_grad, task
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.metadata = dict(metadata or {})
        self.progress, self.log = progress, log
        self.keep = ckpt.check_keep(keep)
        if keep_best and test_loader is None:
            raise ValueError("Trainer: keep_best needs a test_loader (the best checkpoint is the one "
                             "with the highest test accuracy)")
        self.keep_best, self.divergence_check = bool(keep_best), bool(divergence_check)
        self.history = []
        self.first_loss = None  # the loss of the run's first step: the divergence bound's base
        self._epoch_seconds = []
        self.comm = comm  # a divenet.distributed communicator: only its rank 0 logs and writes
        if not self._is_writer():
            self.log = lambda *_: None
        self.tensorboard = log_dir(tensorboard, self.out_dir)  # None: off

    # ---- one epoch --------------------------------------------------------------------------------
    def _bound(self):
        if not self.divergence_check or self.first_loss is None:
            return math.inf
        return max(DIVERGENCE_FACTOR * self.first_loss, DIVERGENCE_FLOOR)

    def _diverged(self, epoch, step, value):
        """The error for a diverged ``value`` (the loss of ``step``)."""
        if not math.isfinite(value):
            return TrainingDiverged(
                f"training diverged: loss is {value} at epoch {epoch}, step {step}; "
                "try a smaller --lr (no checkpoint was written for this epoch)")
        return TrainingDiverged(
            f"training diverged: loss {value:.4g} at epoch {epoch}, step {step} exceeds the "
            f"bound {self._bound():.4g} (max({DIVERGENCE_FACTOR:g} x the first loss {self.first_loss:.4g}, "
            f"{DIVERGENCE_FLOOR:g})); try a smaller --lr, or --no-divergence-check if such a "
            "loss is expected (no checkpoint was written for this epoch)")

    def _run_eta(self, epoch, total):
        """Seconds left in the run, given ``step`` steps done in ``elapsed`` seconds of ``epoch``."""
        def eta(step, elapsed):
            per_step = elapsed / step
            per_epoch = (sum(self._epoch_seconds) / len(self._epoch_seconds) if self._epoch_seconds
                         else (total or step) * per_step)
            return max((total or step) - step, 0) * per_step + (self.epochs - epoch) * per_epoch
        return eta

    def train_epoch(self, epoch):
        model, opt = self.model, self.optimizer
        model.train()
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)
        total = len(self.train_loader) if hasattr(self.train_loader, "__len__") else None
        unit = "seq/s" if self.task == "language_model" else "img/s"
        bar = _Progress(total, epoch, self.epochs, unit, self._run_eta(epoch, total),
                        self.progress and self._is_writer())
        bound = self._bound()
        total_loss = 0.0
        correct = seen = 0
        tally = None  # on a device: the step's numbers stay there (see _DeviceTally)
        # a compiled model traces the epoch's smaller last batch once, as expected: no warning then
        last = total if total and total > 1 and self._plain_model() is not self._inner() else None
        first_n = None
        start = time.perf_counter()
        try:
            for step, (x, y) in enumerate(self.train_loader, 1):
                if step == last and y.shape[0] != first_n:
                    out = _last_batch(model, x)
                else:
                    out = model(x)
                if self.task == "language_model":
                    out, y = _flatten_lm(out, y)
                loss = F.cross_entropy(out, y)
                opt.zero_grad()
                loss.backward()
                n = y.shape[0]
                if step == 1:
                    first_n = n
                    if loss.device.kind != "cpu":
                        tally = _DeviceTally(self, epoch, loss.array, total)
                if tally is None:  # the CPU: reading the loss is free, so each step is checked
                    value = float(loss.item())
                    if not math.isfinite(value) or value > bound:
                        raise self._diverged(epoch, step, value)
                    if self.first_loss is None:
                        self.first_loss = value
                        bound = self._bound()
                    total_loss += value * n
                    correct += int((out.array.argmax(axis=1) == y.array).sum())
                else:
                    tally.add(loss.array, out.array, y.array, n)
                if self.clip_grad:
                    clip_grad_norm_(model.parameters(), self.clip_grad)
                opt.step()
                seen += n
                bar.update(step, seen, (total_loss, correct) if tally is None else tally.read)
            if tally is not None:
                total_loss, correct = tally.read()
        finally:
            bar.close()
        total_loss, correct, seen = self._sum_over_ranks(total_loss, correct, seen)
        if seen == 0:
            raise ValueError(f"Trainer: the train loader ({_loader_description(self.train_loader)}) "
                             "yielded no batches; the training split is empty")
        seconds = time.perf_counter() - start
        return {"train_loss": total_loss / seen, "train_acc": correct / seen,
                "epoch_seconds": seconds, "examples_per_sec": seen / seconds}

    # ---- the loop -----------------------------------------------------------------------------------
    def fit(self, resume=False):
        """Train to ``epochs``; with ``resume`` continue the run in ``out_dir`` (a directory with
        no complete checkpoint starts from epoch 1). Returns the history (one dict per epoch)."""
        if hasattr(self.train_loader, "__len__") and len(self.train_loader) == 0:
            raise ValueError(f"Trainer: the train loader ({_loader_description(self.train_loader)}) "
                             "yields no batches; the training split is empty")
        start = self._start_on_every_rank(resume)
        board = EpochWriter(self.tensorboard) if self.tensorboard is not None and self._is_writer() else None
        for epoch in range(start + 1, self.epochs + 1):
            began = time.perf_counter()
            row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self.train_epoch(epoch))
            if self.task == "language_model":
                row["train_perplexity"] = math.exp(min(row["train_loss"], 700))
            if self.test_loader is not None and self._is_writer():
                ev = evaluate(self._plain_model(), self.test_loader, self.task)
                row["test_loss"], row["test_acc"] = ev["loss"], ev["acc"]
                if self.task == "language_model":
                    row["test_perplexity"] = math.exp(min(ev["loss"], 700))
            if self.scheduler is not None:
                self.scheduler.step()
            self.history.append(row)
            self._epoch_seconds.append(time.perf_counter() - began)
            eta = (self.epochs - epoch) * sum(self._epoch_seconds) / len(self._epoch_seconds)
            self.log(_format_row(row, self.task) + (f"  run ETA {_duration(eta)}" if epoch < self.epochs else ""))
            if self.out_dir is not None and self._is_writer():
                self._write_epoch(epoch)
            if board is not None:  # after the checkpoint: the events match what a resume finds
                board.log_epoch(epoch, row, self.model)
        if board is not None:
            board.close()
        return self.history

    # ---- data parallel (divenet.distributed; docs/distributed.md) ---------------------------------
    def _is_writer(self):
        """Whether this process writes files, logs and progress: rank 0 of a distributed run."""
        return self.comm is None or self.comm.rank == 0

    def _inner(self):
        """The module a DistributedDataParallel wraps, else the model."""
        from .distributed.ddp import DistributedDataParallel

        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    def _plain_model(self):
        """The model whose weights a checkpoint holds: a DistributedDataParallel's inner module,
        so that a run resumes with any number of ranks (no ``module.`` prefix in the keys), and
        a compiled module's model, so that it resumes with or without ``compile``."""
        from .compile import CompiledModule

        model = self._inner()
        return model._orig_mod if isinstance(model, CompiledModule) else model

    def _sum_over_ranks(self, *values):
        """``values`` (an epoch's loss sum, correct count, examples) summed over the ranks."""
        if self.comm is None or self.comm.size == 1:
            return values
        import numpy as np

        sums = self.comm.allreduce(np.array(values, dtype=np.float64), "sum")
        return tuple(type(v)(t) for v, t in zip(values, sums.tolist()))

    def _start_on_every_rank(self, resume):
        """``_start`` on rank 0 first (it may clean the run directory), then on the others, which
        only read it; all must continue after the same epoch (a directory every rank sees)."""
        if self.comm is None or self.comm.size == 1:
            return self._start(resume)
        import numpy as np

        if self._is_writer():
            start = self._start(resume)
        self.comm.barrier()
        if not self._is_writer():
            start = self._start(resume)
        starts = self.comm.allgather(np.array([start], dtype=np.int64))[:, 0].tolist()
        if len(set(starts)) > 1:
            raise CheckpointError(
                f"{self.out_dir}: the ranks would continue after different epochs ({starts}, by rank); "
                "every rank must see the same run directory (a shared file system)")
        return start

    def _start(self, resume):
        """The epoch to continue after: 0 for a fresh start, else the restored one."""
        self.history, self.first_loss = [], None
        if self.out_dir is None:
            if resume:
                raise ValueError("resume: the trainer has no out_dir to resume from")
            return 0
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise CheckpointError(f"{self.out_dir}: exists and is not a directory; choose another output directory")
        state = run_state(self.out_dir, self.epochs)
        if state.state == "fresh":
            for name in state.leftovers:
                ckpt.remove_file(self.out_dir / name)
            if resume:
                self.log(f"{self.out_dir}: no complete checkpoint to resume from; starting at epoch 1")
            if state.leftovers:
                self.log(f"{self.out_dir}: removed what an interrupted start left: {', '.join(state.leftovers)}")
            return 0
        if not resume:
            raise CheckpointError(
                f"{self.out_dir} already holds a run (checkpoint {state.checkpoint.name}); resume it, "
                "or choose another output directory")
        return self.restore()

    def _best_epoch(self):
        best = None
        for r in self.history:
            if best is None or r["test_acc"] > best["test_acc"]:
                best = r
        return best

    def _write_derived(self):
        """After the newest checkpoint is complete: metrics.jsonl, best.json and curves.png from
        its history, then the pruning of older checkpoints."""
        out = self.out_dir
        ckpt.atomic_write(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history).encode())
        best = self._best_epoch() if self.keep_best and self.history else None
        if best is not None:
            e = best["epoch"]
            ckpt.atomic_write(out / ckpt.BEST, json.dumps(
                {"epoch": e, "checkpoint": f"epoch-{e:03d}.json", "test_acc": best["test_acc"]}).encode())
        elif (out / ckpt.BEST).exists():  # a pointer that pruning would leave dangling
            ckpt.remove_file(out / ckpt.BEST)
        plot_curves(out / "metrics.jsonl", out / "curves.png")
        ckpt.prune_checkpoints(out, self.keep, protect=(best["epoch"],) if best else ())

    def _write_epoch(self, epoch):
        meta = dict(self.metadata)
        meta.update({"rng_state": dn_random.get_state(), "epochs": self.epochs, "history": self.history,
                     "first_loss": self.first_loss})
        if self.scheduler is not None:
            meta["scheduler"] = self.scheduler.state_dict()
        ckpt.save_checkpoint(self.out_dir, epoch, self._plain_model(), self.optimizer, meta, keep=0)
        self._write_derived()

    # ---- resume -------------------------------------------------------------------------------------
    def restore(self):
        """Load the newest intact checkpoint in ``out_dir``; return the epoch it ended. A damaged
        newer checkpoint is renamed aside (``*.damaged``) with a :class:`CheckpointWarning`."""
        out = self.out_dir
        if out is None:
            raise ValueError("resume: the trainer has no out_dir to resume from")
        removed = ckpt.remove_orphans(out)
        if removed:
            self.log(f"{out}: removed what an interrupted write left: {', '.join(removed)}")
        epochs = ckpt.checkpoint_epochs(out)
        if not epochs:
            raise CheckpointError(f"{out}: no checkpoint (epoch-NNN.json) in this directory")
        damaged = []
        for e in reversed(epochs):
            path = out / f"epoch-{e:03d}.json"
            try:
                meta = self._load(path)
                break
            except CheckpointError as exc:
                damaged.append((path, exc))
        else:
            raise CheckpointError(f"{out}: no intact checkpoint to resume from (delete the directory or "
                                  f"choose another to start over); the newest: {damaged[0][1]}")
        for bad, exc in damaged:
            warnings.warn(f"{exc}; resuming from {path.name} instead (the damaged files are kept as "
                          f"{bad.stem}.*.damaged)", CheckpointWarning, stacklevel=2)
            for suffix in (".json", ".safetensors"):
                f = bad.with_suffix(suffix)
                if f.exists():
                    f.replace(f.with_name(f.name + ".damaged"))
        epoch = meta["epoch"]
        if self._is_writer():
            self._write_derived()
        self.log(f"resumed from epoch {epoch} ({out})")
        return epoch

    def _load(self, path):
        """Check checkpoint ``path`` whole, then load it into the model, optimizer, scheduler and
        RNG; any problem is a CheckpointError naming the file."""
        meta, model_state, optim_state = ckpt.load_checkpoint(path)
        ckpt.check_finite(model_state, path)
        history = meta.get("history")
        if history is None:  # a checkpoint from before the history was kept in it
            history = _legacy_history(path.parent / "metrics.jsonl", meta["epoch"])
        elif (not isinstance(history, list) or len(history) != meta["epoch"]
                or any(not isinstance(r, dict) or r.get("epoch") != i for i, r in enumerate(history, 1))):
            raise CheckpointError(f"{path}: 'history' must hold one row per epoch 1..{meta['epoch']}")
        if self.keep_best and any(not isinstance(r.get("test_acc"), (int, float)) for r in history):
            raise CheckpointError(f"{path}: 'history' has rows without a test_acc (keep_best needs them)")
        first = meta.get("first_loss")
        if first is not None and not (isinstance(first, (int, float)) and math.isfinite(first)):
            raise CheckpointError(f"{path}: 'first_loss' must be a finite number, got {first!r}")
        if not isinstance(meta.get("rng_state"), dict):
            raise CheckpointError(f"{path}: no 'rng_state' object to continue the random stream from")
        if optim_state is not None:
            ckpt.check_finite(optim_state["state"], path)
            saved = meta["optimizer"]["type"]
            if saved != type(self.optimizer).__name__:
                raise CheckpointError(f"{path}: holds {saved} state but the optimizer is "
                                      f"{type(self.optimizer).__name__}")
        try:
            self._plain_model().load_state_dict(model_state)
            if optim_state is not None:
                self.optimizer.load_state_dict(optim_state)
            if self.scheduler is not None and "scheduler" in meta:
                self.scheduler.load_state_dict(meta["scheduler"])
            dn_random.set_state(meta["rng_state"])
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise CheckpointError(f"{path}: does not fit this model/optimizer: {msg}") from None
        self.history, self.first_loss = history, first
        return meta


def _legacy_history(metrics, epoch):
    """The rows of metrics.jsonl up to ``epoch`` (older checkpoints kept no history)."""
    try:
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("epoch"), int) and r["epoch"] <= epoch]


def _format_row(row, task="classification"):
    parts = [f"epoch {row['epoch']}", f"train_loss {row['train_loss']:.4f}", f"train_acc {row['train_acc']:.4f}"]
    if "test_acc" in row:
        parts.append(f"test_acc {row['test_acc']:.4f}")
    if "test_perplexity" in row:
        parts.append(f"test_ppl {row['test_perplexity']:.2f}")
    unit = "seq/s" if task == "language_model" else "img/s"
    parts += [f"{row['epoch_seconds']:.1f} s", f"{row['examples_per_sec']:.0f} {unit}"]
    return "  ".join(parts)


def plot_curves(metrics_path, png_path):
    """Loss and accuracy per epoch as a PNG (needs matplotlib: pip install 'divenet[plot]')."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import io

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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    ckpt.atomic_write(png_path, buf.getvalue())
    return png_path
