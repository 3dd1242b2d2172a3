"""The op table, both ways: ``EXPORT`` maps each divenet op (a ``Function`` subclass's name, as
the tracer in export.py records it) to the ONNX nodes that compute it; ``IMPORT`` maps each ONNX
operator to a builder of the divenet code that runs it (load.py). One file, so that a reader
sees at once what each op becomes and where the two directions differ.

Export functions are ``fn(g, op) -> output name(s)``: ``op`` is one recorded application
(``kind``, ``kwargs``, ``in_shapes``/``out_shapes``, ``in_vary``/``out_vary``: the axes whose
size follows the batch size), ``g`` the graph builder (``g.input(op, i)``, ``g.value(op, i)``,
``g.const(array)``, ``g.node(type, inputs, **attrs)``, ``g.opset``).

Import builders are ``fn(n) -> runner``: ``n`` is one ONNX node (``n.attrs``, ``n.const(i)``,
``n.param(array, name)``, ``n.label``, ``n.opset``); the runner takes the node's inputs as
Tensors (None for an omitted optional input) and returns its output(s).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import functional as F
from ..tensor import Tensor, cat, matmul, pad, split, stack, where

EXPORT = {}
IMPORT = {}


class ExportError(ValueError):
    """A traced op has no ONNX form (or not the one asked for)."""


def _exports(*kinds):
    def wrap(fn):
        for k in kinds:
            EXPORT[k] = fn
        return fn
    return wrap


def _imports(*types):
    def wrap(fn):
        for t in types:
            IMPORT[t] = fn
        return fn
    return wrap


def _i64(values):
    return np.asarray(values, dtype=np.int64).reshape(-1)


# =================================================================================================
# export: divenet op -> ONNX nodes
# =================================================================================================
_SAME = {"ReLU": "Relu", "Sigmoid": "Sigmoid", "Tanh": "Tanh", "Neg": "Neg", "Exp": "Exp",
         "Log": "Log", "Sqrt": "Sqrt", "Abs": "Abs", "Clone": "Identity", "_ToDevice": "Identity",
         "Add": "Add", "Sub": "Sub", "Mul": "Mul", "Div": "Div", "Pow": "Pow", "MatMul": "MatMul"}


@_exports(*_SAME)
def _same(g, op):
    return g.node(_SAME[op.kind], [g.input(op, i) for i in range(len(op.inputs))])


@_exports("LeakyReLU")
def _leaky_relu(g, op):
    return g.node("LeakyRelu", [g.input(op, 0)], alpha=float(op.kwargs["negative_slope"]))


@_exports("Hardtanh", "Clip")
def _clip(g, op):
    lo, hi = (op.kwargs["min_val"], op.kwargs["max_val"]) if op.kind == "Hardtanh" else \
        (op.kwargs["lo"], op.kwargs["hi"])
    dt = op.dtypes[0]
    bounds = ["" if v is None else g.const(np.asarray(v, dtype=dt)) for v in (lo, hi)]
    return g.node("Clip", [g.input(op, 0), *bounds])


@_exports("SiLU")
def _silu(g, op):
    x = g.input(op, 0)
    return g.node("Mul", [x, g.node("Sigmoid", [x])])


@_exports("GELU")
def _gelu(g, op):
    if g.opset < 20:
        raise ExportError(f"GELU needs opset 20 or later (ONNX's Gelu), got opset {g.opset}")
    return g.node("Gelu", [g.input(op, 0)], approximate=op.kwargs["approximate"])


@_exports("Softmax", "LogSoftmax")
def _softmax(g, op):
    return g.node(op.kind, [g.input(op, 0)], axis=int(op.kwargs["axis"]))


@_exports("Maximum")
def _maximum(g, op):
    return g.node("Min" if op.kwargs["smallest"] else "Max", [g.input(op, 0), g.input(op, 1)])


@_exports("Where")
def _where(g, op):
    cond = g.input(op, 0)
    if op.dtypes[0] != np.bool_:
        cond = g.node("Cast", [cond], to=_onnx_dtype(np.bool_))
    return g.node("Where", [cond, g.input(op, 1), g.input(op, 2)])


@_exports("Linear")
def _linear(g, op):
    x, w, b = g.input(op, 0), g.input(op, 1), g.input(op, 2)
    if len(op.in_shapes[0]) == 2:
        return g.node("Gemm", [x, w] + ([b] if b else []), transB=1)
    wt = g.value(op, 1)  # (..., in) @ W.T: a transposed copy of a constant weight
    wt = g.const(np.ascontiguousarray(wt.T), g.name_of(op, 1) + ".T") if wt is not None else \
        g.node("Transpose", [w], perm=[1, 0])
    y = g.node("MatMul", [x, wt])
    return g.node("Add", [y, b]) if b else y


@_exports("Conv2d", "Conv1d")
def _conv(g, op):
    k = op.kwargs
    if op.kind == "Conv2d":
        (top, bottom), (left, right) = k["padding"]
        stride, dilation, pads = list(k["stride"]), list(k["dilation"]), [top, left, bottom, right]
    else:
        stride, dilation, pads = [k["stride"]], [k["dilation"]], list(k["padding"])
    b = g.input(op, 2)
    return g.node("Conv", [g.input(op, 0), g.input(op, 1)] + ([b] if b else []),
                  kernel_shape=list(op.in_shapes[1][2:]), strides=stride, pads=pads,
                  dilations=dilation, group=int(k["groups"]))


def _pool_geometry(op):
    """(kernel, stride, pads, dilation, ceil_mode, global) of a recorded 2-D pooling."""
    k = op.kwargs
    if len(op.in_shapes[0]) != 4:
        raise ExportError(f"{op.kind} of a {len(op.in_shapes[0])}-D input: ONNX pools (N, C, H, W)")
    hw = op.in_shapes[0][2:]
    kernel, stride, padding = tuple(k["kernel"]), tuple(k["stride"]), tuple(k["padding"])
    dilation = tuple(k.get("dilation") or (1, 1))
    floor = tuple((n + 2 * p - d * (kk - 1) - 1) // s + 1
                  for n, kk, s, p, d in zip(hw, kernel, stride, padding, dilation))
    ceil = tuple(k["out_hw"]) != floor
    whole = kernel == tuple(hw) and padding == (0, 0) and tuple(k["out_hw"]) == (1, 1)
    return kernel, stride, [*padding, *padding], dilation, ceil, whole


@_exports("MaxPool2d")
def _max_pool(g, op):
    if op.kwargs.get("return_indices"):
        raise ExportError("MaxPool2d with return_indices=True: only the pooled values are exported")
    kernel, stride, pads, dilation, ceil, whole = _pool_geometry(op)
    if whole and dilation == (1, 1):
        return g.node("GlobalMaxPool", [g.input(op, 0)])
    return g.node("MaxPool", [g.input(op, 0)], kernel_shape=list(kernel), strides=list(stride),
                  pads=pads, dilations=list(dilation), ceil_mode=int(ceil))


@_exports("AvgPool2d")
def _avg_pool(g, op):
    if op.kwargs.get("divisor_override") is not None:
        raise ExportError("AvgPool2d with divisor_override has no ONNX AveragePool equivalent")
    kernel, stride, pads, _, ceil, whole = _pool_geometry(op)
    if whole:  # adaptive pooling to 1x1 or a kernel as large as the map
        return g.node("GlobalAveragePool", [g.input(op, 0)])
    return g.node("AveragePool", [g.input(op, 0)], kernel_shape=list(kernel), strides=list(stride),
                  pads=pads, ceil_mode=int(ceil),
                  count_include_pad=int(bool(op.kwargs["count_include_pad"])))


def _adaptive_matrix(n, o, dtype):
    """(o, n) averaging matrix of adaptive pooling along one axis: row i averages the window
    [floor(i n / o), ceil((i + 1) n / o))."""
    m = np.zeros((o, n), dtype=dtype)
    for i in range(o):
        lo, hi = (i * n) // o, -(-((i + 1) * n) // o)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


@_exports("AdaptiveAvgPool2d")
def _adaptive_avg_pool(g, op):
    # windows that do not tile the map (the divisible case is recorded as AvgPool2d): the pooling
    # is linear and separable, Y = P_h X P_w^T, two MatMuls with constant averaging matrices
    (h, w), (oh, ow) = op.in_shapes[0][-2:], tuple(op.kwargs["out_hw"])
    dt = op.dtypes[0]
    y = g.node("MatMul", [g.input(op, 0), g.const(np.ascontiguousarray(_adaptive_matrix(w, ow, dt).T))])
    return g.node("MatMul", [g.const(_adaptive_matrix(h, oh, dt)), y])


@_exports("AdaptiveMaxPool2d")
def _adaptive_max_pool(g, op):
    raise ExportError(f"AdaptiveMaxPool2d to {tuple(op.kwargs['out_hw'])} from a "
                      f"{tuple(op.in_shapes[0][-2:])} map: ONNX has no adaptive max pooling; choose an "
                      "input size that the output size divides (then it is a MaxPool)")


@_exports("BatchNorm")
def _batch_norm(g, op):
    k = op.kwargs
    if k["training"]:
        raise ExportError("BatchNorm normalizes with the batch's statistics (training mode, or "
                          "track_running_stats=False); ONNX's BatchNormalization uses stored ones")
    c = op.in_shapes[0][1]
    dt = op.dtypes[0]
    scale, shift = g.input(op, 1), g.input(op, 2)
    return g.node("BatchNormalization", [
        g.input(op, 0),
        scale or g.const(np.ones(c, dtype=dt)), shift or g.const(np.zeros(c, dtype=dt)),
        g.const(k["running_mean"]), g.const(k["running_var"])], epsilon=float(k["eps"]))


@_exports("LayerNorm")
def _layer_norm(g, op):
    if g.opset < 17:
        raise ExportError(f"LayerNorm needs opset 17 or later (LayerNormalization), got {g.opset}")
    nd = int(op.kwargs["ndim"])
    shape = op.in_shapes[0][-nd:]
    dt = op.dtypes[0]
    scale, shift = g.input(op, 1), g.input(op, 2)
    return g.node("LayerNormalization",
                  [g.input(op, 0), scale or g.const(np.ones(shape, dtype=dt))] + ([shift] if shift else []),
                  axis=-nd, epsilon=float(op.kwargs["eps"]))


@_exports("LocalResponseNorm")
def _lrn(g, op):
    k = op.kwargs
    if k["size"] % 2 == 0:
        raise ExportError(f"LocalResponseNorm with an even size ({k['size']}): ONNX's LRN window is "
                          "centred one channel later than PyTorch's; use an odd size")
    return g.node("LRN", [g.input(op, 0)], size=int(k["size"]), alpha=float(k["alpha"]),
                  beta=float(k["beta"]), bias=float(k["k"]))


@_exports("ChannelShuffle")
def _channel_shuffle(g, op):
    shape = op.in_shapes[0]
    groups = int(op.kwargs["groups"])
    batch = g.batch_dim(op)
    first = g.shape_const([batch, groups, shape[1] // groups, *shape[2:]])
    y = g.node("Reshape", [g.input(op, 0), first])
    y = g.node("Transpose", [y], perm=[0, 2, 1, *range(3, len(shape) + 1)])
    return g.node("Reshape", [y, g.shape_const([batch, *shape[1:]])])


@_exports("Reshape")
def _reshape(g, op):
    (vary_out,), (vary_in,) = op.out_vary, op.in_vary
    if len(vary_out) > 1:
        raise ExportError(f"reshape to {op.out_shapes[0]}: {len(vary_out)} of its dims follow the "
                          "batch size; ONNX's Reshape can infer one (-1)")
    target = list(op.out_shapes[0])
    for a in vary_out:  # 0 copies the input's dim; -1 infers a dim that changes with the batch
        same = a in vary_in and a < len(op.in_shapes[0]) and op.in_shapes[0][a] == target[a]
        target[a] = 0 if same else -1
    return g.node("Reshape", [g.input(op, 0), g.const(_i64(target))])


@_exports("Permute")
def _permute(g, op):
    return g.node("Transpose", [g.input(op, 0)], perm=[int(a) for a in op.kwargs["axes"]])


@_exports("BroadcastTo")
def _broadcast(g, op):
    shape = [1 if a in op.out_vary[0] else n for a, n in enumerate(op.out_shapes[0])]
    return g.node("Expand", [g.input(op, 0), g.const(_i64(shape))])


@_exports("GetItem")
def _getitem(g, op):
    shape = op.in_shapes[0]
    index = op.kwargs["index"]
    items = list(index) if isinstance(index, tuple) else [index]
    if any(i is Ellipsis for i in items):
        at = items.index(Ellipsis)
        named = sum(1 for i in items if i is not None and i is not Ellipsis)
        items[at:at + 1] = [slice(None)] * (len(shape) - named)
    x = g.input(op, 0)
    starts, ends, axes, steps, picks, news = [], [], [], [], [], []
    axis = 0  # input axis that the next item indexes
    out_axis = 0  # its position in the output
    for item in items:
        if item is None:
            news.append(out_axis)
            out_axis += 1
            continue
        if isinstance(item, slice):
            lo, hi, step = item.indices(shape[axis])
            if axis in op.in_vary[0] and (item.start not in (None, 0) or item.stop is not None
                                          or item.step not in (None, 1)):
                raise ExportError(f"indexing {index!r}: slicing the batch axis is not exported "
                                  "(its length changes with the batch)")
            if (lo, hi, step) != (0, shape[axis], 1):
                if step < 0 and hi < 0:
                    hi = -shape[axis] - 1  # through the first element backwards
                starts.append(lo), ends.append(hi), axes.append(axis), steps.append(step)
            out_axis += 1
        elif isinstance(item, numbers.Integral) or (isinstance(item, np.ndarray) and item.dtype.kind in "iu"
                                                    and item.ndim <= 1):
            picks.append((axis, out_axis, item))
            out_axis += 0 if isinstance(item, numbers.Integral) or item.ndim == 0 else 1
        else:
            raise ExportError(f"indexing with {type(item).__name__} ({index!r}) is not exported: only "
                              "ints, slices, None and one-dimensional integer arrays")
        axis += 1
    arrays = sum(1 for _, _, i in picks if isinstance(i, np.ndarray) and i.ndim == 1)
    at = [k for k, i in enumerate(items) if i is not None and not isinstance(i, slice)]
    if arrays > 1 or (arrays and at != list(range(at[0], at[0] + len(at)))):
        # NumPy moves the axes of advanced indices that are not side by side to the front
        raise ExportError(f"indexing {index!r}: several integer arrays, or an integer array and "
                          "ints apart from it (NumPy's advanced indexing), are not exported")
    if starts:
        x = g.node("Slice", [x, g.const(_i64(starts)), g.const(_i64(ends)), g.const(_i64(axes)),
                             g.const(_i64(steps))])
    removed = 0
    for axis, _, item in picks:  # in order: each scalar pick removes an axis before the next
        x = g.node("Gather", [x, g.const(np.asarray(item, dtype=np.int64))], axis=axis - removed)
        removed += 1 if np.ndim(item) == 0 else 0
    if news:
        x = g.node("Unsqueeze", [x, g.const(_i64(news))])
    return x


@_exports("Concat", "Stack")
def _concat(g, op):
    names = [g.input(op, i) for i in range(len(op.inputs))]
    axis = int(op.kwargs["axis"])
    if op.kind == "Stack":
        names = [g.node("Unsqueeze", [n, g.const(_i64([axis]))]) for n in names]
    return names[0] if len(names) == 1 else g.node("Concat", names, axis=axis)


@_exports("Split")
def _split(g, op):
    axis = int(op.kwargs["axis"])
    sizes = [s[axis] for s in op.out_shapes]
    if len(sizes) == 1:
        return [g.node("Identity", [g.input(op, 0)])]
    return g.node("Split", [g.input(op, 0), g.const(_i64(sizes))], outputs=len(sizes), axis=axis)


@_exports("Pad")
def _pad(g, op):
    widths = op.kwargs["widths"]
    pads = [lo for lo, _ in widths] + [hi for _, hi in widths]
    value = g.const(np.asarray(op.kwargs["value"], dtype=op.dtypes[0]))
    return g.node("Pad", [g.input(op, 0), g.const(_i64(pads)), value], mode="constant")


_REDUCE = {"Sum": "ReduceSum", "Mean": "ReduceMean", "Prod": "ReduceProd", "Norm": "ReduceL2"}


@_exports("Sum", "Mean", "Max", "Prod", "Norm")
def _reduce(g, op):
    k = op.kwargs
    kind = ("ReduceMin" if k.get("smallest") else "ReduceMax") if op.kind == "Max" else _REDUCE[op.kind]
    axes = k["axis"]
    rank = len(op.in_shapes[0])
    axes = list(range(rank)) if axes is None else [axes] if isinstance(axes, numbers.Integral) else list(axes)
    keep = int(bool(k["keepdims"]))
    if kind == "ReduceSum" or g.opset >= 18:  # axes became an input (ReduceSum at 13, the rest at 18)
        return g.node(kind, [g.input(op, 0), g.const(_i64(axes))], keepdims=keep)
    return g.node(kind, [g.input(op, 0)], axes=[int(a) for a in axes], keepdims=keep)


@_exports("Embedding")
def _embedding(g, op):
    return g.node("Gather", [g.input(op, 1), g.input(op, 0)], axis=0)


@_exports("_Cast")
def _cast(g, op):
    return g.node("Cast", [g.input(op, 0)], to=_onnx_dtype(op.kwargs["dtype"]))


def _onnx_dtype(dtype):
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


# ---- recurrent layers: ONNX's LSTM / GRU / RNN over (T, 1 direction, N, H) ------------------------
# PyTorch (and divenet) stack the gates as LSTM i, f, g, o and GRU r, z, n; ONNX as LSTM i, o, f, c
# and GRU z, r, h. Each entry: the PyTorch gate blocks in ONNX's order.
_GATE_ORDER = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "RNN": (0,)}


def _reorder(w, order):
    blocks = np.split(w, len(order), axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


_RECURRENT = {  # kind -> (ONNX op, inputs that are states, is a single step)
    "LSTMSequence": ("LSTM", 2, False), "GRUSequence": ("GRU", 1, False),
    "RNNSequence": ("RNN", 1, False), "LSTMCell": ("LSTM", 2, True), "GRUCell": ("GRU", 1, True),
    "RNNCell": ("RNN", 1, True),
}


@_exports(*_RECURRENT)
def _recurrent(g, op):
    kind, n_states, step = _RECURRENT[op.kind]
    order = _GATE_ORDER[kind]
    first = 1 + n_states  # w_ih, w_hh, b_ih, b_hh follow x and the states
    w_ih, w_hh, b_ih, b_hh = (g.value(op, first + i) for i in range(4))
    for i, w in enumerate((w_ih, w_hh)):
        if w is None:
            raise ExportError(f"{op.kind}: the {('input', 'hidden')[i]} weights must be parameters "
                              "(constant in the exported model) to be laid out in ONNX's gate order")
    hidden = w_hh.shape[1]
    weights = [g.const(_reorder(w_ih, order)[None], g.name_of(op, first) + ".onnx"),
               g.const(_reorder(w_hh, order)[None], g.name_of(op, first + 1) + ".onnx")]
    if b_ih is not None or b_hh is not None:
        if b_ih is None or b_hh is None:
            raise ExportError(f"{op.kind}: b_ih and b_hh must both be parameters or both be absent")
        bias = np.concatenate([_reorder(b_ih, order), _reorder(b_hh, order)])[None]
        weights.append(g.const(bias, g.name_of(op, first + 2) + ".onnx"))
    else:
        weights.append("")
    axis0 = g.const(_i64([0]))
    x = g.input(op, 0)
    if step:
        x = g.node("Unsqueeze", [x, axis0])
    states = [g.input(op, 1 + i) for i in range(n_states)]
    states = [g.node("Unsqueeze", [s, axis0]) if s else "" for s in states]
    attrs = {"hidden_size": int(hidden),
             "direction": "reverse" if op.kwargs.get("reverse") else "forward"}
    if kind == "GRU":
        attrs["linear_before_reset"] = 1  # PyTorch's n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    if kind == "RNN":
        attrs["activations"] = ["Relu" if op.kwargs["nonlinearity"] == "relu" else "Tanh"]
    outs = g.node(kind, [x, *weights, "", *states], outputs=1 + n_states, **attrs)
    finals = [g.node("Squeeze", [s, axis0]) for s in outs[1:]]
    if step:
        return finals[0] if n_states == 1 else finals
    y = g.node("Squeeze", [outs[0], g.const(_i64([1]))])  # (T, 1, N, H) -> (T, N, H)
    return [y, *finals]


# =================================================================================================
# import: ONNX operator -> divenet
# =================================================================================================
def _ints(t):
    """The values of a (small, integer) Tensor as a list of Python ints."""
    return [int(v) for v in np.asarray(t.numpy()).reshape(-1)]


def _scalar(t):
    return np.asarray(t.numpy()).reshape(-1)[0].item()


def _norm_axes(values, rank):
    return [int(a) % rank for a in values]


def _wrap_unary(fn):
    return lambda n: fn


_imports("Relu")(_wrap_unary(F.relu))
_imports("Sigmoid")(_wrap_unary(F.sigmoid))
_imports("Tanh")(_wrap_unary(F.tanh))
_imports("Neg")(_wrap_unary(lambda x: -x))
_imports("Exp")(_wrap_unary(lambda x: x.exp()))
_imports("Log")(_wrap_unary(lambda x: x.log()))
_imports("Sqrt")(_wrap_unary(lambda x: x.sqrt()))
_imports("Abs")(_wrap_unary(lambda x: x.abs()))
_imports("Identity")(_wrap_unary(lambda x: x))


def _int_div(a, b):
    """ONNX's integer Div truncates towards zero (shape arithmetic)."""
    q = np.trunc(np.asarray(a.numpy()) / np.asarray(b.numpy())).astype(np.result_type(a.dtype, b.dtype))
    return Tensor(q, device=a.device)


