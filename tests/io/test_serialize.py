"""dn.save / dn.load: safetensors + a JSON structure, never pickle."""
import collections
import io
import json

import numpy as np
import pytest
import torch
from safetensors import numpy as stnp

import divenet as dn
from divenet import nn, optim
from divenet.io.serialize import SerializationError, load, save


def round_trip(obj, tmp_path, **kw):
    path = tmp_path / "obj.safetensors"
    save(obj, path)
    return load(path, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64, np.int32, np.int8,
                                   np.uint8, np.bool_])
@pytest.mark.parametrize("shape", [(), (3,), (2, 3, 4), (0, 2)])
def test_tensor_round_trip(dtype, shape, tmp_path):
    a = np.asarray(np.random.default_rng(0).standard_normal(shape) * 5).astype(dtype)
    t = round_trip(dn.tensor(a), tmp_path)
    assert isinstance(t, dn.Tensor) and t.device == dn.cpu()
    assert t.dtype == a.dtype and t.shape == a.shape
    np.testing.assert_array_equal(t.numpy(), a)


def test_non_contiguous_and_scalars(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    views = [base.T, base[:, ::2], base[::-1], np.asfortranarray(base)]
    out = round_trip({"views": [dn.tensor(v) for v in views], "raw": views,
                      "np0": np.float32(2.5), "np0i": np.int64(-3), "zero_d": np.zeros((), np.int32)},
                     tmp_path)
    for v, t, r in zip(views, out["views"], out["raw"]):
        np.testing.assert_array_equal(t.numpy(), v)
        np.testing.assert_array_equal(r, v)
        assert isinstance(r, np.ndarray) and r.shape == v.shape
    assert type(out["np0"]) is np.float32 and out["np0"] == 2.5
    assert type(out["np0i"]) is np.int64 and out["np0i"] == -3
    assert isinstance(out["zero_d"], np.ndarray) and out["zero_d"].shape == () and out["zero_d"].dtype == np.int32


def test_nested_structure_keeps_types(tmp_path):
    obj = {
        "epoch": 3, "lr": 0.1, "name": "run", "done": False, "none": None, "nan": float("nan"),
        "big": 2 ** 70, "nested": {"a": [1, (2.0, "x"), []], "b": {}}, 7: "int key", 1.5: "float key",
        True: "bool key", "od": collections.OrderedDict([("z", 1), ("a", 2)]), "empty": {},
        "tup": (), "w": dn.tensor([1.0, 2.0]),
    }
    out = round_trip(obj, tmp_path)
    assert list(out) == list(obj)
    assert type(out["od"]) is collections.OrderedDict and list(out["od"]) == ["z", "a"]
    assert out["nested"] == {"a": [1, (2.0, "x"), []], "b": {}}
    assert type(out["nested"]["a"][1]) is tuple and type(out["tup"]) is tuple
    assert out[7] == "int key" and out[1.5] == "float key" and out[True] == "bool key"
    assert out["big"] == 2 ** 70 and type(out["epoch"]) is int and type(out["lr"]) is float
    assert out["done"] is False and out["none"] is None and np.isnan(out["nan"])
    np.testing.assert_array_equal(out["w"].numpy(), [1.0, 2.0])
    assert round_trip({}, tmp_path) == {} and round_trip([], tmp_path) == []


def test_model_state_dict_round_trip(tmp_path):
    def model():
        return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))

    dn.manual_seed(0)
    a = model()
    x = dn.randn(2, 1, 4, 4)
    a(x)  # moves the BatchNorm running statistics
    a.eval()
    save(a.state_dict(), tmp_path / "m.safetensors")
    dn.manual_seed(1)
    b = model()
    b.load_state_dict(load(tmp_path / "m.safetensors"))
    b.eval()
    np.testing.assert_array_equal(b(x).numpy(), a(x).numpy())
    sd = load(tmp_path / "m.safetensors")
    assert list(sd) == list(a.state_dict())
    # the same state as Tensors (PyTorch's state_dict type) loads too
    save({k: dn.tensor(v) for k, v in a.state_dict().items()}, tmp_path / "t.safetensors")
    dn.manual_seed(2)
    c = model()
    c.load_state_dict(load(tmp_path / "t.safetensors"))
    c.eval()
    np.testing.assert_array_equal(c(x).numpy(), a(x).numpy())


@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
                                  lambda p: optim.Adam(p, lr=0.01)])
