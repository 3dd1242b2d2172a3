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
# # Batch normalization
#
# Batch norm standardizes each channel over the minibatch (and, for images, over height
# and width), then scales and shifts it with learned $\gamma$ and $\beta$:
# $\hat x = (x - \mu_B) / \sqrt{\sigma_B^2 + \epsilon}$, $y = \gamma \hat x + \beta$.
# In training it uses the batch's statistics and keeps running averages; in evaluation it
# uses the running averages.

# %%
import time

import numpy as np

import divenet as dn
import divenet.functional as F
from divenet import nn
from divenet.data import ArrayDataset, DataLoader, FashionMNIST

rng = np.random.default_rng(0)
x = dn.tensor((rng.normal(size=(16, 3, 5, 5)) * 4 + 7).astype(np.float32))
bn = nn.BatchNorm2d(3)
y = bn(x)  # training mode: the batch's statistics

# %% [markdown]
# ## The formula, by hand
#
# The output has mean 0 and variance 1 per channel ($\gamma = 1$, $\beta = 0$ at the start),
# and equals the formula computed with NumPy.

# %%
a = x.numpy()
mu = a.mean(axis=(0, 2, 3), keepdims=True)
var = a.var(axis=(0, 2, 3), keepdims=True)
by_hand = (a - mu) / np.sqrt(var + bn.eps)
assert np.allclose(y.numpy(), by_hand, atol=1e-5)
print("per-channel mean", y.numpy().mean(axis=(0, 2, 3)).round(6), "var", y.numpy().var(axis=(0, 2, 3)).round(4))

# %% [markdown]
# ## Running statistics
#
# Each training-mode call moves the running mean and variance by `momentum` (0.1) toward the
# batch's (the running variance uses the unbiased estimate, as PyTorch). Evaluation mode
# then normalizes with them.

# %%
n = a.shape[0] * a.shape[2] * a.shape[3]
assert np.allclose(bn.running_mean.numpy(), 0.9 * 0 + 0.1 * mu.reshape(-1), atol=1e-5)
assert np.allclose(bn.running_var.numpy(), 0.9 * 1 + 0.1 * var.reshape(-1) * n / (n - 1), atol=1e-4)
bn.eval()
y_eval = bn(x).numpy()
expected = (a - bn.running_mean.numpy().reshape(1, 3, 1, 1)) / np.sqrt(bn.running_var.numpy().reshape(1, 3, 1, 1) + bn.eps)
assert np.allclose(y_eval, expected, atol=1e-4)
print("eval mode uses the running statistics")

# %% [markdown]
# ## LeNet with batch norm trains faster
#
# D2L puts a batch norm after each convolution and dense layer of LeNet (`lenet-bn`). With
# the same budget (one pass over 3000 images, batches of 64) it gets much further than the
# plain sigmoid LeNet, whose loss has not yet left its plateau at ln 10 = 2.30.

# %%
full = FashionMNIST(train=True)
test_full = FashionMNIST(train=False)
train = ArrayDataset(full.images[:3000], full.labels[:3000])
test = ArrayDataset(test_full.images[:1000], test_full.labels[:1000])


def run(name, lr, epochs=1):
    dn.manual_seed(0)
    net = dn.models.get_model(name)
    opt = dn.optim.SGD(net.parameters(), lr=lr)
    loader = DataLoader(train, batch_size=64, shuffle=True, seed=0)
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with dn.no_grad():
        correct = sum(int((net(xb).argmax(dim=1) == yb).sum().item()) for xb, yb in DataLoader(test, batch_size=500))
    print(f"{name:9} lr {lr}: last loss {loss.item():.3f}, test acc {correct / len(test):.3f}, "
          f"{time.perf_counter() - start:.1f} s")
    return correct / len(test)


plain = run("lenet", 0.9)
with_bn = run("lenet-bn", 1.0)
assert with_bn > plain + 0.1
