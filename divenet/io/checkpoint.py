"""Checkpoints that a crash cannot corrupt, and loading that turns any damage into one error.

A checkpoint of epoch k is two files in the run directory: ``epoch-00k.safetensors`` (model
weights under ``model.<name>``, optimizer state under ``optim.<i>.<slot>``) and
``epoch-00k.json`` (what to rebuild the model with, the optimizer's hyper-parameters, the RNG
state, the epoch, and the SHA-256 of the weights file). Each file is written to a temporary
name, flushed to disk and renamed into place; the JSON comes last, so a checkpoint exists only
once both files are whole. Pruning removes the JSON before the weights, so a kill in between
leaves an orphan weights file, which :func:`remove_orphans` deletes. ``docs/rundir.md`` gives
the whole run directory's states.

Loading validates every JSON field's type, the hash, the safetensors header and each tensor's
name and dtype; whatever is wrong is one :class:`CheckpointError` line naming the file.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
from pathlib import Path

import numpy as np

_NAME = re.compile(r"^epoch-(\d+)\.json$")
_WEIGHTS = re.compile(r"^epoch-(\d+)\.safetensors$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_OPTIM_KEY = re.compile(r"^\d+\.[A-Za-z_]\w*$")
BEST = "best.json"  # the pointer to the best checkpoint a run keeps (Trainer(keep_best=True))


class CheckpointError(ValueError):
    pass


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped for an older intact one."""


def _safetensors():
    try:
        from safetensors import numpy as st
    except ImportError:
        raise CheckpointError("checkpoints need safetensors: pip install 'divenet[io]'") from None
    return st


# ---- the only two ways this package changes a run directory (the kill tests patch them) ----------
def atomic_write(path, data: bytes):
    """Write ``data`` to ``path`` so that a kill leaves either the old file or the new one:
    a temporary ``path.tmp``, flushed and fsynced, renamed over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if os.name == "posix":  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_file(path):
    Path(path).unlink(missing_ok=True)


# ---- writing -------------------------------------------------------------------------------------
def check_keep(keep):
    """``keep`` as a count of checkpoints to keep (0 = all); None means 0."""
    if keep is None:
        return 0
    if isinstance(keep, bool) or not isinstance(keep, numbers.Integral):
        raise TypeError(f"keep must be a non-negative integer (0 or None keeps every checkpoint), "
                        f"got {keep!r}")
    if keep < 0:
        raise ValueError(f"keep must be a non-negative integer (0 or None keeps every checkpoint), got {keep}")
    return int(keep)


def save_checkpoint(run_dir, epoch, model, optimizer=None, metadata=None, keep=2):
    """Write the checkpoint of ``epoch`` into ``run_dir``; return the JSON file's path. Then keep
    the newest ``keep`` checkpoints (0 or None: all), see :func:`prune_checkpoints`."""
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 1:
        raise ValueError(f"save_checkpoint: epoch must be a positive integer, got {epoch!r}")
    keep = check_keep(keep)
    st = _safetensors()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}  # already C-ordered copies
    optim_meta = None
    if optimizer is not None:
        osd = optimizer.state_dict()
        scalars = {}
        for k, v in osd["state"].items():
            if hasattr(v, "shape") and v.shape != ():
                tensors[f"optim.{k}"] = np.ascontiguousarray(v)
            else:
                scalars[k] = v.item() if hasattr(v, "item") else v
        optim_meta = {"type": type(optimizer).__name__, "param_groups": osd["param_groups"],
                      "scalars": scalars}
    blob = st.save(tensors)
    weights = run_dir / f"epoch-{epoch:03d}.safetensors"
    atomic_write(weights, blob)
    meta = dict(metadata or {})
    meta.update({"epoch": int(epoch), "weights": weights.name,
                 "weights_sha256": hashlib.sha256(blob).hexdigest(), "optimizer": optim_meta})
    path = run_dir / f"epoch-{epoch:03d}.json"
    atomic_write(path, json.dumps(meta, indent=1).encode())
    if keep:
        prune_checkpoints(run_dir, keep)
    return path


def checkpoint_epochs(run_dir):
    """The epochs of the complete checkpoints (those with their JSON) in ``run_dir``, ascending."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in run_dir.iterdir() if (m := _NAME.match(p.name)))


