"""Activation checkpointing, as ``torch.utils.checkpoint``: trade compute for memory.

``checkpoint(fn, *args)`` runs ``fn`` without recording its inner graph, so none of its
intermediate arrays stay alive for backward; only its inputs are kept. When backward reaches
the checkpoint, ``fn`` runs again with grad on (from the same random state, so dropout draws
the same mask) and the gradient flows through that fresh graph, which is freed right after.

How it sits in the graph: the whole call is one node (``_Checkpoint``) whose inputs are the
tensor arguments plus every tensor from outside that ``fn`` reads and that requires a gradient
(its parameters, a captured tensor), found by an ``autograd.OpHooks`` observer during the first
run. The recomputation substitutes graph-free stand-ins for the arguments and for captured
tensors that the outer graph made (again through ``OpHooks``), so its backward stops at the
checkpoint's edge and hands the stand-ins' gradients back to the outer backward, which routes
them on as for any op; captured leaves (parameters) receive their gradient from the inner
backward directly, as in a plain backward. Checkpoints nest.

Differences from PyTorch: ``use_reentrant`` defaults to False (PyTorch warns and picks True);
with ``use_reentrant=True`` only the tensor arguments are the node's inputs (no keyword
arguments, a warning when none requires a gradient, and captured parameters get their gradient
from the inner backward directly, as PyTorch's reentrant variant does). As in PyTorch, a layer
that updates state in its forward (batch norm's running statistics) updates it again when
recomputed. The random state is restored for the CPU generator and the ``sim`` device; a GPU
stream (cuRAND) cannot be saved, so its draws differ in the recomputation (a warning says so).

May import: autograd, tensor, random, nn (for ``checkpoint_sequential``).
"""
from __future__ import annotations

import warnings

from .. import autograd, random as _random
from ..backend import array_module
from ..autograd import Function, OpHooks, enable_grad, is_grad_enabled, no_grad, run_apply, run_inplace
from ..tensor import Tensor

__all__ = ["checkpoint", "checkpoint_sequential"]


class _Forward(OpHooks):
    """Runs each op through the hooks installed before (a profiler, a tracer) or plainly."""

    def apply(self, cls, inputs, kwargs):
        prev = self._previous
        return prev.apply(cls, inputs, kwargs) if prev is not None else run_apply(cls, inputs, kwargs)

    def apply_inplace(self, fn, target, others, name, kwargs):
        prev = self._previous
        if prev is not None:
            return prev.apply_inplace(fn, target, others, name, kwargs)
        return run_inplace(fn, target, others, name, kwargs)

    def backward(self, node, grads):
        prev = self._previous
        return prev.backward(node, grads) if prev is not None else node.fn.backward(node.ctx, *grads)


class _Capture(_Forward):
    """Collects the tensors from outside ``fn`` that require a gradient: under ``no_grad`` the
    tensors ``fn`` makes do not, so every such op input is one."""

    def __init__(self, known):
        self.seen = {id(t) for t in known}
        self.found = []

    def _note(self, tensors):
        for t in tensors:
            if isinstance(t, Tensor) and t.requires_grad and id(t) not in self.seen:
                self.seen.add(id(t))
                self.found.append(t)

    def apply(self, cls, inputs, kwargs):
        self._note(inputs)
        return super().apply(cls, inputs, kwargs)

    def apply_inplace(self, fn, target, others, name, kwargs):
        self._note((target, *others))
        return super().apply_inplace(fn, target, others, name, kwargs)


class _Substitute(_Forward):
    """Replaces tensors by their stand-ins (by identity) in every op's inputs."""

    def __init__(self, mapping):
        self.mapping = mapping

    def apply(self, cls, inputs, kwargs):
        m = self.mapping
        return super().apply(cls, tuple(m.get(id(t), t) for t in inputs), kwargs)

    def apply_inplace(self, fn, target, others, name, kwargs):
        m = self.mapping
        return super().apply_inplace(fn, m.get(id(target), target), tuple(m.get(id(t), t) for t in others),
                                     name, kwargs)


class _Seed(Function):
    """Joins several outputs into one root so that one backward walk seeds each with its own
    gradient (``grads``)."""

    @staticmethod
    def forward(ctx, *arrays, grads):
        ctx.grads = grads
        return array_module(arrays[0]).zeros((), dtype=arrays[0].dtype)

    @staticmethod
    def backward(ctx, g):
        return ctx.grads


