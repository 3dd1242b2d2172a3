"""The zoo at real image sizes (issue 14): divenet against its PyTorch twin (benchmarks/
torch_models.py, weights copied by name) in one process, and for inference also ONNX Runtime
running PyTorch's ONNX export of the twin; all on ``threads()`` threads.

- the ImageNet-layout models (MODELS, 3 channels, 1000 classes): a training step (forward,
  cross-entropy, backward, SGD step) at 3x224x224 batch 8 and 3x96x96 batch 32; inference
  (eval, no grad) at 3x224x224 batch 1 and 8;
- D2L's ResNet-18 for 28x28 images (``resnet18-small``, 1 channel, 10 classes): training and
  inference at batch 64 and 256;
- the peak RSS of 3 training steps at 224x224 batch 8, each framework in a fresh process;
- the GFLOP/s of resnet18's convolutions (forward, and backward with both gradients) in a
  224x224 batch-8 training step, against the machine's measured SGEMM rate.

    python -m benchmarks --only zoo [--quick] [--rounds N] [--models resnet18,vgg11]
"""
from __future__ import annotations

import gc
import io
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import divenet as dn
import divenet.functional as F
from divenet import autograd, optim
from divenet.models import get_model
from divenet.ops.conv import Conv2d

from . import torch_models
from .common import Table, setup_torch, threads, time_rounds, train_fns
from .startup import _PEAK

MODELS = ("resnet18", "resnet50", "vgg11", "densenet121", "resnext50", "googlenet", "mobilenet")
SMALL = "resnet18-small"
ALL = MODELS + (SMALL,)

LR = 1e-3  # plain SGD; the value only keeps the weights finite over the rounds


@dataclass(frozen=True)
class Sizes:
    """(side, batch) of each case; tests shrink them."""

    train: tuple = ((224, 8), (96, 32))
    infer: tuple = ((224, 1), (224, 8))
    small: tuple = ((28, 64), (28, 256))  # resnet18-small: training and inference
    rss: tuple = (224, 8)  # 3 training steps
    efficiency: tuple = (224, 8)  # resnet18's convolutions in a training step
    sgemm: int = 2048


SIZES = Sizes()


def channels_classes(name):
    return (1, 10) if name == SMALL else (3, 1000)


def build(name, torch):
    """divenet's model and its PyTorch twin holding the same weights."""
    c, k = channels_classes(name)
    ours = get_model(name, num_classes=k, in_channels=c)
    with torch.device("meta"):  # no init of PyTorch's own: the weights are copied over
        theirs = torch_models.zoo_twin(torch, name, num_classes=k, in_channels=c)
    theirs = theirs.to_empty(device="cpu")
    copy_weights(ours, theirs, torch)
    return ours, theirs


def copy_weights(ours, theirs, torch):
    """Load divenet's state_dict into the twin by name (strict: every key on both sides)."""
    theirs.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                            for k, v in ours.state_dict().items()})


class ZooTable(Table):
    """Rows as Table's; inference rows add ONNX Runtime's time and divenet's ratio to it, and
    divenet's compiled eval graph (``dn.compile``: batch norm folded into the convolutions,
    ReLU in place, as ONNX Runtime optimizes its graph) with its ratios to both."""

    def header(self):
        print(f"\n{self.title}  (threads={threads()}; ratios = divenet / other, lower is better)")
        print(f"  {'case':<44} {'divenet':>9} {'pytorch':>9} {'onnxrt':>9} {'':<4} {'/torch':>7} {'/ort':>7}"
              f" {'compiled':>9} {'/torch':>7} {'/ort':>7}")

    def show(self, row):
        ort = f"{row['onnxruntime']:.1f}" if "onnxruntime" in row else ""
        vs_ort = f"{row['ratio_onnxruntime']:.2f}x" if "onnxruntime" in row else ""
        compiled = (f" {row['compiled']:>9.1f} {row['ratio_compiled']:>6.2f}x {row['ratio_compiled_onnxruntime']:>6.2f}x"
                    if "compiled" in row else "")
        print(f"  {row['case']:<44} {row['divenet']:>9.1f} {row['pytorch']:>9.1f} {ort:>9} "
              f"{row['unit']:<4} {row['ratio']:>6.2f}x {vs_ort:>7}{compiled}", flush=True)


