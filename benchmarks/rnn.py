"""LSTM (and GRU) layers forward + backward, divenet ``nn.LSTM`` vs ``torch.nn.LSTM``, the same
weights and inputs: batch 64, 28 steps of 28 features (a Fashion-MNIST image read row by row),
hidden 128 and 256; plus one training step of the zoo's ``lstm`` classifier at batch 128.

    python -m benchmarks.rnn [--rounds N]
"""
from __future__ import annotations


import numpy as np

import divenet as dn
from divenet import nn

from .common import Table, main, setup_torch, time_pair

# (case, layer, batch, steps, input, hidden)
LAYERS = [
    ("LSTM fwd+bwd b64 T28 in28 h128", "LSTM", 64, 28, 28, 128),
    ("LSTM fwd+bwd b64 T28 in28 h256", "LSTM", 64, 28, 28, 256),
    ("GRU fwd+bwd b64 T28 in28 h128", "GRU", 64, 28, 28, 128),
    ("GRU fwd+bwd b64 T28 in28 h256", "GRU", 64, 28, 28, 256),
]


def _copy_weights(ours, theirs, torch):
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.from_numpy(getattr(ours, name).numpy()))


def layers(table, rounds):
    torch = setup_torch()
    rng = np.random.default_rng(0)
    for case, kind, n, t, i, h in LAYERS:
        ours = getattr(nn, kind)(i, h)
        theirs = getattr(torch.nn, kind)(i, h)
        _copy_weights(ours, theirs, torch)
        x = rng.standard_normal((t, n, i)).astype(np.float32)

        def run_ours(ours=ours, x=x):
            xt = dn.tensor(x, requires_grad=True)
            out, _ = ours(xt)
            out.sum().backward()

        def run_theirs(theirs=theirs, x=x):
            xt = torch.tensor(x, requires_grad=True)
            out, _ = theirs(xt)
            out.sum().backward()

        a, b = time_pair(run_ours, run_theirs, rounds=rounds)
        table.add(case, a, b)


def classifier_step(table, rounds, batch=128):
    """One Adam step of the zoo's lstm classifier (hidden 128, last state -> Linear)."""
    import divenet.functional as F
    from divenet import optim
    from divenet.models import get_model

    torch = setup_torch()
    rng = np.random.default_rng(1)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    ours = get_model("lstm")
    ours_opt = optim.Adam(ours.parameters(), lr=2e-3)

    class Theirs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(28, 128)
            self.fc = torch.nn.Linear(128, 10)

        def forward(self, img):
            _, (h_n, _) = self.rnn(img.reshape(img.shape[0], 28, 28).permute(1, 0, 2))
            return self.fc(h_n[-1])

    theirs = Theirs()
    _copy_weights(ours.rnn, theirs.rnn, torch)
    theirs_opt = torch.optim.Adam(theirs.parameters(), lr=2e-3)
    xo, yo = dn.tensor(x), dn.tensor(y)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def run_ours():
        loss = F.cross_entropy(ours(xo), yo)
        ours_opt.zero_grad()
        loss.backward()
        ours_opt.step()

    def run_theirs():
        loss = torch.nn.functional.cross_entropy(theirs(xt), yt)
        theirs_opt.zero_grad()
        loss.backward()
        theirs_opt.step()

    a, b = time_pair(run_ours, run_theirs, rounds=rounds)
    table.add(f"zoo lstm classifier Adam step b{batch}", a, b)


def run(rounds=5):
    table = Table("rnn: forward + backward")
    table.header()
    layers(table, rounds)
    classifier_step(table, rounds)
    return table


if __name__ == "__main__":
    main(run, __doc__)
