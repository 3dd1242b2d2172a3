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
# # ResNet and DenseNet
#
# A residual block learns $f(x) = x + g(x)$: the input skips over two 3x3 convolutions
# (with batch norm) and is added back, so a block can at worst pass its input on. Where the
# block changes the channels or halves the size, a 1x1 convolution with the same stride
# reshapes the input for the addition. DenseNet concatenates instead of adding: each layer
# sees the outputs of all layers before it in its block.

# %%
import numpy as np

import divenet as dn
import divenet.functional as F
from divenet import nn
from divenet.models.densenet import DenseBlock, transition_block
from divenet.models.resnet import Residual

x = dn.randn(4, 3, 6, 6)
same = Residual(3, 3)
print(same(x).shape)
assert same(x).shape == (4, 3, 6, 6)
down = Residual(3, 6, use_1x1conv=True, strides=2)  # more channels, half the size
print(down(x).shape)
assert down(x).shape == (4, 6, 3, 3)

# %% [markdown]
# ## Dense blocks and transitions
#
# A dense block of 2 convolution blocks with 10 channels each turns 3 channels into
# 3 + 2 x 10 = 23; a transition block (1x1 convolution, 2x2 average pool) then cuts the
# channels and halves height and width.

# %%
blk = DenseBlock(2, 3, 10)
y = blk(dn.randn(4, 3, 8, 8))
print(y.shape)
assert y.shape == (4, 23, 8, 8)
t = transition_block(23, 10)
assert t(y).shape == (4, 10, 4, 4)

# %% [markdown]
# ## The two networks
#
# D2L's ResNet-18 and DenseNet at 96x96 (their Fashion-MNIST recipes), counted by
# `dn.summary`: DenseNet reaches a similar depth with far fewer parameters.

# %%
for name in ("resnet18-d2l", "densenet"):
    s = dn.summary(dn.models.get_model(name), (1, 96, 96))
    print(f"{name:13} {s.total_params / 1e6:6.2f} M params {s.total_macs / 1e6:8.1f} M MACs, "
          f"{sum(r.kind == 'Conv2d' for r in s.rows)} convolutions")

# %% [markdown]
# ## Why the skip connection helps
#
# At initialization, compare the gradient that reaches the first layer of a deep plain
# stack of conv-BN-ReLU layers with that of the same stack with residual connections. The
# plain stack's gradient shrinks with depth; the residual one's does not.

# %%
class Plain(nn.Module):
    def __init__(self, depth, residual):
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Sigmoid())
                                     for _ in range(depth)])
        self.residual = residual
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = x + b(x) if self.residual else b(x)
        return self.head(x.mean(dim=(2, 3)))


xb = dn.randn(16, 1, 12, 12)
yb = dn.tensor(np.arange(16) % 10)
norms = {}
for residual in (False, True):
    dn.manual_seed(0)
    net = Plain(20, residual)
    F.cross_entropy(net(xb), yb).backward()
    norms[residual] = float(np.linalg.norm(net.stem.weight.grad.numpy()))
    print(f"{'residual' if residual else 'plain':8}: |grad of the first layer| = {norms[residual]:.2e}")
assert norms[True] > 10 * norms[False]  # 15x with this seed

# %% [markdown]
# Training them is a matter of minutes per epoch on a CPU: `divenet train resnet18-small`
# (28x28, D2L's small-image ResNet) or `divenet train densenet` (96x96) run D2L's recipes.