# ---- the random state ----------------------------------------------------------------------------
_GPU_WARNED = []


def _rng_state(devices):
    """The CPU generator's state and, per other device, its stream's (None: not made yet, so it
    will be derived from the CPU state again)."""
    states = {None: _random._generator.bit_generator.state}
    for dev in devices:
        if dev is None or dev.kind == "cpu":
            continue
        g = _random._streams.get(dev)
        bits = getattr(g, "bit_generator", None) if g is not None else None
        if g is not None and bits is None:
            if not _GPU_WARNED:
                _GPU_WARNED.append(True)
                warnings.warn(f"checkpoint: the random state of {dev} cannot be saved, so random ops "
                              "(dropout) draw other numbers when recomputed; pass "
                              "preserve_rng_state=False to silence this", stacklevel=4)
            continue
        states[dev] = bits.state if bits is not None else None
    return states


def _set_rng_state(states):
    _random._generator.bit_generator.state = states[None]
    for dev, state in states.items():
        if dev is None:
            continue
        if state is None:
            _random._streams.pop(dev, None)
        else:
            _random.generator(dev).bit_generator.state = state


# ---- checkpoint ------------------------------------------------------------------------------------
class _Run:
    """What the recomputation needs: the function, its arguments, the node's input tensors (the
    tensor arguments first, then the captured ones) and the random state before the first run."""

    __slots__ = ("fn", "args", "kwargs", "tensors", "substituted", "rng", "n_out", "out_arrays")

    def backward(self, grads):
        stand_ins = []
        mapping = {}
        for t in self.tensors[:self.substituted]:
            s = Tensor._make(t.array, t.device, None)
            s.requires_grad = t.requires_grad
            stand_ins.append(s)
            mapping[id(t)] = s
        args = [mapping.get(id(a), a) if isinstance(a, Tensor) else a for a in self.args]
        kwargs = {k: mapping.get(id(v), v) if isinstance(v, Tensor) else v for k, v in self.kwargs.items()}
        if self.rng is not None:
            current = _rng_state(list(self.rng))
            _set_rng_state(self.rng)
        try:
            with enable_grad(), _Substitute(mapping):
                out = _tensors_of(self.fn(*args, **kwargs))
        finally:
            if self.rng is not None:
                _set_rng_state(current)
        if len(out) != self.n_out:
            raise RuntimeError(f"checkpoint: the recomputed forward returned {len(out)} tensors but the first "
                               f"run returned {self.n_out}; the function must run the same way twice")
        roots = [(o, g) for o, g in zip(out, grads) if o.requires_grad]
        if roots:
            seed = run_apply(_Seed, tuple(o for o, _ in roots), {"grads": tuple(g for _, g in roots)})
            autograd.backward(seed, array_module(seed.array).ones((), dtype=seed.dtype))
        result = [s._grad.array if s._grad is not None else None for s in stand_ins]
        return tuple(result) + (None,) * (len(self.tensors) - len(stand_ins))


class _Checkpoint(Function):
    """The node standing for a checkpointed call; its forward hands over the outputs of the
    first (unrecorded) run, its backward recomputes."""

    @staticmethod
    def forward(ctx, *arrays, run):
        ctx.run = run
        ctx.save_for_backward(*arrays)  # so that an in-place change of an input before backward raises
        out, run.out_arrays = run.out_arrays, None
        return out

    @staticmethod
    def backward(ctx, *grads):
        return ctx.run.backward(grads)


def _tensors_of(out):
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [o for o in out if isinstance(o, Tensor)]
    return []


def _rebuild(out, new):
    """``out`` with its tensors replaced, in order, by ``new``."""
    if isinstance(out, Tensor):
        return new[0]
    it = iter(new)
    items = [next(it) if isinstance(o, Tensor) else o for o in out]
    return type(out)(items) if isinstance(out, list) else tuple(items)


