"""Run every benchmark and write benchmarks/results.json:

    python -m benchmarks [--quick] [--rounds N] [--only ops,models,startup,rnn]
    python -m benchmarks --only zoo [--quick] [--rounds N] [--models resnet18,vgg11]

The zoo part (the zoo at 224x224 and 96x96, with ONNX Runtime; minutes) runs only when named.
Tables of parts not run this time stay in the JSON file.
"""
from __future__ import annotations

import argparse

from . import models, ops, rnn, startup, zoo
from .common import write_json

# each part's tables from the parsed arguments
PARTS = {
    "ops": lambda args: [ops.run(args.rounds)],
    "models": lambda args: [models.run(args.rounds, args.quick)],
    "rnn": lambda args: [rnn.run(args.rounds)],
    "startup": lambda args: [startup.run()],
    "zoo": lambda args: zoo.run(args.rounds, args.quick, args.models),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="a 10k-image LeNet epoch instead of 60k; one step per timed zoo call instead of two")
    ap.add_argument("--only", default="ops,models,rnn,startup")
    ap.add_argument("--models", type=_zoo_models, default=None,
                    help=f"the zoo part's models (default: all of {','.join(zoo.ALL)})")
    ap.add_argument("--json", default="benchmarks/results.json")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds: need at least 1 round, got {args.rounds}")
    parts = args.only.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"--only: unknown part {', '.join(unknown)}; choose from {','.join(PARTS)}")
    tables = [t for name, run in PARTS.items() if name in parts for t in run(args)]
    write_json(args.json, tables)


def _zoo_models(text):
    try:
        return zoo.parse_models(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--models: ")) from None


if __name__ == "__main__":
    main()
