"""The convolution dispatch's evidence: each layer's forward (and forward + backward) through the
kernel ``ops/conv.py`` takes for it, through im2col + GEMM, and in PyTorch, in one process,
alternating rounds, medians. The rows are the shapes ``conv._implicit``'s and
``conv._winograd_takes``'s limits were set from (ResNet, VGG, DenseNet, ResNeXt layers at batch
1, 8 and 32).

    python -m benchmarks.conv_kernels [--rounds N]

Columns: divenet with its dispatch, PyTorch, ratio; ``kind`` is what the dispatch chose and
``vs_im2col`` the dispatched time over the im2col path's (1.00 where the dispatch took im2col).
"""
from __future__ import annotations

import numpy as np

import divenet as dn
import divenet.functional as F
from divenet.ops import conv as C

from .common import Table, main, setup_torch, time_rounds

# (name, input shape, weight shape, stride, padding, groups)
LAYERS = [
    ("64->64 k3 56x56 b8", (8, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1),
    ("64->64 k3 56x56 b1", (1, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1),
    ("128->128 k3 28x28 b8", (8, 128, 28, 28), (128, 128, 3, 3), 1, 1, 1),
    ("256->256 k3 14x14 b8", (8, 256, 14, 14), (256, 256, 3, 3), 1, 1, 1),
    ("512->512 k3 7x7 b8", (8, 512, 7, 7), (512, 512, 3, 3), 1, 1, 1),
    ("512->512 k3 7x7 b32", (32, 512, 7, 7), (512, 512, 3, 3), 1, 1, 1),
    ("256->256 k3 56x56 b8 (VGG)", (8, 256, 56, 56), (256, 256, 3, 3), 1, 1, 1),
    ("128->128 k3 14x14 b64", (64, 128, 14, 14), (128, 128, 3, 3), 1, 1, 1),
    ("stem 3->64 k7 s2 224x224 b8", (8, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1),
    ("64->128 k3 s2 56x56 b8", (8, 64, 56, 56), (128, 64, 3, 3), 2, 1, 1),
    ("DenseNet 128->32 k3 28x28 b8", (8, 128, 28, 28), (32, 128, 3, 3), 1, 1, 1),
    ("DenseNet 128->32 k3 7x7 b1", (1, 128, 7, 7), (32, 128, 3, 3), 1, 1, 1),
    ("ResNeXt 128 g32 k3 56x56 b8", (8, 128, 56, 56), (128, 4, 3, 3), 1, 1, 32),
    ("ResNeXt 512 g32 k3 14x14 b1", (1, 512, 14, 14), (512, 16, 3, 3), 1, 1, 32),
]


def _batch_last(x):
    """The NCHW tensor a convolution gets inside a network: a view of (C, H, W, N) memory."""
    return dn.tensor(np.ascontiguousarray(x.transpose(1, 2, 3, 0)), requires_grad=True).permute(3, 0, 1, 2)


def run(rounds=5):
    torch = setup_torch()
    rng = np.random.default_rng(0)
    tables = []
    for what, backward in (("forward", False), ("forward + backward", True)):
        table = Table(f"convolution kernels: {what}")
        table.header()
        for case, xs, ws, s, p, g in LAYERS:
            x = rng.standard_normal(xs).astype(np.float32)
            w = (rng.standard_normal(ws) * 0.1).astype(np.float32)
            kinds = []

            def ours(x=x, w=w, s=s, p=p, g=g):
                xt, wt = _batch_last(x), dn.tensor(w, requires_grad=True)
                if not backward:
                    with dn.no_grad():
                        return F.conv2d(xt, wt, stride=s, padding=p, groups=g)
                y = F.conv2d(xt, wt, stride=s, padding=p, groups=g)
                y.backward(dn.ones_like(y))

            def im2col(ours=ours):
                real = C._implicit, C._winograd_takes
                C._implicit = C._winograd_takes = lambda plan: False
                try:
                    ours()
                finally:
                    C._implicit, C._winograd_takes = real

            def theirs(x=x, w=w, s=s, p=p, g=g):
                xt = torch.tensor(x, requires_grad=backward)
                wt = torch.tensor(w, requires_grad=backward)
                if not backward:
                    with torch.no_grad():
                        return torch.nn.functional.conv2d(xt, wt, stride=s, padding=p, groups=g)
                y = torch.nn.functional.conv2d(xt, wt, stride=s, padding=p, groups=g)
                y.backward(torch.ones_like(y))

            real_choose = C._choose
            C._choose = lambda *a, **k: kinds.append(real_choose(*a, **k)) or kinds[-1]
            try:
                ours()
            finally:
                C._choose = real_choose
            a, b, c = time_rounds((ours, im2col, theirs), rounds)
            table.add(case, a, c, kind=kinds[0], vs_im2col=a / b)
            print(f"  {'':<48} {kinds[0]}, {a / b:.2f}x the im2col path's time", flush=True)
        tables.append(table)
    return tables


if __name__ == "__main__":
    main(run, __doc__)
