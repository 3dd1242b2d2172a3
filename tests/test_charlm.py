"""The character-level language model: data preparation, sampling, and the command line
(``divenet train charlm --text FILE`` / ``divenet generate CKPT``) on a license text that every
Debian machine has."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import divenet as dn
from divenet.cli import main
from divenet.models import get_model, get_spec
from divenet.models.charlm import (CharLM, TokenSequences, encode, generate, text_loaders,
                                   unigram_perplexity)

GPL = Path("/usr/share/common-licenses/GPL-3")
needs_text = pytest.mark.skipif(not GPL.exists(), reason="needs /usr/share/common-licenses/GPL-3")


def _rows(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


# ---- data ----------------------------------------------------------------------------------------
def test_sequences_are_inputs_with_next_character_targets():
    ids = np.arange(23)
    ds = TokenSequences(ids, seq_len=5)
    assert len(ds) == 4  # (23 - 1) // 5: the last target must exist
    x, y = ds.arrays()
    assert x.dtype == np.int64 and x.shape == (4, 5) == y.shape
    np.testing.assert_array_equal(x[2], [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(y[2], [11, 12, 13, 14, 15])
    np.testing.assert_array_equal(ds[3][1], [16, 17, 18, 19, 20])
    with pytest.raises(ValueError, match="5 characters make no sequence of 5"):
        TokenSequences(np.arange(5), seq_len=5)


def test_unigram_perplexity():
    assert unigram_perplexity([5, 5, 5, 5]) == pytest.approx(4.0)
    assert unigram_perplexity([7, 0]) == pytest.approx(1.0)
    p = np.array([0.5, 0.25, 0.25])
    assert unigram_perplexity([2, 1, 1]) == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_text_loaders_split_vocabulary_and_batches(tmp_path):
    text = "".join(chr(ord("a") + (i * 7) % 11) for i in range(2000)) + "é✓"
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    train, test, meta = text_loaders(path, 8, seed=0, limit=1500, seq_len=16)
    assert meta["text_chars"] == 1500 and meta["vocab"] == "".join(sorted(set(text[:1500])))
    assert meta["num_classes"] == len(meta["vocab"]) == 11 and meta["in_channels"] == 1
    counts = Counter(text[:1500])
    assert meta["char_counts"] == [counts[c] for c in meta["vocab"]]
    assert meta["unigram_perplexity"] == pytest.approx(unigram_perplexity(list(counts.values())))
    # the last 10% (150 characters) test; the first 1350 train
    assert len(train.dataset) == (1350 - 1) // 16 and len(test.dataset) == (150 - 1) // 16
    x, y = next(iter(test))
    assert x.dtype == np.int64 and tuple(x.shape) == (8, 16)
    decoded = "".join(meta["vocab"][i] for i in x.numpy()[0])
    assert decoded == text[1350:1366]
    np.testing.assert_array_equal(y.numpy()[:, :-1], x.numpy()[:, 1:])
    # the full text has the two non-ASCII characters in its vocabulary
    _, _, full = text_loaders(path, 8, seq_len=16)
    assert full["vocab"].endswith("é✓")


def test_text_errors(tmp_path):
    with pytest.raises(ValueError, match="no such text file"):
        text_loaders(tmp_path / "missing.txt", 8)
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00abc" * 300)
    with pytest.raises(ValueError, match="not UTF-8"):
        text_loaders(tmp_path / "bin", 8)
    (tmp_path / "short").write_text("abc" * 100)
    with pytest.raises(ValueError, match="300 characters are too few.*at least 650"):
        text_loaders(tmp_path / "short", 8)


# ---- model and sampling --------------------------------------------------------------------------
def test_model_shapes_and_state():
    dn.manual_seed(0)
    model = get_model("charlm", num_classes=13, hidden_size=16, embed_dim=8)
    assert isinstance(model, CharLM) and get_spec("charlm").kind == "text"
    ids = dn.tensor(np.random.default_rng(0).integers(0, 13, (3, 10)))
    logits = model(ids)
    assert tuple(logits.shape) == (3, 10, 13) and logits.dtype == np.float32
    # running the sequence in two pieces, carrying the state, gives the same logits (eval mode:
    # no dropout on the LSTM outputs)
    model.eval()
    logits = model(ids)
    a, state = model.run(ids[:, :4])
    b, _ = model.run(ids[:, 4:], state)
    np.testing.assert_allclose(np.concatenate([a.numpy(), b.numpy()], axis=1), logits.numpy(),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"integer character ids \(N, T\), got shape \(3, 10, 1\)"):
        model(dn.zeros(3, 10, 1))


def _toy():
    dn.manual_seed(0)
    vocab = "abc d"
    model = get_model("charlm", num_classes=len(vocab), hidden_size=8, embed_dim=4)
    return model, {"vocab": vocab, "char_counts": [3, 1, 1, 2, 1]}


def test_generate_is_reproducible_and_starts_with_the_prefix():
    model, meta = _toy()
    dn.manual_seed(3)
    a = generate(model, meta, "ab", 40)
    dn.manual_seed(3)
    b = generate(model, meta, "ab", 40)
    dn.manual_seed(4)
    c = generate(model, meta, "ab", 40)
    assert a == b and a != c
    assert a.startswith("ab") and len(a) == 42 and set(a) <= set(meta["vocab"])
    assert len(generate(model, meta, "", 7)) == 7  # no prefix: starts from the text's frequencies
    assert generate(model, meta, "dab", 0) == "dab"
    # temperature 0 is greedy: no randomness at all
    dn.manual_seed(1)
    g1 = generate(model, meta, "a", 20, temperature=0)
    dn.manual_seed(2)
    assert generate(model, meta, "a", 20, temperature=0) == g1


def test_generate_matches_a_single_pass_over_the_sampled_text():
    """One-to-many sampling with the carried state equals reading the whole text at once: the
    greedy continuation is the argmax of a full forward at every step."""
    model, meta = _toy()
    out = generate(model, meta, "cab", 12, temperature=0)
    ids = encode(out, meta["vocab"])
    assert model.training  # generate leaves the mode as it found it
    model.eval()
    with dn.no_grad():
        logits = model(dn.tensor(ids[None])).numpy()[0]
    np.testing.assert_array_equal(logits[2:-1].argmax(axis=1), ids[3:])


def test_generate_errors():
    model, meta = _toy()
    with pytest.raises(ValueError, match=r"prefix 'abz' has characters not in the model's vocabulary "
                                         r"of 5: 'z' \(U\+007A\)"):
        generate(model, meta, "abz", 5)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        generate(model, meta, "a", 5, temperature=-1.0)
    with pytest.raises(ValueError, match="length must be a non-negative integer"):
        generate(model, meta, "a", -2)
    with pytest.raises(ValueError, match="no vocabulary"):
        generate(model, {}, "a", 5)


# ---- the command line ----------------------------------------------------------------------------
def _train(out, *extra):
    return main(["train", "charlm", "--text", str(GPL), "--quiet", "--out", str(out), *extra])


@needs_text
def test_cli_train_then_generate(tmp_path, capsys):
    assert _train(tmp_path / "run", "--epochs", "1", "--limit", "6000") == 0
    rows = _rows(tmp_path / "run")
    assert len(rows) == 1
    for key in ("train_perplexity", "test_perplexity", "test_loss", "train_loss"):
        assert key in rows[0]
    assert rows[0]["test_perplexity"] == pytest.approx(math.exp(rows[0]["test_loss"]))
    ckpt = str(tmp_path / "run" / "epoch-001.json")
    meta = json.loads(Path(ckpt).read_text())
    assert meta["vocab"] == "".join(sorted(set(GPL.read_text()[:6000])))
    capsys.readouterr()
    samples = []
    for seed in ("5", "5", "6"):
        assert main(["generate", ckpt, "--prefix", "the ", "--length", "50", "--seed", seed]) == 0
        samples.append(capsys.readouterr().out.rstrip("\n"))
    assert samples[0].startswith("the ") and len(samples[0]) == 4 + 50
    assert samples[0] == samples[1] and samples[0] != samples[2]
    # a character the license does not contain: one clear line, no traceback
    assert main(["generate", ckpt, "--prefix", "th€", "--length", "5"]) == 2
    err = capsys.readouterr().err
    assert "'€' (U+20AC)" in err and "Traceback" not in err


@needs_text
def test_cli_needs_a_text(tmp_path, capsys):
    assert main(["train", "charlm", "--quiet", "--out", str(tmp_path / "run")]) == 2
    assert "pass --text FILE" in capsys.readouterr().err


@needs_text
def test_cli_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    args = ("--limit", "4000", "--batch-size", "16")
    assert _train(tmp_path / "full", "--epochs", "2", *args) == 0
    assert _train(tmp_path / "split", "--epochs", "1", *args) == 0
    # resuming needs neither --text nor --limit again: the run remembers them
    assert main(["train", "charlm", "--quiet", "--out", str(tmp_path / "split"), "--epochs", "2",
                 "--resume"]) == 0
    full, split = _rows(tmp_path / "full"), _rows(tmp_path / "split")
    assert [r["epoch"] for r in split] == [1, 2]
    for a, b in zip(full, split):
        for key in ("train_loss", "test_loss", "train_perplexity", "test_perplexity"):
            assert a[key] == b[key], (a["epoch"], key)


@needs_text
def test_short_training_beats_the_unigram_perplexity(tmp_path):
    """A few epochs on the first 20k characters: the test perplexity (the last 10%) falls well
    under exp(entropy of the character frequencies), which no context-free model can beat."""
    assert _train(tmp_path / "run", "--epochs", "4", "--limit", "20000") == 0
    rows = _rows(tmp_path / "run")
    unigram = json.loads((tmp_path / "run" / "epoch-004.json").read_text())["unigram_perplexity"]
    counts = Counter(GPL.read_text()[:20000])
    assert unigram == pytest.approx(unigram_perplexity(list(counts.values())))
    assert rows[-1]["test_perplexity"] < 0.7 * unigram, (rows[-1]["test_perplexity"], unigram)
    assert rows[-1]["test_perplexity"] < rows[0]["test_perplexity"]
