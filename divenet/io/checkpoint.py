"""Checkpoints that a crash cannot corrupt.

A checkpoint of epoch k is two files in the run directory: ``epoch-00k.safetensors`` (model
weights under ``model.<name>``, optimizer state under ``optim.<i>.<slot>``) and
``epoch-00k.json`` (what to rebuild the model with, the optimizer's hyper-parameters, the RNG
state, the epoch, and the SHA-256 of the weights file). Each file is written to a temporary
name, flushed to disk and renamed into place; the JSON comes last, so a checkpoint exists only
once both files are whole, and loading checks the hash. Older checkpoints are pruned only after
a newer one is complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

_NAME = re.compile(r"^epoch-(\d+)\.json$")

class CheckpointError(ValueError):
    pass

def _safetensors():
    try:
        from safetensors import numpy as st
    except ImportError:
        raise CheckpointError("checkpoints need safetensors: pip install 'divenet[io]'") from None
    return st

def _atomic_write(path: Path, data: bytes):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

def save_checkpoint(run_dir, epoch, model, optimizer=None, metadata=None, keep=2):
    """Write the checkpoint of ``epoch`` into ``run_dir``; return the JSON file's path."""
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
                tensors[f"optim.{k}"] = v.copy(order="C")
            else:
                scalars[k] = v.item() if hasattr(v, "item") else v
        optim_meta = {"type": type(optimizer).__name__, "param_groups": osd["param_groups"],
                      "scalars": scalars}
    blob = st.save(tensors)
    weights = run_dir / f"epoch-{epoch:03d}.safetensors"
    _atomic_write(weights, blob)
    meta = dict(metadata or {})
    meta.update({"epoch": epoch, "weights": weights.name,
                 "weights_sha256": hashlib.sha256(blob).hexdigest(), "optimizer": optim_meta})
    path = run_dir / f"epoch-{epoch:03d}.json"
    _atomic_write(path, json.dumps(meta, indent=1).encode())
    for old in sorted(_epochs(run_dir))[:-keep] if keep else []:
        for suffix in (".json", ".safetensors"):
            (run_dir / f"epoch-{old:03d}{suffix}").unlink(missing_ok=True)
    return path

def _epochs(run_dir):
    return [int(m.group(1)) for p in Path(run_dir).iterdir() if (m := _NAME.match(p.name))]

def find_checkpoint(path):
    """The JSON file of a checkpoint: ``path`` itself, its .json twin, or the newest complete
    checkpoint in a run directory."""
    path = Path(path)
    if path.is_dir():
        epochs = _epochs(path)
        if not epochs:
            raise CheckpointError(f"{path}: no checkpoint (epoch-NNN.json) in this directory")
        return path / f"epoch-{max(epochs):03d}.json"
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    return path

def load_metadata(path):
    """The JSON metadata of a checkpoint (``path`` as in :func:`find_checkpoint`), without
    reading the weights."""
    meta_path = find_checkpoint(path)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: not a readable divenet checkpoint ({exc})") from None
    if not isinstance(meta, dict) or "weights" not in meta:
        raise CheckpointError(f"{meta_path}: not a readable divenet checkpoint (no weights file named)")
    return meta_path, meta


def load_checkpoint(path):
    """Read and verify a checkpoint: returns (metadata, model_state, optimizer_state or None)."""
    st = _safetensors()
    meta_path, meta = load_metadata(path)
    weights = meta_path.with_name(meta["weights"])
    try:
        blob = weights.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{meta_path}: not a readable divenet checkpoint ({exc})") from None
    if hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256"):
        raise CheckpointError(f"{weights}: contents do not match the hash in {meta_path.name}; "
                              "the file is damaged or from another checkpoint")
    arrays = st.load(blob)
    model_state = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    optim_state = None
    if meta.get("optimizer"):
        o = meta["optimizer"]
        state = {k[len("optim."):]: v for k, v in arrays.items() if k.startswith("optim.")}
        state.update(o.get("scalars", {}))
        optim_state = {"state": state, "param_groups": o["param_groups"]}
    return meta, model_state, optim_state
