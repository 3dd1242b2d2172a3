"""D2L's recipes trained end to end on the real Fashion-MNIST (minutes: ``pytest -m slow``)."""
import json
from pathlib import Path

import pytest

from divenet.cli import main

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not FMNIST.exists(), reason="apt-get install dataset-fashion-mnist")]


def _train(tmp_path, model):
    assert main(["train", model, "--quiet", "--out", str(tmp_path / model)]) == 0
    return [json.loads(line) for line in (tmp_path / model / "metrics.jsonl").read_text().splitlines()]


def test_lenet_reaches_d2l_accuracy_in_10_epochs(tmp_path):
    rows = _train(tmp_path, "lenet")  # sigmoid, average pooling, Xavier, SGD lr 0.9, batch 256
    assert len(rows) == 10
    assert rows[-1]["test_acc"] >= 0.78 and rows[-1]["train_loss"] <= 0.50, rows[-1]


def test_batch_norm_lenet_reaches_083_in_10_epochs(tmp_path):
    rows = _train(tmp_path, "lenet-bn")  # lr 1.0
    assert len(rows) == 10
    assert rows[-1]["test_acc"] >= 0.83, rows[-1]
