"""`import` time, and the peak resident memory of a LeNet training process, each framework in a
fresh process of its own.

    python -m benchmarks.startup
"""
from __future__ import annotations

import statistics
import subprocess
import sys

from .common import Table

_IMPORT = "import time; t = time.perf_counter(); import {mod}; print(time.perf_counter() - t)"

# the process's own peak resident set (VmHWM); getrusage's ru_maxrss would inherit the
# benchmark parent's peak through fork
_PEAK = """
def peak_mib():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024
"""

# 40 training steps of LeNet at batch 256 on real Fashion-MNIST, then the process's peak RSS
_TRAIN = {
    "divenet": _PEAK + """
import divenet as dn, divenet.functional as F
from divenet import optim
from divenet.data import FashionMNIST, DataLoader
from divenet.models import get_model
m = get_model('lenet'); o = optim.SGD(m.parameters(), lr=0.9)
for i, (x, y) in enumerate(DataLoader(FashionMNIST(train=True), batch_size=256, shuffle=True, seed=0)):
    loss = F.cross_entropy(m(x), y); o.zero_grad(); loss.backward(); o.step()
    if i == 40: break
print(peak_mib())
""",
    "pytorch": _PEAK + """
import torch
from divenet.data import FashionMNIST
import sys; sys.path.insert(0, '.')
from benchmarks.torch_models import lenet
x, y = FashionMNIST(train=True).arrays(); x, y = torch.from_numpy(x), torch.from_numpy(y)
m = lenet(torch); o = torch.optim.SGD(m.parameters(), lr=0.9); perm = torch.randperm(len(x))
for i in range(41):
    idx = perm[i * 256:(i + 1) * 256]
    loss = torch.nn.functional.cross_entropy(m(x[idx]), y[idx]); o.zero_grad(); loss.backward(); o.step()
print(peak_mib())
""",
}


def _run(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run(rounds=5):
    table = Table("start-up and memory")
    table.header()
    imp = {mod: statistics.median(_run(_IMPORT.format(mod=mod)) for _ in range(rounds))
           for mod in ("divenet", "torch")}
    table.add("import time", imp["divenet"], imp["torch"], unit="s", scale=1)
    rss = {k: _run(code) for k, code in _TRAIN.items()}
    table.add("peak RSS, LeNet training process (MiB)", rss["divenet"], rss["pytorch"], unit="MiB", scale=1)
    return table


if __name__ == "__main__":
    run()
