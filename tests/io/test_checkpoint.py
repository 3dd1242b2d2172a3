import json

import numpy as np
import pytest

from divenet import nn, ones, optim
from divenet.io import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint


def _model_and_opt():
    model = nn.Linear(4, 3)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = ones(p.shape)
    opt.step()
    return model, opt


def test_round_trip(tmp_path):
    model, opt = _model_and_opt()
    path = save_checkpoint(tmp_path, 1, model, opt, {"model": "x", "rng_state": {"a": 2 ** 70}})
    meta, state, ostate = load_checkpoint(path)
    assert meta["epoch"] == 1 and meta["model"] == "x" and meta["rng_state"]["a"] == 2 ** 70
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(state[k], v)
    fresh = nn.Linear(4, 3)
    opt2 = optim.SGD(fresh.parameters(), lr=0.5, momentum=0.9).load_state_dict(ostate)
    assert opt2.param_groups[0]["lr"] == 0.1
    for p in fresh.parameters():  # one step with unit gradients leaves unit momentum buffers
        np.testing.assert_array_equal(opt2.state[id(p)]["momentum_buffer"], np.ones(p.shape, np.float32))


def test_newest_complete_checkpoint_wins_and_old_ones_are_pruned(tmp_path):
    model, opt = _model_and_opt()
    for e in (1, 2, 3):
        save_checkpoint(tmp_path, e, model, opt, {})
    assert find_checkpoint(tmp_path).name == "epoch-003.json"
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["epoch-002.json", "epoch-003.json"]
    # a crash between the weights and the JSON of epoch 4 leaves epoch 3 as the checkpoint
    (tmp_path / "epoch-004.safetensors").write_bytes(b"half written")
    (tmp_path / "epoch-004.json.tmp").write_text("{")
    meta, _, _ = load_checkpoint(tmp_path)
    assert meta["epoch"] == 3


def test_damaged_weights_are_detected(tmp_path):
    model, opt = _model_and_opt()
    path = save_checkpoint(tmp_path, 1, model, opt, {})
    weights = tmp_path / "epoch-001.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match the hash"):
        load_checkpoint(path)


def test_unreadable_or_missing_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        find_checkpoint(tmp_path)
    (tmp_path / "epoch-001.json").write_text("not json")
    with pytest.raises(CheckpointError, match="not a readable divenet checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.json")


def test_metadata_is_plain_json(tmp_path):
    model, opt = _model_and_opt()
    path = save_checkpoint(tmp_path, 7, model, opt, {"classes": ["a", "b"]})
    meta = json.loads(path.read_text())
    assert meta["weights"] == "epoch-007.safetensors" and meta["classes"] == ["a", "b"]
    assert len(meta["weights_sha256"]) == 64
