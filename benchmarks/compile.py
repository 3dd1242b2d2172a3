"""Graph mode (dn.compile) against eager mode and PyTorch eager: memory and speed.

    python -m benchmarks.compile [--quick] [--rounds N] [--json benchmarks/compile.json]

Memory: one SGD training step after a warm-up step, in a fresh process per case: the peak
bytes of NumPy buffers during the step (NumPy reports them to tracemalloc; PyTorch's
allocator does not, so its column is RSS only) and the process's peak RSS. Cases: D2L
ResNet-18 (``resnet18-d2l``) at 96x96 batch 64 and DenseNet-121 at 96x96 batch 16, each eager,
compiled, and compiled with ``recompute="sqrt"``, beside PyTorch eager.

Speed: training step times, compiled vs eager, for LeNet (batch 256) and resnet18-small at
28x28 batch 64; resnet18 inference at 224x224 batch 1; the time of resnet50's first compiled
call (the trace and the passes) beside one eager forward.

``--quick`` shrinks every size (a smoke run, seconds; its figures mean nothing).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc

MEMORY_CASES = {  # name -> (zoo model, side, batch, classes, in_channels)
    "resnet18-d2l": ("resnet18-d2l", 96, 64, 10, 1),
    "densenet121": ("densenet121", 96, 16, 10, 1),
}
QUICK = {"resnet18-d2l": ("resnet18-d2l", 32, 2, 10, 1), "densenet121": ("densenet121", 32, 2, 10, 1)}
MODES = ("eager", "compiled", "recompute", "pytorch")


def _divenet_step(model, x, y, lr=0.01):
    import divenet.functional as F
    from divenet.optim import SGD

    opt = SGD(model.parameters(), lr=lr)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return step


def _torch_twin(torch, name, classes, cin):
    from . import torch_models

    if name == "resnet18-d2l":
        return torch_models.d2l_resnet18(torch, cin, classes)
    return torch_models.densenet121(torch, classes, cin)


def measure_memory(case, mode, quick=False):
    """Peak NumPy bytes (tracemalloc; None for PyTorch) and peak RSS (bytes) of one step."""
    import numpy as np

    name, side, batch, classes, cin = (QUICK if quick else MEMORY_CASES)[case]
    rng = np.random.default_rng(0)
    xa = rng.standard_normal((batch, cin, side, side)).astype(np.float32)
    ya = rng.integers(0, classes, batch)
    if mode == "pytorch":
        from .common import setup_torch

        torch = setup_torch()
        model = _torch_twin(torch, name, classes, cin)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x, y = torch.from_numpy(xa), torch.from_numpy(ya)

        def step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        step()
        step()
        return None, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    import divenet as dn
    from divenet.models import get_model

    dn.manual_seed(0)
    model = get_model(name, num_classes=classes, in_channels=cin)
    if mode != "eager":
        model = dn.compile(model, recompute="sqrt" if mode == "recompute" else None)
    step = _divenet_step(model, dn.tensor(xa), dn.tensor(ya))
    step()  # eager or the trace
    step()  # the first replay
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, seconds


def _memory_table(quick):
    rows = []
    for case in MEMORY_CASES:
        for mode in MODES:
            out = subprocess.run([sys.executable, "-m", "benchmarks.compile", "--one", f"{case}:{mode}"]
                                 + (["--quick"] if quick else []), capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"{case} {mode}: {out.stderr.strip().splitlines()[-1:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row.update(case=case, mode=mode)
            rows.append(row)
            eager = next(r for r in rows if r["case"] == case and r["mode"] == "eager")
            ratio = f"{row['numpy_peak'] / eager['numpy_peak']:.2f}x eager" if row["numpy_peak"] else ""
            print(f"{case:14s} {mode:10s} numpy peak {_mb(row['numpy_peak']):>9s}  RSS {_mb(row['rss']):>9s}  "
                  f"{ratio}" + (f"  step {row['seconds']:.2f} s" if row.get("seconds") else ""), flush=True)
    return rows


def _mb(n):
    return "-" if n is None else f"{n / 2**20:.1f} MB"


def _speed_table(rounds, quick):
    import numpy as np

    import divenet as dn
    from divenet.models import get_model

    from .common import time_pair

    rows = []
    cases = [("lenet", 28, 8 if quick else 256, True), ("resnet18-small", 8 if quick else 28, 2 if quick else 64, True),
             ("resnet18", 32 if quick else 224, 1, False)]
    for name, side, batch, training in cases:
        cin, classes = (3, 1000) if name == "resnet18" else (1, 10)
        rng = np.random.default_rng(0)
        x = dn.tensor(rng.standard_normal((batch, cin, side, side)).astype(np.float32))
        y = dn.tensor(rng.integers(0, classes, batch))
        dn.manual_seed(0)
        eager = get_model(name, num_classes=classes, in_channels=cin)
        compiled = dn.compile(get_model(name, num_classes=classes, in_channels=cin))
        if training:
            fe, fc = _divenet_step(eager, x, y), _divenet_step(compiled, x, y)
        else:
            eager.eval()
            compiled.eval()

            def fe():
                with dn.no_grad():
                    eager(x)

            def fc():
                with dn.no_grad():
                    compiled(x)
        fc()  # the trace
        tc, te = time_pair(fc, fe, rounds=rounds)
        what = "train step" if training else "inference"
        rows.append({"case": f"{name} {what} {side}x{side} b{batch}", "compiled_ms": tc * 1e3,
                     "eager_ms": te * 1e3, "ratio": tc / te})
        print(f"{rows[-1]['case']:40s} compiled {tc * 1e3:8.2f} ms  eager {te * 1e3:8.2f} ms  "
              f"{tc / te:.2f}x", flush=True)
    side = 32 if quick else 224
    x = dn.tensor(np.random.default_rng(0).standard_normal((1, 3, side, side)).astype(np.float32))
    model = get_model("resnet50", num_classes=1000, in_channels=3).eval()  # batch 1: eval mode
    with dn.no_grad():
        t0 = time.perf_counter()
        model(x)
        forward = time.perf_counter() - t0
        compiled = dn.compile(model)
        t0 = time.perf_counter()
        compiled(x)
        first = time.perf_counter() - t0
    rows.append({"case": f"resnet50 compile {side}x{side} b1", "first_call_s": first, "eager_forward_s": forward})
    print(f"resnet50 first compiled call {first:.2f} s (one eager forward {forward:.2f} s)", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run whose figures mean nothing")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None, help="write the tables to this JSON file")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # CASE:MODE, in the child process
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds: need at least 1 round, got {args.rounds}")
    if args.one:
        case, mode = args.one.split(":")
        if case not in MEMORY_CASES or mode not in MODES:
            ap.error(f"--one: expected CASE:MODE with CASE in {list(MEMORY_CASES)} and MODE in {list(MODES)}")
        out = measure_memory(case, mode, args.quick)
        print(json.dumps({"numpy_peak": out[0], "rss": out[1], "seconds": out[2] if len(out) > 2 else None}))
        return
    result = {"memory": _memory_table(args.quick), "speed": _speed_table(args.rounds, args.quick)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
