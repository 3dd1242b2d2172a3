"""ONNX import: ``load(path)`` gives a divenet Module that runs the graph.

Each node is prepared once, when the file loads: its attributes are read and the op table
(ops.py, ``IMPORT``) gives a runner made of divenet functions, so ``forward`` is one loop over
prepared steps (a value is dropped after its last use). Initializers become the module's
tensors (floating ones Parameters, so the model can be fine-tuned; moved by ``.to(device)``);
nodes whose inputs are all constant (shape arithmetic on constants, Constant nodes) run once at
load time. The file's metadata_props are in ``module.metadata`` (values JSON-decoded).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..autograd import no_grad
from ..nn.module import Module, Parameter
from ..tensor import Tensor
from .ops import IMPORT

__all__ = ["load", "OnnxModule", "predict_metadata"]


class _Node:
    """What an import builder sees of one ONNX node."""

    def __init__(self, proto, opset, module, consts, index):
        from onnx import helper

        self.op_type = proto.op_type
        self.name = proto.name or f"{proto.op_type}_{index}"
        self.label = f"node {self.name!r} ({proto.op_type})"
        self.inputs, self.outputs = list(proto.input), list(proto.output)
        self.opset = opset
        self.attrs = {}
        for a in proto.attribute:
            v = helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode()
            elif isinstance(v, list) and v and isinstance(v[0], bytes):
                v = [s.decode() for s in v]
            self.attrs[a.name] = v
        self._module, self._consts = module, consts

    def const(self, i):
        """Input ``i`` as a NumPy array when it is known at load time, else None."""
        if i >= len(self.inputs) or not self.inputs[i]:
            return None
        t = self._consts.get(self.inputs[i])
        return None if t is None else t.numpy()

    def param(self, array, name):
        """A new Parameter of the module (derived from constants), named after this node."""
        key = f"{self.name}.{name}"
        p = Parameter(np.ascontiguousarray(array))
        self._module.derived[key] = p
        return p


class OnnxModule(Module):
    """A divenet Module running an ONNX graph: ``forward(*inputs)`` takes the graph's inputs
    in order (Tensors or NumPy arrays) and returns its output, or a tuple of outputs."""

    def __init__(self, proto, source="<model>"):
        graph = proto.graph
        self.source = str(source)
        self.metadata = {p.key: _decode(p.value) for p in proto.metadata_props}
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        if opset is None:
            raise ValueError(f"{source}: the model imports no standard ONNX opset")
        self.opset = opset
        from onnx import numpy_helper

        self.weights = {}  # initializer name -> Tensor (dict keys keep ONNX's names)
        self.derived = {}  # tensors made from constants at load time
        consts = {}
        for init in graph.initializer:
            arr = np.array(numpy_helper.to_array(init))
            t = Parameter(arr) if arr.dtype.kind == "f" else Tensor(arr)
            self.weights[init.name] = t
            consts[init.name] = t
        self.input_names = [i.name for i in graph.input if i.name not in consts]
        self.output_names = [o.name for o in graph.output]
        self.input_info = [(i.name, _shape_of(i)) for i in graph.input if i.name not in consts]
        unknown = [(n.op_type, n.name or f"#{k}") for k, n in enumerate(graph.node)
                   if n.op_type not in IMPORT or n.domain not in ("", "ai.onnx")]
        if unknown:
            shown = ", ".join(f"{t} (node {name!r})" for t, name in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise ValueError(f"{source}: ONNX operators not supported by divenet.onnx.load: {shown}{more}; "
                             f"supported: {', '.join(sorted(IMPORT))}")
        steps = []
        for k, proto_node in enumerate(graph.node):
            node = _Node(proto_node, opset, self, consts, k)
            runner = IMPORT[node.op_type](node)
            ins = node.inputs
            if all(not i or i in consts for i in ins):
                with no_grad():  # constant folding: run it now, once
                    outs = _run_step(node, runner, [consts[i] if i else None for i in ins])
                for name, t in zip(node.outputs, outs):
                    if name:
                        consts[name] = self.derived[f"{node.name}.{name}"] = t if isinstance(t, Tensor) else Tensor(t)
                continue
            steps.append((node, runner, ins))
        self._consts = consts
        used = {i for _, _, ins in steps for i in ins} | set(self.output_names)
        for name in [n for n in self.weights if n not in used]:  # e.g. LSTM weights laid out anew
            del self.weights[name]
        missing = [o for o in self.output_names if o not in consts and
                   not any(o in s[0].outputs for s in steps) and o not in self.input_names]
        if missing:
            raise ValueError(f"{source}: graph outputs {missing} are not computed by any node")
        # the last step that reads each value, so that forward can drop it after that step
        last = {}
        for k, (_, _, ins) in enumerate(steps):
            for i in ins:
                if i and i not in consts:
                    last[i] = k
        keep = set(self.output_names)
        self._steps = [(node, runner, ins, [i for i in set(ins) if i and last.get(i) == k and i not in keep])
                       for k, (node, runner, ins) in enumerate(steps)]

    def forward(self, *inputs):
        if len(inputs) != len(self.input_names):
            raise ValueError(f"{self.source}: the model takes {len(self.input_names)} input(s) "
                             f"({', '.join(self.input_names)}), got {len(inputs)}")
        env = {}
        device = self.device
        for (name, shape), x in zip(self.input_info, inputs):
            if not isinstance(x, Tensor):
                x = Tensor(np.asarray(x), device=device)
            if shape is not None and (len(shape) != x.ndim or any(
                    isinstance(d, int) and d != n for d, n in zip(shape, x.shape))):
                shown = "x".join(str(d) if isinstance(d, int) else str(d or "?") for d in shape)
                raise ValueError(f"{self.source}: input {name!r} must have shape ({shown}), got "
                                 f"{tuple(x.shape)}")
            env[name] = x
        consts = self._consts
        for node, runner, ins, drop in self._steps:
            args = [(env[i] if i in env else consts[i]) if i else None for i in ins]
            outs = _run_step(node, runner, args)
            for name, t in zip(node.outputs, outs):
                if name:
                    env[name] = t
            for i in drop:
                env.pop(i, None)
        results = tuple(env[o] if o in env else consts[o] for o in self.output_names)
        return results[0] if len(results) == 1 else results

    def extra_repr(self):
        return (f"{self.source}: {len(self._steps)} steps, inputs {self.input_names}, "
                f"outputs {self.output_names}, opset {self.opset}")


def _run_step(node, runner, args):
    while args and args[-1] is None:  # trailing optional inputs left out
        args = args[:-1]
    try:
        out = runner(*args)
    except (ValueError, TypeError) as exc:
        if str(exc).startswith(node.label):
            raise
        raise type(exc)(f"{node.label}: {exc}") from exc
    return out if isinstance(out, tuple) else (out,)


def _decode(value):
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _shape_of(value_info):
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in t.tensor_type.shape.dim]


def load(path):
    """The ONNX file (or ModelProto, or bytes) ``path`` as a divenet Module (eval mode). An
    operator outside the supported set is a ValueError naming it and its node."""
    import onnx

    if isinstance(path, onnx.ModelProto):
        proto, source = path, "<ModelProto>"
    elif isinstance(path, (bytes, bytearray)):
        proto, source = onnx.load_from_string(bytes(path)), "<bytes>"
    elif isinstance(path, (str, Path)):
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"{path}: no such ONNX file")
        try:
            proto = onnx.load(str(p))
        except Exception as exc:  # protobuf's DecodeError and friends
            raise ValueError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
        source = str(path)
    else:
        raise TypeError(f"onnx.load: expected a path, bytes or an onnx.ModelProto, got {type(path).__name__}")
    return OnnxModule(proto, source).eval()


def predict_metadata(model):
    """What ``divenet predict`` needs of an ONNX image classifier (kind, in_channels, input_size,
    classes, invert, mean/std), from its metadata or else from its input's static shape."""
    meta = dict(model.metadata)
    if meta.get("kind", "image") != "image":
        raise ValueError(f"{model.source}: a {meta.get('kind')} model, not an image classifier")
    if len(model.input_info) != 1:
        raise ValueError(f"{model.source}: predict needs a model with one input, it has {len(model.input_info)}")
    shape = model.input_info[0][1]
    if "in_channels" not in meta or "input_size" not in meta:
        if not shape or len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            raise ValueError(f"{model.source}: its metadata has no in_channels/input_size and its input "
                             f"shape {shape} is not (batch, C, H, W) with fixed C, H, W")
        meta.setdefault("in_channels", shape[1])
        meta.setdefault("input_size", shape[2] if shape[2] == shape[3] else [shape[2], shape[3]])
    side = meta["input_size"]
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        shown = "x".join(map(str, side)) if isinstance(side, list) else repr(side)
        raise ValueError(f"{model.source}: predict reads square images, but the model takes {shown} inputs")
    meta["kind"] = "image"
    return meta
