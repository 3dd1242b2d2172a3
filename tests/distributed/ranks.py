"""What each rank runs in the distributed tests: ``python ranks.py MODE OUT`` under mpirun.

unit:  communicator, DistributedDataParallel and SyncBatchNorm checks; each rank writes
       OUT/rank{r}.npz, which the tests compare with a one-process (or PyTorch) reference.
stall: rank 1 sleeps; rank 0's allreduce times out and the job is aborted (the watchdog).
"""
import os
import sys
import time

import numpy as np

import divenet as dn
from divenet import nn
from divenet.distributed import DistributedDataParallel, SyncBatchNorm, init_process_group
from divenet.distributed.launch import abort_on_error


# ---- the data both sides use ------------------------------------------------------------------
def net_data():
    rng = np.random.default_rng(7)
    return rng.standard_normal((8, 6)).astype(np.float32)


class Net(nn.Module):
    """``a`` and ``b`` are used twice per forward (two gradients each), ``unused`` never."""

    def __init__(self):
        self.a = nn.Linear(6, 5)
        self.b = nn.Linear(5, 3)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.b(dn.relu(self.a(x))) + self.b(dn.tanh(self.a(x * 0.5)))


class TwoHeads(nn.Module):
    def __init__(self):
        self.p, self.q = nn.Linear(6, 2), nn.Linear(6, 2)

    def forward(self, x):
        return self.p(x), self.q(x)


def net_loss(out):
    return (out * out).mean()


def bn_data():
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((8, 3, 4, 4)) * 2 + 5).astype(np.float32)  # |mean| > std
    w = rng.standard_normal((8, 3, 4, 4)).astype(np.float32)
    gamma = rng.standard_normal(3).astype(np.float32)
    beta = rng.standard_normal(3).astype(np.float32)
    return x, w, gamma, beta


BN_SPLIT = (5, 3)  # unequal shares: the statistics must weight each rank by its count


# ---- modes ------------------------------------------------------------------------------------
def unit(comm, out):
    r, size = comm.rank, comm.size
    res = {}
    # communicator
    a = np.arange(6, dtype=np.float32) + r
    res["allreduce_sum"] = comm.allreduce(a.copy(), "sum")
    res["allreduce_avg"] = comm.allreduce(a.copy(), "avg")
    b = a.copy()
    work = comm.iallreduce(b, "avg")
    work.wait()
    res["iallreduce_avg"], res["iallreduce_done"] = b, np.array(work.completed >= work.started)
    res["broadcast"] = comm.broadcast(np.full(3, float(r + 1)), root=1)
    res["allgather"] = comm.allgather(np.array([r, 10 * r], dtype=np.int64))
    comm.barrier()
    errors = []
    for bad in (lambda: comm.allreduce(a, "max"), lambda: comm.allreduce([1.0], "sum"),
                lambda: comm.allreduce(np.zeros((4, 4), np.float32)[:, :2], "sum")):
        try:
            bad()
        except (ValueError, TypeError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    res["errors"] = np.array(errors)

    # DDP: rank 1 starts from other weights; tiny buckets, so several are in flight
    dn.manual_seed(100 + r)
    model = Net()
    ddp = DistributedDataParallel(model, comm, bucket_cap_mb=64 / 2 ** 20)
    res["initial"] = np.concatenate([p.numpy().ravel() for p in model.parameters()])
    x = net_data()
    share = len(x) // size
    mine = dn.tensor(x[r * share:(r + 1) * share])
    net_loss(ddp(mine)).backward()
    for name, p in model.named_parameters():
        res[f"grad.{name}"] = p.grad.numpy()
    stats = ddp.comm_stats()
    res["buckets"], res["bucket_sizes"] = np.array(stats["buckets"]), np.array(ddp.bucket_sizes)
    res["stats"] = np.array([stats["steps"], stats["in_flight_seconds"], stats["wait_seconds"],
                             stats["hidden_fraction"]])
    # no_sync: the first half-batch accumulates locally, the second reduces the sum
    opt = dn.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    with ddp.no_sync():
        net_loss(ddp(mine[:share // 2])).backward()
    res["local_after_no_sync"] = model.a.weight.grad.numpy().copy()
    net_loss(ddp(mine[share // 2:])).backward()
    for name, p in model.named_parameters():
        res[f"accum.{name}"] = p.grad.numpy()
    opt.step()
    res["after_step"] = np.concatenate([p.numpy().ravel() for p in model.parameters()])
    # an output the loss leaves out: its parameters never get their gradients
    two = DistributedDataParallel(TwoHeads(), comm)
    first, _ = two(mine)
    first.sum().backward()
    try:
        two(mine)
        res["unfinished"] = np.array("no error")
    except RuntimeError as exc:
        res["unfinished"] = np.array(str(exc))

    # SyncBatchNorm: rank r holds its share of the batch
    x, w, gamma, beta = bn_data()
    lo = sum(BN_SPLIT[:r])
    xs, ws = x[lo:lo + BN_SPLIT[r]], w[lo:lo + BN_SPLIT[r]]
    bn = SyncBatchNorm(3, momentum=0.3, process_group=comm)
    bn.weight.array[...] = gamma
    bn.bias.array[...] = beta
    xt = dn.tensor(xs, requires_grad=True)
    y = bn(xt)
    (y * dn.tensor(ws)).sum().backward()
    res["bn_y"], res["bn_dx"] = y.numpy(), xt.grad.numpy()
    res["bn_dw"] = comm.allreduce(bn.weight.grad.numpy().copy(), "sum")
    res["bn_db"] = comm.allreduce(bn.bias.grad.numpy().copy(), "sum")
    res["bn_running"] = np.stack([bn.running_mean.numpy(), bn.running_var.numpy()])
    np.savez(os.path.join(out, f"rank{r}.npz"), **res)


def stall(comm, out):
    if comm.rank == 1:
        time.sleep(30)
    comm.allreduce(np.ones(4, np.float32), "sum")


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    comm = init_process_group("mpi")
    with abort_on_error(comm, mode):
        {"unit": unit, "stall": stall}[mode](comm, out)
