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
# # Convolutions
#
# The slides' worked examples, computed with `F.conv2d` (a 2-D cross-correlation, as in
# every framework) and checked with `assert`. Tensors are (batch, channels, height, width);
# kernels are (out channels, in channels, kh, kw).

# %%
import numpy as np

import divenet as dn
import divenet.functional as F
from divenet import nn


def corr2d(x, k, **kwargs):
    """Cross-correlation of one 2-D input with one 2-D kernel, through F.conv2d."""
    x = dn.tensor(np.asarray(x, np.float32)[None, None])
    k = dn.tensor(np.asarray(k, np.float32)[None, None])
    return F.conv2d(x, k, **kwargs).numpy()[0, 0]


X = np.arange(9).reshape(3, 3)
K = np.arange(4).reshape(2, 2)

# %% [markdown]
# ## 2-D cross-correlation
#
# Input 0..8 in a 3x3 grid, kernel 0..3 in a 2x2 grid:
# $0\cdot0 + 1\cdot1 + 3\cdot2 + 4\cdot3 = 19$, and so on. The output is
# $(n_h - k_h + 1) \times (n_w - k_w + 1)$.

# %%
Y = corr2d(X, K)
print(Y)
assert Y.tolist() == [[19, 25], [37, 43]]

# %% [markdown]
# ## Padding
#
# One row and column of zeros on each side: the output grows to 4x4, with the unpadded
# result in its middle.

# %%
Yp = corr2d(X, K, padding=1)
print(Yp)
assert Yp.tolist() == [[0, 3, 8, 4], [9, 19, 25, 10], [21, 37, 43, 16], [6, 7, 8, 0]]

# %% [markdown]
# ## Stride
#
# Strides of 3 for the height and 2 for the width, with the padding above:
# $\lfloor (n_h - k_h + p_h + s_h)/s_h \rfloor \times \lfloor (n_w - k_w + p_w + s_w)/s_w \rfloor$ = 2x2.

# %%
Ys = corr2d(X, K, padding=1, stride=(3, 2))
print(Ys)
assert Ys.tolist() == [[0, 8], [6, 8]]
assert F.conv_output_size(3, 2, 3, 1) == 2  # the formula (n, k, stride, padding), per axis

# %% [markdown]
# ## Multiple input channels
#
# One kernel per input channel; the results are summed. The slides' example: channel 0
# is 0..8 with kernel 0..3, channel 1 is 1..9 with kernel 1..4; the first output is
# $(1\cdot1 + 2\cdot2 + 4\cdot3 + 5\cdot4) + (0\cdot0 + 1\cdot1 + 3\cdot2 + 4\cdot3) = 56$.

# %%
X2 = np.stack([np.arange(9).reshape(3, 3), np.arange(1, 10).reshape(3, 3)]).astype(np.float32)
K2 = np.stack([np.arange(4).reshape(2, 2), np.arange(1, 5).reshape(2, 2)]).astype(np.float32)
Y2 = F.conv2d(dn.tensor(X2[None]), dn.tensor(K2[None])).numpy()[0, 0]
print(Y2)
assert Y2.tolist() == [[56, 72], [104, 120]]

# %% [markdown]
# ## Multiple output channels
#
# Stack kernels along the first axis: each 3-D kernel gives one output channel. Here the
# kernels K2, K2+1 and K2+2 give three channels.

# %%
K3 = np.stack([K2, K2 + 1, K2 + 2])
Y3 = F.conv2d(dn.tensor(X2[None]), dn.tensor(K3)).numpy()[0]
print(Y3.shape)
assert Y3[0].tolist() == [[56, 72], [104, 120]] and Y3.shape == (3, 2, 2)

# %% [markdown]
# ## 1x1 convolutions
#
# A 1x1 kernel looks at one pixel: it mixes channels, exactly as a dense layer applied to
# every pixel (an $n_h n_w \times c_i$ input times a $c_i \times c_o$ weight).

# %%
rng = np.random.default_rng(0)
Xc = rng.normal(size=(3, 3, 3)).astype(np.float32)
Kc = rng.normal(size=(2, 3, 1, 1)).astype(np.float32)
conv = F.conv2d(dn.tensor(Xc[None]), dn.tensor(Kc)).numpy()[0]
dense = (Kc[:, :, 0, 0] @ Xc.reshape(3, 9)).reshape(2, 3, 3)
assert np.allclose(conv, dense, atol=1e-6)
print("1x1 convolution == a dense layer per pixel")

# %% [markdown]
# ## Image kernels
#
# The slides' hand-made kernels on a real photograph: Grace Hopper, the sample photo that
# ships inside matplotlib (`divenet.show.sample_photo()`). The same picture comes from the
# command line: `divenet show kernels --out kernels.png`.

# %%
import matplotlib.pyplot as plt

from divenet.show import KERNELS, apply_kernels, photo_array, sample_photo

photo = photo_array(sample_photo())  # greyscale in [0, 1], pooled to 256x300
results = apply_kernels(photo)
fig, axes = plt.subplots(1, 5, figsize=(15, 4))
axes[0].imshow(photo, cmap="gray")
axes[0].set_title("input")
for ax, (name, y) in zip(axes[1:], results.items()):
    ax.imshow(y, cmap="gray")
    ax.set_title(name)
for ax in axes:
    ax.axis("off")
plt.show()

# The edge and vertical-edge kernels sum to 0: zero on flat regions. Sharpen and blur sum to 1:
# they keep a flat region's brightness.
flat = np.full((8, 8), 0.4, np.float32)
flat_out = apply_kernels(flat)
assert np.allclose(flat_out["edge"], 0, atol=1e-6) and np.allclose(flat_out["vertical edge"], 0, atol=1e-6)
assert np.allclose(flat_out["gaussian blur"], 0.4) and np.allclose(flat_out["sharpen"], 0.4)

# %% [markdown]
# ## The vertical edge detector
#
# An image with ones on the left and zeros on the right; the kernel $[1, -1]$ marks the
# column where it changes, and nothing else.

# %%
stripes = np.ones((6, 8), np.float32)
stripes[:, 2:6] = 0
edges = corr2d(stripes, [[1, -1]])
print(edges)
assert edges[0].tolist() == [0, 1, 0, 0, 0, -1, 0]
assert np.all(edges == edges[0])  # every row the same
# the transposed picture has no vertical edge at all
assert np.all(corr2d(stripes.T, [[1, -1]]) == 0)

# %% [markdown]
# ## Learning the kernel
#
# Given the input and the edge map, learn a 1x2 kernel by gradient descent on the squared
# error (the slides' "learning a kernel"): a `Conv2d(1, 1, (1, 2), bias=False)` and SGD. It
# converges to $[1, -1]$.

# %%
dn.manual_seed(0)
conv = nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False)
x = dn.tensor(stripes[None, None])
target = dn.tensor(edges[None, None])
opt = dn.optim.SGD(conv.parameters(), lr=0.03)
for step in range(40):
    loss = ((conv(x) - target) ** 2).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if (step + 1) % 10 == 0:
        print(f"step {step + 1}: loss {loss.item():.4f}")
learned = conv.weight.numpy().reshape(-1)
print("learned kernel:", learned)
assert np.allclose(learned, [1, -1], atol=0.05)