def prune_checkpoints(run_dir, keep, protect=()):
    """Remove all but the newest ``keep`` checkpoints (0 or None: remove nothing), sparing the
    epochs in ``protect``. The JSON goes first: a kill in between leaves an orphan weights file,
    never a JSON without its weights."""
    keep = check_keep(keep)
    if not keep:
        return []
    run_dir = Path(run_dir)
    protect = set(protect)
    old = [e for e in checkpoint_epochs(run_dir)[:-keep] if e not in protect]
    for e in old:
        remove_file(run_dir / f"epoch-{e:03d}.json")
        remove_file(run_dir / f"epoch-{e:03d}.safetensors")
    return old


def remove_orphans(run_dir):
    """Delete what a kill can leave behind in ``run_dir``: ``*.tmp`` files and weights files
    without their JSON. Returns the names removed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    names = {p.name for p in run_dir.iterdir() if p.is_file()}
    orphans = sorted(n for n in names if n.endswith(".tmp")
                     or (_WEIGHTS.match(n) and n[:-len(".safetensors")] + ".json" not in names))
    for n in orphans:
        remove_file(run_dir / n)
    return orphans


# ---- reading -------------------------------------------------------------------------------------
def find_checkpoint(path):
    """The JSON file of a checkpoint: ``path`` itself, its .json twin, the one a ``best.json``
    pointer names, or the newest complete checkpoint in a run directory."""
    path = Path(path)
    if path.is_dir():
        epochs = checkpoint_epochs(path)
        if not epochs:
            raise CheckpointError(f"{path}: no checkpoint (epoch-NNN.json) in this directory")
        return path / f"epoch-{epochs[-1]:03d}.json"
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.name == BEST:
        ptr = _read_json(path)
        name = ptr.get("checkpoint") if isinstance(ptr, dict) else None
        if not isinstance(name, str) or not _NAME.match(name):
            raise CheckpointError(f"{path}: not a best-checkpoint pointer (no 'checkpoint': 'epoch-NNN.json')")
        target = path.with_name(name)
        if not target.exists():
            raise CheckpointError(f"{path}: names {name}, which does not exist")
        return target
    return path


def _read_json(path):
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{path}: not a readable divenet checkpoint ({exc})") from None


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite_number(v):
    return _is_int(v) or isinstance(v, float) and math.isfinite(v)


def _hyper_ok(v):
    """An optimizer hyper-parameter as JSON holds it: a flag, a finite number, null, or a list
    of finite numbers (Adam's betas)."""
    if v is None or isinstance(v, bool):
        return True
    return _finite_number(v) or isinstance(v, list) and all(_finite_number(x) for x in v)


def _metadata_problem(meta, name):
    """What is wrong with a checkpoint's metadata read from file ``name``, or None."""
    if not isinstance(meta, dict):
        return f"the metadata is a JSON {type(meta).__name__}, not an object"
    for key in ("epoch", "weights", "weights_sha256"):
        if key not in meta:
            return f"no {key!r} field"
    epoch, weights = meta["epoch"], meta["weights"]
    if not _is_int(epoch) or epoch < 1:
        return f"'epoch' must be a positive integer, got {epoch!r}"
    m = _NAME.match(name)
    if m and int(m.group(1)) != epoch:
        return f"'epoch' is {epoch} but the file is named for epoch {int(m.group(1))}"
    if (not isinstance(weights, str) or not weights.endswith(".safetensors") or "/" in weights
            or "\\" in weights or weights.startswith(".") or "\0" in weights):
        return f"'weights' must be a file name ending in .safetensors beside the JSON, got {weights!r}"
    if not isinstance(meta["weights_sha256"], str) or not _SHA.match(meta["weights_sha256"]):
        return "'weights_sha256' must be 64 lowercase hex digits"
    o = meta.get("optimizer")
    if o is not None:
        if not isinstance(o, dict):
            return f"'optimizer' must be an object or null, got {type(o).__name__}"
        if not isinstance(o.get("type"), str):
            return "'optimizer.type' must be a string"
        groups = o.get("param_groups")
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            return "'optimizer.param_groups' must be a list of objects"
        for i, g in enumerate(groups):
            bad = [k for k, v in g.items() if not _hyper_ok(v)]
            if bad:
                return f"'optimizer.param_groups[{i}].{bad[0]}' is {g[bad[0]]!r}, not a finite number or flag"
        scalars = o.get("scalars", {})
        if not isinstance(scalars, dict):
            return "'optimizer.scalars' must be an object"
        for k, v in scalars.items():
            if not _OPTIM_KEY.match(k) or not _hyper_ok(v) or isinstance(v, list):
                return f"'optimizer.scalars' has {k!r}: {v!r}, not '<param>.<slot>': a number"
    return None


def load_metadata(path):
    """The JSON metadata of a checkpoint (``path`` as in :func:`find_checkpoint`), checked but
    without reading the weights: returns (json_path, metadata)."""
    meta_path = find_checkpoint(path)
    meta = _read_json(meta_path)
    problem = _metadata_problem(meta, meta_path.name)
    if problem:
        raise CheckpointError(f"{meta_path}: not a valid divenet checkpoint: {problem}")
    return meta_path, meta


def load_checkpoint(path):
    """Read and verify a checkpoint: returns (metadata, model_state, optimizer_state or None).
    Every kind of damage raises :class:`CheckpointError` naming the file."""
    st = _safetensors()
    meta_path, meta = load_metadata(path)
    weights = meta_path.with_name(meta["weights"])
    try:
        blob = weights.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{meta_path}: its weights file cannot be read ({exc})") from None
    if hashlib.sha256(blob).hexdigest() != meta["weights_sha256"]:
        raise CheckpointError(f"{weights}: contents do not match the hash in {meta_path.name}; "
                              "the file is damaged or from another checkpoint")
    try:
        arrays = st.load(blob)
    except Exception as exc:  # the parser's errors on bad bytes are of several types
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from None
    model_state, optim_arrays = {}, {}
    for k, v in arrays.items():
        # weights and optimizer slots are floating point; only 0-d counters may be integers
        if v.ndim and not np.issubdtype(v.dtype, np.floating):
            raise CheckpointError(f"{weights}: tensor {k!r} is {v.dtype}, not a floating-point type")
        if k.startswith("model.") and len(k) > 6:
            model_state[k[len("model."):]] = v
        elif k.startswith("optim.") and _OPTIM_KEY.match(k[len("optim."):]):
            optim_arrays[k[len("optim."):]] = v
        else:
            raise CheckpointError(f"{weights}: unexpected tensor {k!r} (expected model.* or optim.<i>.<slot>)")
    optim_state = None
    if meta.get("optimizer"):
        o = meta["optimizer"]
        optim_arrays.update(o.get("scalars", {}))
        optim_state = {"state": optim_arrays, "param_groups": o["param_groups"]}
    elif optim_arrays:
        raise CheckpointError(f"{weights}: holds optimizer tensors but {meta_path.name} describes no optimizer")
    return meta, model_state, optim_state


def check_finite(state, path):
    """Raise CheckpointError naming ``path`` and the first tensor of ``state`` (name -> array)
    that holds a NaN or an infinity."""
    for name, v in state.items():
        if hasattr(v, "dtype") and np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            bad = int(v.size - np.isfinite(v).sum())
            raise CheckpointError(f"{path}: tensor {name!r} holds {bad} non-finite value(s) (NaN or inf) "
                                  f"of {v.size}; the run that wrote it had diverged")
    return state