_BINARY = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b,
           "Pow": lambda a, b: a ** b}


@_imports("Add", "Sub", "Mul", "Div", "Pow")
def _binary(n):
    if n.op_type == "Div":
        return lambda a, b: _int_div(a, b) if a.dtype.kind in "iu" and b.dtype.kind in "iu" else a / b
    return _BINARY[n.op_type]


@_imports("Sum", "Max", "Min")
def _variadic(n):
    step = {"Sum": lambda a, b: a + b, "Max": lambda a, b: a.maximum(b),
            "Min": lambda a, b: a.minimum(b)}[n.op_type]

    def run(*xs):
        out = xs[0]
        for x in xs[1:]:
            out = step(out, x)
        return out
    return run


@_imports("LeakyRelu")
def _leaky_relu_in(n):
    alpha = float(n.attrs.get("alpha", 0.01))
    return lambda x: F.leaky_relu(x, alpha)


@_imports("Gelu")
def _gelu_in(n):
    approximate = n.attrs.get("approximate", "none")
    return lambda x: F.gelu(x, approximate=approximate)


@_imports("Clip")
def _clip_in(n):
    if "min" in n.attrs or "max" in n.attrs:  # opset < 11: bounds as attributes
        lo, hi = n.attrs.get("min"), n.attrs.get("max")
        return lambda x: x.clamp(lo, hi)
    return lambda x, lo=None, hi=None: x.clamp(None if lo is None else _scalar(lo),
                                                None if hi is None else _scalar(hi))


