"""ONNX export: trace one eval-mode forward pass, then write each recorded op as ONNX nodes.

Tracing: every divenet op goes through ``Function.apply`` (autograd.py), so while a trace runs
an ``autograd.OpHooks`` of the tracing thread appends each application (op class, inputs,
options, outputs, and the module path it ran in) to a list; other threads run untouched.
Residual adds, concatenations, flatten, channel shuffle and custom forwards are therefore
recorded as they run, whatever module wrote them. An in-place op in the
forward is refused (its effect would be lost).

Dynamic batch: the forward runs twice, at the example's batch size b and at b + 1; the axes
whose size differs between the two traces follow the batch (they become ``batch`` in the
graph's shapes, and -1 or 0 in Reshape targets). Anything else that differs (another op
sequence, a value computed outside the traced ops) is an error rather than a wrong graph.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np

from .. import autograd
from ..autograd import no_grad
from ..backend import cpu, transfer
from ..tensor import Tensor
from .ops import EXPORT, ExportError

__all__ = ["export", "ExportError", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17
MIN_OPSET = 13  # Unsqueeze/Squeeze/Split/ReduceSum take axes as inputs from here on

_signatures = {}


class _Op:
    """One recorded op application."""

    __slots__ = ("cls", "kind", "inputs", "kwargs", "outputs", "path", "in_shapes", "out_shapes",
                 "dtypes", "in_vary", "out_vary")

    def __init__(self, cls, inputs, kwargs, outputs, path):
        self.cls, self.kind = cls, cls.__name__
        self.inputs, self.outputs, self.path = inputs, outputs, path
        self.kwargs = {**_defaults(cls, len(inputs)), **kwargs}
        self.in_shapes = [tuple(getattr(t, "shape", ())) if t is not None else None for t in inputs]
        self.out_shapes = [tuple(o.shape) for o in outputs]
        self.dtypes = [getattr(t, "dtype", None) for t in inputs]
        self.in_vary = [() for _ in inputs]
        self.out_vary = [() for _ in outputs]


def _defaults(cls, n_inputs):
    """The defaults of ``cls.forward``'s options (the parameters after the ``n_inputs``
    positional inputs), so that every recorded op carries all its options."""
    params = _signatures.get(cls)
    if params is None:
        params = _signatures[cls] = list(inspect.signature(cls.forward).parameters.values())[1:]
    out, positional = {}, 0
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and positional < n_inputs:
            positional += 1
            continue
        if p.default is not p.empty:
            out[p.name] = p.default
    return out


def _module_path():
    from ..nn.module import _call_stack, _module_path as path

    stack = getattr(_call_stack, "modules", None)
    return path(stack) if stack and len(stack) > 1 else ""


class _Recorder(autograd.OpHooks):
    """Appends each op application of this thread to ``ops``; refuses in-place ops."""

    def __init__(self, ops):
        self.ops, self.depth = ops, 0

    def apply(self, cls, inputs, kwargs):
        if self.depth:
            return autograd.run_apply(cls, inputs, kwargs)
        self.depth += 1  # an op that applies others inside its own apply is recorded once
        try:
            out = autograd.run_apply(cls, inputs, kwargs)
        finally:
            self.depth -= 1
        self.ops.append(_Op(cls, inputs, kwargs, out if isinstance(out, tuple) else (out,), _module_path()))
        return out

    def apply_inplace(self, fn, target, others, name, kwargs):
        where = _module_path()
        raise ExportError(f"{where + ': ' if where else ''}the forward pass changes a tensor in place "
                          f"({name}); an exported graph has no in-place ops: write it out of place "
                          "(x = x + y)")


def _flat_outputs(out):
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat_outputs(o)]
    if out is None:
        return []
    raise ExportError(f"the model returned a {type(out).__name__}; export needs Tensors (or "
                      "tuples/lists of them)")


def _trace(model, inputs):
    ops = []
    with no_grad(), _Recorder(ops):
        out = model(*inputs)
    return ops, _flat_outputs(out)


# ---- comparing the two traces --------------------------------------------------------------------
def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and (
            a is b or (a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, slice) and isinstance(b, slice):
        return _same((a.start, a.stop, a.step), (b.start, b.stop, b.step))
    if hasattr(a, "array") or hasattr(b, "array"):  # a device-side array in the options
        return a is b
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return a is b


def _vary(s1, s2, what):
    if len(s1) != len(s2):
        raise ExportError(f"{what} has rank {len(s1)} at one batch size and {len(s2)} at another; "
                          "export with dynamic_batch=False")
    return tuple(a for a, (m, n) in enumerate(zip(s1, s2)) if m != n)


_SHAPE_OPTIONS = {"Reshape": "shape", "BroadcastTo": "shape"}  # may follow the batch size


def _compare(t1, t2, b1, b2):
    """Mark the batch axes of every recorded value; refuse traces that differ otherwise."""
    ops1, out1 = t1
    ops2, out2 = t2
    where = f"at batch sizes {b1} and {b2}"
    if len(ops1) != len(ops2) or any(a.cls is not b.cls for a, b in zip(ops1, ops2)):
        k = next((i for i, (a, b) in enumerate(zip(ops1, ops2)) if a.cls is not b.cls),
                 min(len(ops1), len(ops2)))
        seen = [f"{t[k].kind} in {t[k].path or 'the model'}" if k < len(t) else "the end" for t in (ops1, ops2)]
        raise ExportError(f"the forward pass runs different ops {where} (op {k}: {seen[0]} vs "
                          f"{seen[1]}); export with dynamic_batch=False")
    for k, (a, b) in enumerate(zip(ops1, ops2)):
        skip = _SHAPE_OPTIONS.get(a.kind)
        for key, v in a.kwargs.items():
            if key != skip and not _same(v, b.kwargs.get(key)):
                raise ExportError(f"{_label(a)}: its option {key}={v!r} changes with the batch size "
                                  f"({where}: {b.kwargs.get(key)!r}); export with dynamic_batch=False")
        a.in_vary = [_vary(s, t, f"input {i} of {_label(a)}") if s is not None else ()
                     for i, (s, t) in enumerate(zip(a.in_shapes, b.in_shapes))]
        a.out_vary = [_vary(s, t, f"output {i} of {_label(a)}") for i, (s, t) in
                      enumerate(zip(a.out_shapes, b.out_shapes))]
    if len(out1) != len(out2):
        raise ExportError(f"the model returns {len(out1)} tensors at batch {b1} but {len(out2)} at {b2}")
    return [_vary(tuple(x.shape), tuple(y.shape), f"output {i}") for i, (x, y) in enumerate(zip(out1, out2))]


def _host(a):
    """A NumPy copy of a CuPy (or simulated-device) array; NumPy arrays as they are."""
    if isinstance(a, np.ndarray) or a is None:
        return a
    if hasattr(a, "shape") and not isinstance(a, np.generic):
        return transfer(a, cpu())
    return np.asarray(a)


def _label(op):
    return f"{op.path} ({op.kind})" if op.path else op.kind


# ---- the graph builder ---------------------------------------------------------------------------
class _Graph:
    """Turns a trace into ONNX nodes and initializers (the ``g`` of the op table)."""

    def __init__(self, model, inputs, input_names, second, opset):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.opset = opset
        self.nodes, self.initializers = [], []
        self._names = set(input_names)
        self._counter = 0
        self._consts = {}  # id(array) -> initializer name (each constant stored once)
        self._keep = []  # arrays made here, kept alive so that their ids stay unique
        self.source = {}  # id(Tensor) -> value name
        self.value_of = {}  # value name -> constant array (initializers)
        self.tensor_names = {}  # id(Tensor or array) -> the model's name for it
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            self.tensor_names.setdefault(id(t), name)
            self.tensor_names.setdefault(id(t.array), name)
        for t, name in zip(inputs, input_names):
            self.source[id(t)] = name
        self.second = second  # ops of the second trace (constants are compared with them)
        self._op = None

    def fresh(self, base):
        self._counter += 1
        name = f"{base}_{self._counter}"
        while name in self._names:
            self._counter += 1
            name = f"{base}_{self._counter}"
        self._names.add(name)
        return name

    def const(self, array, name=None):
        key = id(array)
        if key in self._consts:
            return self._consts[key]
        a = _host(array)
        name = name or self.tensor_names.get(key) or "const"
        name = name if name not in self._names else self.fresh(name)
        self._names.add(name)
        self.initializers.append(self.numpy_helper.from_array(np.require(a, requirements="C"), name))
        self.value_of[name] = a
        self._consts[key] = name
        self._keep.append(array)
        return name

    def _constant(self, op, i):
        """(array, model's name or None) of input ``i`` when it is not made by a traced op, else
        None. A tensor that is not a parameter or buffer must be the same in both traces."""
        t = op.inputs[i]
        if t is None or (isinstance(t, Tensor) and id(t) in self.source):
            return None
        arr = t.array if isinstance(t, Tensor) else t
        if not hasattr(arr, "shape"):
            arr = np.asarray(arr)
        known = self.tensor_names.get(id(t)) or self.tensor_names.get(id(arr))
        if known is None and self.second is not None:
            other = self.second[self._index].inputs[i]
            other = other.array if isinstance(other, Tensor) else other
            if not _same(_host(arr), _host(other)):
                raise ExportError(f"{_label(op)}: input {i} is a tensor made outside the traced ops "
                                  "(e.g. by a comparison, argmax or a NumPy array) whose value changes "
                                  "with the input; it cannot be stored as a constant")
        return arr, known

    # the interface the op table uses
    def input(self, op, i):
        """The value name of input ``i`` ('' for None); a constant becomes an initializer."""
        t = op.inputs[i]
        if t is None:
            return ""
        found = self._constant(op, i)
        if found is None:
            return self.source[id(t)]
        name = self.const(*found)
        if isinstance(t, Tensor):
            self.source[id(t)] = name
        return name

    def value(self, op, i):
        """The value of input ``i`` as a NumPy array when it is constant (a parameter, buffer or
        constant), else None; no initializer is made for it."""
        found = self._constant(op, i)
        return None if found is None else _host(found[0])

    def name_of(self, op, i):
        """The model's name of input ``i`` (its state_dict key), for initializers derived from it."""
        found = self._constant(op, i)
        return (found[1] if found else None) or self.source.get(id(op.inputs[i])) or "const"

    def batch_dim(self, op):
        """0 (copy the input's batch dim) in a Reshape target when axis 0 follows the batch."""
        return 0 if 0 in op.in_vary[0] else op.in_shapes[0][0]

    def shape_const(self, dims):
        return self.const(np.asarray(dims, dtype=np.int64))

    def node(self, op_type, inputs, outputs=1, **attrs):
        prefix = f"{self._op.path}/" if self._op is not None and self._op.path else ""
        base = f"{prefix}{op_type}"
        node_name = self.fresh(base)
        outs = [f"{node_name}_out{k}" if outputs > 1 else f"{node_name}_out" for k in range(outputs)]
        self._names.update(outs)
        while inputs and inputs[-1] == "":  # trailing optional inputs are left out
            inputs = inputs[:-1]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs, name=node_name, **attrs))
        return outs[0] if outputs == 1 else outs

    def emit(self, index, op):
        fn = EXPORT.get(op.kind)
        if fn is None:
            raise ExportError(f"{_label(op)}: divenet op {op.kind} has no ONNX export (the op table "
                              "is divenet/onnx/ops.py)")
        self._op, self._index = op, index
        try:
            names = fn(self, op)
        except ExportError as exc:
            if op.path and not str(exc).startswith(op.path):
                raise ExportError(f"{op.path}: {exc}") from None
            raise
        names = [names] if isinstance(names, str) else list(names)
        for t, name in zip(op.outputs, names):
            self.source[id(t)] = name