def test_optimizer_state_dict_round_trip(make, tmp_path):
    def step(model, opt):
        opt.zero_grad()
        model(dn.ones(2, 4)).sum().backward()
        opt.step()

    dn.manual_seed(0)
    m1 = nn.Linear(4, 3)
    o1 = make(m1.parameters())
    step(m1, o1)
    save({"model": m1.state_dict(), "optim": o1.state_dict()}, tmp_path / "ck.safetensors")
    ck = load(tmp_path / "ck.safetensors")
    saved = o1.state_dict()
    assert ck["optim"]["param_groups"] == saved["param_groups"]
    assert set(ck["optim"]["state"]) == set(saved["state"])
    for k, v in saved["state"].items():
        np.testing.assert_array_equal(np.asarray(ck["optim"]["state"][k]), np.asarray(v))
        assert type(ck["optim"]["state"][k]) is type(v)
    dn.manual_seed(5)
    m2 = nn.Linear(4, 3)
    m2.load_state_dict(ck["model"])
    o2 = make(m2.parameters())
    o2.load_state_dict(ck["optim"])
    step(m1, o1)
    step(m2, o2)
    for (_, p), (_, q) in zip(m1.named_parameters(), m2.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_files_open_in_torch_under_state_dict_names(tmp_path):
    from safetensors.torch import load_file

    dn.manual_seed(0)
    m = nn.Linear(3, 2)
    save(m.state_dict(), tmp_path / "lin.safetensors")
    ref = torch.nn.Linear(3, 2)
    ref.load_state_dict(load_file(tmp_path / "lin.safetensors"))
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(ref(torch.tensor(x)).detach().numpy(), m(dn.tensor(x)).numpy(), rtol=1e-6)


def test_plain_safetensors_from_torch_loads_into_a_model(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = torch.nn.Linear(3, 2)
    save_file(ref.state_dict(), tmp_path / "w.safetensors")
    sd = load(tmp_path / "w.safetensors")
    assert set(sd) == {"weight", "bias"} and all(isinstance(v, dn.Tensor) for v in sd.values())
    m = nn.Linear(3, 2)
    m.load_state_dict(sd)
    x = np.ones((1, 3), np.float32)
    np.testing.assert_allclose(m(dn.tensor(x)).numpy(), ref(torch.tensor(x)).detach().numpy(), rtol=1e-6)


def test_shared_objects_stay_shared(tmp_path):
    t = dn.tensor([1.0, 2.0])
    out = round_trip({"a": t, "b": [t]}, tmp_path)
    assert out["a"] is out["b"][0]
    assert list(stnp.load_file(tmp_path / "obj.safetensors")) == ["a"]


def test_requires_grad_file_objects_and_map_location(tmp_path):
    buf = io.BytesIO()
    save({"p": dn.tensor([1.0], requires_grad=True), "q": dn.tensor([2.0])}, buf)
    buf.seek(0)
    out = load(buf, map_location="cpu")
    assert out["p"].requires_grad and not out["q"].requires_grad
    save([1], tmp_path / "x.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no temporary left behind
    with pytest.raises(TypeError, match="load: map_location must be a device"):
        load(tmp_path / "x.safetensors", map_location=3)


def _rewrite_structure(path, change):
    """Rewrite the JSON structure of a saved file (to fake another machine or damage)."""
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    meta = json.loads(blob[8:8 + n])["__metadata__"]
    meta["divenet.structure"] = change(meta["divenet.structure"])
    path.write_bytes(stnp.save(stnp.load(blob), metadata=meta))


def test_gpu_saved_tensor_needs_a_gpu_or_map_location(tmp_path):
    path = tmp_path / "g.safetensors"
    save({"w": dn.tensor([1.0, 2.0])}, path)
    _rewrite_structure(path, lambda s: s.replace('"device":"cpu"', '"device":"gpu:0"'))
    if dn.gpu_available():
        assert load(path)["w"].device == dn.device("gpu:0")
    else:
        with pytest.raises(SerializationError, match=r"g.safetensors: holds tensors saved on gpu:0, .*map_location='cpu'"):
            load(path)
    assert load(path, map_location="cpu")["w"].device == dn.cpu()


def one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_pickle_files_are_refused(tmp_path):
    for legacy in (False, True):
        path = tmp_path / f"model{int(legacy)}.pt"
        torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(SerializationError) as e:
            load(path)
        msg = one_line(e)
        assert msg.startswith(f"{path}: a PyTorch .pt/pickle file; divenet does not read pickles")
        assert "save_file(model.state_dict(), 'model.safetensors')" in msg


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "header", "structure", "missing"])
def test_damaged_files_name_the_file(damage, tmp_path):
    path = tmp_path / "d.safetensors"
    save({"w": dn.tensor(np.arange(100, dtype=np.float32)), "n": 1}, path)
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[:len(blob) - 50])
    elif damage == "garbage":
        path.write_bytes(b"hello world, not a tensor file")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "header":
        path.write_bytes(blob[:8] + b"{" + b"\x00" * (len(blob) - 9))
    elif damage == "structure":
        _rewrite_structure(path, lambda s: s[: len(s) // 2])
    else:
        _rewrite_structure(path, lambda s: s.replace('"k":"w"', '"k":"v"'))
    with pytest.raises(SerializationError) as e:
        load(path)
    assert one_line(e).startswith(f"{path}: ")
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("obj, what", [
    (object(), "cannot store a object at the top"), ({"a": {1, 2}}, "cannot store a set at a"),
    ({(1, 2): 3}, "dict key (1, 2) at the top is a tuple"),
    ({"s": np.array(["x"])}, "an array at s has dtype <U1"),
])
def test_unsupported_objects(obj, what):
    with pytest.raises(SerializationError, match=f"save: {what}".replace("(", r"\(").replace(")", r"\)")):
        save(obj, io.BytesIO())


def test_top_level_names(tmp_path):
    import divenet.utils.data

    assert dn.save is save and dn.load is load
    assert dn.utils.data is divenet.utils.data
    dn.save({"w": dn.ones(2)}, tmp_path / "w.safetensors")
    np.testing.assert_array_equal(dn.load(tmp_path / "w.safetensors")["w"].numpy(), [1.0, 1.0])