@_imports("Softmax", "LogSoftmax")
def _softmax_in(n):
    fn = F.softmax if n.op_type == "Softmax" else F.log_softmax
    if n.opset >= 13:
        axis = int(n.attrs.get("axis", -1))
        return lambda x: fn(x, axis)
    axis = int(n.attrs.get("axis", 1))  # before opset 13: over the input flattened to 2-D at axis

    def run(x):
        a = axis % x.ndim
        return fn(x.reshape(int(np.prod(x.shape[:a])), -1), 1).reshape(x.shape)
    return run


@_imports("MatMul")
def _matmul_in(n):
    return matmul


@_imports("Gemm")
def _gemm(n):
    a = n.attrs
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    trans_a, trans_b = int(a.get("transA", 0)), int(a.get("transB", 0))

    def run(x, w, c=None):
        if trans_a:
            x = x.transpose(0, 1)
        if not trans_b:
            w = w.transpose(0, 1)
        bias = c if c is not None and beta == 1.0 and tuple(c.shape) == (w.shape[0],) else None
        y = F.linear(x, w, bias)
        if alpha != 1.0:
            y = y * alpha
        if c is not None and bias is None:
            y = y + (c * beta if beta != 1.0 else c)
        return y
    return run


def _same_pads(spatial, kernel, stride, dilation, upper):
    """auto_pad SAME_UPPER / SAME_LOWER: output ceil(n / s), the odd pad at the end / start."""
    pads_lo, pads_hi = [], []
    for n, k, s, d in zip(spatial, kernel, stride, dilation):
        total = max((math.ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0)
        small, big = total // 2, total - total // 2
        pads_lo.append(small if upper else big)
        pads_hi.append(big if upper else small)
    return pads_lo + pads_hi


def _window_attrs(n, rank_spatial, kernel=None):
    a = n.attrs
    kernel = list(a.get("kernel_shape", kernel or []))
    stride = list(a.get("strides", [1] * rank_spatial))
    dilation = list(a.get("dilations", [1] * rank_spatial))
    auto = a.get("auto_pad", "NOTSET")
    pads = list(a.get("pads", [0] * (2 * rank_spatial)))
    return kernel, stride, dilation, auto, pads


def _resolve_pads(n, x, kernel, stride, dilation, auto, pads):
    spatial = tuple(x.shape[2:])
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(spatial, kernel, stride, dilation, auto == "SAME_UPPER")
    if auto == "VALID":
        return [0] * (2 * len(spatial))
    if auto != "NOTSET":
        raise ValueError(f"{n.label}: auto_pad {auto!r} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
    return pads


def _split_pads(x, pads, fill, allowed=None):
    """Symmetric pads per axis for divenet's kernels; asymmetric (or too large) ones are done
    first with a constant ``fill``. Returns (x, symmetric pads)."""
    k = len(pads) // 2
    lo, hi = pads[:k], pads[k:]
    sym = [min(a, b) for a, b in zip(lo, hi)]
    if allowed is not None:
        sym = [min(s, m) for s, m in zip(sym, allowed)]
    extra = [(a - s, b - s) for a, b, s in zip(lo, hi, sym)]
    if any(e != (0, 0) for e in extra):
        x = pad(x, [v for e in reversed(extra) for v in e], value=fill)
    return x, sym


@_imports("Conv")
def _conv_in(n):
    group = int(n.attrs.get("group", 1))

    def run(x, w, b=None):
        nd = x.ndim - 2
        if nd not in (1, 2):
            raise ValueError(f"{n.label}: Conv of a {x.ndim}-D input; divenet convolves 3-D and 4-D inputs")
        kernel, stride, dilation, auto, pads = _window_attrs(n, nd, list(w.shape[2:]))
        pads = _resolve_pads(n, x, kernel, stride, dilation, auto, pads)
        x, sym = _split_pads(x, pads, 0.0)
        if nd == 1:
            return F.conv1d(x, w, b, stride[0], sym[0], dilation[0], group)
        return F.conv2d(x, w, b, tuple(stride), tuple(sym), tuple(dilation), group)
    return run


def _pool_in(n, kind):
    ceil = bool(n.attrs.get("ceil_mode", 0))
    include_pad = bool(n.attrs.get("count_include_pad", 0))
    if kind == "max" and int(n.attrs.get("storage_order", 0)):
        raise ValueError(f"{n.label}: MaxPool with storage_order=1 (column-major indices) is not supported")

    def run(x):
        nd = x.ndim - 2
        if nd not in (1, 2):
            raise ValueError(f"{n.label}: pooling of a {x.ndim}-D input; divenet pools 3-D and 4-D inputs")
        kernel, stride, dilation, auto, pads = _window_attrs(n, nd)
        pads = _resolve_pads(n, x, kernel, stride, dilation, auto, pads)
        if kind == "avg" and not include_pad and pads[:nd] != pads[nd:]:
            raise ValueError(f"{n.label}: AveragePool with asymmetric pads {pads} and "
                             "count_include_pad=0 is not supported")
        x, sym = _split_pads(x, pads, -np.inf if kind == "max" else 0.0, [k // 2 for k in kernel])
        if kind == "max":
            f = F.max_pool2d if nd == 2 else F.max_pool1d
            return f(x, tuple(kernel), tuple(stride), tuple(sym), tuple(dilation), ceil)
        if any(d != 1 for d in dilation):
            raise ValueError(f"{n.label}: AveragePool with dilations {dilation} is not supported")
        f = F.avg_pool2d if nd == 2 else F.avg_pool1d
        return f(x, tuple(kernel), tuple(stride), tuple(sym), ceil, include_pad)
    return run


@_imports("MaxPool")
def _max_pool_in(n):
    if len(n.outputs) > 1 and n.outputs[1]:
        raise ValueError(f"{n.label}: MaxPool's Indices output is not supported")
    return _pool_in(n, "max")


@_imports("AveragePool")
def _avg_pool_in(n):
    return _pool_in(n, "avg")


@_imports("GlobalAveragePool")
def _gap_in(n):
    return lambda x: x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)


@_imports("GlobalMaxPool")
def _gmp_in(n):
    return lambda x: x.amax(dim=tuple(range(2, x.ndim)), keepdim=True)


@_imports("BatchNormalization")
def _batch_norm_in(n):
    if int(n.attrs.get("training_mode", 0)) or (len(n.outputs) > 1 and any(n.outputs[1:])):
        raise ValueError(f"{n.label}: BatchNormalization in training mode is not supported")
    eps = float(n.attrs.get("epsilon", 1e-5))
    return lambda x, scale, b, mean, var: F.batch_norm(x, mean, var, scale, b, training=False, eps=eps)


@_imports("LayerNormalization")
def _layer_norm_in(n):
    axis, eps = int(n.attrs.get("axis", -1)), float(n.attrs.get("epsilon", 1e-5))
    if len(n.outputs) > 1 and any(n.outputs[1:]):
        raise ValueError(f"{n.label}: LayerNormalization's Mean and InvStdDev outputs are not supported")

    def run(x, scale, b=None):
        return F.layer_norm(x, tuple(x.shape[axis % x.ndim:]), scale, b, eps)
    return run


@_imports("LRN")
def _lrn_in(n):
    a = n.attrs
    size = int(a["size"])
    if size % 2 == 0:
        raise ValueError(f"{n.label}: LRN with an even size ({size}) is not supported (its window is "
                         "centred differently from divenet's local_response_norm)")
    alpha, beta, bias = float(a.get("alpha", 1e-4)), float(a.get("beta", 0.75)), float(a.get("bias", 1.0))
    return lambda x: F.local_response_norm(x, size, alpha, beta, bias)


@_imports("Dropout")
def _dropout_in(n):
    if len(n.outputs) > 1 and n.outputs[1]:
        raise ValueError(f"{n.label}: Dropout's mask output is not supported")
    return lambda x, ratio=None, training=None: x  # inference: the identity


@_imports("Flatten")
def _flatten_in(n):
    axis = int(n.attrs.get("axis", 1))

    def run(x):
        a = axis % x.ndim if x.ndim else 0
        return x.reshape(int(np.prod(x.shape[:a], dtype=np.int64)), -1)
    return run


@_imports("Reshape")
def _reshape_in(n):
    allow_zero = int(n.attrs.get("allowzero", 0))

    def run(x, shape):
        target = _ints(shape)
        if not allow_zero:
            target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
        return x.reshape(tuple(target))
    return run


@_imports("Transpose")
def _transpose_in(n):
    perm = n.attrs.get("perm")
    return lambda x: x.permute(*(perm if perm is not None else range(x.ndim - 1, -1, -1)))


@_imports("Squeeze", "Unsqueeze")
def _squeeze_in(n):
    attr = n.attrs.get("axes")
    squeeze = n.op_type == "Squeeze"

    def run(x, axes=None):
        values = attr if attr is not None else (None if axes is None else _ints(axes))
        if squeeze:
            if values is None:
                return x.reshape(tuple(d for d in x.shape if d != 1))
            drop = set(_norm_axes(values, x.ndim))
            return x.reshape(tuple(d for i, d in enumerate(x.shape) if i not in drop))
        rank = x.ndim + len(values)
        new = set(_norm_axes(values, rank))
        dims = iter(x.shape)
        return x.reshape(tuple(1 if i in new else next(dims) for i in range(rank)))
    return run


@_imports("Concat")
def _concat_in(n):
    axis = int(n.attrs["axis"])
    return lambda *xs: xs[0] if len(xs) == 1 else cat(list(xs), dim=axis)


@_imports("Split")
def _split_in(n):
    axis = int(n.attrs.get("axis", 0))
    attr = n.attrs.get("split")
    count = len(n.outputs)

    def run(x, sizes=None):
        if attr is not None or sizes is not None:
            parts = list(attr) if attr is not None else _ints(sizes)
        else:  # equal parts (the last smaller, opset 18's num_outputs)
            length = x.shape[axis]
            step = -(-length // count)
            parts = [min(step, length - i * step) for i in range(count)]
        return tuple(split(x, parts, dim=axis))
    return run


@_imports("Slice")
def _slice_in(n):
    def run(x, starts, ends, axes=None, steps=None):
        starts, ends = _ints(starts), _ints(ends)
        axes = _norm_axes(_ints(axes), x.ndim) if axes is not None else list(range(len(starts)))
        steps = _ints(steps) if steps is not None else [1] * len(starts)
        index = [slice(None)] * x.ndim
        for a, lo, hi, st in zip(axes, starts, ends, steps):
            size = x.shape[a]
            # ONNX clamps out-of-range bounds, as Python's slices do, except the backward end
            # past the first element, which INT_MIN-like values stand for
            index[a] = slice(lo, None if st < 0 and hi < -size else hi, st)
        return x[tuple(index)]
    return run


@_imports("Gather")
def _gather_in(n):
    axis = int(n.attrs.get("axis", 0))

    def run(x, indices):
        idx = indices.array
        if idx.ndim == 0:
            idx = int(idx)
        return x[(slice(None),) * (axis % x.ndim) + (idx,)]
    return run


@_imports("Shape")
def _shape_in(n):
    start, end = n.attrs.get("start", 0), n.attrs.get("end")
    return lambda x: Tensor(np.asarray(x.shape[start:end], dtype=np.int64), device=x.device)


@_imports("Constant")
def _constant_in(n):
    from onnx import numpy_helper

    a = n.attrs
    if "value" in a:
        value = numpy_helper.to_array(a["value"])
    elif "value_float" in a or "value_int" in a:
        value = np.asarray(a.get("value_float", a.get("value_int")),
                           dtype=np.float32 if "value_float" in a else np.int64)
    elif "value_floats" in a or "value_ints" in a:
        value = np.asarray(a.get("value_floats", a.get("value_ints")),
                           dtype=np.float32 if "value_floats" in a else np.int64)
    else:
        raise ValueError(f"{n.label}: Constant with attributes {sorted(a)} is not supported")
    return lambda: Tensor(np.array(value))


@_imports("ConstantOfShape")
def _constant_of_shape_in(n):
    from onnx import numpy_helper

    value = numpy_helper.to_array(n.attrs["value"]).reshape(-1) if "value" in n.attrs else \
        np.zeros(1, dtype=np.float32)

    def run(shape):
        return Tensor(np.full(tuple(_ints(shape)), value[0], dtype=value.dtype), device=shape.device)
    return run


@_imports("Expand")
def _expand_in(n):
    def run(x, shape):
        target = tuple(np.broadcast_shapes(tuple(x.shape), tuple(_ints(shape))))
        return x if target == tuple(x.shape) else x.expand(target)
    return run


@_imports("Where")
def _where_in(n):
    return lambda cond, a, b: where(cond.array.astype(bool), a, b)


@_imports("Cast")
def _cast_in(n):
    from onnx import helper

    dtype = helper.tensor_dtype_to_np_dtype(int(n.attrs["to"]))
    return lambda x: x if x.dtype == dtype else x.astype(dtype)


@_imports("Pad")
def _pad_in(n):
    mode = n.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise ValueError(f"{n.label}: Pad mode {mode!r} is not supported (only 'constant')")

    def run(x, pads=None, value=None, axes=None):
        values = n.attrs.get("pads") if pads is None else _ints(pads)
        fill = float(n.attrs.get("value", 0.0)) if value is None else _scalar(value)
        dims = _norm_axes(_ints(axes), x.ndim) if axes is not None else list(range(x.ndim))
        k = len(dims)
        widths = [(0, 0)] * x.ndim
        for i, d in enumerate(dims):
            widths[d] = (values[i], values[k + i])
        if any(lo < 0 or hi < 0 for lo, hi in widths):
            raise ValueError(f"{n.label}: negative pads {values} (cropping) are not supported")
        return pad(x, [v for w in reversed(widths) for v in w], value=fill)
    return run


_REDUCERS = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "amax", "ReduceMin": "amin",
             "ReduceProd": "prod", "ReduceL2": "norm"}


@_imports(*_REDUCERS)
def _reduce_in(n):
    keep = bool(n.attrs.get("keepdims", 1))
    noop_empty = bool(n.attrs.get("noop_with_empty_axes", 0))
    method = _REDUCERS[n.op_type]
    attr = n.attrs.get("axes")

    def run(x, axes=None):
        values = attr if attr is not None else (None if axes is None else _ints(axes))
        if not values:
            if noop_empty:
                return x
            values = range(x.ndim)
        dims = tuple(_norm_axes(values, x.ndim))
        if method == "norm":
            return (x * x).sum(dim=dims, keepdim=keep).sqrt()
        return getattr(x, method)(dim=dims, keepdim=keep)
    return run


# ---- recurrent layers ---------------------------------------------------------------------------
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"],
                        "RNN": ["Tanh"]}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@_imports("LSTM", "GRU", "RNN")
def _recurrent_in(n):
    """ONNX's LSTM/GRU/RNN as divenet's per-direction sequence ops; the weights (constants) are
    laid back into PyTorch's gate order once, here, as parameters of the loaded module."""
    kind, a = n.op_type, n.attrs
    H = int(a["hidden_size"])
    direction = a.get("direction", "forward")
    dirs = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}.get(direction)
    if dirs is None:
        raise ValueError(f"{n.label}: direction {direction!r} is not forward, reverse or bidirectional")
    acts = [s.capitalize() if s.lower() != "relu" else "Relu" for s in a.get("activations", [])]
    nonlinearity = "tanh"
    if kind == "RNN" and acts and acts[0] == "Relu" and all(x == "Relu" for x in acts):
        nonlinearity = "relu"
    elif acts and acts != _DEFAULT_ACTIVATIONS[kind] * len(dirs):
        raise ValueError(f"{n.label}: {kind} with activations {a['activations']} is not supported "
                         f"(only {_DEFAULT_ACTIVATIONS[kind]})")
    if "clip" in a or int(a.get("input_forget", 0)):
        raise ValueError(f"{n.label}: {kind} with clip or input_forget is not supported")
    if kind == "GRU" and not int(a.get("linear_before_reset", 0)):
        raise ValueError(f"{n.label}: GRU with linear_before_reset=0 is not supported (divenet's and "
                         "PyTorch's GRU apply the reset gate after the hidden layer: "
                         "linear_before_reset=1)")
    if kind == "LSTM" and len(n.inputs) > 7 and n.inputs[7]:
        raise ValueError(f"{n.label}: LSTM peephole weights (input P) are not supported")
    batch_first = int(a.get("layout", 0)) == 1
    W, R, B = n.const(1), n.const(2), n.const(3) if len(n.inputs) > 3 and n.inputs[3] else None
    if W is None or R is None or (len(n.inputs) > 3 and n.inputs[3] and B is None):
        raise ValueError(f"{n.label}: {kind}'s weights W, R and B must be constants (initializers)")
    order = _GATE_ORDER[kind]
    back = tuple(order.index(i) for i in range(len(order)))  # ONNX gate order -> PyTorch's
    G = _GATES[kind]
    params = []
    for d in range(len(dirs)):
        w_ih = n.param(_reorder(W[d], back), f"weight_ih_l0{'_reverse' if d else ''}")
        w_hh = n.param(_reorder(R[d], back), f"weight_hh_l0{'_reverse' if d else ''}")
        b_ih = b_hh = None
        if B is not None:
            b_ih = n.param(_reorder(B[d, :G * H], back), f"bias_ih_l0{'_reverse' if d else ''}")
            b_hh = n.param(_reorder(B[d, G * H:], back), f"bias_hh_l0{'_reverse' if d else ''}")
        params.append((w_ih, w_hh, b_ih, b_hh))

    def run(x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
        if batch_first:
            x = x.permute(1, 0, 2)
            h0 = h0.permute(1, 0, 2) if h0 is not None else None
            c0 = c0.permute(1, 0, 2) if c0 is not None else None
        if seq_lens is not None and any(v != x.shape[0] for v in _ints(seq_lens)):
            raise ValueError(f"{n.label}: sequence_lens other than the full length {x.shape[0]} are "
                             "not supported")
        ys, hs, cs = [], [], []
        for d, reverse in enumerate(dirs):
            h = h0[d] if h0 is not None else None
            if kind == "LSTM":
                y, h, c = F.lstm(x, h, c0[d] if c0 is not None else None, *params[d], reverse=reverse)
                cs.append(c)
            elif kind == "GRU":
                y, h = F.gru(x, h, *params[d], reverse=reverse)
            else:
                y, h = F.rnn(x, h, *params[d], nonlinearity=nonlinearity, reverse=reverse)
            ys.append(y)
            hs.append(h)
        y, h = stack(ys, 1), stack(hs, 0)  # (T, D, N, H), (D, N, H)
        c = stack(cs, 0) if cs else None
        if batch_first:
            y, h = y.permute(2, 0, 1, 3), h.permute(1, 0, 2)
            c = c.permute(1, 0, 2) if c is not None else None
        return (y, h, c) if kind == "LSTM" else (y, h)
    return run