def _as_inputs(example_input):
    items = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    out = []
    for i, x in enumerate(items):
        if isinstance(x, np.ndarray):
            x = Tensor(x)
        if not isinstance(x, Tensor):
            raise TypeError(f"export: example_input must be a Tensor, a NumPy array or a tuple of them, "
                            f"got {type(x).__name__}" + (f" at position {i}" if len(items) > 1 else ""))
        out.append(x)
    if not out:
        raise ValueError("export: example_input is empty; give the tensor(s) the model takes")
    return out


def _grown(inputs):
    """The inputs with one more row on axis 0 (a copy of their first)."""
    out = []
    for x in inputs:
        if x.ndim == 0:
            raise ValueError("export: dynamic_batch needs inputs with a batch axis 0, got a 0-d input; "
                             "pass dynamic_batch=False")
        a = x.numpy()
        out.append(Tensor(np.concatenate([a, a[:1]]), device=x.device))
    return out


def _names(given, count, default, what):
    if given is None:
        return [default] if count == 1 else [f"{default}_{k}" for k in range(count)]
    names = [given] if isinstance(given, str) else list(given)
    if len(names) != count or not all(isinstance(n, str) and n for n in names) or len(set(names)) != count:
        raise ValueError(f"export: {what} must be {count} distinct non-empty names, got {given!r}")
    return names


