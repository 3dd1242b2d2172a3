"""A character-level LSTM language model, trained with ``divenet train charlm --text FILE`` and
sampled with ``divenet generate CKPT --prefix "..." --length N``.

    characters (N, T) -> Embedding -> LSTM (many-to-many) -> Linear -> logits (N, T, vocabulary)

The vocabulary is the set of characters of the training file (sorted), stored in the
checkpoint's metadata with their counts. The text is cut into a training part (the first 90%)
and a test part (the last 10%); each part into non-overlapping sequences of ``seq_len``
characters whose targets are the same characters shifted by one.

Generation warms the LSTM up on the prefix (many-to-many: one pass over the whole prefix), then
feeds each sampled character back in (one-to-many), drawing from softmax(logits / temperature)
with divenet's random generator, so ``dn.manual_seed`` makes a sample reproducible.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np

from .. import nn
from .. import random as dn_random
from ..autograd import no_grad
from ..tensor import int64, tensor
from .registry import Recipe, register

__all__ = ["CharLM", "charlm", "TokenSequences", "read_text", "encode", "text_loaders",
           "unigram_perplexity", "generate"]

SEQ_LEN = 64
TEST_FRACTION = 0.1


class CharLM(nn.Module):
    """Embedding -> LSTM -> Linear over ``vocab_size`` characters.

    ``forward(ids (N, T) int64) -> logits (N, T, vocab_size)``;
    ``run(ids, state=None) -> (logits, (h, c))`` carries the LSTM state across calls."""

    def __init__(self, vocab_size, embed_dim=64, hidden_size=256, num_layers=1, dropout=0.5):
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers=num_layers,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)  # on the LSTM's outputs, before the vocabulary layer
        self.fc = nn.Linear(hidden_size, vocab_size)

    def run(self, ids, state=None):
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"{type(self).__name__}: expected integer character ids (N, T), got "
                             f"shape {tuple(ids.shape)} dtype {ids.dtype}")
        # time-major all the way: (T, N) ids -> (T, N, E) -> (T, N, H); one transpose of the
        # hidden states before the output layer gives (N, T, V) logits, contiguous
        emb = self.embedding(ids.permute(1, 0))
        out, state = self.lstm(emb, state)
        return self.fc(self.drop(out.permute(1, 0, 2))), state

    def forward(self, ids):
        return self.run(ids)[0]


@register("charlm", Recipe(lr=3e-3, epochs=25, batch_size=32, optimizer="adam"), kind="text")
def charlm(num_classes=None, in_channels=1, embed_dim=64, hidden_size=256, num_layers=1, dropout=0.5):
    """Character-level LSTM language model; ``num_classes`` is the vocabulary size.

    Defaults measured on the GPL-3 text (35k characters, test perplexity at the best epoch):
    dropout 0.5 on the LSTM outputs 6.6 at epoch 24, without dropout 6.8 at epoch 21 and
    rising fast after it (the text is small); hidden 512 reached 6.1-6.4 for 3x the time."""
    if num_classes is None:
        raise ValueError("charlm: num_classes (the vocabulary size) is required")
    return CharLM(num_classes, embed_dim=embed_dim, hidden_size=hidden_size, num_layers=num_layers,
                  dropout=dropout)


# ---- data ----------------------------------------------------------------------------------------
class TokenSequences:
    """Fixed-length (input, next-character target) pairs cut from one array of ids.

    ``dataset[i]`` is ``(ids[i*L : i*L+L], ids[i*L+1 : i*L+L+1])``; ``arrays()`` gives all of
    them at once (the DataLoader's fast path takes batches from it)."""

    transform = None

    def __init__(self, ids, seq_len=SEQ_LEN):
        ids = np.asarray(ids, dtype=np.int64)
        n = (len(ids) - 1) // seq_len
        if n < 1:
            raise ValueError(f"TokenSequences: {len(ids)} characters make no sequence of "
                             f"{seq_len} + 1 (input and next-character target)")
        self.seq_len = seq_len
        self.inputs = ids[:n * seq_len].reshape(n, seq_len)
        self.targets = ids[1:n * seq_len + 1].reshape(n, seq_len)

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, i):
        return self.inputs[i], self.targets[i]

    def arrays(self):
        return self.inputs, self.targets


