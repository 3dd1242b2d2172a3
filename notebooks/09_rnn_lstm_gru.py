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
# # RNN, LSTM and GRU: a character language model
#
# A recurrent layer reads a sequence one step at a time and carries a hidden state:
# $h_t = \tanh(W_{xh} x_t + W_{hh} h_{t-1} + b)$ for the plain RNN; the LSTM adds a cell
# state and input, forget and output gates; the GRU has reset and update gates. Here each
# of the three reads characters of a small text and learns to predict the next one.

# %%
import math
import time
from pathlib import Path

import numpy as np

import divenet as dn
import divenet.functional as F
from divenet import nn

# %% [markdown]
# ## Shapes
#
# As in PyTorch: input (time, batch, features) unless `batch_first=True`; the output has
# the hidden state of every step, `h_n` the last one (the LSTM also returns `c_n`).

# %%
lstm = nn.LSTM(input_size=8, hidden_size=16, num_layers=2, batch_first=True)
out, (h, c) = lstm(dn.randn(4, 10, 8))
print(out.shape, h.shape, c.shape)
assert out.shape == (4, 10, 16) and h.shape == (2, 4, 16) == c.shape
assert np.allclose(out.numpy()[:, -1], h.numpy()[-1], atol=1e-6)  # the last step's top layer
gru_out, gru_h = nn.GRU(8, 16)(dn.randn(10, 4, 8))
assert gru_out.shape == (10, 4, 16) and gru_h.shape == (1, 4, 16)

# %% [markdown]
# ## The text
#
# The GNU GPL version 3 that Debian machines ship (`/usr/share/common-licenses/GPL-3`),
# else a paragraph written here. Characters become integer ids; the model sees 32
# characters and predicts each next one.

# %%
gpl = Path("/usr/share/common-licenses/GPL-3")
if gpl.exists():
    text = gpl.read_text(encoding="utf-8")[:20000]
else:
    text = ("The licenses for most software and other practical works are designed to take away "
            "your freedom to share and change the works. By contrast, the GNU General Public "
            "License is intended to guarantee your freedom to share and change all versions of a "
            "program, to make sure it remains free software for all its users. ") * 60
vocab = sorted(set(text))
ids = np.array([vocab.index(ch) for ch in text], dtype=np.int64)
T = 32
n_seq = (len(ids) - 1) // T
X = ids[: n_seq * T].reshape(n_seq, T)
Y = ids[1: n_seq * T + 1].reshape(n_seq, T)
split = int(0.9 * n_seq)
print(len(text), "characters,", len(vocab), "distinct,", n_seq, "sequences of", T)

# %% [markdown]
# ## The model
#
# An embedding of each character, one recurrent layer, and a dense layer to the vocabulary.
# The loss is the cross-entropy of the next character; its exponential is the perplexity
# (about the vocabulary size for a model that knows nothing, 1 for a perfect one).

# %%
class CharModel(nn.Module):
    def __init__(self, cell, vocab_size, hidden=64):
        self.embed = nn.Embedding(vocab_size, 32)
        self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](32, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, x):
        h, _ = self.rnn(self.embed(x))
        return self.out(h)


def perplexity(model, X, Y):
    with dn.no_grad():
        logits = model(dn.tensor(X))
        return math.exp(float(F.cross_entropy(logits.reshape(-1, len(vocab)), dn.tensor(Y.reshape(-1))).item()))


def train(cell, steps=50, batch=32, lr=1e-2):
    dn.manual_seed(0)
    rng = np.random.default_rng(0)
    model = CharModel(cell, len(vocab))
    opt = dn.optim.Adam(model.parameters(), lr=lr)
    before = perplexity(model, X[split:], Y[split:])
    start = time.perf_counter()
    for step in range(steps):
        rows = rng.integers(0, split, batch)
        logits = model(dn.tensor(X[rows]))
        loss = F.cross_entropy(logits.reshape(-1, len(vocab)), dn.tensor(Y[rows].reshape(-1)))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    after = perplexity(model, X[split:], Y[split:])
    print(f"{cell:4}: test perplexity {before:6.1f} -> {after:5.1f} in {steps} steps, "
          f"{time.perf_counter() - start:.1f} s, {model.num_parameters():,} parameters")
    return model, after


models = {cell: train(cell) for cell in ("rnn", "lstm", "gru")}
for cell, (_, ppl) in models.items():
    assert ppl < len(vocab) / 3, (cell, ppl)  # far better than guessing

# %% [markdown]
# ## Generating text
#
# Feed a prefix, then repeatedly append the likeliest next character (greedy decoding).
# After this short training the model has learned frequent words and spacing, not meaning.

# %%
def generate(model, prefix, n=120):
    chars = list(prefix)
    with dn.no_grad():
        for _ in range(n):
            x = dn.tensor(np.array([[vocab.index(ch) for ch in chars[-T:]]], dtype=np.int64))
            chars.append(vocab[int(model(x).numpy()[0, -1].argmax())])
    return "".join(chars)


sample = generate(models["lstm"][0], "the ")
print(repr(sample))
assert sample.startswith("the ") and len(sample) == 124