def _value_info(helper, name, t, vary):
    shape = ["batch" if a in vary else int(n) for a, n in enumerate(t.shape)]
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype)), shape)


def build(model, example_input, opset=DEFAULT_OPSET, dynamic_batch=True, input_names=None,
          output_names=None, metadata=None):
    """The ONNX ModelProto of ``model`` (see :func:`export`), without writing it."""
    import onnx
    from onnx import helper

    from ..nn.module import Module

    if not isinstance(model, Module):
        raise TypeError(f"export: model must be a divenet Module, got {type(model).__name__}")
    top = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ValueError(f"export: opset must be an int from {MIN_OPSET} to {top} (this onnx "
                         f"package's newest), got {opset!r}")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"export: metadata must be a dict of names to JSON values, got {type(metadata).__name__}")
    inputs = _as_inputs(example_input)
    in_names = _names(input_names, len(inputs), "input", "input_names")
    was_training = model.training
    model.eval()
    try:
        first = _trace(model, inputs)
        second = _trace(model, _grown(inputs)) if dynamic_batch else None
    finally:
        model.train(was_training)
    ops, outs = first
    if not outs:
        raise ExportError("export: the model returned no tensors")
    b = inputs[0].shape[0] if inputs[0].ndim else 1
    out_vary = _compare(first, second, b, b + 1) if dynamic_batch else [() for _ in outs]
    out_names = _names(output_names, len(outs), "output", "output_names")

    g = _Graph(model, inputs, in_names, second[0] if second else None, opset)
    for k, op in enumerate(ops):
        g.emit(k, op)
    # the graph's outputs: rename the values that hold them (or pass inputs/constants through)
    rename = {}
    g._op = None
    for t, name in zip(outs, out_names):
        src = g.source.get(id(t))
        if src is None:
            src = g.const(t.array)
        if src in rename or src in in_names or src in g.value_of:
            g.nodes.append(helper.make_node("Identity", [rename.get(src, src)], [name],
                                            name=g.fresh("Identity")))
        else:
            rename[src] = name
    for node in g.nodes:
        node.output[:] = [rename.get(o, o) for o in node.output]
        node.input[:] = [rename.get(i, i) for i in node.input]
    graph = helper.make_graph(
        g.nodes, type(model).__name__,
        [_value_info(helper, n, t, (0,) if dynamic_batch and t.ndim else ()) for n, t in zip(in_names, inputs)],
        [_value_info(helper, n, t, v) for n, t, v in zip(out_names, outs, out_vary)],
        initializer=g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="divenet",
                              producer_version=_version())
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    if metadata:
        helper.set_model_props(proto, {str(k): json.dumps(v) for k, v in metadata.items()})
    onnx.checker.check_model(proto)
    return proto


