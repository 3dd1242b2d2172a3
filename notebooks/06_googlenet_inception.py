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
# # GoogLeNet and the Inception block
#
# "Why choose? Just pick them all": an Inception block runs a 1x1, a 3x3, a 5x5 convolution
# and a 3x3 max pool side by side (with 1x1 convolutions in front to cut the channels) and
# concatenates the four results along the channels. `dn.models.googlenet.Inception` is the
# block; GoogLeNet stacks nine of them in five stages.

# %%
import divenet as dn
from divenet import nn
from divenet.models.googlenet import Inception

block = Inception(192, 64, (96, 128), (16, 32), 32)  # inception (3a)
x = dn.randn(1, 192, 28, 28)
y = block(x)
print(y.shape)
assert y.shape == (1, 64 + 128 + 32 + 32, 28, 28)  # height and width kept, 256 channels

# %% [markdown]
# ## Inception vs a 3x3 or 5x5 convolution
#
# The slides' table, for the first block (192 channels in, 256 out, 28x28):
#
# |           | #parameters | FLOPS |
# |-----------|-------------|-------|
# | Inception | 0.16 M      | 128 M |
# | 3x3 Conv  | 0.44 M      | 346 M |
# | 5x5 Conv  | 1.22 M      | 963 M |
#
# Here the three are counted by `dn.summary` (FLOPS in the slides are multiply-accumulates).

# %%
candidates = {
    "Inception": block,
    "3x3 Conv": nn.Conv2d(192, 256, 3, padding=1),
    "5x5 Conv": nn.Conv2d(192, 256, 5, padding=2),
}
table = {}
print(f"{'':10} {'#parameters':>12} {'MACs':>10}")
for name, layer in candidates.items():
    s = dn.summary(layer, (192, 28, 28))
    assert s.output_shape == (256, 28, 28)
    table[name] = (s.total_params, s.total_macs)
    print(f"{name:10} {s.total_params / 1e6:10.2f} M {s.total_macs / 1e6:8.0f} M")

slides = {"Inception": (0.16e6, 128e6), "3x3 Conv": (0.44e6, 346e6), "5x5 Conv": (1.22e6, 963e6)}
for name, (params, macs) in table.items():
    assert abs(params - slides[name][0]) / slides[name][0] < 0.025, name  # the slides round down
    assert abs(macs - slides[name][1]) / slides[name][1] < 0.005, name
assert table["Inception"][0] * 2.5 < table["3x3 Conv"][0] and table["Inception"][1] * 2.5 < table["3x3 Conv"][1]

# %% [markdown]
# The block is cheaper because its 3x3 and 5x5 paths see only 96 and 16 of the 192 input
# channels (the 1x1 "bottleneck" convolutions), and each path produces only part of the 256
# output channels.

# %% [markdown]
# ## GoogLeNet
#
# Five stages: a 7x7 convolution and pooling, a 1x1 + 3x3 stage, then 2, 5 and 2 Inception
# blocks with max pools between them, global average pooling and one dense layer. D2L
# trains it at 96x96 on Fashion-MNIST.

# %%
dn.manual_seed(0)
net = dn.models.get_model("googlenet")
s = dn.summary(net, (1, 96, 96))
# an Inception block's rows are named STAGE.BLOCK.pN....: one block per distinct STAGE.BLOCK
blocks = sorted({".".join(r.name.split(".")[:2]) for r in s.rows if ".p1." in r.name})
print(len(blocks), "Inception blocks:", blocks)
print(f"{s.total_params / 1e6:.2f} M parameters, {s.total_macs / 1e9:.3f} G MACs at 96x96")
assert len(blocks) == 9

# %%
out = net(dn.randn(2, 1, 96, 96))
print(out.shape)
assert out.shape == (2, 10)
