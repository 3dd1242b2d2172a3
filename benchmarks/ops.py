"""Forward+backward time of single ops at the zoo's real layer shapes, divenet vs PyTorch.

Each framework gets its input in the memory layout its previous layer would hand over inside a
network: PyTorch contiguous NCHW; divenet (C, H, W, N), what its convolutions return (an NCHW
view). A network's first layer (marked "image") takes the contiguous NCHW batch in both.

    python -m benchmarks.ops [--rounds N]
"""
from __future__ import annotations


import numpy as np

import divenet as dn
import divenet.functional as F

from .common import Table, main, setup_torch, time_pair

# (name, input shape, conv weight shape, stride, padding[, groups]): LeNet, AlexNet (224), ResNet-18
# (D2L, 96 / 28), MobileNet v1 (224, depthwise)
CONVS = [
    ("LeNet conv1 1->6 k5 p2 28x28 b256 (image)", (256, 1, 28, 28), (6, 1, 5, 5), 1, 2),
    ("LeNet conv2 6->16 k5 14x14 b256", (256, 6, 14, 14), (16, 6, 5, 5), 1, 0),
    ("AlexNet conv1 3->96 k11 s4 224 b8 (image)", (8, 3, 224, 224), (96, 3, 11, 11), 4, 1),
    ("AlexNet conv3 256->384 k3 p1 12x12 b32", (32, 256, 12, 12), (384, 256, 3, 3), 1, 1),
    ("ResNet conv 64->64 k3 p1 28x28 b64", (64, 64, 28, 28), (64, 64, 3, 3), 1, 1),
    ("ResNet conv 128->128 k3 p1 14x14 b64", (64, 128, 14, 14), (128, 128, 3, 3), 1, 1),
    ("ResNet conv 256->512 k3 s2 p1 7x7 b64", (64, 256, 7, 7), (512, 256, 3, 3), 2, 1),
    ("ResNet 1x1 64->128 s2 28x28 b64", (64, 64, 28, 28), (128, 64, 1, 1), 2, 0),
    ("MobileNet depthwise 32 k3 p1 112x112 b8", (8, 32, 112, 112), (32, 1, 3, 3), 1, 1, 32),
    ("MobileNet depthwise 256 k3 s2 p1 28x28 b8", (8, 256, 28, 28), (256, 1, 3, 3), 2, 1, 256),
]
POOLS = [
    ("LeNet avg_pool 2x2 6x28x28 b256", "avg", (256, 6, 28, 28), 2, 2, 0),
    ("ResNet max_pool 3x3 s2 p1 64x48x48 b32", "max", (32, 64, 48, 48), 3, 2, 1),
    ("AlexNet max_pool 3x3 s2 96x54x54 b8", "max", (8, 96, 54, 54), 3, 2, 0),
    ("ResNet stem max_pool 3x3 s2 p1 64x112x112 b8", "max", (8, 64, 112, 112), 3, 2, 1),
    ("GoogLeNet max_pool 3x3 s1 p1 192x28x28 b8", "max", (8, 192, 28, 28), 3, 1, 1),
]
ACTIVATIONS = [
    ("LeNet sigmoid 6x28x28 b256", "sigmoid", (256, 6, 28, 28)),
    ("tanh 256x4096", "tanh", (256, 4096)),
]
NORMS = [
    ("batch_norm train 64x28x28 b64", (64, 64, 28, 28)),
    ("batch_norm train 120 b256 (BN-LeNet dense)", (256, 120)),
]
LSTMS = [
    ("lstm_cell b64 in28 h128", 64, 28, 128),
    ("lstm_cell b64 in128 h256", 64, 128, 256),
]


