"""TensorBoard event files (divenet/tensorboard.py): written by ``Trainer(tensorboard=...)`` and
``divenet train --tensorboard``, read back with TensorBoard's own EventAccumulator."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import divenet as dn
from divenet import nn
from divenet.cli import main
from divenet.data import ArrayDataset, DataLoader
from divenet.optim import SGD
from divenet.train import Trainer

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _events(logdir):
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={"histograms": 0, "images": 0,
                                                                         "scalars": 0})
    acc.Reload()
    return acc


def _tiny(tmp_path, **kwargs):
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 8, 8), dtype=np.float32)
    y = (x[:, 0, :4].mean(axis=(1, 2)) > x[:, 0, 4:].mean(axis=(1, 2))).astype(np.int64)
    ds = ArrayDataset(x, y)
    dn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), DataLoader(ds, batch_size=16, shuffle=True),
                      DataLoader(ds, batch_size=32), epochs=3, progress=False, log=lambda s: None, **kwargs)
    return trainer, model


def test_trainer_writes_scalars_histograms_and_filters(tmp_path):
    trainer, model = _tiny(tmp_path, out_dir=tmp_path / "run", tensorboard=True)
    history = trainer.fit()
    logdir = tmp_path / "run" / "tensorboard"
    assert list(logdir.glob("events.out.tfevents.*"))
    acc = _events(logdir)
    tags = acc.Tags()
    for tag in ("loss/train", "loss/test", "accuracy/train", "accuracy/test", "learning_rate"):
        assert tag in tags["scalars"], tag
        assert [e.step for e in acc.Scalars(tag)] == [1, 2, 3]
    assert [e.value for e in acc.Scalars("loss/train")] == pytest.approx([r["train_loss"] for r in history])
    assert [e.value for e in acc.Scalars("accuracy/test")] == pytest.approx([r["test_acc"] for r in history])
    assert acc.Scalars("learning_rate")[0].value == pytest.approx(0.1)
    names = [n for n, _ in model.named_parameters()]
    for n in names:
        assert f"weights/{n}" in tags["histograms"] and f"gradients/{n}" in tags["histograms"]
    last = acc.Histograms("weights/0.weight")[-1]
    w = model[0].weight.numpy()
    assert last.step == 3 and last.histogram_value.num == w.size
    assert last.histogram_value.min == pytest.approx(float(w.min()))
    assert last.histogram_value.max == pytest.approx(float(w.max()))
    assert tags["images"] == ["filters/0"]
    image = acc.Images("filters/0")[-1]
    assert image.step == 3 and image.width >= 100 and image.height >= 100  # 4 3x3 kernels, enlarged


def test_tensorboard_option_paths_and_errors(tmp_path):
    trainer, _ = _tiny(tmp_path, tensorboard=tmp_path / "tb")
    trainer.epochs = 1
    trainer.fit()
    assert "loss/train" in _events(tmp_path / "tb").Tags()["scalars"]
    with pytest.raises(ValueError, match="tensorboard=True writes to OUT_DIR/tensorboard but the trainer has no out_dir"):
        _tiny(tmp_path, tensorboard=True)
    with pytest.raises(TypeError, match="tensorboard must be True, False, None or a directory path, got 3"):
        _tiny(tmp_path, tensorboard=3)
    trainer, _ = _tiny(tmp_path, out_dir=tmp_path / "off", tensorboard=False)
    trainer.epochs = 1
    trainer.fit()
    assert not (tmp_path / "off" / "tensorboard").exists()


def test_cli_train_tensorboard(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "lenet", "--limit", "256", "--batch-size", "128", "--epochs", "1", "--quiet",
                 "--out", str(out), "--tensorboard"]) == 0
    acc = _events(out / "tensorboard")
    assert acc.Scalars("accuracy/train")[0].step == 1
    assert "filters/0" in acc.Tags()["images"]
    assert main(["train", "lenet", "--limit", "256", "--epochs", "1", "--quiet", "--out",
                 str(tmp_path / "plain")]) == 0
    assert not (Path(tmp_path / "plain") / "tensorboard").exists()
