"""Run every benchmark and write benchmarks/results.json:

    python -m benchmarks [--quick] [--rounds N] [--only ops,models,startup,rnn]
"""
from __future__ import annotations

import argparse

from . import models, ops, rnn, startup
from .common import write_json


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a 10k-image LeNet epoch instead of 60k")
    ap.add_argument("--only", default="ops,models,rnn,startup")
    ap.add_argument("--json", default="benchmarks/results.json")
    args = ap.parse_args(argv)
    parts = args.only.split(",")
    tables = []
    if "ops" in parts:
        tables.append(ops.run(args.rounds))
    if "models" in parts:
        tables.append(models.run(args.rounds, args.quick))
    if "rnn" in parts:
        tables.append(rnn.run(args.rounds))
    if "startup" in parts:
        tables.append(startup.run())
    write_json(args.json, tables)


if __name__ == "__main__":
    main()