def _version():
    from .. import __version__

    return __version__


def export(model, example_input, path, opset=DEFAULT_OPSET, dynamic_batch=True, input_names=None,
           output_names=None, metadata=None):
    """Write ``model`` as an ONNX file at ``path``; returns the ModelProto.

    The model runs once (twice with ``dynamic_batch``) in eval mode on ``example_input`` (a
    Tensor, a NumPy array or a tuple of them); the ops it applies become the graph, its
    parameters and buffers the initializers (named as in ``state_dict()``). ``dynamic_batch``
    makes axis 0 of every input, and the output axes that follow it, a ``batch`` dimension.
    ``metadata`` (names to JSON-able values) goes into the file's metadata_props, each value
    JSON-encoded. An op without an ONNX form raises ``ExportError`` naming it and the module
    it ran in."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise TypeError(f"export: path must be a file path, got {path!r}")
    proto = build(model, example_input, opset, dynamic_batch, input_names, output_names, metadata)
    import onnx

    onnx.save(proto, str(path))
    return proto


# ---- the command line's export -------------------------------------------------------------------
def metadata_of(meta, shape):
    """What a checkpoint's metadata tells a user of the ONNX file: the model, its classes (or
    vocabulary) and how an input is prepared (channels, size, normalization, inversion)."""
    keys = ("model", "kind", "classes", "vocab", "dataset", "num_classes", "in_channels", "mean",
            "std", "invert")
    out = {k: meta[k] for k in keys if k in meta and meta[k] is not None}
    if meta.get("kind", "image") == "image":
        out["input_size"] = int(shape[-1]) if shape[-1] == shape[-2] else [int(shape[-2]), int(shape[-1])]
        out["in_channels"] = int(shape[0])
        out.setdefault("invert", False)
    return out


def export_command(model, meta, onnx_path, shape, opset):
    """``divenet export``: ``model`` built (a zoo model or a loaded checkpoint, ``meta`` its
    metadata), exported at the input ``shape`` (without batch axis). Returns the line to print."""
    import divenet as dn

    if meta.get("kind", "image") == "text":
        x = dn.zeros(1, *shape, dtype="int64")  # token ids
    else:
        x = dn.tensor(np.random.default_rng(0).random((1, *shape), dtype=np.float32))
    proto = export(model, x, onnx_path, opset=opset, metadata=metadata_of(meta, shape))
    size = Path(onnx_path).stat().st_size
    return (f"wrote {onnx_path}: {meta.get('model', type(model).__name__)}, input (batch, "
            f"{', '.join(map(str, shape))}), opset {opset}, {len(proto.graph.node)} nodes, "
            f"{size / 1e6:.1f} MB")
