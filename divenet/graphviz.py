"""Pictures of a model's graph and of its memory: ``divenet graph``.

``graph_dot(prof)`` draws the ops of one traced forward pass (the profiler's ``OpHooks`` trace,
divenet/profiler.py) in Graphviz's DOT language: one box per op, labelled with its kind, module
path and output shape; one edge per array passed from op to op; the model's inputs as ellipses;
parameters left out (a box counts them: "+2 params, 1.7K"). Beside each box (its ``xlabel``)
stands the memory plan: the bytes live after the op, what a training step keeps alive for
backward by then. ``write_graph`` writes ``.dot`` as it is and ``.svg`` / ``.png`` through
Graphviz's ``dot`` program (``apt-get install graphviz``).

``memory_timeline`` measures the bytes live after every op of one training step (forward, then
backward) in several modes: ``eager``, ``checkpoint`` (each top-level block of the model run
through ``dn.checkpoint``: only the blocks' inputs are kept, the rest is recomputed in
backward), and ``compiled`` (``dn.compile``) where that exists; ``plot_timeline`` draws them
with matplotlib (the ``plot`` extra).

May import: profiler, utils.checkpoint, nn; matplotlib lazily.
"""
from __future__ import annotations

import contextlib
import math
import shutil
import subprocess

from .profiler import Profile, run_step

__all__ = ["trace_forward", "graph_dot", "write_graph", "memory_timeline", "plot_timeline", "checkpoint_blocks"]

_COLORS = {"Conv2d": "#cfe0f7", "Conv1d": "#cfe0f7", "Linear": "#cfe0f7", "MatMul": "#cfe0f7",
           "BatchNorm": "#d8efd3", "LayerNorm": "#d8efd3", "LocalResponseNorm": "#d8efd3",
           "MaxPool2d": "#f6e3c8", "AvgPool2d": "#f6e3c8", "AdaptiveAvgPool2d": "#f6e3c8",
           "AdaptiveMaxPool2d": "#f6e3c8", "Add": "#f3d1d9", "Concat": "#f3d1d9"}


def trace_forward(model, inputs, train=True):
    """The profile of one step of ``model`` on ``inputs`` after a warm-up (a training step, or
    an eval forward with ``train=False``); its forward ops are the traced graph."""
    from .profiler import profile

    return profile(model, tuple(inputs), steps=1, warmup=1, train=train)


def _mb(n):
    return f"{n / 2 ** 20:.1f} MB" if n >= 2 ** 20 / 10 else f"{n / 2 ** 10:.0f} KB"


def _shape_text(shape):
    return "x".join(map(str, shape)) if shape else "scalar"


def _quote(*lines):
    """A DOT string of ``lines`` (Graphviz's own \\n line breaks)."""
    return '"' + "\\n".join(t.replace("\\", "\\\\").replace('"', '\\"') for t in lines) + '"'


def graph_dot(prof, title=""):
    """The forward ops of ``prof``'s first step as a DOT digraph (a string): nodes ``op0``,
    ``op1``, ... in execution order, inputs ``in0``, ...; ``xlabel`` = bytes live after the op."""
    from .summary import _si

    ops = [r for r in prof.ops if r.step == 0 and r.forward.phase == "forward"]
    lines = ["digraph divenet {",
             f"  graph [rankdir=TB, fontname=Helvetica, fontsize=12, forcelabels=true, label={_quote(title)}];",
             "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#eeeeee\", fontname=Helvetica, fontsize=10];",
             "  edge [color=\"#555555\", arrowsize=0.6];"]
    inputs = {}
    edges = []
    for r in ops:
        params = [s for src, s in zip(r.inputs_from, r.in_shapes) if src == "param" and s is not None]
        label = [r.kind, r.path or "(top)", _shape_text(r.out_shapes[0] if r.out_shapes else ())]
        if params:
            label.append(f"+{len(params)} param{'s' if len(params) > 1 else ''}, "
                         f"{_si(sum(math.prod(s) for s in params))}")
        attrs = [f"label={_quote(*label)}", f"fillcolor={_quote(_COLORS.get(r.kind, '#eeeeee'))}"]
        if prof.memory:
            attrs.append(f"xlabel={_quote(_mb(r.forward.live_bytes) + ' live')}")
        lines.append(f"  op{r.index} [{', '.join(attrs)}];")
        for i, (src, shape) in enumerate(zip(r.inputs_from, r.in_shapes)):
            if isinstance(src, int):
                edges.append(f"  op{src} -> op{r.index};")
            elif src == "input":
                key = (i, shape)
                if key not in inputs:
                    inputs[key] = f"in{len(inputs)}"
                    lines.append(f"  {inputs[key]} [label={_quote('input', _shape_text(shape))}, "
                                 "shape=ellipse, fillcolor=\"#ffffff\"];")
                edges.append(f"  {inputs[key]} -> op{r.index};")
    lines += edges
    lines.append("}")
    return "\n".join(lines) + "\n"


def _need_dot(path):
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError(f"writing {path.name} needs Graphviz's dot program; install graphviz "
                           f"(apt-get install graphviz) or ask for a .dot file (--out {path.with_suffix('.dot')})")
    return exe


def write_graph(dot_text, path):
    """Write DOT text to ``path``: a ``.dot`` file as it is, ``.svg`` or ``.png`` rendered by
    Graphviz's ``dot`` (a RuntimeError naming what to do when it is not installed)."""
    from pathlib import Path

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt == "dot":
        path.write_text(dot_text)
        return path
    if fmt not in ("svg", "png"):
        raise ValueError(f"{path} must end in .dot, .svg or .png")
    exe = _need_dot(path)
    done = subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=dot_text.encode(), capture_output=True)
    if done.returncode:
        msg = done.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"dot failed on {path.name}: {msg[-1] if msg else 'exit status ' + str(done.returncode)}")
    return path


