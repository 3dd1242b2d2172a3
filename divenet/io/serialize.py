"""``save(obj, f)`` / ``load(f)``: PyTorch's ``torch.save`` / ``torch.load`` without pickle.

``obj`` is a Tensor, a NumPy array, or (nested) dicts, lists and tuples of those and of plain
values (numbers, strings, bools, None): a model's or an optimizer's state dict, a checkpoint
dict. The file is one safetensors file: the arrays are its tensors, named by their path in
``obj`` (``layer.weight``, ``state.0.momentum``), so other safetensors readers find them, and
the structure is JSON under the metadata key ``divenet.structure``. Loading rebuilds the
same structure with the same types (Tensor or NumPy array, tuple or list, dict or
OrderedDict); an object reached twice is stored once and loaded as one object.

A plain safetensors file (from ``safetensors.torch.save_file`` in PyTorch, say) loads as a
dict of Tensors, so ``model.load_state_dict(dn.load(path))`` takes PyTorch weights once they
are converted. divenet never reads pickle files (``.pt``/``.pth`` from ``torch.save``: loading
one can run arbitrary code); :func:`load` says how to convert one.
"""
from __future__ import annotations

import collections
import json
import numbers
from pathlib import Path

import numpy as np

__all__ = ["save", "load", "SerializationError"]

_FORMAT = "divenet"
_STRUCTURE = "divenet.structure"
_SCALARS = (str, bool, type(None), numbers.Integral, numbers.Real)
_CONVERT = ("in PyTorch, `from safetensors.torch import save_file; "
            "save_file(model.state_dict(), 'model.safetensors')`, then dn.load('model.safetensors')")


class SerializationError(ValueError):
    """A file that :func:`load` cannot read (a pickle, a damaged file), or an object
    :func:`save` cannot store."""


def _safetensors():
    try:
        from safetensors import numpy as st
    except ImportError:
        raise SerializationError("divenet.save/load need safetensors: pip install 'divenet[io]'") from None
    return st


# ---- saving --------------------------------------------------------------------------------------

class _Encoder:
    def __init__(self):
        self.arrays = {}  # tensor name -> contiguous little-endian NumPy array
        self.seen = {}    # id(obj) -> its node, for objects reached twice

    def name(self, path):
        base = ".".join(path) or "_"
        name, i = base, 1
        while name in self.arrays:
            name, i = f"{base}#{i}", i + 1
        return name

    def array(self, arr, path, what):
        if arr.dtype.kind in "OSUVMmc":
            raise SerializationError(f"save: {what} at {'.'.join(path) or 'the top'} has dtype "
                                     f"{arr.dtype}, which safetensors cannot store")
        name = self.name(path)
        arr = arr if arr.flags.c_contiguous else arr.copy(order="C")  # ascontiguousarray makes 0-d 1-d
        self.arrays[name] = arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))
        return name

    def encode(self, obj, path):
        from ..tensor import Tensor

        if isinstance(obj, _SCALARS) and not isinstance(obj, np.generic):
            return obj if isinstance(obj, (str, bool, type(None))) else (
                int(obj) if isinstance(obj, numbers.Integral) else float(obj))
        key = id(obj)
        if key in self.seen:
            return self.seen[key]
        if isinstance(obj, Tensor):
            node = {"t": "tensor", "k": self.array(obj.numpy(), path, "a tensor"),
                    "device": str(obj.device)}
            if obj.requires_grad:
                node["grad"] = True
        elif isinstance(obj, np.ndarray):
            node = {"t": "ndarray", "k": self.array(obj, path, "an array")}
        elif isinstance(obj, np.generic):
            node = {"t": "npscalar", "k": self.array(np.asarray(obj), path, "a NumPy scalar")}
        elif isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
            node = {"t": "list" if isinstance(obj, list) else "tuple",
                    "v": [self.encode(v, path + (str(i),)) for i, v in enumerate(obj)]}
        elif isinstance(obj, dict):
            items = []
            for k, v in obj.items():
                if not isinstance(k, (str, bool, int, float, type(None))):
                    raise SerializationError(f"save: dict key {k!r} at {'.'.join(path) or 'the top'} "
                                             f"is a {type(k).__name__}; keys must be str, int, "
                                             f"float, bool or None")
                items.append([k, self.encode(v, path + (str(k),))])
            node = {"t": "odict" if isinstance(obj, collections.OrderedDict) else "dict", "v": items}
        else:
            raise SerializationError(
                f"save: cannot store a {type(obj).__name__} at {'.'.join(path) or 'the top'}; "
                f"divenet.save stores Tensors, NumPy arrays, numbers, strings, bools, None and "
                f"dicts, lists and tuples of them (it never pickles)")
        self.seen[key] = node
        return node


