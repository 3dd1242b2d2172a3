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
# # LeNet
#
# LeCun's network as in D2L: two convolutions (6 and 16 channels, 5x5) with sigmoid and
# 2x2 average pooling, then dense layers of 120, 84 and 10 units. It is `dn.models.get_model
# ('lenet')`, built from `nn.Sequential`. Here it trains for a short while on a slice of
# Fashion-MNIST (`divenet train lenet` trains the full recipe: 10 epochs, lr 0.9).

# %%
import time

import numpy as np

import divenet as dn
from divenet import nn
from divenet.data import ArrayDataset, DataLoader, FashionMNIST

lenet = dn.models.get_model("lenet")
print(lenet)
print(dn.summary(lenet, (1, 28, 28)))

# %% [markdown]
# The table counts what the slides call complexity: 0.06 M parameters and 0.4 M MACs for
# one 28x28 image (the slides' table, 0.6 M parameters and 4 M FLOP, counts a larger LeNet).

# %% [markdown]
# ## A short training run
#
# D2L's sigmoid LeNet spends its first few hundred steps on a plateau (the loss stays near
# ln 10 = 2.30) before it learns: its recipe is 10 epochs over all 60000 images
# (`divenet train lenet`). For a run of seconds here, the same architecture with the
# modern choices, ReLU and max pooling, trained with momentum SGD on a 3000-image slice.

# %%
train_full, test_full = FashionMNIST(train=True), FashionMNIST(train=False)
train = ArrayDataset(train_full.images[:3000], train_full.labels[:3000])
test = ArrayDataset(test_full.images[:1000], test_full.labels[:1000])
test_iter = DataLoader(test, batch_size=500)
print(len(train), "training images,", len(test), "test images:", train_full.classes)

dn.manual_seed(0)
net = nn.Sequential(
    nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))

# %% [markdown]
# ## The training loop
#
# The loop D2L writes by hand: forward, loss, `zero_grad`, `backward`, `step`. (The
# `divenet.train.Trainer` does the same, with checkpoints and progress.)

# %%
def accuracy(model, loader):
    model.eval()
    correct = total = 0
    with dn.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(dim=1) == y).sum().item())
            total += y.shape[0]
    model.train()
    return correct / total


opt = dn.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(2):
    start, total_loss, seen = time.perf_counter(), 0.0, 0
    for x, y in DataLoader(train, batch_size=64, shuffle=True, seed=epoch):
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total_loss += float(loss.item()) * y.shape[0]
        seen += y.shape[0]
    seconds = time.perf_counter() - start
    print(f"epoch {epoch + 1}: loss {total_loss / seen:.3f}, test acc {accuracy(net, test_iter):.3f}, "
          f"{seen / seconds:.0f} img/s")

acc = accuracy(net, test_iter)
assert acc > 0.4, acc  # chance is 0.1

# %% [markdown]
# ## What the first layer learned
#
# The six 5x5 kernels of the first convolution, and their feature maps for one test image
# (`divenet show filters RUN` and `divenet show features RUN IMAGE` draw the same from a
# checkpoint).

# %%
import matplotlib.pyplot as plt

w = net[0].weight.numpy()
image = test[0][0]
maps = net[1](net[0](dn.tensor(image[None]))).numpy()[0]
fig, axes = plt.subplots(2, 7, figsize=(12, 3.6))
axes[0, 0].imshow(image[0], cmap="gray")
axes[0, 0].set_title(test_full.classes[test[0][1]])
for i in range(6):
    axes[0, i + 1].imshow(w[i, 0], cmap="gray")
    axes[0, i + 1].set_title(f"kernel {i}")
    axes[1, i + 1].imshow(maps[i])
for ax in axes.flat:
    ax.axis("off")
plt.show()
