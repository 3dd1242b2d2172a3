import json

import numpy as np
import pytest

import divenet as dn
from divenet import nn, optim
from divenet.data import ArrayDataset, DataLoader
from divenet.train import Trainer, TrainingDiverged, evaluate


def _blobs(n=256, seed=0):
    """Two well separated classes: any working trainer fits them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (rng.standard_normal((n, 1, 4, 4)) + (2 * y - 1)[:, None, None, None] * 1.5).astype(np.float32)
    return ArrayDataset(x, y)


def _model():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))


def test_trainer_learns_and_writes_one_metrics_row_per_epoch(tmp_path):
    dn.manual_seed(0)
    data = _blobs()
    model = _model()
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), DataLoader(data, 32, shuffle=True, seed=1),
                      DataLoader(data, 64), epochs=3, out_dir=tmp_path, progress=False, log=lambda s: None)
    history = trainer.fit()
    assert len(history) == 3 and history[-1]["test_acc"] > 0.9
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert evaluate(model, DataLoader(data, 64))["acc"] == pytest.approx(history[-1]["test_acc"])


class Exploding(nn.Module):
    def __init__(self):
        self.lin = nn.Linear(16, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = self.lin(x.flatten(1))
        return out * float("nan") if self.calls == 3 else out


def test_non_finite_loss_stops_with_epoch_and_step_and_writes_nothing(tmp_path):
    model = Exploding()
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), DataLoader(_blobs(), 32), epochs=2,
                      out_dir=tmp_path, progress=False, log=lambda s: None)
    with pytest.raises(TrainingDiverged, match="epoch 1, step 3"):
        trainer.fit()
    assert not list(tmp_path.glob("epoch-*"))


def _random_labels(n=256, classes=10):
    rng = np.random.default_rng(0)
    return ArrayDataset(rng.standard_normal((n, 1, 4, 4)).astype(np.float32), rng.integers(0, classes, n))


def _linear_run(lr, **kw):
    dn.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    return Trainer(model, optim.SGD(model.parameters(), lr=lr), DataLoader(_random_labels(), 32), epochs=2,
                   progress=False, log=lambda s: None, **kw)


def test_a_huge_but_finite_loss_stops_the_run_with_the_bound_and_the_way_out(tmp_path):
    # lr 1e6 on a linear model: the loss jumps from 2.6 to ~5e5 and stays finite
    trainer = _linear_run(1e6, out_dir=tmp_path)
    with pytest.raises(TrainingDiverged) as err:
        trainer.fit()
    msg = str(err.value)
    assert "\n" not in msg and "epoch 1, step 2" in msg and "--no-divergence-check" in msg
    first = trainer.first_loss
    assert f"{100 * first:.4g}" in msg and first == pytest.approx(np.log(10), rel=0.3)
    assert not list(tmp_path.glob("epoch-*"))
    history = _linear_run(1e6, divergence_check=False).fit()  # the way out: it trains on
    assert len(history) == 2 and history[-1]["train_loss"] > 1e4


def test_divergence_check_leaves_a_healthy_run_alone():
    history = _linear_run(0.1).fit()
    assert len(history) == 2


def test_an_empty_train_split_is_a_clear_error_before_anything_is_written(tmp_path):
    empty = ArrayDataset(np.zeros((0, 1, 4, 4), np.float32), np.zeros(0, np.int64))
    model = _model()
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), DataLoader(empty, 32), epochs=1,
                      out_dir=tmp_path / "run", progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match=r"train loader \(DataLoader over ArrayDataset of 0 examples, "
                                         r"batch_size 32\) yields no batches"):
        trainer.fit()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("keep, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)])
def test_keep_must_be_a_non_negative_integer(keep, error):
    model = _model()
    with pytest.raises(error, match=f"keep must be a non-negative integer.*got {keep!r}"
                       if error is TypeError else "keep must be a non-negative integer.*got -1"):
        Trainer(model, optim.SGD(model.parameters(), lr=0.1), DataLoader(_blobs(), 32), keep=keep)


def test_keep_best_needs_a_test_loader():
    model = _model()
    with pytest.raises(ValueError, match="keep_best needs a test_loader"):
        Trainer(model, optim.SGD(model.parameters(), lr=0.1), DataLoader(_blobs(), 32), keep_best=True)


def _noisy_run(out, epochs, **kw):
    """Test accuracy that goes up and down: a high lr on overlapping classes."""
    dn.manual_seed(0)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 128)
    x = (rng.standard_normal((128, 1, 4, 4)) + (2 * y - 1)[:, None, None, None] * 0.3).astype(np.float32)
    data = ArrayDataset(x, y)
    model = _model()
    return Trainer(model, optim.SGD(model.parameters(), lr=1.5), DataLoader(data, 32, shuffle=True, seed=1),
                   DataLoader(_blobs(64, 5), 64), epochs=epochs, out_dir=out, progress=False,
                   log=lambda s: None, **kw)


@pytest.mark.parametrize("keep", [0, None, 1, 2, 3])
def test_keep_n_newest_checkpoints(tmp_path, keep):
    _noisy_run(tmp_path, 4, keep=keep).fit()
    kept = sorted(int(p.stem[6:]) for p in tmp_path.glob("epoch-*.json"))
    assert kept == ([1, 2, 3, 4] if not keep else [1, 2, 3, 4][-keep:])
    assert sorted(p.stem for p in tmp_path.glob("epoch-*.safetensors")) == [f"epoch-{e:03d}" for e in kept]
    assert not (tmp_path / "best.json").exists()


def test_keep_best_keeps_the_best_test_accuracy_and_resume_still_takes_the_newest(tmp_path):
    from divenet.io import find_checkpoint, load_checkpoint

    history = _noisy_run(tmp_path, 6, keep=1, keep_best=True).fit()
    accs = [r["test_acc"] for r in history]
    best = 1 + accs.index(max(accs))
    assert best != 6, "the run must have a best epoch that is not the last for this test"
    kept = sorted(int(p.stem[6:]) for p in tmp_path.glob("epoch-*.json"))
    assert kept == sorted({best, 6})
    pointer = json.loads((tmp_path / "best.json").read_text())
    assert pointer == {"epoch": best, "checkpoint": f"epoch-{best:03d}.json", "test_acc": max(accs)}
    assert find_checkpoint(tmp_path / "best.json").name == f"epoch-{best:03d}.json"
    assert find_checkpoint(tmp_path).name == "epoch-006.json"
    assert load_checkpoint(tmp_path / "best.json")[0]["epoch"] == best
    resumed = _noisy_run(tmp_path, 6, keep=1, keep_best=True)
    assert resumed.restore() == 6


def _progress_run(epochs=3, n=320, batch=16):
    dn.manual_seed(0)
    model = _model()
    return Trainer(model, optim.SGD(model.parameters(), lr=0.1), DataLoader(_blobs(n), batch), epochs=epochs,
                   progress=True, log=print)


def test_progress_lines_when_stderr_is_not_a_terminal(capsys):
    _progress_run().fit()  # capsys: stderr is a pipe, as in a log file or a notebook
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    pattern = (r"epoch (\d)/3  step (\d+)/20  loss \d+\.\d{4}  acc \d\.\d{3}  \d+ img/s  "
               r"run ETA (\d+h\d\dm|\d+m\d\ds|\d+s)")
    import re

    parsed = [re.fullmatch(pattern, line) for line in lines]
    assert all(parsed), lines
    for epoch in (1, 2, 3):
        steps = [int(m.group(2)) for m in parsed if m.group(1) == str(epoch)]
        # about every tenth of the epoch, never per step, never the last step
        assert 5 <= len(steps) <= 9 and steps == sorted(steps) and max(steps) < 20
    epoch_lines = [l for l in captured.out.splitlines() if l.startswith("epoch ")]
    assert len(epoch_lines) == 3 and all("img/s" in l for l in epoch_lines)
    assert all("run ETA" in l for l in epoch_lines[:2]) and "run ETA" not in epoch_lines[2]


def test_progress_off_prints_nothing_per_step(capsys):
    trainer = _progress_run()
    trainer.progress = False
    trainer.fit()
    assert capsys.readouterr().err == ""


def test_progress_bar_on_a_terminal_shows_the_rate_and_the_run_eta(monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    import functools
    import io
    import sys

    monkeypatch.setattr(tqdm, "tqdm", functools.partial(tqdm.tqdm, mininterval=0))  # redraw every step

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    _progress_run(epochs=2).fit()
    out = term.getvalue()
    assert "epoch 1/2" in out and "img/s" in out and "run ETA" in out
