import hashlib
import json
import random

import numpy as np
import pytest

from divenet import nn, ones, optim
from divenet.io import (CheckpointError, check_finite, find_checkpoint, load_checkpoint, load_metadata,
                        save_checkpoint)


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


# ---- damage: every mutation is one CheckpointError naming the file, or a sane checkpoint ------------

def _recompute(json_bytes, weights):
    meta = json.loads(json_bytes)
    meta["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    return json.dumps(meta).encode()


def _set(meta, path, value):
    *parents, last = path
    d = meta
    for p in parents:
        d = d[p]
    if value is _DELETE:
        del d[last]
    else:
        d[last] = value


_DELETE = object()
FIELDS = [("epoch",), ("weights",), ("weights_sha256",), ("optimizer",), ("optimizer", "type"),
          ("optimizer", "param_groups"), ("optimizer", "scalars"), ("optimizer", "param_groups", 0),
          ("optimizer", "param_groups", 0, "lr")]
VALUES = [_DELETE, None, True, -1, 0, 1.5, "x", [], {}, [1, "a"], "../epoch-001.safetensors", "/etc/passwd",
          float("nan"), 2 ** 70]


def mutations(json_bytes, weights, seed=0):
    """(label, json, weights) for damage of every kind a disk, a transfer or a hand edit does;
    ``+hash`` marks weights whose hash in the JSON was recomputed to match."""
    rng = random.Random(seed)
    header_end = 8 + int.from_bytes(weights[:8], "little")
    cuts = sorted({0, 1, 7, 8, 9, header_end // 2, header_end - 1, header_end, header_end + 1,
                   len(weights) - 4, len(weights) - 1})
    for n in cuts:
        yield f"weights cut at {n}", json_bytes, weights[:n]
        yield f"weights cut at {n} +hash", _recompute(json_bytes, weights[:n]), weights[:n]
    for where, lo, hi in (("header", 0, header_end), ("payload", header_end, len(weights))):
        for i in sorted(rng.sample(range(lo, hi), min(30, hi - lo))):
            w = bytearray(weights)
            w[i] ^= 1 << rng.randrange(8)
            yield f"{where} bit flip at {i}", json_bytes, bytes(w)
            yield f"{where} bit flip at {i} +hash", _recompute(json_bytes, bytes(w)), bytes(w)
    for dtype in ("I32", "U32", "F16", "F64", "U8", "BOOL", "BF16", "I64", "XX"):
        w = weights.replace(b'"F32"', f'"{dtype}"'.encode().ljust(5, b" "))
        yield f"F32 -> {dtype} +hash", _recompute(json_bytes, w), w
    meta = json.loads(json_bytes)
    for field in FIELDS:
        for value in VALUES:
            m = json.loads(json_bytes)
            try:
                _set(m, field, value)
            except (KeyError, IndexError, TypeError):
                continue
            yield f"{'.'.join(map(str, field))} = {value!r}", json.dumps(m).encode(), weights
    for top in ([], "x", 3, None):
        yield f"metadata {top!r}", json.dumps(top).encode(), weights
    for n in (0, 1, len(json_bytes) // 2, len(json_bytes) - 1):
        yield f"json cut at {n}", json_bytes[:n], weights
    yield "json not utf-8", b"\xff\xfe" + json_bytes, weights
    yield "epoch edited", json.dumps({**meta, "epoch": meta["epoch"] + 1}).encode(), weights


def _damaged_checkpoint(tmp_path):
    model, opt = _model_and_opt()
    path = save_checkpoint(tmp_path, 1, model, opt, {"model": "x"})
    return path, path.read_bytes(), (tmp_path / "epoch-001.safetensors").read_bytes()


def test_every_damage_is_one_checkpoint_error_naming_the_file_or_a_sane_checkpoint(tmp_path):
    path, json_bytes, weights = _damaged_checkpoint(tmp_path)
    outcomes = {"error": 0, "accepted": 0}
    for label, j, w in mutations(json_bytes, weights):
        path.write_bytes(j)
        (tmp_path / "epoch-001.safetensors").write_bytes(w)
        try:
            meta, state, ostate = load_checkpoint(path)
            check_finite(state, path)
            check_finite(ostate["state"] if ostate else {}, path)
        except CheckpointError as exc:
            assert "epoch-001" in str(exc) and "\n" not in str(exc), label
            outcomes["error"] += 1
            continue
        # what loads is a plain, floating-point, finite checkpoint of epoch 1
        assert meta["epoch"] == 1 and isinstance(meta["weights"], str), label
        assert all(v.ndim == 0 or np.issubdtype(v.dtype, np.floating) for v in state.values()), label
        outcomes["accepted"] += 1
    assert outcomes["error"] > 150 and outcomes["accepted"] > 10, outcomes


def test_hash_matching_int32_weights_and_nan_weights_are_refused(tmp_path):
    from safetensors.numpy import load, save

    path, json_bytes, weights = _damaged_checkpoint(tmp_path)
    arrays = load(weights)
    for name, bad, match in (("model.weight", arrays["model.weight"].view(np.int32), "is int32, not a floating"),
                             ("model.bias", np.full(3, np.nan, np.float32), "tensor 'bias' holds 3 non-finite")):
        blob = save({**arrays, name: bad})
        (tmp_path / "epoch-001.safetensors").write_bytes(blob)
        path.write_bytes(_recompute(json_bytes, blob))
        with pytest.raises(CheckpointError, match=match) as err:
            check_finite(load_checkpoint(path)[1], path)
        assert "epoch-001" in str(err.value)


@pytest.mark.parametrize("field, value, match", [
    ("epoch", 2, "'epoch' is 2 but the file is named for epoch 1"),
    ("epoch", "1", "'epoch' must be a positive integer, got '1'"),
    ("epoch", True, "'epoch' must be a positive integer"),
    ("weights", "../other.safetensors", "'weights' must be a file name"),
    ("weights", 3, "'weights' must be a file name"),
    ("weights_sha256", "abc", "64 lowercase hex"),
    ("optimizer", [], "'optimizer' must be an object or null"),
])
def test_metadata_fields_of_the_wrong_type_are_named(tmp_path, field, value, match):
    path, json_bytes, _ = _damaged_checkpoint(tmp_path)
    meta = json.loads(json_bytes)
    meta[field] = value
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=match):
        load_metadata(path)


def test_orphans_are_removed_and_pruning_spares_protected_epochs(tmp_path):
    from divenet.io.checkpoint import prune_checkpoints, remove_orphans

    model, opt = _model_and_opt()
    for e in (1, 2, 3, 4):
        save_checkpoint(tmp_path, e, model, opt, {}, keep=0)
    assert prune_checkpoints(tmp_path, 1, protect=(2,)) == [1, 3]
    (tmp_path / "epoch-005.safetensors").write_bytes(b"x")
    (tmp_path / "metrics.jsonl.tmp").write_bytes(b"x")
    assert remove_orphans(tmp_path) == ["epoch-005.safetensors", "metrics.jsonl.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-002.json", "epoch-002.safetensors", "epoch-004.json", "epoch-004.safetensors"]
