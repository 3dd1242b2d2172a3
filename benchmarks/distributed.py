"""Data parallel on one machine: 2 ranks x 1 BLAS thread against 1 process x 2 threads.

    python benchmarks/distributed.py [--models lenet,resnet18] [--batch 256] [--steps 10]

runs both configurations (the ranks through ``mpirun -np 2``) on synthetic 28x28 batches of
the global size and prints one JSON line per model and configuration: images/s over the timed
steps, and for the ranks DistributedDataParallel's buckets and communication timings (the
hidden fraction: 1 - time waited after backward / time a reduction was in flight). Run it on a
quiet machine; the numbers mean nothing while other jobs share the cores.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(model_name, batch, steps, warmup=2):
    import numpy as np

    import divenet as dn
    import divenet.functional as F
    from divenet.models import get_model

    comm = None
    if os.environ.get("OMPI_COMM_WORLD_SIZE"):
        from divenet.distributed import DistributedDataParallel, init_process_group

        comm = init_process_group("mpi")
    dn.set_blas_threads(1 if comm else 2)
    size, rank = (comm.size, comm.rank) if comm else (1, 0)
    dn.manual_seed(0)
    model = get_model(model_name, num_classes=10, in_channels=1)
    model.init(dn.zeros(1, 1, 28, 28))
    net = DistributedDataParallel(model, comm) if comm else model
    opt = dn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(rank)
    x = dn.tensor(rng.standard_normal((batch // size, 1, 28, 28)).astype(np.float32))
    y = dn.tensor(rng.integers(0, 10, batch // size))
    for step in range(warmup + steps):
        if step == warmup:
            if comm:
                comm.barrier()
                net.comm_stats(reset=True)
            start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    if comm:
        comm.barrier()
    seconds = time.perf_counter() - start
    row = {"model": model_name, "ranks": size, "threads": dn.blas_threads(), "batch": batch, "steps": steps,
           "images_per_sec": round(batch * steps / seconds, 1)}
    if comm:
        stats = net.comm_stats()
        row.update(buckets=[round(b / 2 ** 20, 2) for b in net.bucket_sizes],
                   in_flight_s_per_step=round(stats["in_flight_seconds"] / steps, 4),
                   wait_s_per_step=round(stats["wait_seconds"] / steps, 4),
                   hidden_fraction=round(stats["hidden_fraction"], 3))
    if rank == 0:
        print(json.dumps(row), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="lenet,resnet18")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        for name in args.models.split(","):
            measure(name, args.batch, args.steps)
        return
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl="self,vader", PYTHONPATH=ROOT)
    worker = [sys.executable, os.path.abspath(__file__), "--worker", "--models", args.models,
              "--batch", str(args.batch), "--steps", str(args.steps)]
    subprocess.run(worker, env=env, check=True)
    subprocess.run(["mpirun", "-np", "2", "--oversubscribe", *worker], env=env, check=True)


if __name__ == "__main__":
    main()
