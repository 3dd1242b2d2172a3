"""Timing helpers: the two frameworks alternate round by round in one process, so that machine
noise hits both alike; medians and the ratio divenet/PyTorch are reported."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time


def threads():
    return int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))


def setup_torch():
    """PyTorch, with its threads and NumPy's OpenBLAS threads both set to ``threads()``."""
    import torch

    from divenet import _cpu

    torch.set_num_threads(threads())
    _cpu.set_blas_threads(threads())
    return torch


def time_rounds(fns, rounds=5, warmup=1):
    """Median seconds of each of ``fns``; every round runs each once, and the one that goes
    first rotates from round to round."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for r in range(rounds):
        for i in range(len(fns)):
            k = (i + r) % len(fns)
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def time_pair(ours, theirs, rounds=5, warmup=1):
    """Median seconds of ``ours()`` and ``theirs()``, alternating which goes first."""
    a, b = time_rounds((ours, theirs), rounds, warmup)
    return a, b


class Table:
    def __init__(self, title):
        self.title = title
        self.rows = []

    def add(self, case, ours, theirs, unit="ms", scale=1e3, **extra):
        row = {"case": case, "divenet": ours * scale, "pytorch": theirs * scale, "unit": unit,
               "ratio": ours / theirs if theirs else float("nan")}
        row.update(extra)
        self.rows.append(row)
        self.show(row)
        return row

    def show(self, row):
        print(f"  {row['case']:<48} {row['divenet']:>10.2f} {row['pytorch']:>10.2f} {row['unit']:<4} "
              f"{row['ratio']:>6.2f}x", flush=True)

    def header(self):
        print(f"\n{self.title}  (threads={threads()}; ratio = divenet / PyTorch, lower is better)")
        print(f"  {'case':<48} {'divenet':>10} {'pytorch':>10} {'':<4} {'ratio':>7}")


def train_fns(ours, theirs, torch, x, y, steps, lr):
    """Two callables running ``steps`` SGD training steps (forward, cross-entropy, backward,
    update) on the batch (x, y): one for the divenet model ``ours``, one for its PyTorch twin."""
    import divenet as dn
    import divenet.functional as F
    from divenet import optim

    ours_opt = optim.SGD(ours.parameters(), lr=lr)
    theirs_opt = torch.optim.SGD(theirs.parameters(), lr=lr)
    dx, dy, tx, ty = dn.tensor(x), dn.tensor(y), torch.from_numpy(x), torch.from_numpy(y)

    def run_ours():
        for _ in range(steps):
            loss = F.cross_entropy(ours(dx), dy)
            ours_opt.zero_grad()
            loss.backward()
            ours_opt.step()

    def run_theirs():
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(theirs(tx), ty)
            theirs_opt.zero_grad()
            loss.backward()
            theirs_opt.step()

    return run_ours, run_theirs


def environment():
    import numpy

    info = {"python": platform.python_version(), "numpy": numpy.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "threads": threads(),
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "(auto)"), **cpu_model(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    from divenet import _cpu

    info["blas_threads"] = _cpu.blas_threads()
    if "onnxruntime" in sys.modules:
        info["onnxruntime"] = sys.modules["onnxruntime"].__version__
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def cpu_model():
    """The CPU's model name, family and model numbers, and whether it has AVX-512, from
    /proc/cpuinfo: results differ between AVX-512 CPUs of one vendor (issue 14)."""
    from divenet import _cpu

    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return {"cpu": platform.processor() or "(unknown)"}
    return {"cpu": f"{fields.get('model name', '(unknown)')} (family {fields.get('cpu family', '?')} "
                   f"model {fields.get('model', '?')})", "avx512": _cpu._has_avx512()}


def write_json(path, tables):
    """Write ``tables`` into ``path``; the tables of an earlier run that this one did not
    measure stay, each with the environment it was measured in."""
    env = environment()
    out = {"environment": env, "tables": {}, "environments": {}}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        out["tables"] = old.get("tables", {})
        out["environments"] = {t: old.get("environments", {}).get(t, old.get("environment"))
                               for t in out["tables"]}
    for t in tables:
        out["tables"][t.title] = t.rows
        out["environments"][t.title] = env
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"\nwrote {path}")


def main(run, doc, argv=None):
    """The command line of one benchmark module: ``--rounds`` and an optional ``--json``."""
    import argparse

    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    table = run(args.rounds)
    if args.json:
        write_json(args.json, table if isinstance(table, list) else [table])
    return table
