# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The systems side
#
# The dlsys lecture's questions: how long does a step take, how much memory does it need,
# can a model serve several requests at once, and what happens after training (graphs,
# export, serving). Speed against PyTorch is measured in the repository's `benchmarks/`,
# not here.

# %%
import importlib.util
import threading
import time
import tracemalloc

import numpy as np

import divenet as dn
import divenet.functional as F
from divenet import nn

dn.manual_seed(0)
net = dn.models.get_model("lenet")
opt = dn.optim.SGD(net.parameters(), lr=0.9)
x = dn.randn(256, 1, 28, 28)
y = dn.tensor(np.arange(256) % 10)


def step():
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


# %% [markdown]
# ## Time of one training step
#
# A LeNet step on a batch of 256 (forward, backward, SGD update). Time several and take the
# median: the first step is slower (buffers are allocated, caches are cold), and other jobs
# on the machine add noise.

# %%
step()
times = []
for _ in range(8):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
median = float(np.median(times))
print(f"median {median * 1e3:.1f} ms per step = {256 / median:.0f} images/s on {dn.blas_threads()} BLAS threads")
s = dn.summary(net, (1, 28, 28))
print(f"forward: {s.total_macs * 256 / 1e9:.2f} G MACs per batch; with backward about 3x that: "
      f"{3 * 2 * s.total_macs * 256 / median / 1e9:.1f} GFLOP/s achieved")

# %% [markdown]
# ## Memory
#
# NumPy allocations are visible to `tracemalloc`. Training keeps every activation that the
# backward pass needs until `backward()` frees the graph; inference under `dn.no_grad()`
# keeps none of them, so its peak is much lower.

# %%
def peak(fn):
    tracemalloc.start()
    fn()
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top


def forward_with_graph():
    return F.cross_entropy(net(x), y)  # the graph (and its saved activations) is alive here


def forward_no_grad():
    with dn.no_grad():
        return net(x)


train_peak, infer_peak = peak(forward_with_graph), peak(forward_no_grad)
print(f"peak during a forward that records the graph: {train_peak / 2 ** 20:.1f} MiB")
print(f"peak during a forward under no_grad:          {infer_peak / 2 ** 20:.1f} MiB")
act = sum(np.prod(r.output_shape) for r in s.rows if r.output_shape) * 256 * 4
print(f"all layer outputs of the batch: {act / 2 ** 20:.1f} MiB; the weights: {s.total_params * 4 / 2 ** 20:.2f} MiB")
assert infer_peak < train_peak

# %% [markdown]
# ## Thread-safe inference
#
# A model in eval mode under `no_grad` only reads its weights, so several threads can run
# it at once (a server handling concurrent requests); each gets exactly the answer it gets
# alone. NumPy releases the GIL inside its kernels, so the threads overlap in BLAS.

# %%
net.eval()
inputs = [dn.randn(32, 1, 28, 28) for _ in range(8)]
with dn.no_grad():
    expected = [net(b).numpy() for b in inputs]
results = [None] * len(inputs)


def serve(i):
    with dn.no_grad():
        results[i] = net(inputs[i]).numpy()


threads = [threading.Thread(target=serve, args=(i,)) for i in range(len(inputs))]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert all(np.array_equal(r, e) for r, e in zip(results, expected))
print(f"{len(threads)} threads, every result identical to the serial one")

# %% [markdown]
# ## Graphs, export and serving
#
# The lecture's later topics are graph optimizations (fusing operators, planning memory)
# and serving. What of that this copy of divenet has is listed below from its own packages
# (a package that is not there is not imported).

# %%
for name, what in (("divenet.compile", "tracing into a graph and optimizing it"),
                   ("divenet.onnx", "ONNX export and import"),
                   ("divenet.serve", "an HTTP inference server")):
    present = importlib.util.find_spec(name) is not None
    print(f"{name:16} {'present' if present else 'not in this version'}: {what}")