def _randn(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def _network_input(x, case):
    """The NCHW tensor an op gets inside a network: a view of (C, H, W, N) memory, as
    divenet's convolutions hand it over, except for a network's first layer and 2-D inputs."""
    if "(image)" in case or x.ndim != 4:
        return dn.tensor(x, requires_grad=True)
    return dn.tensor(np.ascontiguousarray(x.transpose(1, 2, 3, 0)), requires_grad=True).permute(3, 0, 1, 2)


def run(rounds=5):
    torch = setup_torch()
    tf = torch.nn.functional
    rng = np.random.default_rng(0)
    table = Table("ops: forward + backward")
    table.header()

    def both(case, make_ours, make_theirs):
        ours, theirs = time_pair(make_ours, make_theirs, rounds=rounds)
        table.add(case, ours, theirs)

    for case, xs, ws, s, p, *groups in CONVS:
        x, w, b = _randn(rng, xs), _randn(rng, ws) * 0.1, _randn(rng, ws[:1])
        g = groups[0] if groups else 1

        def ours(x=x, w=w, b=b, s=s, p=p, g=g, case=case):
            xt = _network_input(x, case)
            wt = dn.tensor(w, requires_grad=True)
            bt = dn.tensor(b, requires_grad=True)
            y = F.conv2d(xt, wt, bt, stride=s, padding=p, groups=g)
            y.backward(dn.ones_like(y))

        def theirs(x=x, w=w, b=b, s=s, p=p, g=g):
            xt = torch.tensor(x, requires_grad=True)
            wt = torch.tensor(w, requires_grad=True)
            bt = torch.tensor(b, requires_grad=True)
            y = tf.conv2d(xt, wt, bt, stride=s, padding=p, groups=g)
            y.backward(torch.ones_like(y))

        both(case, ours, theirs)

    for case, kind, xs, k, s, p in POOLS:
        x = _randn(rng, xs)
        fo = F.max_pool2d if kind == "max" else F.avg_pool2d
        ft = tf.max_pool2d if kind == "max" else tf.avg_pool2d

        def ours(x=x, fo=fo, k=k, s=s, p=p, case=case):
            xt = _network_input(x, case)
            y = fo(xt, k, s, p)
            y.backward(dn.ones_like(y))

        def theirs(x=x, ft=ft, k=k, s=s, p=p):
            xt = torch.tensor(x, requires_grad=True)
            y = ft(xt, k, s, p)
            y.backward(torch.ones_like(y))

        both(case, ours, theirs)

    for case, name, xs in ACTIVATIONS:
        x = _randn(rng, xs)

        def ours(x=x, name=name, case=case):
            xt = _network_input(x, case)
            y = getattr(F, name)(xt)
            y.backward(dn.ones_like(y))

        def theirs(x=x, name=name):
            xt = torch.tensor(x, requires_grad=True)
            y = getattr(torch, name)(xt)
            y.backward(torch.ones_like(y))

        both(case, ours, theirs)

    for case, xs in NORMS:
        x = _randn(rng, xs)
        c = xs[1]

        def ours(x=x, c=c, case=case):
            xt = _network_input(x, case)
            w, b = dn.ones(c, requires_grad=True), dn.zeros(c, requires_grad=True)
            y = F.batch_norm(xt, dn.zeros(c), dn.ones(c), w, b, training=True)
            y.backward(dn.ones_like(y))

        def theirs(x=x, c=c):
            xt = torch.tensor(x, requires_grad=True)
            w, b = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
            y = tf.batch_norm(xt, torch.zeros(c), torch.ones(c), w, b, training=True)
            y.backward(torch.ones_like(y))

        both(case, ours, theirs)

    for case, n, i, h in LSTMS:
        x, h0, c0 = _randn(rng, (n, i)), _randn(rng, (n, h)), _randn(rng, (n, h))
        wih, whh = _randn(rng, (4 * h, i)) * 0.1, _randn(rng, (4 * h, h)) * 0.1
        bih, bhh = _randn(rng, (4 * h,)), _randn(rng, (4 * h,))
        cell = torch.nn.LSTMCell(i, h)
        with torch.no_grad():
            cell.weight_ih.copy_(torch.tensor(wih))
            cell.weight_hh.copy_(torch.tensor(whh))
            cell.bias_ih.copy_(torch.tensor(bih))
            cell.bias_hh.copy_(torch.tensor(bhh))

        def ours(x=x, h0=h0, c0=c0, wih=wih, whh=whh, bih=bih, bhh=bhh):
            ts = [dn.tensor(a, requires_grad=True) for a in (x, h0, c0, wih, whh, bih, bhh)]
            hy, cy = F.lstm_cell(ts[0], (ts[1], ts[2]), *ts[3:])
            (hy.sum() + cy.sum()).backward()

        def theirs(x=x, h0=h0, c0=c0, cell=cell):
            ts = [torch.tensor(a, requires_grad=True) for a in (x, h0, c0)]
            hy, cy = cell(ts[0], (ts[1], ts[2]))
            (hy.sum() + cy.sum()).backward()

        both(case, ours, theirs)
    return table


if __name__ == "__main__":
    main(run, __doc__)
