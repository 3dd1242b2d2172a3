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
# # AlexNet, VGG and NiN: complexity
#
# The slides compare networks by parameters and by floating point operations.
# `dn.summary(model, input_shape)` counts both per layer with a shape-only pass (no
# arithmetic on the weights), in multiply-accumulates (MACs; FLOPs are about twice).
# The models are built inside `skip_init()`, which leaves the weights uninitialized: the
# counts need shapes only, and VGG's 130 M parameters then build in milliseconds.

# %%
import divenet as dn
from divenet.summary import skip_init


def count(name, shape, **kwargs):
    with skip_init():
        model = dn.models.get_model(name, **kwargs)
    return dn.summary(model, shape, name=name)


# %% [markdown]
# ## AlexNet on ImageNet (3x224x224, 1000 classes)
#
# The slides' table: Conv1 35K parameters and 101M FLOP, Conv2 614K and 415M, Conv3-5 3M
# and 445M, Dense1 26M, Dense2 16M; total 46M parameters and about 1G. (The slides count
# one multiply-add as one operation: their figures are MACs.)

# %%
alex = count("alexnet", (3, 224, 224), num_classes=1000, in_channels=3)
layers = [r for r in alex.rows if r.kind in ("Conv2d", "Linear")]
for r in layers:
    print(f"{r.name:14} {r.kind:7} {str(r.output_shape):16} {r.params / 1e6:8.3f} M params {r.macs / 1e6:9.1f} M MACs")
conv1, conv2, conv3, conv4, conv5, dense1, dense2, out = layers
assert round(conv1.params / 1e3) == 35 and int(conv1.macs / 1e6) == 101  # the slides truncate
assert int(conv2.params / 1e3) == 614 and int(conv2.macs / 1e6) == 415
assert round((conv3.params + conv4.params + conv5.params) / 1e6) == 3
assert abs((conv3.macs + conv4.macs + conv5.macs) / 1e6 - 445) < 1.5
assert int(dense1.params / 1e6) == 26 and int(dense2.params / 1e6) == 16  # the slides truncate
total_without_output = alex.total_params - out.params
print(f"total {alex.total_params / 1e6:.1f} M params ({total_without_output / 1e6:.1f} M without the "
      f"output layer), {alex.total_macs / 1e9:.2f} G MACs")
assert int(total_without_output / 1e6) == 46 and round(alex.total_macs / 1e9) == 1

# %% [markdown]
# ## LeNet, AlexNet, VGG-11, NiN side by side
#
# At the sizes D2L trains them on Fashion-MNIST (one channel, 10 classes): LeNet at 28x28,
# the others at 224x224. VGG spends its budget in 3x3 convolutions; NiN replaces the dense
# layers by 1x1 convolutions and a global average pool, so it has 20x fewer parameters than
# AlexNet for a similar amount of compute. (`divenet models` prints this for the whole zoo.)

# %%
rows = []
for name, side in (("lenet", 28), ("alexnet", 224), ("vgg11", 224), ("vgg11-slim", 224), ("nin", 224)):
    s = count(name, (1, side, side))
    rows.append((name, s.total_params, s.total_macs))
    print(f"{name:11} {side:4}x{side:<4} {s.total_params / 1e6:9.2f} M params {s.total_macs / 1e9:8.3f} G MACs")
by = {n: (p, m) for n, p, m in rows}
assert by["nin"][0] * 20 < by["alexnet"][0]  # NiN: no big dense layers
assert by["vgg11"][1] > 7 * by["alexnet"][1]  # VGG: many more MACs
assert by["vgg11-slim"][1] * 10 < by["vgg11"][1]  # D2L's 4x narrower VGG: ~16x fewer MACs

# %% [markdown]
# ## Where VGG's parameters are
#
# Most parameters of VGG sit in the first dense layer (25088 x 4096), most MACs in the
# convolutions.

# %%
vgg = count("vgg11", (3, 224, 224), num_classes=1000, in_channels=3)
conv_p = sum(r.params for r in vgg.rows if r.kind == "Conv2d")
dense_p = sum(r.params for r in vgg.rows if r.kind == "Linear")
conv_m = sum(r.macs for r in vgg.rows if r.kind == "Conv2d")
print(f"convolutions: {conv_p / 1e6:.1f} M params, {conv_m / 1e9:.2f} G MACs; dense: {dense_p / 1e6:.1f} M params")
assert dense_p > 10 * conv_p and conv_m > 0.9 * vgg.total_macs

# %% [markdown]
# ## NiN's blocks
#
# A NiN block is a convolution followed by two 1x1 convolutions (per-pixel dense layers).
# The summary shows the shapes through the network for one 224x224 image.

# %%
print(count("nin", (1, 224, 224)))
