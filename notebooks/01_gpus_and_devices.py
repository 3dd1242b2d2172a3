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
# # GPUs and devices
#
# The slides compare a CPU (an Intel i7: 4 cores, 0.15 TFLOPS, 30 GB/s to RAM) with a GPU
# (a Titan RTX: 12 TFLOPS, 24 GB of its own memory). In MXNet a context says where an array
# lives (`npx.cpu()`, `npx.gpu(0)`, `x.copyto(ctx)`); in divenet, as in PyTorch, that is a
# **device**: `dn.device('cpu')`, `dn.device('gpu:0')`, and `tensor.to(device)` copies.
#
# divenet runs on NumPy on the CPU and on CuPy on an NVIDIA GPU. This notebook runs
# anywhere: where no GPU is present it shows the CPU path and says what would change.

# %%
import time

import numpy as np

import divenet as dn
from divenet import nn

print("GPU available:", dn.gpu_available())
cpu = dn.device("cpu")
gpu = dn.device("gpu:0") if dn.gpu_available() else None
here = gpu or cpu
print("this notebook computes on:", here)

# %% [markdown]
# ## Where a tensor lives
#
# Every tensor has a `.device`. New tensors are made on the CPU unless `device=` says
# otherwise; `.to(device)` returns a copy on that device (or the tensor itself when it is
# already there). Operations need their inputs on one device; the result stays there.

# %%
x = dn.randn(3, 4)
print(x.device)
y = x.to(here)
print(y.device, "same object" if y is x else "a copy")
z = (y * 2 + 1).sum()
print(z.device, float(z.item()))

# %% [markdown]
# Mixing devices is an error with a clear message, not a silent copy. On a machine with
# a GPU the cell below shows it; on a CPU-only machine both tensors are on the CPU and the
# sum simply works.

# %%
a = dn.ones(2, 2)
b = dn.ones(2, 2).to(here)
try:
    print((a + b).device)
except (ValueError, RuntimeError) as exc:
    print("refused:", exc)

# %% [markdown]
# ## A model on a device
#
# `model.to(device)` moves every parameter and buffer; a `DataLoader(..., device=...)` puts
# each batch there. Reading a value back to Python (`.item()`, `.numpy()`) copies it to the
# host: on a GPU that waits for the device, so a training loop should do it rarely.

# %%
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10)).to(here)
print({name: str(p.device) for name, p in model.named_parameters()})
out = model(dn.randn(8, 20).to(here))
print(out.shape, out.device)

# %% [markdown]
# ## How fast is the CPU here?
#
# The slides' point: a matrix product has far more arithmetic than memory traffic, so a
# GPU's many cores win. Time a float32 matrix product on this machine and compare with the
# slides' figures (0.15 TFLOPS for a desktop CPU, 12 for the GPU).

# %%
n = 512
m1, m2 = dn.randn(n, n).to(here), dn.randn(n, n).to(here)
(m1 @ m2).sum().item()  # warm up (and wait for a GPU)
start = time.perf_counter()
reps = 10
for _ in range(reps):
    r = m1 @ m2
r.sum().item()  # a host read: waits for the device to finish
seconds = (time.perf_counter() - start) / reps
print(f"{n}x{n} matmul on {here}: {seconds * 1e3:.2f} ms, {2 * n ** 3 / seconds / 1e9:.1f} GFLOP/s")

# %% [markdown]
# On this CPU the figure is in the tens to hundreds of GFLOP/s (NumPy's BLAS, a few
# threads: `dn.blas_threads()` says how many). With a GPU (`pip install 'divenet[gpu]'`) the same
# cells put every tensor in GPU memory and the products run in cuBLAS; nothing else in the
# code changes. The results agree with the CPU to float32 rounding.

# %%
print("BLAS threads:", dn.blas_threads())
assert np.allclose((m1 @ m2).numpy(), m1.numpy() @ m2.numpy(), rtol=1e-3, atol=1e-3)
