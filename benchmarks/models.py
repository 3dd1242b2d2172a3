"""Whole-model training and inference, divenet vs PyTorch, same shapes and data.

    python -m benchmarks.models [--rounds N]   (python -m benchmarks --quick: a 10k-image LeNet epoch)
"""
from __future__ import annotations

import numpy as np

import divenet as dn
import divenet.functional as F
from divenet import optim
from divenet.models import get_model

from . import torch_models
from .common import Table, main, setup_torch, time_pair, train_fns


def _fashion_mnist(limit=None):
    from divenet.data import FashionMNIST

    x, y = FashionMNIST(train=True).arrays()
    return (x[:limit], y[:limit]) if limit else (x, y)


def lenet_epoch(table, rounds, limit=None, blas_threads=None):
    """One training epoch of D2L's LeNet (batch 256, SGD lr 0.9), data already in memory.
    ``blas_threads``: divenet's OpenBLAS threads during its rounds (``--threads`` of the
    command line); the native kernels take the cores OpenBLAS leaves idle."""
    from divenet import _cpu
    from divenet.data import ArrayDataset, DataLoader

    torch = setup_torch()
    x, y = _fashion_mnist(limit)
    ours_model = get_model("lenet")
    ours_opt = optim.SGD(ours_model.parameters(), lr=0.9)
    loader = DataLoader(ArrayDataset(x, y), batch_size=256, shuffle=True, seed=0)
    theirs_model = torch_models.lenet(torch)
    theirs_opt = torch.optim.SGD(theirs_model.parameters(), lr=0.9)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)

    def ours():
        shared = _cpu.blas_threads()
        if blas_threads:
            _cpu.set_blas_threads(blas_threads)
        for xb, yb in loader:
            loss = F.cross_entropy(ours_model(xb), yb)
            ours_opt.zero_grad()
            loss.backward()
            ours_opt.step()
        if blas_threads and shared:
            _cpu.set_blas_threads(shared)

    def theirs():
        perm = torch.randperm(len(tx), generator=gen)
        for i in range(0, len(tx), 256):
            idx = perm[i:i + 256]
            loss = torch.nn.functional.cross_entropy(theirs_model(tx[idx]), ty[idx])
            theirs_opt.zero_grad()
            loss.backward()
            theirs_opt.step()

    a, b = time_pair(ours, theirs, rounds=rounds, warmup=0 if limit is None else 1)
    case = (f"LeNet epoch ({len(x)} img, b256, --threads {blas_threads})" if blas_threads
            else f"LeNet training epoch ({len(x)} images, b256)")
    table.add(case, a, b, unit="s", scale=1)



def resnet_steps(table, rounds, batches=(64, 256), side=28, steps=3):
    torch = setup_torch()
    ours_model, theirs_model = get_model("resnet18-d2l"), torch_models.d2l_resnet18(torch)
    ours_model.init(dn.zeros(2, 1, side, side))
    rng = np.random.default_rng(0)
    for b in batches:
        x = rng.random((b, 1, side, side), dtype=np.float32)
        y = rng.integers(0, 10, b)
        ours, theirs = train_fns(ours_model, theirs_model, torch, x, y, steps, lr=0.05)
        a, c = time_pair(ours, theirs, rounds=rounds)
        table.add(f"ResNet-18 (D2L) train step {side}x{side} b{b}", a / steps, c / steps, unit="s", scale=1)


def inference(table, rounds, batch=256):
    torch = setup_torch()
    rng = np.random.default_rng(0)
    cases = [("ResNet-18 (D2L) 28x28", "resnet18-d2l", torch_models.d2l_resnet18(torch), 28),
             ("AlexNet (D2L) 96x96", "alexnet", torch_models.d2l_alexnet(torch), 96)]
    for name, zoo, theirs_model, side in cases:
        x = rng.random((batch, 1, side, side), dtype=np.float32)
        ours_model = get_model(zoo).init(dn.zeros(1, 1, side, side)).eval()
        theirs_model.eval()
        dx, tx = dn.tensor(x), torch.from_numpy(x)

        def ours():
            with dn.no_grad():
                ours_model(dx)

        def theirs():
            with torch.no_grad():
                theirs_model(tx)

        a, b = time_pair(ours, theirs, rounds=rounds)
        table.add(f"{name} inference, batch of {batch}", a, b, unit="s", scale=1,
                  divenet_images_per_s=batch / a, pytorch_images_per_s=batch / b)


def run(rounds=3, quick=False):
    table = Table("models: training and inference")
    table.header()
    lenet_epoch(table, rounds, limit=10240 if quick else None)
    lenet_epoch(table, rounds, limit=10240 if quick else None, blas_threads=1)
    resnet_steps(table, rounds)
    inference(table, rounds)
    return table


if __name__ == "__main__":
    main(run, __doc__)