# ---- timed cases ---------------------------------------------------------------------------------
def ort_session(theirs, torch, sample):
    """ONNX Runtime on PyTorch's (TorchScript) ONNX export of ``theirs``, batch dimension
    dynamic, ``threads()`` intra-op threads; its workers stop spinning at the end of each run,
    so that they do not take the cores from the framework timed next."""
    import onnxruntime as ort

    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(theirs, (torch.from_numpy(sample),), f, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads(), 1
    so.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(f.getvalue(), so, providers=["CPUExecutionProvider"])


def _infer_fns(ours, compiled, theirs, torch, session, x, steps):
    dx, tx = dn.tensor(x), torch.from_numpy(x)

    def run_ours():
        with dn.no_grad():
            for _ in range(steps):
                ours(dx)

    def run_compiled():
        with dn.no_grad():
            for _ in range(steps):
                compiled(dx)

    def run_theirs():
        with torch.no_grad():
            for _ in range(steps):
                theirs(tx)

    def run_ort():
        for _ in range(steps):
            session.run(None, {"x": x})

    return run_ours, run_theirs, run_ort, run_compiled


def model_cases(table, name, sizes, rounds, steps, torch, rng):
    c, k = channels_classes(name)
    train = sizes.small if name == SMALL else sizes.train
    infer = sizes.small if name == SMALL else sizes.infer
    ours, theirs = build(name, torch)
    for side, batch in train:
        x = rng.random((batch, c, side, side), dtype=np.float32)
        y = rng.integers(0, k, batch)
        a, b = time_rounds(train_fns(ours, theirs, torch, x, y, steps, LR), rounds)
        table.add(f"{name} train step {c}x{side}x{side} b{batch}", a / steps, b / steps, model=name,
                  mode="train", input=[c, side, side], batch=batch, steps=steps)
    ours.eval()
    theirs.eval()
    session = ort_session(theirs, torch, np.zeros((1, c, infer[0][0], infer[0][0]), np.float32))
    compiled = dn.compile(ours, cache_size=len(infer))
    for side, batch in infer:
        x = rng.random((batch, c, side, side), dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dn.compile.RecompileWarning)  # one graph per batch size
            a, b, o, g = time_rounds(_infer_fns(ours, compiled, theirs, torch, session, x, steps), rounds)
        table.add(f"{name} inference {c}x{side}x{side} b{batch}", a / steps, b / steps, model=name,
                  mode="infer", input=[c, side, side], batch=batch, steps=steps,
                  onnxruntime=o / steps * 1e3, ratio_onnxruntime=a / o,
                  compiled=g / steps * 1e3, ratio_compiled=g / b, ratio_compiled_onnxruntime=g / o)


# ---- peak memory ---------------------------------------------------------------------------------
_RSS = {
    "divenet": _PEAK + """
import numpy as np, divenet as dn, divenet.functional as F
from divenet import optim, _cpu
from divenet.models import get_model
_cpu.set_blas_threads({threads})
m = get_model({name!r}, num_classes={k}, in_channels={c}); o = optim.SGD(m.parameters(), lr={lr})
rng = np.random.default_rng(0)
x = dn.tensor(rng.random(({b}, {c}, {s}, {s}), dtype=np.float32)); y = dn.tensor(rng.integers(0, {k}, {b}))
for _ in range({steps}):
    loss = F.cross_entropy(m(x), y); o.zero_grad(); loss.backward(); o.step()
print(peak_mib())
""",
    "pytorch": _PEAK + """
import sys; sys.path.insert(0, {root!r})
import torch
from benchmarks import torch_models
torch.set_num_threads({threads})
m = torch_models.zoo_twin(torch, {name!r}, {k}, {c}); o = torch.optim.SGD(m.parameters(), lr={lr})
g = torch.Generator().manual_seed(0)
x = torch.rand(({b}, {c}, {s}, {s}), generator=g); y = torch.randint(0, {k}, ({b},), generator=g)
for _ in range({steps}):
    loss = torch.nn.functional.cross_entropy(m(x), y); o.zero_grad(); loss.backward(); o.step()
print(peak_mib())
""",
}


def peak_rss(name, side, batch, steps=3):
    """MiB of peak resident memory (VmHWM) of a fresh process that builds ``name`` and runs
    ``steps`` training steps, for divenet and for the PyTorch twin."""
    c, k = channels_classes(name)
    fill = dict(name=name, c=c, k=k, s=side, b=batch, steps=steps, lr=LR, threads=threads(),
                root=str(Path(__file__).resolve().parent.parent))
    out = {}
    for fw, code in _RSS.items():
        res = subprocess.run([sys.executable, "-c", code.format(**fill)], capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"zoo: the {fw} memory run of {name} failed: {res.stderr.strip()[-500:]}")
        out[fw] = float(res.stdout.strip().splitlines()[-1])
    return out["divenet"], out["pytorch"]


# ---- convolution efficiency ----------------------------------------------------------------------
class ConvTimer(autograd.OpHooks):
    """Seconds and floating-point operations of every Conv2d forward and backward in its
    ``with`` block (this thread). A backward counts the gradients it had to compute: the input's
    and the weight's, each as many multiply-adds as the forward."""

    def __init__(self):
        self.forward_s = self.forward_flop = self.backward_s = self.backward_flop = 0.0

    def apply(self, cls, inputs, kwargs):
        if cls is not Conv2d:
            return super().apply(cls, inputs, kwargs)
        t0 = time.perf_counter()
        out = super().apply(cls, inputs, kwargs)
        self.forward_s += time.perf_counter() - t0
        self.forward_flop += 2.0 * out.numel() * int(np.prod(inputs[1].shape[1:]))
        return out

    def backward(self, node, grads):
        if node.fn is not Conv2d:
            return super().backward(node, grads)
        macs = float(np.prod(node.out_meta[0][0])) * int(np.prod(node.inputs[1].shape[1:]))
        needed = sum(bool(n) for n in node.ctx.needs_input_grad[:2])
        t0 = time.perf_counter()
        out = super().backward(node, grads)
        self.backward_s += time.perf_counter() - t0
        self.backward_flop += 2.0 * macs * needed
        return out


def sgemm_rate(n, repeats=5):
    """GFLOP/s of an n x n float32 ``np.matmul`` (median of ``repeats``, after a warm-up)."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / sorted(times)[repeats // 2] / 1e9


def conv_efficiency(side, batch, n, steps=1, name="resnet18"):
    """GFLOP/s of ``name``'s convolutions in a training step at ``side`` x ``side``, batch
    ``batch``, against an n x n SGEMM's."""
    table = Table("zoo: convolution GFLOP/s")
    print(f"\n{table.title}  (threads={threads()}; efficiency = GFLOP/s / SGEMM GFLOP/s)")
    c, k = channels_classes(name)
    rng = np.random.default_rng(0)
    model = get_model(name, num_classes=k, in_channels=c)
    opt = optim.SGD(model.parameters(), lr=LR)
    x = dn.tensor(rng.random((batch, c, side, side), dtype=np.float32))
    y = dn.tensor(rng.integers(0, k, batch))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up: first-call allocations
    timer = ConvTimer()
    t0 = time.perf_counter()
    with timer:
        for _ in range(steps):
            step()
    step_s = (time.perf_counter() - t0) / steps
    sgemm = sgemm_rate(n)
    parts = [("forward", timer.forward_s, timer.forward_flop),
             ("backward (both gradients)", timer.backward_s, timer.backward_flop),
             ("forward + backward", timer.forward_s + timer.backward_s,
              timer.forward_flop + timer.backward_flop)]
    for what, s, flop in parts:
        rate = flop / s / 1e9
        row = {"case": f"{name} convolutions, train step {c}x{side}x{side} b{batch}, {what}",
               "model": name, "input": [c, side, side], "batch": batch, "ms_per_step": s / steps * 1e3,
               "gflop_per_step": flop / steps / 1e9, "gflop_per_s": rate, "sgemm_gflop_per_s": sgemm,
               "sgemm_n": n, "efficiency": rate / sgemm, "share_of_step": s / steps / step_s}
        table.rows.append(row)
        print(f"  {row['case']:<68} {row['ms_per_step']:>8.1f} ms {rate:>7.1f} GFLOP/s "
              f"{row['efficiency']:>6.0%} of SGEMM ({sgemm:.0f}), {row['share_of_step']:.0%} of the step",
              flush=True)
    return table


# ---- the part ------------------------------------------------------------------------------------
def run(rounds=3, quick=False, models=None, sizes=None):
    """The zoo part's tables: timings (and peak RSS), then convolution efficiency. ``quick``:
    one step per timed call instead of two; ``sizes`` defaults to SIZES."""
    sizes = sizes or SIZES
    torch = setup_torch()
    models = list(models or ALL)
    steps = 1 if quick else 2
    rng = np.random.default_rng(0)
    table = ZooTable("zoo: training and inference")
    table.header()
    started = time.perf_counter()
    for name in models:
        t0 = time.perf_counter()
        model_cases(table, name, sizes, rounds, steps, torch, rng)
        gc.collect()
        print(f"  ({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
    side, batch = sizes.rss
    for name in models:
        if name != SMALL:
            a, b = peak_rss(name, side, batch)
            table.add(f"{name} peak RSS, 3 train steps 3x{side}x{side} b{batch}", a, b, unit="MiB",
                      scale=1, model=name, mode="memory", input=[3, side, side], batch=batch, steps=3)
    tables = [table]
    if "resnet18" in models:
        tables.append(conv_efficiency(*sizes.efficiency, sizes.sgemm, steps))
    print(f"  (zoo: {time.perf_counter() - started:.0f} s)", flush=True)
    return tables


def parse_models(text):
    """``--models``: comma-separated zoo names out of ALL."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in ALL]
    if bad or not names:
        what = f"unknown {', '.join(map(repr, bad))}" if bad else f"no model named in {text!r}"
        raise ValueError(f"--models: {what}; choose from {', '.join(ALL)}")
    return names


if __name__ == "__main__":
    from .__main__ import main

    main(["--only", "zoo", *sys.argv[1:]])
