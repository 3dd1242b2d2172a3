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
