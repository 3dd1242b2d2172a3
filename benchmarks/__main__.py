"""Run every benchmark and write benchmarks/results.json:

    python -m benchmarks [--quick] [--rounds N] [--only ops,models,startup,rnn]
"""
from __future__ import annotations

import argparse

from . import models, ops, rnn, startup
from .common import Table, write_json


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a 10k-image LeNet epoch instead of 60k")
    ap.add_argument("--only", default="ops,models,startup")
    ap.add_argument("--json", default="benchmarks/results.json")
    args = ap.parse_args(argv)
    parts = args.only.split(",")
    tables = []
    if "ops" in parts:
        tables.append(ops.run(args.rounds))
    if "models" in parts:
        t = Table("models: training and inference")
        t.header()
        models.lenet_epoch(t, args.rounds, limit=10240 if args.quick else None)
        models.resnet_steps(t, args.rounds)
        models.inference(t, args.rounds)
        tables.append(t)
    if "rnn" in parts:
        tables.append(rnn.run(args.rounds))
    if "startup" in parts:
        tables.append(startup.run())
    write_json(args.json, tables)


if __name__ == "__main__":
    main()
