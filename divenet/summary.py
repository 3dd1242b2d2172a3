"""``summary(model, input_shape)``: each leaf layer's output shape, parameters and
multiply-accumulates (MACs), found by a shape-only pass (no full-size arithmetic).

How the pass works. During the summary every leaf layer of a known kind (convolutions, dense
layers, pooling, normalization, activations, dropout, flatten, ...) has its ``forward`` replaced
by a formula: it computes its output shape and MACs and returns a placeholder Tensor of that
shape whose array is ``np.broadcast_to(<a zero scalar>, (1, *shape))`` (no memory, no
arithmetic). The composite modules (residual additions, Inception concatenations, squeeze-excite
scaling, dense connectivity) run their own ``forward`` on these placeholders at batch 1, which
costs a few elementwise passes over single-image feature maps. ``summary(vgg19, (3, 224, 224))``
takes milliseconds instead of the ~20 GMACs of a real forward.

Counting rules (docs/counting.md explains them):
  - Conv: MACs = output elements x (in_channels / groups) x kh x kw (bias adds not counted).
  - Linear: MACs = in_features x out_features per output row.
  - RNN / LSTM / GRU (and their cells): per time step, layer and direction,
    gates x hidden x (features in + hidden), gates = 1 / 4 / 3; Embedding: 0 (a lookup).
  - Pooling, batch/layer/local response norm, activations, dropout, additions, concatenations:
    0 MACs (they are listed, with their parameters, but do no multiply-accumulate that a
    published GFLOPS figure counts).
  - params: every parameter a layer holds (weights, biases, normalization scale and shift).
A leaf layer of an unknown kind runs its real forward on a zero tensor of batch 1 and is counted
with 0 MACs. Layers whose input size was left as ``None`` are materialized by the pass (as
``model.init`` would do); nothing else in the model changes (batch norm statistics included).
"""
from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass

import numpy as np

from . import nn
from .autograd import no_grad
from .backend import CPU
from .ops.conv import output_size as _conv_out, same_padding as _same_padding
from .tensor import Tensor

__all__ = ["LayerRow", "Summary", "summary", "parse_shape", "skip_init"]


@dataclass
class LayerRow:
    name: str  # module path, e.g. "features.0" or "layer1.0.conv1"
    kind: str  # layer class name, e.g. "Conv2d"
    output_shape: tuple | None  # without the batch axis (None: the layer was never called)
    params: int  # parameters counted on this row (a layer called twice counts them once)
    macs: int  # multiply-accumulates for one example