# ---- memory timeline -------------------------------------------------------------------------------
@contextlib.contextmanager
def checkpoint_blocks(model):
    """Run each top-level child of ``model`` through ``dn.checkpoint`` inside this block (its
    forward is wrapped on the instance and restored on exit)."""
    from .utils.checkpoint import checkpoint

    children = [m for _, m in model.named_children()]
    try:
        for m in children:
            forward = m.forward
            object.__setattr__(m, "forward", lambda *a, _f=forward, **k: checkpoint(_f, *a, **k))
        yield model
    finally:
        for m in children:
            vars(m).pop("forward", None)


def _compile():
    import divenet

    fn = getattr(divenet, "compile", None)
    if callable(fn):
        return fn
    fn = getattr(fn, "compile", None)  # divenet.compile as a package holding compile()
    return fn if callable(fn) else None


def available_modes():
    return ("eager", "checkpoint", "compiled") if _compile() is not None else ("eager", "checkpoint")


def memory_timeline(model, inputs, modes=None, loss_fn=None):
    """Bytes live through one training step (after a warm-up step), per mode: {mode: (phases,
    ends, live, peak)}, per op (a compiled forward is one op) in the order they finished: its
    phase ("forward", "backward", "recompute"), when it finished (ms into the step), the bytes
    allocated since the step began still alive after it, and the most alive at any moment
    while it ran (its scratch arrays included)."""
    modes = tuple(modes or available_modes())
    unknown = [m for m in modes if m not in ("eager", "checkpoint", "compiled")]
    if unknown:
        raise ValueError(f"memory_timeline: unknown mode {unknown[0]!r}; choose eager, checkpoint or compiled")
    out = {}
    for mode in modes:
        target, ctx = model, contextlib.nullcontext()
        if mode == "checkpoint":
            ctx = checkpoint_blocks(model)
        elif mode == "compiled":
            compile_fn = _compile()
            if compile_fn is None:
                raise ValueError("memory_timeline: mode 'compiled' needs dn.compile, which this divenet lacks")
            target = compile_fn(model)
        with ctx:
            run_step(target, inputs, True, loss_fn)  # warm-up
            prof = Profile(memory=True)
            with prof:
                run_step(target, inputs, True, loss_fn)
        out[mode] = ([e.phase for e in prof.events], [(e.ts_ns + e.dur_ns) / 1e6 for e in prof.events],
                     [e.live_bytes for e in prof.events],
                     [max(e.live_bytes, e.peak_bytes) for e in prof.events])
    return out


_LABELS = {"eager": "eager", "checkpoint": "dn.checkpoint per top-level block", "compiled": "dn.compile"}


def plot_timeline(timeline, path, title=""):
    """Draw ``memory_timeline``'s result into ``path`` (.svg or .png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    try:
        for mode, (phases, ends, live, peak) in timeline.items():
            # each op's values hold from its end to the next op's end; its peak was reached
            # while it ran, so it is drawn over the interval before its end
            n = len(ends)
            x = [0.0, *(100.0 * (i + 1) / n for i in range(n))]  # op count, not time: times vary run to run
            mb = [b / 2 ** 20 for b in live]
            top = [b / 2 ** 20 for b in peak]
            line, = ax.plot(x, [0.0, *mb], lw=1.6, drawstyle="steps-post",
                            label=f"{_LABELS.get(mode, mode)} (peak {max(top, default=0):.1f} MB)")
            before = [0.0, 0.0, *mb[:-1]]  # live when each op began
            ax.fill_between(x, before, [0.0, *top], step="pre", color=line.get_color(), alpha=0.2, lw=0)
            first_bwd = next((i for i, p in enumerate(phases) if p != "forward"), None)
            if first_bwd:
                ax.axvline(x[first_bwd], color=line.get_color(), ls=":", lw=1)
        ax.set_xlabel("progress through the training step, % of its ops (dotted: where the forward pass ends)")
        ax.set_ylabel("MB live (allocated in the step)")
        ax.text(0.01, 0.97, "line: live after each op; shade: up to the peak while it ran", fontsize=8,
                transform=ax.transAxes, va="top", color="#555555")
        ax.set_title(title or "bytes live through one training step")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=9)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


# ---- divenet graph -----------------------------------------------------------------------------------
def command(args, shape):
    """``divenet graph``: the traced graph with its memory plan, and with ``--timeline`` the
    memory timeline picture."""
    from .profiler import zoo_input

    if args.out.suffix.lower() != ".dot":
        _need_dot(args.out)  # now, not after the trace
    if args.timeline is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise RuntimeError("--timeline needs matplotlib: pip install 'divenet[plot]'") from None
    model, x = zoo_input(args.model, shape, args.batch, args.device)
    size = f"{args.batch}x{'x'.join(map(str, shape))}"
    prof = trace_forward(model, (x,), train=not args.eval)
    ops = [r for r in prof.ops if r.forward.phase == "forward"]
    step = "eval forward" if args.eval else "training forward; beside each op: bytes live after it"
    write_graph(graph_dot(prof, f"{args.model} on {size}: {len(ops)} ops ({step})"), args.out)
    print(f"graph: {args.out} ({len(ops)} ops, peak {prof.peak_live_bytes / 2 ** 20:.1f} MB live)")
    if args.timeline is not None:
        timeline = memory_timeline(model, (x,))
        plot_timeline(timeline, args.timeline, f"bytes live through one training step: {args.model}, {size}")
        peaks = ", ".join(f"{mode} {max(peak) / 2 ** 20:.1f} MB" for mode, (_, _, _, peak) in timeline.items())
        print(f"timeline: {args.timeline} (peaks: {peaks})")
    return 0