def checkpoint(function, *args, use_reentrant=False, preserve_rng_state=True, **kwargs):
    """``function(*args, **kwargs)`` without keeping its intermediate arrays for backward; they
    are recomputed when backward reaches the call. Returns what ``function`` returns (a Tensor,
    or a tuple or list holding Tensors and other values). Gradients equal those of the plain
    call."""
    if not callable(function):
        raise TypeError(f"checkpoint: function must be callable (a Module or a function), got "
                        f"{type(function).__name__}")
    if not isinstance(use_reentrant, bool):
        raise TypeError(f"checkpoint: use_reentrant must be True or False, got {use_reentrant!r}")
    if not isinstance(preserve_rng_state, bool):
        raise TypeError(f"checkpoint: preserve_rng_state must be True or False, got {preserve_rng_state!r}")
    if use_reentrant and kwargs:
        raise ValueError("checkpoint: unexpected keyword arguments with use_reentrant=True: "
                         f"{', '.join(kwargs)} (pass them positionally, or use_reentrant=False)")
    explicit = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
    if use_reentrant and not any(t.requires_grad for t in explicit):
        warnings.warn("checkpoint: None of the inputs have requires_grad=True. Gradients will be None",
                      stacklevel=2)
    if not is_grad_enabled():
        return function(*args, **kwargs)
    devices = {t.device for t in explicit}
    rng = _rng_state(devices) if preserve_rng_state else None
    capture = _Capture(explicit)
    with no_grad(), capture:
        out = function(*args, **kwargs)
    outs = _tensors_of(out)
    if not outs:
        raise TypeError(f"checkpoint: function must return a Tensor or a tuple or list holding Tensors, got "
                        f"{type(out).__name__}")
    tensors = list({id(t): t for t in explicit}.values())  # one input per distinct tensor
    if not any(t.requires_grad for t in tensors) and (use_reentrant or not capture.found):
        return out  # nothing to differentiate: the plain result
    run = _Run()
    run.fn, run.args, run.kwargs, run.rng = function, args, kwargs, rng
    # captured tensors made by the outer graph get stand-ins (the gradient goes back out through
    # the node); captured leaves (parameters) are not substituted: the inner backward
    # accumulates into their .grad directly, as a plain backward would, without an extra copy
    made = [t for t in capture.found if t._node is not None]
    leaves = [t for t in capture.found if t._node is None]
    run.substituted = len(tensors) if use_reentrant else len(tensors) + len(made)
    run.tensors = tensors + ([] if use_reentrant else made + leaves)
    run.n_out = len(outs)
    run.out_arrays = tuple(o.array for o in outs)
    new = _Checkpoint.apply(*run.tensors, run=run)
    return _rebuild(out, new)


def checkpoint_sequential(functions, segments, input, use_reentrant=False, **kwargs):
    """Run ``functions`` (a Sequential or a list of callables) one after the other on ``input``,
    in ``segments`` chunks, all checkpointed but the last (whose output backward needs first),
    as PyTorch's ``checkpoint_sequential``."""
    from ..nn import Sequential

    preserve = kwargs.pop("preserve_rng_state", True)
    if kwargs:
        raise ValueError(f"checkpoint_sequential: unexpected keyword arguments: {', '.join(kwargs)}")
    if isinstance(functions, Sequential):
        functions = [m for _, m in functions.named_children()]
    elif isinstance(functions, (list, tuple)):
        functions = list(functions)
    else:
        raise TypeError(f"checkpoint_sequential: functions must be a Sequential or a list of callables, got "
                        f"{type(functions).__name__}")
    bad = next((i for i, f in enumerate(functions) if not callable(f)), None)
    if bad is not None:
        raise TypeError(f"checkpoint_sequential: functions[{bad}] is a {type(functions[bad]).__name__}, "
                        "not a callable")
    if isinstance(segments, bool) or not isinstance(segments, int) or not 1 <= segments <= max(len(functions), 1):
        raise ValueError(f"checkpoint_sequential: segments must be an integer from 1 to the number of "
                         f"functions ({len(functions)}), got {segments!r}")

    def run(start, end):
        def forward(x):
            for f in functions[start:end]:
                x = f(x)
            return x
        return forward

    size = len(functions) // segments
    end = 0
    for start in range(0, size * (segments - 1), size):
        end = start + size
        input = checkpoint(run(start, end), input, use_reentrant=use_reentrant, preserve_rng_state=preserve)
    return run(end, len(functions))(input)