class Summary:
    """The result of ``summary``: ``rows``, ``total_params``, ``total_macs``; ``str()`` is a table."""

    def __init__(self, model_name, input_shape, output_shape, rows, buffers):
        self.model_name = model_name
        self.input_shape = tuple(input_shape)
        self.output_shape = output_shape
        self.rows = rows
        self.total_params = sum(r.params for r in rows)
        self.total_macs = sum(r.macs for r in rows)
        self.total_buffers = buffers

    def __getitem__(self, name):
        """The first row of the layer at path ``name``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"summary: no layer named {name!r}")

    def find(self, prefix):
        """Rows whose path is ``prefix`` or lies under it."""
        return [r for r in self.rows if r.name == prefix or r.name.startswith(prefix + ".")]

    def to_dict(self):
        return {"model": self.model_name, "input_shape": list(self.input_shape),
                "output_shape": list(self.output_shape) if self.output_shape else None,
                "total_params": self.total_params, "total_macs": self.total_macs,
                "rows": [{"name": r.name, "kind": r.kind,
                          "output_shape": list(r.output_shape) if r.output_shape is not None else None,
                          "params": r.params, "macs": r.macs} for r in self.rows]}

    def __str__(self):
        head = ("Layer", "Kind", "Output shape", "Params", "MACs")
        body = [(r.name or "(model)", r.kind, _fmt_shape(r.output_shape), f"{r.params:,}",
                 f"{r.macs:,}") for r in self.rows]
        widths = [max([len(h)] + [len(row[i]) for row in body]) for i, h in enumerate(head)]
        align = ("<", "<", "<", ">", ">")

        def line(cells):
            return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

        rule = "-" * len(line(head))
        out = [f"{self.model_name} on input {_fmt_shape(self.input_shape)} (batch axis left out)",
               rule, line(head), rule]
        out += [line(row) for row in body]
        out += [rule,
                f"Total params: {self.total_params:,} ({_si(self.total_params)}, "
                f"{self.total_params * 4 / 2 ** 20:.2f} MiB as float32)",
                f"Total MACs:   {self.total_macs:,} ({_si(self.total_macs)}; "
                f"FLOPs ~ 2 x MACs = {_si(2 * self.total_macs)})",
                f"Output shape: {_fmt_shape(self.output_shape)}"]
        return "\n".join(out)

    def __repr__(self):
        return (f"Summary({self.model_name}, input={self.input_shape}, layers={len(self.rows)}, "
                f"total_params={self.total_params:,}, total_macs={self.total_macs:,})")


def parse_shape(text):
    """'3x224x224' (or '3,224,224', '3 224 224', '3 x 224 x 224') -> (3, 224, 224)."""
    parts = re.split(r"\s*[x,]\s*|\s+", str(text).strip().lower())
    try:
        shape = tuple(int(p) for p in parts)  # an empty part ('3x', 'x224', '3xx4') fails too
    except ValueError:
        raise ValueError(f"summary: input shape must be whole numbers joined by x, like 3x224x224, "
                         f"got {text!r}") from None
    if min(shape) < 1:
        raise ValueError(f"summary: input shape must be positive sizes like 3x224x224, got {text!r}")
    return shape


@contextlib.contextmanager
def skip_init():
    """Build models inside this block to count them, not to run them: the initializers of
    ``divenet.nn.init`` leave the weights as they were allocated (``np.empty``, never touched), so
    building VGG-19's 144M parameters costs milliseconds instead of seconds of random numbers.
    The weights are garbage; use such a model only for ``summary``. Not thread-safe."""
    from .nn import init

    names = ("uniform_", "normal_", "constant_")
    saved = {n: getattr(init, n) for n in names}
    try:
        for n in names:
            setattr(init, n, lambda t, *args, **kwargs: t)
        yield
    finally:
        for n, fn in saved.items():
            setattr(init, n, fn)


def _fmt_shape(shape):
    if shape is None:
        return "-"
    return str(tuple(shape))


def _si(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3f}{unit}"
    return str(n)


# ---- the shape-only pass ------------------------------------------------------------------------
_ZERO = np.zeros((), dtype=np.float32)


def _placeholder(shape, dtype=np.float32):
    """A Tensor of ``shape`` that owns no memory: a broadcast view of one zero."""
    base = _ZERO if dtype == np.float32 else np.zeros((), dtype=dtype)
    return Tensor._make(np.broadcast_to(base, tuple(int(s) for s in shape)), CPU, None)


def _tuple(v, n):
    return (int(v),) * n if isinstance(v, (int, np.integer)) else tuple(int(a) for a in v)


def _in_shape(op, x, ndims):
    if not isinstance(x, Tensor):
        raise TypeError(f"summary: {op} got a {type(x).__name__}, expected a Tensor")
    if x.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{op}: expected a {want} input, got shape {tuple(x.shape)}")
    return tuple(x.shape)


_target_device = [CPU]


def _materialize(m, x):
    """Create the weights of a layer whose input size was None, on the model's device."""
    if m._lazy:
        m._ensure(x)
        if _target_device[0] != CPU:
            m.to(_target_device[0])