def save(obj, f):
    """Write ``obj`` to ``f`` (a path, written atomically, or a binary file object)."""
    st = _safetensors()
    enc = _Encoder()
    structure = json.dumps(enc.encode(obj, ()), separators=(",", ":"))
    blob = st.save(enc.arrays, metadata={"format": _FORMAT, _STRUCTURE: structure})
    if hasattr(f, "write"):
        f.write(blob)
        return
    from .checkpoint import atomic_write

    atomic_write(Path(f), blob)


# ---- loading -------------------------------------------------------------------------------------

def _read(f):
    if hasattr(f, "read"):
        return f.read(), getattr(f, "name", "<file object>")
    return Path(f).read_bytes(), str(f)


def _header(blob, name):
    """The safetensors header's metadata, after checking that the bytes are one."""
    n = int.from_bytes(blob[:8], "little") if len(blob) >= 8 else 0
    if not (0 < n <= len(blob) - 8 and blob[8:9] == b"{"):
        # safetensors is u64 header length + JSON; torch.save writes a zip or a bare pickle
        if blob[:4] == b"PK\x03\x04" or blob[:1] == b"\x80":
            raise SerializationError(f"{name}: a PyTorch .pt/pickle file; divenet does not read "
                                     f"pickles (loading one can run arbitrary code). Convert it "
                                     f"{_CONVERT}")
        raise SerializationError(f"{name}: not a readable safetensors file (damaged or truncated: "
                                 f"{len(blob)} bytes, header length {n})")
    try:
        header = json.loads(blob[8:8 + n])
        meta = header.get("__metadata__") or {}
    except (ValueError, AttributeError) as exc:
        raise SerializationError(f"{name}: not a readable safetensors file (damaged header: "
                                 f"{exc})") from None
    return meta


class _Decoder:
    def __init__(self, arrays, map_location, name):
        self.arrays, self.map_location, self.name = arrays, map_location, name
        self.seen = {}  # tensor name -> the object made from it (shared objects stay shared)

    def tensor(self, node):
        from ..backend import device as as_device
        from ..tensor import Tensor

        dev = self.map_location
        if dev is None:
            try:
                dev = as_device(node["device"])
            except RuntimeError as exc:  # saved on a GPU this machine lacks
                raise SerializationError(f"{self.name}: holds tensors saved on {node['device']}, "
                                         f"which is not available here ({exc}); load it with "
                                         f"map_location='cpu'") from None
        t = Tensor(self.arrays[node["k"]], device=dev)
        return t.requires_grad_(True) if node.get("grad") else t

    def decode(self, node):
        if not isinstance(node, dict):
            return node
        t = node["t"]
        if t in ("list", "tuple"):
            items = [self.decode(v) for v in node["v"]]
            return items if t == "list" else tuple(items)
        if t in ("dict", "odict"):
            pairs = ((k, self.decode(v)) for k, v in node["v"])
            return dict(pairs) if t == "dict" else collections.OrderedDict(pairs)
        name = node["k"]
        if name not in self.seen:
            if t == "tensor":
                self.seen[name] = self.tensor(node)
            elif t == "ndarray":
                self.seen[name] = self.arrays[name]
            elif t == "npscalar":
                self.seen[name] = self.arrays[name][()]
            else:
                raise ValueError(f"unknown node type {t!r}")
        return self.seen[name]


def load(f, map_location=None, weights_only=True):
    """Read what :func:`save` wrote (the same structure and types), or a plain safetensors file
    as a dict of Tensors. ``map_location``: a device (``'cpu'``, ``'gpu:0'``) for every Tensor;
    by default each goes back to the device it was saved from. ``weights_only`` is accepted for
    PyTorch's code: divenet files never hold code, whatever it says."""
    from ..backend import Device, device as as_device
    from ..tensor import Tensor

    if map_location is not None:
        if not isinstance(map_location, (str, Device)):
            raise TypeError(f"load: map_location must be a device ('cpu', 'gpu:0') or None, got "
                            f"{type(map_location).__name__}")
        map_location = as_device(map_location)
    st = _safetensors()
    blob, name = _read(f)
    meta = _header(blob, name)
    try:
        arrays = st.load(blob)
    except Exception as exc:  # the parser's errors on bad bytes are of several types
        raise SerializationError(f"{name}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != _FORMAT or _STRUCTURE not in meta:
        dev = map_location if map_location is not None else as_device("cpu")
        return {k: Tensor(v, device=dev) for k, v in arrays.items()}
    try:
        return _Decoder(arrays, map_location, name).decode(json.loads(meta[_STRUCTURE]))
    except SerializationError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise SerializationError(f"{name}: its divenet structure is damaged ({type(exc).__name__}: "
                                 f"{exc})") from None