def read_text(path, limit=None):
    """The UTF-8 text of ``path`` (its first ``limit`` characters if given)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such text file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror})") from None
    if limit:
        text = text[:limit]
    return text


def encode(text, vocab):
    """Character ids of ``text`` under ``vocab`` (a string of distinct characters)."""
    index = {ch: i for i, ch in enumerate(vocab)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        shown = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ValueError(f"characters not in the model's vocabulary of {len(vocab)}: {shown}{more}")
    return np.fromiter((index[ch] for ch in text), dtype=np.int64, count=len(text))


def unigram_perplexity(counts):
    """exp(entropy) of the character frequencies: the perplexity of the best context-free model."""
    c = np.asarray(counts, dtype=np.float64)
    p = c[c > 0] / c.sum()
    return float(math.exp(-(p * np.log(p)).sum()))


def text_loaders(path, batch_size, seed=0, device=None, limit=None, seq_len=SEQ_LEN):
    """(train_loader, test_loader, metadata) for a character model of the text file ``path``:
    the first 90% of its characters train, the last 10% test, in sequences of ``seq_len``.
    The metadata holds the vocabulary, its counts and the unigram perplexity of the text."""
    from ..data import DataLoader

    text = read_text(path, limit)
    n_test = int(len(text) * TEST_FRACTION)
    if n_test < seq_len + 1:
        raise ValueError(f"{path}: {len(text)} characters are too few: the test part (the last "
                         f"{TEST_FRACTION:.0%}) needs at least {seq_len + 1}; use a text of at least "
                         f"{math.ceil((seq_len + 1) / TEST_FRACTION)} characters")
    counts = Counter(text)
    vocab = "".join(sorted(counts))
    ids = encode(text, vocab)
    split = len(text) - n_test
    train = TokenSequences(ids[:split], seq_len)
    test = TokenSequences(ids[split:], seq_len)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, seed=seed, device=device)
    test_loader = DataLoader(test, batch_size=batch_size, device=device)
    meta = {"num_classes": len(vocab), "in_channels": 1, "vocab": vocab,
            "char_counts": [counts[ch] for ch in vocab], "seq_len": seq_len,
            "text": str(path), "text_chars": len(text),
            "unigram_perplexity": unigram_perplexity(list(counts.values()))}
    return train_loader, test_loader, meta


# ---- sampling ------------------------------------------------------------------------------------
def _sample(logits, temperature):
    """One id drawn from softmax(logits / temperature) (argmax when temperature is 0)."""
    z = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return int(z.argmax())
    z = (z - z.max()) / temperature
    p = np.exp(z)
    cdf = np.cumsum(p)
    u = dn_random.generator().random() * cdf[-1]
    return int(min(np.searchsorted(cdf, u, side="right"), len(cdf) - 1))


def generate(model, meta, prefix, length, temperature=1.0):
    """``prefix`` followed by ``length`` sampled characters.

    The model reads the prefix in one pass (many-to-many), then each sampled character is fed
    back (one-to-many). An empty prefix starts from a character drawn from the text's character
    frequencies. Characters outside the model's vocabulary are an error."""
    vocab = meta.get("vocab")
    if not vocab:
        raise ValueError("generate: the checkpoint holds no vocabulary (is it a charlm checkpoint?)")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"generate: length must be a non-negative integer, got {length!r}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"generate: temperature must be a finite number >= 0, got {temperature!r}")
    try:
        ids = encode(prefix, vocab)
    except ValueError as exc:
        raise ValueError(f"generate: prefix {prefix!r} has {exc}") from None
    if length == 0:
        return prefix
    device = model.device
    out = []
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            if len(ids) == 0:  # no context: the first character follows the text's frequencies
                counts = np.asarray(meta.get("char_counts") or [1] * len(vocab), dtype=np.float64)
                nxt = _sample(np.log(counts), 1.0)
                out.append(nxt)
                ids = np.array([nxt], dtype=np.int64)
            logits, state = model.run(tensor(ids[None], dtype=int64, device=device))
            while len(out) < length:
                nxt = _sample(logits.numpy()[0, -1], temperature)
                out.append(nxt)
                if len(out) == length:
                    break
                logits, state = model.run(tensor([[nxt]], dtype=int64, device=device), state)
    finally:
        model.train(was_training)
    return prefix + "".join(vocab[i] for i in out)