def _conv(m, x):
    nd = m._dims
    shape = _in_shape(type(m).__name__, x, (nd + 2,))
    _materialize(m, x)
    n, c = shape[:2]
    if c != m.in_channels:
        raise ValueError(f"{type(m).__name__}: input {shape} has {c} channels but the layer "
                         f"expects {m.in_channels}")
    if m.padding == "valid":
        pads = [(0, 0)] * nd
    elif m.padding == "same":
        pads = [_same_padding(k, d) for k, d in zip(m.kernel_size, m.dilation)]
    else:
        pads = [(p, p) for p in m.padding]
    spatial = tuple(_conv_out(size, k, s, p, d) for size, k, s, p, d in
                    zip(shape[2:], m.kernel_size, m.stride, pads, m.dilation))
    if min(spatial) < 1:
        raise ValueError(f"{type(m).__name__}: kernel {m.kernel_size} with stride {m.stride}, "
                         f"padding {m.padding} and dilation {m.dilation} does not fit input {shape}")
    out = (n, m.out_channels) + spatial
    macs = math.prod(out[1:]) * (m.in_channels // m.groups) * math.prod(m.kernel_size)
    return out, macs


def _linear(m, x):
    shape = _in_shape("Linear", x, (1, 2, 3, 4, 5))
    _materialize(m, x)
    if shape[-1] != m.in_features:
        raise ValueError(f"Linear: input {shape} has {shape[-1]} features but the layer expects "
                         f"{m.in_features}")
    out = shape[:-1] + (m.out_features,)
    rows = math.prod(shape[1:-1]) if len(shape) > 1 else 1
    return out, rows * m.in_features * m.out_features


def _pool_len(n, k, s, p, d, ceil_mode):
    span = d * (k - 1) + 1
    top = n + 2 * p - span
    out = (-(-top // s) if ceil_mode else top // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:  # the last window must start inside the input
        out -= 1
    return out


def _pool(m, x):
    kind = type(m).__name__
    shape = _in_shape(kind, x, (3, 4))
    k = _tuple(m.kernel_size, 2)
    s = _tuple(m.stride if m.stride is not None else m.kernel_size, 2)
    p = _tuple(m.padding, 2)
    d = _tuple(getattr(m, "dilation", 1), 2)
    spatial = tuple(_pool_len(n, kk, ss, pp, dd, m.ceil_mode)
                    for n, kk, ss, pp, dd in zip(shape[-2:], k, s, p, d))
    if min(spatial) < 1:
        raise ValueError(f"{kind}: kernel {k} with stride {s} and padding {p} does not fit input "
                         f"{shape}")
    return shape[:-2] + spatial, 0


def _adaptive(m, x):
    shape = _in_shape(type(m).__name__, x, (3, 4))
    size = m.output_size
    size = (size, size) if isinstance(size, (int, np.integer)) or size is None else tuple(size)
    spatial = tuple(shape[-2 + i] if v is None else int(v) for i, v in enumerate(size))
    return shape[:-2] + spatial, 0


def _same(m, x):
    return tuple(x.shape), 0


def _batchnorm(m, x):
    shape = _in_shape(type(m).__name__, x, m._ndims)
    _materialize(m, x)
    if shape[1] != m.num_features:
        raise ValueError(f"{type(m).__name__}: input {shape} has {shape[1]} features but the layer "
                         f"expects {m.num_features}")
    return shape, 0


def _flatten(m, x):
    shape = tuple(x.shape)
    nd = len(shape)
    a, b = m.start_dim % nd, m.end_dim % nd
    if a > b:
        return shape, 0
    return shape[:a] + (math.prod(shape[a:b + 1]),) + shape[b + 1:], 0


def _embedding(m, x):
    """A table lookup: 0 MACs; the output (the input's shape, embedding_dim) has the table's
    dtype (the input holds integer ids)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"summary: Embedding got a {type(x).__name__}, expected a Tensor of ids")
    out = tuple(x.shape) + (m.embedding_dim,)
    return out[1:], 0, _placeholder(out, m.weight.dtype)


# ---- recurrent layers ----------------------------------------------------------------------------
_RNN_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _float_dtype(x):
    return x.dtype if x.dtype.kind == "f" else np.float32


def _recurrent(m, x, hx=None):
    """RNN, LSTM, GRU: per layer and direction, each of the T steps does ``gates`` dense
    products of hidden x (features in + hidden) (the bias adds and the gates' elementwise
    arithmetic are not counted). Returns placeholders shaped like the layer's real results:
    ``(output, h_n)``, or ``(output, (h_n, c_n))`` for LSTM."""
    m._check_input(x)  # the layer's own checks (they read shapes only)
    lstm = m.mode == "LSTM"
    D = 2 if m.bidirectional else 1
    L, H = m.num_layers, m.hidden_size
    unbatched = x.ndim == 2
    if unbatched:
        T, N = x.shape[0], 1
    else:
        T, N = (x.shape[1], x.shape[0]) if m.batch_first else (x.shape[0], x.shape[1])
    state = (L * D, H) if unbatched else (L * D, N, H)
    if hx is not None:
        if lstm:
            if isinstance(hx, Tensor) or not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"LSTM: hx must be a pair (h_0, c_0) of Tensors, got "
                                f"{type(hx).__name__}")
            m._check_state("h_0", hx[0], state)
            m._check_state("c_0", hx[1], state)
        else:
            if not isinstance(hx, Tensor):
                raise TypeError(f"{type(m).__name__}: hx must be a Tensor of shape {state}, got "
                                f"{type(hx).__name__}")
            m._check_state("h_0", hx, state)
    G = _RNN_GATES[m.mode]
    per_step = sum(G * H * ((m.input_size if layer == 0 else D * H) + H)
                   for layer in range(L)) * D
    macs = per_step * T * N
    if unbatched:
        out = (T, D * H)
    elif m.batch_first:
        out = (N, T, D * H)
    else:
        out = (T, N, D * H)
    dtype = _float_dtype(x)
    output, h_n = _placeholder(out, dtype), _placeholder(state, dtype)
    result = (output, (h_n, _placeholder(state, dtype))) if lstm else (output, h_n)
    row = (T, D * H)  # the output sequence without its batch axis (wherever that axis is)
    return row, macs, result


def _cell(m, x, hx=None):
    """RNNCell, LSTMCell, GRUCell: one step, ``gates`` dense products of hidden x (input +
    hidden). Returns h' (or (h', c') for LSTMCell) as placeholders."""
    kind = type(m).__name__
    shape = _in_shape(kind, x, (1, 2))
    if shape[-1] != m.input_size:
        raise ValueError(f"{kind}: input {shape} has {shape[-1]} features but input_size="
                         f"{m.input_size}")
    H, lstm = m.hidden_size, isinstance(m, nn.LSTMCell)
    state = (H,) if len(shape) == 1 else (shape[0], H)
    if hx is not None:
        if lstm:
            if isinstance(hx, Tensor) or not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{kind}: hx must be a pair (h, c) of Tensors or None, got "
                                f"{type(hx).__name__}")
            states = (("h", hx[0]), ("c", hx[1]))
        else:
            states = (("hx", hx),)
        for label, h in states:
            if not isinstance(h, Tensor) or tuple(h.shape) != state:
                got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
                raise ValueError(f"{kind}: expected {label} of shape {state} for input {shape}, "
                                 f"got {got}")
    N = 1 if len(shape) == 1 else shape[0]
    macs = m._gates * H * (m.input_size + H) * N
    dtype = _float_dtype(x)
    h = _placeholder(state, dtype)
    return (H,), macs, ((h, _placeholder(state, dtype)) if lstm else h)


def _channel_shuffle(m, x):
    shape = _in_shape("ChannelShuffle", x, (3, 4, 5))
    if shape[1] % m.groups:
        raise ValueError(f"ChannelShuffle: {shape[1]} channels of input {shape} do not split into "
                         f"groups={m.groups}")
    return shape, 0


# Leaf layer kinds the pass knows, with their rule (output shape, MACs). Subclasses inherit.
_RULES = [
    (nn.Conv2d, _conv), (nn.Conv1d, _conv), (nn.Linear, _linear),
    (nn.AdaptiveAvgPool2d, _adaptive),  # AdaptiveMaxPool2d subclasses it
    (nn.MaxPool2d, _pool), (nn.AvgPool2d, _pool),
    (nn.BatchNorm1d, _batchnorm), (nn.BatchNorm2d, _batchnorm),
    (nn.LayerNorm, _same), (nn.LocalResponseNorm, _same), (nn.Dropout, _same),
    (nn.ReLU, _same), (nn.LeakyReLU, _same), (nn.Sigmoid, _same), (nn.Tanh, _same),
    (nn.GELU, _same), (nn.Softmax, _same), (nn.Identity, _same),
    (nn.ChannelShuffle, _channel_shuffle), (nn.Flatten, _flatten),
]
# Rules that build their own result (row shape, MACs, outputs): layers whose input is not a
# float feature map or whose result is not one Tensor. They also get the call's other arguments.
_RESULT_RULES = [
    (nn.Embedding, _embedding),
    (nn.RNN, _recurrent), (nn.LSTM, _recurrent), (nn.GRU, _recurrent),
    (nn.RNNCell, _cell), (nn.LSTMCell, _cell), (nn.GRUCell, _cell),
]


def _rule_for(m):
    for cls, rule in _RESULT_RULES:
        if isinstance(m, cls):
            return rule
    for cls, rule in _RULES:
        if isinstance(m, cls):
            return _simple(rule)
    return None


def _simple(rule):
    """A rule giving (output shape, MACs), as one giving (row shape, MACs, placeholder)."""
    def full(m, x, *args, **kwargs):
        out_shape, macs = rule(m, x)
        return tuple(out_shape[1:]), macs, _placeholder(out_shape, x.dtype)
    return full


def _own_params(m):
    """Parameters held directly by ``m`` (not by its submodules)."""
    return [v for _, v in m._entries() if isinstance(v, nn.Parameter)]


def summary(model, input_shape, name=None, dtype=np.float32):
    """Per-layer output shapes, parameters and MACs of ``model`` on one example of
    ``input_shape`` (no batch axis; e.g. ``(3, 224, 224)``, or ``'3x224x224'``).

    Returns a ``Summary`` with ``rows`` (``name``, ``kind``, ``output_shape``, ``params``,
    ``macs`` per leaf layer, in call order), ``total_params`` and ``total_macs``; ``print()`` it
    for a table. The model's weights, modes and statistics are left as they were (layers whose
    input size was ``None`` get materialized)."""
    if isinstance(input_shape, str):
        input_shape = parse_shape(input_shape)
    input_shape = tuple(int(s) for s in input_shape)
    if not input_shape or min(input_shape) < 1:
        raise ValueError(f"summary: input_shape must be positive sizes without the batch axis, "
                         f"got {input_shape}")
    paths = {}
    for path, m in model.named_modules():
        paths.setdefault(id(m), path)
    rows = []
    counted = set()  # ids of modules whose own parameters are already on a row

    def count_params(m):
        if id(m) in counted:
            return 0
        counted.add(id(m))
        return sum(int(p.array.size) for p in _own_params(m))

    def shape_forward(m, rule):
        def forward(x, *args, **kwargs):
            row_shape, macs, out = rule(m, x, *args, **kwargs)
            rows.append(LayerRow(paths.get(id(m), type(m).__name__), type(m).__name__,
                                 tuple(row_shape), count_params(m), int(macs)))
            return out
        return forward

    def real_forward(m, original):
        def forward(*args, **kwargs):
            args = [Tensor(np.zeros(a.shape, a.dtype)) if isinstance(a, Tensor) else a for a in args]
            out = original(*args, **kwargs)
            shape = tuple(out.shape[1:]) if isinstance(out, Tensor) else None
            rows.append(LayerRow(paths.get(id(m), type(m).__name__), type(m).__name__, shape,
                                 count_params(m), 0))
            return out
        return forward

    patched = []
    try:
        for m in model.modules():
            if any(True for _ in m.named_children()):
                continue  # composite: its own forward runs on the placeholders
            saved = m.__dict__.get("forward")
            rule = _rule_for(m)
            m.forward = shape_forward(m, rule) if rule else real_forward(m, m.forward)
            patched.append((m, saved))
        x = _placeholder((1,) + input_shape, dtype)
        _target_device[0] = model.device
        was_training = [(m, m.training) for m in model.modules()]
        model.eval()  # composite forwards see inference mode (e.g. no auxiliary heads)
        try:
            with no_grad():
                out = model(x)
        finally:
            for m, mode in was_training:
                m.training = mode
    finally:
        for m, saved in patched:
            del m.__dict__["forward"]
            if saved is not None:
                m.__dict__["forward"] = saved
    # parameters of composite modules and of layers the forward never reached
    for path, m in model.named_modules():
        n = count_params(m)
        if n:
            rows.append(LayerRow(path or type(m).__name__, type(m).__name__, None, n, 0))
    buffers = sum(int(b.array.size) for b in model.buffers())
    out_shape = tuple(out.shape[1:]) if isinstance(out, Tensor) else None
    return Summary(name or type(model).__name__, input_shape, out_shape, rows, buffers)
