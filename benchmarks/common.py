"""Timing helpers: the two frameworks alternate round by round in one process, so that machine
noise hits both alike; medians and the ratio divenet/PyTorch are reported."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time


def threads():
    return int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))


def setup_torch():
    import torch

    torch.set_num_threads(threads())
    return torch


def time_pair(ours, theirs, rounds=5, warmup=1):
    """Median seconds of ``ours()`` and ``theirs()``, alternating which goes first."""
    for _ in range(warmup):
        ours()
        theirs()
    a, b = [], []
    for r in range(rounds):
        order = [(ours, a), (theirs, b)] if r % 2 == 0 else [(theirs, b), (ours, a)]
        for fn, bucket in order:
            t0 = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


class Table:
    def __init__(self, title):
        self.title = title
        self.rows = []

    def add(self, case, ours, theirs, unit="ms", scale=1e3, **extra):
        row = {"case": case, "divenet": ours * scale, "pytorch": theirs * scale, "unit": unit,
               "ratio": ours / theirs if theirs else float("nan")}
        row.update(extra)
        self.rows.append(row)
        print(f"  {case:<48} {row['divenet']:>10.2f} {row['pytorch']:>10.2f} {unit:<4} {row['ratio']:>6.2f}x",
              flush=True)
        return row

    def header(self):
        print(f"\n{self.title}  (threads={threads()}; ratio = divenet / PyTorch, lower is better)")
        print(f"  {'case':<48} {'divenet':>10} {'pytorch':>10} {'':<4} {'ratio':>7}")


def environment():
    import numpy

    info = {"python": platform.python_version(), "numpy": numpy.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "threads": threads(),
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "(auto)")}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def write_json(path, tables):
    out = {"environment": environment(), "tables": {t.title: t.rows for t in tables}}
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
        write_json(args.json, [table])
    return table
