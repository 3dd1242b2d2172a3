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
# # Pooling
#
# A convolution is sensitive to position: the vertical-edge detector's output moves with
# the edge, and a one-pixel shift gives zero where there was a one. A 2x2 max pool after it
# tolerates that shift. Pooling has no parameters; like a convolution it has a window,
# padding and stride, and it works on each channel separately.

# %%
import numpy as np

import divenet as dn
import divenet.functional as F
from divenet import nn

X = dn.tensor(np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3))

# %% [markdown]
# ## Max and average pooling
#
# The slides: a 2x2 window over 0..8 gives $\max(0, 1, 3, 4) = 4$, then 5, 7, 8.

# %%
mx = F.max_pool2d(X, 2, stride=1).numpy()[0, 0]
avg = F.avg_pool2d(X, 2, stride=1).numpy()[0, 0]
print(mx, avg, sep="\n")
assert mx.tolist() == [[4, 5], [7, 8]]
assert avg.tolist() == [[2, 3], [5, 6]]

# %% [markdown]
# ## Padding and stride
#
# The default stride is the window size (non-overlapping windows), as in PyTorch.

# %%
X4 = dn.tensor(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))
assert F.max_pool2d(X4, 3).numpy()[0, 0].tolist() == [[10]]
assert F.max_pool2d(X4, 3, padding=1, stride=2).numpy()[0, 0].tolist() == [[5, 7], [13, 15]]
assert nn.MaxPool2d((2, 3), stride=(2, 3), padding=(0, 1))(X4).numpy()[0, 0].tolist() == [[5, 7], [13, 15]]
print("padding and stride as the formula says")

# %% [markdown]
# ## Multiple channels
#
# Each channel is pooled on its own: as many output channels as input channels.

# %%
X2 = dn.cat([X4, X4 + 1], dim=1)
Y2 = F.max_pool2d(X2, 3, padding=1, stride=2)
print(Y2.shape)
assert Y2.shape == (1, 2, 2, 2) and Y2.numpy()[0, 1].tolist() == [[6, 8], [14, 16]]

# %% [markdown]
# ## Tolerance to a one-pixel shift
#
# The slides' example: the edge image of a picture with two columns of ones, then the same
# picture shifted by one pixel. After the convolution the two edge maps differ everywhere
# the edge moved; after a 2x2 max pool (stride 1) they overlap.

# %%
def edge_map(img):
    return F.conv2d(dn.tensor(img[None, None]), dn.tensor(np.array([[[[1, -1]]]], np.float32)))


img = np.zeros((4, 5), np.float32)
img[:, :2] = 1
shifted = np.roll(img, 1, axis=1)
shifted[:, 0] = 1
e1, e2 = edge_map(img), edge_map(shifted)
print(e1.numpy()[0, 0], e2.numpy()[0, 0], sep="\n")
p1 = F.max_pool2d(e1, 2, stride=1).numpy()[0, 0]
p2 = F.max_pool2d(e2, 2, stride=1).numpy()[0, 0]
print(p1, p2, sep="\n")
assert e1.numpy()[0, 0, 0].tolist() == [0, 1, 0, 0]
assert (e1.numpy() * e2.numpy()).sum() == 0  # the shift moves every edge pixel
assert (p1 * p2).sum() > 0  # the pooled maps still overlap
assert p1[0].tolist() == [1, 1, 0] and p2[0].tolist() == [0, 1, 1]
